//! Tells the language of a program: from its shebang when it has one, else
//! from weighted features of its text. Only languages being served are
//! candidates. Pure.

use crate::agent::CatalogEntry;

/// A detected language, how sure the detector is, and what else it considered.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub language: String,
    /// `shebang` or `content`.
    pub method: &'static str,
    /// 0 to 1.
    pub confidence: f64,
    /// Runners-up with their confidence, best first.
    pub alternatives: Vec<(String, f64)>,
}

/// Content features: (language, pattern, weight). A pattern starting with
/// `^` must start a line (after indentation); other patterns match anywhere.
const FEATURES: &[(&str, &str, f64)] = &[
    ("python", "^def ", 3.0),
    ("python", "^import ", 1.5),
    ("python", "^from ", 1.5),
    ("python", "print(", 1.5),
    ("python", "^elif ", 4.0),
    ("python", "self.", 1.5),
    ("python", "__name__", 4.0),
    ("python", "):\n", 2.0),
    ("python", "^class ", 1.0),
    ("python", "None", 1.0),
    ("python", "True", 0.5),
    ("python", "lambda ", 1.0),
    ("python", " in range(", 4.0),
    ("python", "f\"", 1.0),
    ("bash", "^echo ", 2.5),
    ("bash", "^fi", 4.0),
    ("bash", "^done", 3.0),
    ("bash", "; then", 4.0),
    ("bash", "; do", 3.0),
    ("bash", "$(", 1.5),
    ("bash", "${", 1.5),
    ("bash", "^export ", 2.0),
    ("bash", "^local ", 2.0),
    ("bash", "[[ ", 3.0),
    ("bash", "^read ", 2.0),
    ("bash", "esac", 4.0),
    ("lua", "^local ", 2.0),
    ("lua", "^end", 2.0),
    ("lua", " then\n", 2.0),
    ("lua", "function ", 1.0),
    ("lua", "io.write(", 4.0),
    ("lua", "io.read(", 4.0),
    ("lua", "..", 0.5),
    ("lua", "~=", 3.0),
    ("lua", "^--", 1.5),
    ("lua", "require(", 1.5),
    ("lua", "string.format(", 3.0),
    ("lua", "pairs(", 3.0),
    ("perl", "^use strict", 5.0),
    ("perl", "^my ", 3.0),
    ("perl", "my $", 3.0),
    ("perl", "^sub ", 3.0),
    ("perl", "=~", 2.0),
    ("perl", "print \"", 1.0),
    ("perl", "$_", 2.0),
    ("perl", "<STDIN>", 5.0),
    ("javascript", "console.log(", 4.0),
    ("javascript", "^const ", 2.0),
    ("javascript", "^let ", 2.0),
    ("javascript", "function ", 1.0),
    ("javascript", "=> ", 1.5),
    ("javascript", "require(", 1.5),
    ("javascript", "===", 2.0),
    ("ruby", "^puts ", 4.0),
    ("ruby", "^end", 1.5),
    ("ruby", ".each do", 4.0),
    ("ruby", "^require '", 2.0),
    ("ruby", "gets", 1.5),
    ("c", "#include <stdio.h>", 5.0),
    ("c", "printf(", 2.0),
    ("c", "int main(", 2.0),
    ("cpp", "#include <iostream>", 6.0),
    ("cpp", "std::", 4.0),
    ("cpp", "cout <<", 4.0),
    ("go", "^package main", 6.0),
    ("go", "fmt.Print", 4.0),
    ("go", ":= ", 2.0),
    ("rust", "fn main()", 5.0),
    ("rust", "println!(", 5.0),
    ("rust", "let mut ", 3.0),
    ("java", "public static void main", 6.0),
    ("java", "System.out.print", 5.0),
    ("php", "<?php", 8.0),
];

fn matches(line_start: &[&str], text: &str, pattern: &str) -> usize {
    match pattern.strip_prefix('^') {
        Some(p) => line_start.iter().filter(|l| l.starts_with(p)).count(),
        None => text.matches(pattern).count(),
    }
}

/// The served language whose name or alias is `word`, trying it without
/// version digits too (`python3.11` → `python3` → `python`).
fn served_by_name<'a>(word: &str, catalog: &'a [CatalogEntry]) -> Option<&'a CatalogEntry> {
    let mut w = word.to_ascii_lowercase();
    loop {
        let alias = match w.as_str() {
            "sh" | "dash" => "bash",
            "node" | "nodejs" => "javascript",
            other => other,
        };
        if let Some(e) = catalog
            .iter()
            .find(|e| e.name == alias || e.aliases.iter().any(|a| a == alias))
        {
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

/// Detects the language of `code` among the served ones.
pub fn detect(code: &str, catalog: &[CatalogEntry]) -> Option<Detection> {
    if let Some(language) = shebang(code, catalog) {
        return Some(Detection {
            language,
            method: "shebang",
            confidence: 1.0,
            alternatives: vec![],
        });
    }
    let starts: Vec<&str> = code.lines().map(str::trim_start).collect();
    let mut scores: Vec<(String, f64)> = catalog
        .iter()
        .map(|e| {
            let score: f64 = FEATURES
                .iter()
                .filter(|(lang, _, _)| *lang == e.name)
                .map(|(_, pat, w)| w * (matches(&starts, code, pat).min(5) as f64).sqrt())
                .sum();
            (e.name.clone(), score)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total: f64 = scores.iter().map(|(_, s)| s).sum();
    let mut it = scores
        .into_iter()
        .map(|(l, s)| (l, (s / total * 1000.0).round() / 1000.0));
    let (language, confidence) = it.next()?;
    Some(Detection {
        language,
        method: "content",
        confidence,
        alternatives: it.take(3).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(detect("#!/usr/bin/env ruby\nputs 1\n", &c).is_none());
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
    }
}
