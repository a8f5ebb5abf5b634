//! Tells the language of a program: from its shebang when it has one, from
//! its file name's extension when exactly one served language claims it,
//! else from its text, by the language model ([`super::model`]). Only
//! languages being served are candidates. Pure.

use super::CatalogEntry;
use super::grammar;
use super::model::{self, Model};
use super::names::SYNONYMS;
use super::signature;

/// A detected language, how sure the detector is, and what else it considered.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub language: String,
    /// `shebang`, `extension` (the file name's), `syntax` (a language's
    /// own syntax, [`signature`]) or `content`.
    pub method: &'static str,
    /// 0 to 1: for `content`, the model's calibrated probability; for
    /// `syntax`, 1, or the model's confidence in the family the syntax
    /// refines (zsh's flags within what reads as bash).
    pub confidence: f64,
    /// Runners-up with their confidence, best first.
    pub alternatives: Vec<(String, f64)>,
}

impl Detection {
    /// Whether the answer is sure enough to act on: a content answer (or
    /// a dialect's syntax within one) below the model's calibrated
    /// threshold is a guess.
    pub fn is_sure(&self) -> bool {
        !matches!(self.method, "content" | "syntax")
            || self.confidence >= model::builtin().threshold
    }
}

/// Runners-up reported.
const ALTERNATIVES: usize = 5;

/// The canonical name (a class of the model, or a language it does not
/// know by content) that `word` stands for.
pub fn canonical(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    let classes = &model::builtin().classes;
    classes
        .iter()
        .find(|c| **c == w)
        .map(String::as_str)
        .or_else(|| SYNONYMS.iter().find(|(s, _)| *s == w).map(|(_, c)| *c))
}

/// The canonical language a catalog entry serves, by its name or an alias.
fn entry_language(e: &CatalogEntry) -> Option<&'static str> {
    std::iter::once(&e.name)
        .chain(&e.aliases)
        .find_map(|n| canonical(n))
}

/// How well `e` stands for the canonical `language` among its variants:
/// 0 for the entry named as the language, then the order of the synonyms
/// of the entry's name, then the order of its aliases'. Lower is better.
fn variant_rank(e: &CatalogEntry, language: &str) -> usize {
    if e.name == language {
        return 0;
    }
    std::iter::once(&e.name)
        .chain(&e.aliases)
        .filter_map(|n| SYNONYMS.iter().position(|(s, c)| *s == n && *c == language))
        .min()
        .map_or(usize::MAX, |i| i + 1)
}

/// The served language whose name or alias is `word`, trying it without
/// version digits too (`python3.11` → `python3` → `python`).
fn served_by_name<'a>(word: &str, catalog: &'a [CatalogEntry]) -> Option<&'a CatalogEntry> {
    let mut w = word.to_ascii_lowercase();
    loop {
        let by_name = (catalog.iter().find(|e| e.name == w))
            .or_else(|| catalog.iter().find(|e| e.aliases.contains(&w)));
        let by_language = || {
            let c = canonical(&w)?;
            catalog.iter().find(|e| entry_language(e) == Some(c))
        };
        if let Some(e) = by_name.or_else(by_language) {
            return Some(e);
        }
        let trimmed = w.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        if trimmed.len() == w.len() || trimmed.is_empty() {
            return None;
        }
        w = trimmed.to_string();
    }
}

fn shebang(code: &str, catalog: &[CatalogEntry]) -> Option<String> {
    let first = code.lines().next()?.strip_prefix("#!")?;
    let mut words = first.split_whitespace();
    let mut prog = words.next()?.rsplit('/').next()?;
    if prog == "env" {
        prog = words.find(|w| !w.starts_with('-') && !w.contains('='))?;
    }
    served_by_name(prog, catalog).map(|e| e.name.clone())
}

/// One served entry per class of the model: variants of a language
/// (`sh` beside `bash`) do not compete with it on the same evidence. The
/// entry named as the language speaks for it; else the variant the synonyms
/// list first (plain Scheme is `scheme-guile` before `scheme-chicken`),
/// whatever the catalog's order, so every caller resolves a language the
/// same way. Sorted by class.
fn representatives<'a>(m: &Model, catalog: &'a [CatalogEntry]) -> Vec<(usize, &'a CatalogEntry)> {
    let mut chosen: Vec<(usize, &CatalogEntry)> = Vec::new();
    for e in catalog {
        let Some(class) = entry_language(e).and_then(|l| m.class(l)) else {
            continue;
        };
        match chosen.iter_mut().find(|(c, _)| *c == class) {
            Some(slot)
                if variant_rank(e, &m.classes[class]) < variant_rank(slot.1, &m.classes[class]) =>
            {
                slot.1 = e
            }
            Some(_) => {}
            None => chosen.push((class, e)),
        }
    }
    chosen.sort_by_key(|(c, _)| *c);
    chosen
}

/// Calibrated probabilities of the served languages for `code`, best first
/// (ties by name); empty when the model knows nothing of the text. A
/// language whose grammar rejects the text ([`grammar::ruled_out`]) is no
/// candidate, unless every one is.
fn content_scores(code: &str, catalog: &[CatalogEntry]) -> Vec<(String, f64)> {
    let m = model::builtin();
    let mut chosen = representatives(m, catalog);
    let excluded = grammar::ruled_out(code);
    let allowed: Vec<_> = (chosen.iter().copied())
        .filter(|(c, _)| !excluded.contains(&m.classes[*c].as_str()))
        .collect();
    if !allowed.is_empty() {
        chosen = allowed;
    }
    let candidates: Vec<usize> = chosen.iter().map(|(c, _)| *c).collect();
    if candidates.is_empty() {
        return vec![];
    }
    let scores = m.score(code, &candidates);
    if scores.matched == 0 {
        return vec![];
    }
    let mut out: Vec<(String, f64)> = chosen
        .iter()
        .zip(m.probabilities(&scores))
        .map(|((_, e), p)| (e.name.clone(), p))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The features of `code` that count most for the canonical `language`,
/// with what each adds: why the detector decided as it did.
pub fn explain(code: &str, language: &str) -> Vec<(String, f64)> {
    let m = model::builtin();
    match canonical(language).and_then(|l| m.class(l)) {
        Some(c) => m.explain(code, c),
        None => vec![],
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Detects the language of `code` among the served ones.
pub fn detect(code: &str, catalog: &[CatalogEntry]) -> Option<Detection> {
    detect_named(code, None, catalog)
}

/// The served languages whose `extensions` hold the extension of
/// `file_name` (case-insensitive), in catalog order.
fn by_extension<'a>(file_name: &str, catalog: &'a [CatalogEntry]) -> Vec<&'a CatalogEntry> {
    let Some((stem, ext)) = file_name.rsplit_once('.') else {
        return vec![];
    };
    if stem.is_empty() || ext.is_empty() {
        return vec![];
    }
    catalog
        .iter()
        .filter(|e| e.extensions.iter().any(|x| x.eq_ignore_ascii_case(ext)))
        .collect()
}

/// Detects the language of `code`, named `file_name` when the caller gave
/// one, among the served ones: a shebang first (what the kernel would
/// run); then the file name's extension when exactly one served language
/// claims it; then syntax only one served language has ([`signature`]);
/// when several languages claim the extension (`.h`), the content decides
/// among them; otherwise the content decides among all.
pub fn detect_named(
    code: &str,
    file_name: Option<&str>,
    catalog: &[CatalogEntry],
) -> Option<Detection> {
    if let Some(language) = shebang(code, catalog) {
        return Some(Detection {
            language,
            method: "shebang",
            confidence: 1.0,
            alternatives: vec![],
        });
    }
    let claimed = file_name
        .map(|n| by_extension(n, catalog))
        .unwrap_or_default();
    if let [only] = claimed.as_slice() {
        return Some(Detection {
            language: only.name.clone(),
            method: "extension",
            confidence: 1.0,
            alternatives: vec![],
        });
    }
    let signed: Vec<(&signature::Signature, String)> = signature::find(code)
        .into_iter()
        .filter_map(|s| Some((s, served_by_name(s.language, catalog)?.name.clone())))
        .filter(|(_, name)| claimed.is_empty() || claimed.iter().any(|e| e.name == *name))
        .collect();
    if let Some((_, language)) = signed.iter().find(|(s, _)| s.within.is_empty()) {
        return Some(Detection {
            language: language.clone(),
            method: "syntax",
            confidence: 1.0,
            alternatives: vec![],
        });
    }
    let mut scores = content_scores(code, catalog);
    if !claimed.is_empty() {
        scores.retain(|(name, _)| claimed.iter().any(|e| e.name == *name));
        let total: f64 = scores.iter().map(|s| s.1).sum();
        if total <= 0.0 {
            // Nothing in the content tells them apart: the first claimant,
            // with the others as alternatives.
            let share = round3(1.0 / claimed.len() as f64);
            return Some(Detection {
                language: claimed[0].name.clone(),
                method: "extension",
                confidence: share,
                alternatives: claimed[1..]
                    .iter()
                    .map(|e| (e.name.clone(), share))
                    .collect(),
            });
        }
        for s in &mut scores {
            s.1 /= total;
        }
    }
    let mut ranked = scores.into_iter().map(|(n, p)| (n, round3(p))).peekable();
    let (best, confidence) = ranked.peek()?.clone();
    let family = canonical(&best).or_else(|| {
        let e = catalog.iter().find(|e| e.name == best)?;
        entry_language(e)
    });
    let refined = signed
        .iter()
        .find(|(s, _)| family.is_some_and(|f| s.within.contains(&f)));
    let (language, method) = match refined {
        Some((_, dialect)) => (dialect.clone(), "syntax"),
        None => (ranked.next()?.0, "content"),
    };
    Some(Detection {
        language,
        method,
        confidence,
        alternatives: ranked
            .filter(|(_, c)| *c > 0.0)
            .take(ALTERNATIVES)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scheme_resolves_to_the_same_variant_whatever_the_catalog_order() {
        let entry = |name: &str, aliases: &[&str]| CatalogEntry {
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            version: None,
            extensions: vec![],
            pools: vec![],
        };
        let code = "(define (square x) (* x x))\n(display (square 7))\n(newline)\n";
        let mut cat = vec![
            entry("racket", &["rkt"]),
            entry("scheme-chicken", &["chicken"]),
            entry("scheme-guile", &["guile", "scheme"]),
        ];
        for _ in 0..3 {
            let d = detect(code, &cat).unwrap();
            assert_eq!(
                d.language,
                "scheme-guile",
                "catalog order {:?}",
                cat.iter().map(|e| &e.name).collect::<Vec<_>>()
            );
            cat.rotate_left(1);
        }
        cat.retain(|e| e.name != "scheme-guile");
        assert_eq!(detect(code, &cat).unwrap().language, "scheme-chicken");
    }

    #[test]
    fn a_file_name_names_the_language_its_extension_belongs_to() {
        let mut cat = catalog();
        let ext = |cat: &mut Vec<CatalogEntry>, name: &str, list: &[&str]| {
            let e = cat.iter_mut().find(|e| e.name == name).unwrap();
            e.extensions = list.iter().map(|s| s.to_string()).collect();
        };
        ext(&mut cat, "python", &["py"]);
        ext(&mut cat, "lua", &["lua", "x"]);
        ext(&mut cat, "perl", &["pl", "x"]);
        // Content alone reads this as python; the name says lua.
        let d = detect_named("print(1)", Some("Main.LUA"), &cat).unwrap();
        assert_eq!((d.language.as_str(), d.method), ("lua", "extension"));
        // A shebang beats the name, as it would on a real system.
        let d = detect_named("#!/usr/bin/env python3\nx", Some("a.lua"), &cat).unwrap();
        assert_eq!(d.method, "shebang");
        // Two claimants: the content decides between them only.
        let d = detect_named("my $x = 1; print \"$x\\n\";", Some("a.x"), &cat).unwrap();
        assert_eq!((d.language.as_str(), d.method), ("perl", "content"));
        let d = detect_named("", Some("a.x"), &cat).unwrap();
        assert_eq!((d.language.as_str(), d.method), ("lua", "extension"));
        assert_eq!(d.alternatives, [("perl".to_string(), 0.5)]);
        // No claimant, no extension, or a dot file: the content decides.
        for name in ["a.txt", "Makefile", ".py"] {
            let d = detect_named("print(1)", Some(name), &cat).unwrap();
            assert_eq!(d.method, "content", "{name}");
        }
    }

    #[test]
    fn a_language_s_own_syntax_names_it() {
        let cat = served();
        let d = guess(
            "Hello\n++++++++[>++++[>++>+++>+++>+<<<<-]>+>+>->>+[<]<-]>>.>---.+++++++..+++.\n",
        );
        assert_eq!(
            (d.language.as_str(), d.method, d.confidence),
            ("brainfuck", "syntax", 1.0)
        );
        assert!(d.is_sure());
        // zsh's parameter flags make what reads as shell zsh, with the
        // model's confidence in shell and bash among the alternatives.
        let zsh = "#!/usr/bin/env -S tool\nfor f in ${(f)\"$(ls -1)\"}; do\n  echo \"file: $f\"\ndone\nsetopt extendedglob\n";
        let d = guess(zsh);
        assert_eq!((d.language.as_str(), d.method), ("zsh", "syntax"));
        assert_eq!(d.alternatives[0].0, "bash");
        // The same flags in another language's string are not zsh.
        let groovy = "def dict = (0..<256).inject([:]) { map, ch -> map[ch] = \"${(char)ch}\"; map }\nprintln dict.size()\n";
        assert_ne!(guess(groovy).language, "zsh");
        // An extension several languages claim keeps the signature to them.
        let mut cat2 = cat.clone();
        for e in &mut cat2 {
            if e.name == "c" || e.name == "cpp" {
                e.extensions = vec!["h".into()];
            }
        }
        let d = detect_named(
            "++++++++[>++++[>++>+++>+++>+<<<<-]>+>+>->>+[<]<-]>>.>---.+++++++..+++.",
            Some("x.h"),
            &cat2,
        )
        .unwrap();
        assert_ne!(d.language, "brainfuck");
    }

    fn catalog() -> Vec<CatalogEntry> {
        ["python:py,python3", "bash:sh", "lua:lua5.4", "perl:"]
            .iter()
            .map(|s| {
                let (name, aliases) = s.split_once(':').unwrap();
                CatalogEntry {
                    name: name.into(),
                    aliases: aliases
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(String::from)
                        .collect(),
                    version: None,
                    extensions: vec![],
                    pools: vec![],
                }
            })
            .collect()
    }

    #[test]
    fn shebangs() {
        let c = catalog();
        assert_eq!(
            detect("#!/usr/bin/env python3\nx", &c).unwrap().language,
            "python"
        );
        assert_eq!(
            detect("#!/usr/bin/python3.11 -u\n", &c).unwrap().language,
            "python"
        );
        assert_eq!(detect("#!/bin/sh\n", &c).unwrap().language, "bash");
        assert_eq!(
            detect("#!/usr/bin/env -S lua5.4\n", &c).unwrap().language,
            "lua"
        );
        // An interpreter not served names nothing: the content decides.
        let d = detect("#!/usr/bin/env ruby\nputs 1\n", &c);
        assert!(d.is_none_or(|d| d.method == "content"));
    }

    #[test]
    fn content() {
        let c = catalog();
        let py = "import sys\n\ndef main():\n    for i in range(3):\n        print(i)\n\nif __name__ == '__main__':\n    main()\n";
        let d = detect(py, &c).unwrap();
        assert_eq!(d.language, "python");
        assert!(d.confidence > 0.5, "{d:?}");
        let sh = "for f in *; do\n  if [ -f \"$f\" ]; then\n    echo \"$f\"\n  fi\ndone\n";
        assert_eq!(detect(sh, &c).unwrap().language, "bash");
        let lua = "local t = {}\nfor k, v in pairs(t) do\n  io.write(k, v)\nend\n";
        assert_eq!(detect(lua, &c).unwrap().language, "lua");
        let pl = "use strict;\nmy $x = <STDIN>;\nprint \"$x\";\n";
        assert_eq!(detect(pl, &c).unwrap().language, "perl");
        assert!(detect("", &c).is_none());
        // What the end-to-end test of /run sends.
        let e2e = "def f(x):\n    return x * 2\n\nprint(f(21))\n";
        let d = detect(e2e, &c).unwrap();
        assert_eq!(d.language, "python");
        assert!(d.is_sure(), "/run runs it rather than asking: {d:?}");
    }

    /// Every language the service can serve, as the accuracy command uses.
    fn served() -> Vec<CatalogEntry> {
        crate::tools::accuracy::served()
    }

    fn guess(code: &str) -> Detection {
        detect(code, &served()).unwrap_or_else(|| panic!("nothing detected in {code:?}"))
    }

    #[test]
    fn ambiguous_one_liners_are_unsure_and_name_alternatives() {
        let d = guess("print(1)\n");
        assert!(!d.is_sure(), "{d:?}");
        let named: Vec<&str> = std::iter::once(d.language.as_str())
            .chain(d.alternatives.iter().map(|a| a.0.as_str()))
            .collect();
        for likely in ["python", "lua", "r"] {
            assert!(named.contains(&likely), "{d:?}");
        }
        assert!(d.alternatives.iter().all(|a| a.1 <= d.confidence), "{d:?}");
    }

    #[test]
    fn clear_programs_are_sure() {
        let cases = [
            (
                "go",
                "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
            ),
            (
                "java",
                "public class Main {\n  public static void main(String[] args) {\n    System.out.println(\"hi\");\n  }\n}\n",
            ),
            ("php", "<?php\necho \"hi\";\n"),
            (
                "rust",
                "use std::io;\n\nfn main() {\n    let mut s = String::new();\n    io::stdin().read_line(&mut s).unwrap();\n    println!(\"{}\", s.trim());\n}\n",
            ),
        ];
        for (language, code) in cases {
            let d = guess(code);
            assert_eq!(d.language, language, "{d:?}");
            assert!(d.confidence > 0.8, "{d:?}");
        }
    }

    #[test]
    fn near_neighbours() {
        let cases = [
            (
                "c",
                "#include <stdio.h>\n\nint main(void) {\n    printf(\"%d\\n\", 1);\n    return 0;\n}\n",
            ),
            (
                "cpp",
                "#include <iostream>\n#include <vector>\n\nint main() {\n    std::vector<int> v{1, 2};\n    std::cout << v.size() << std::endl;\n}\n",
            ),
            (
                "javascript",
                "const fs = require('fs');\nmodule.exports = function (a, b) {\n  return a === b;\n};\n",
            ),
            (
                "typescript",
                "export interface User {\n  name: string;\n  age?: number;\n}\nexport function greet(u: User): string {\n  return `hi ${u.name}`;\n}\n",
            ),
            (
                "ruby",
                "class Greeter < Base\n  attr_reader :name\n  def greet\n    puts \"hi #{name}\"\n  end\nend\n",
            ),
            (
                "lua",
                "local M = {}\nfunction M.greet(name)\n  if name ~= nil then\n    print(\"hi \" .. name)\n  end\nend\nreturn M\n",
            ),
            (
                "perl",
                "use strict;\nuse warnings;\nmy @xs = map { $_ * 2 } @ARGV;\nprint \"@xs\\n\";\n",
            ),
            (
                "bash",
                "for f in \"$@\"; do\n  if [ -f \"$f\" ]; then\n    echo \"$f\"\n  fi\ndone\n",
            ),
            (
                "r",
                "xs <- c(1, 2, 3)\nsq <- function(x) x^2\nprint(sapply(xs, sq))\n",
            ),
            (
                "sql",
                "CREATE TABLE users (\n  id INTEGER PRIMARY KEY,\n  name VARCHAR(40) NOT NULL\n);\nSELECT name FROM users WHERE id = 1;\n",
            ),
            (
                "kotlin",
                "fun main() {\n    val xs = listOf(1, 2)\n    println(xs.size)\n}\n",
            ),
            (
                "haskell",
                "module Main where\n\nmain :: IO ()\nmain = putStrLn \"hi\"\n",
            ),
            (
                "elixir",
                "defmodule Hello do\n  def hi(name) do\n    IO.puts(\"hi #{name}\")\n  end\nend\n",
            ),
        ];
        for (language, code) in cases {
            assert_eq!(guess(code).language, language, "{code}");
        }
    }

    #[test]
    fn only_served_languages_and_their_own_names() {
        let c = catalog();
        let ruby = "class A < B\n  attr_reader :x\n  def y\n    puts \"#{x}\"\n  end\nend\n";
        if let Some(d) = detect(ruby, &c) {
            assert!(c.iter().any(|e| e.name == d.language), "{d:?}");
        }
        // A catalog that calls JavaScript `node` gets `node` back.
        let node = vec![CatalogEntry {
            name: "node".into(),
            aliases: vec![],
            version: None,
            extensions: vec![],
            pools: vec![],
        }];
        let d = detect("const x = require('x');\nmodule.exports = x;\n", &node).unwrap();
        assert_eq!(d.language, "node");
        assert_eq!(
            detect("#!/usr/bin/env nodejs\n1\n", &node)
                .unwrap()
                .language,
            "node"
        );
    }

    #[test]
    fn variants_of_a_language_do_not_split_its_confidence() {
        let mut c = served();
        c.push(CatalogEntry {
            name: "sh".into(),
            aliases: vec![],
            version: None,
            extensions: vec![],
            pools: vec![],
        });
        let code = "for f in \"$@\"; do\n  if [ -f \"$f\" ]; then\n    echo \"$f\"\n  fi\ndone\n";
        let d = detect(code, &c).unwrap();
        assert_eq!(d.language, "bash");
        assert!(d.alternatives.iter().all(|a| a.0 != "sh"), "{d:?}");
        assert_eq!(detect("#!/bin/sh\necho hi\n", &c).unwrap().language, "sh");
    }

    #[test]
    fn shebangs_by_interpreter_synonyms() {
        let c = served();
        for (line, language) in [
            ("#!/usr/bin/env node", "javascript"),
            ("#!/usr/bin/Rscript --vanilla", "r"),
            ("#!/usr/bin/tclsh8.6", "tcl"),
            ("#!/usr/bin/awk -f", "awk"),
            ("#!/bin/dash", "sh"),
            ("#!/usr/bin/pypy3", "pypy"),
        ] {
            let d = detect(&format!("{line}\nx\n"), &c).unwrap();
            assert_eq!((d.language.as_str(), d.method), (language, "shebang"));
        }
    }

    #[test]
    fn deterministic_and_bounded() {
        let big = "local x = 1\n".repeat(20_000);
        let a = guess(&big);
        assert_eq!(a, guess(&big));
        assert_eq!(a.language, "lua");
        assert!((0.0..=1.0).contains(&a.confidence));
    }

    #[test]
    fn names_are_well_formed() {
        let m = model::builtin();
        for class in &m.classes {
            assert_eq!(canonical(class), Some(class.as_str()));
        }
        // Every served language is a class of the model or a named variant
        // of one, or has a signature, or else is listed as told by its
        // shebang only.
        for e in served() {
            let known = entry_language(&e).is_some_and(|c| m.class(c).is_some());
            let signed = signature::languages().any(|l| l == e.name);
            let shebang_only = super::super::names::SHEBANG_ONLY.contains(&e.name.as_str());
            assert!(
                (known || signed) != shebang_only,
                "{}: a class or a signature exactly when not listed as shebang-only",
                e.name
            );
        }
        for (synonym, language) in SYNONYMS {
            assert_ne!(synonym, language);
        }
    }
}
