//! Scoring detection on a labelled corpus: per-language and overall top-1
//! accuracy, the most common wrong answers, and how the confidence behaved.
//! Pure; the `detect-accuracy` command ([`super::corpus`]) reads the files.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::agent::CatalogEntry;

/// Languages the service can serve (name, aliases): those of the polyglot
/// image (images/polyglot/versions), all candidates when a corpus is
/// measured, so that near neighbours compete too. Languages without content
/// features in the lexicon are told by their shebang only.
pub const SERVED: &[(&str, &[&str])] = &[
    ("python", &["py", "python3"]),
    ("pypy", &["pypy3"]),
    ("javascript", &["js", "node"]),
    ("typescript", &["ts"]),
    ("coffeescript", &["coffee"]),
    ("ruby", &["rb"]),
    ("perl", &["pl"]),
    ("php", &[]),
    ("lua", &["lua5.4"]),
    ("luajit", &[]),
    ("bash", &[]),
    ("sh", &["dash"]),
    ("zsh", &[]),
    ("ksh", &[]),
    ("fish", &[]),
    ("tcsh", &[]),
    ("c", &[]),
    ("cpp", &["c++"]),
    ("objective-c", &["objc"]),
    ("fortran", &["f90"]),
    ("ada", &[]),
    ("d", &[]),
    ("d-ldc", &[]),
    ("modula-2", &[]),
    ("go", &["golang"]),
    ("go-gccgo", &[]),
    ("rust", &["rs"]),
    ("java", &[]),
    ("kotlin", &["kt"]),
    ("scala", &[]),
    ("groovy", &[]),
    ("clojure", &["clj"]),
    ("haskell", &["hs"]),
    ("ocaml", &["ml"]),
    ("erlang", &["erl"]),
    ("elixir", &["ex"]),
    ("r", &["rscript"]),
    ("pascal", &["fpc"]),
    ("cobol", &[]),
    ("nim", &[]),
    ("crystal", &[]),
    ("tcl", &["tclsh"]),
    ("scheme-guile", &["guile"]),
    ("scheme-chicken", &["csi"]),
    ("racket", &[]),
    ("common-lisp", &["sbcl"]),
    ("common-lisp-clisp", &["clisp"]),
    ("prolog", &["swipl"]),
    ("prolog-gnu", &["gprolog"]),
    ("forth", &[]),
    ("awk", &["gawk"]),
    ("sed", &[]),
    ("sql", &["sqlite3"]),
    ("bc", &[]),
    ("octave", &[]),
    ("assembly", &[]),
    ("csharp", &["c#", "cs"]),
    ("vala", &[]),
    ("haxe", &[]),
    ("elisp", &[]),
    ("basic", &[]),
    ("basic-yabasic", &[]),
    ("brainfuck", &[]),
    ("jq", &[]),
    ("raku", &[]),
    ("sml", &[]),
    ("rexx", &[]),
    ("pike", &[]),
    ("algol68", &[]),
    ("icon", &[]),
    ("verilog", &[]),
    ("vhdl", &[]),
    ("newlisp", &[]),
    ("picolisp", &[]),
    ("nickle", &[]),
    ("pari-gp", &[]),
    ("m4", &[]),
    ("ratfor", &[]),
];

/// The measuring catalog: every [`SERVED`] language, plus any of `extra`
/// (the corpus' languages) that is not among them.
pub fn catalog(extra: &[String]) -> Vec<CatalogEntry> {
    let entry = |name: &str, aliases: &[&str]| CatalogEntry {
        name: name.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        version: None,
        // The corpus' files have no names: content only.
        extensions: vec![],
        pools: vec![],
    };
    let mut out: Vec<CatalogEntry> = SERVED.iter().map(|(n, a)| entry(n, a)).collect();
    for x in extra {
        if !out.iter().any(|e| e.name == *x) {
            out.push(entry(x, &[]));
        }
    }
    out
}

/// What the detector said about one labelled file.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The file's true language.
    pub label: String,
    /// The detected language, if any.
    pub guess: Option<String>,
    pub confidence: f64,
}

impl Outcome {
    pub fn correct(&self) -> bool {
        self.guess.as_deref() == Some(self.label.as_str())
    }
}

/// One language's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub language: String,
    pub files: usize,
    pub correct: usize,
    /// Wrong answers with how often, most common first (`none` when nothing was detected).
    pub wrong: Vec<(String, usize)>,
    /// Mean confidence of the right answers.
    pub confidence: f64,
}

impl Row {
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.files)
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    pub files: usize,
    pub correct: usize,
    /// Mean confidence of right answers and of wrong ones.
    pub confidence_right: f64,
    pub confidence_wrong: f64,
}

impl Report {
    /// Overall top-1 accuracy over files (micro average).
    pub fn micro(&self) -> f64 {
        ratio(self.correct, self.files)
    }

    /// Mean of the per-language accuracies (macro average).
    pub fn macro_avg(&self) -> f64 {
        let n = self.rows.len();
        self.rows.iter().map(Row::accuracy).sum::<f64>() / n.max(1) as f64
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Scores the outcomes, one row per label (sorted by name).
pub fn score(outcomes: &[Outcome]) -> Report {
    let mut by_label: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        by_label.entry(o.label.as_str()).or_default().push(o);
    }
    let rows = by_label
        .into_iter()
        .map(|(label, os)| {
            let mut wrong: BTreeMap<&str, usize> = BTreeMap::new();
            for o in os.iter().filter(|o| !o.correct()) {
                *wrong
                    .entry(o.guess.as_deref().unwrap_or("none"))
                    .or_default() += 1;
            }
            let mut wrong: Vec<(String, usize)> =
                wrong.into_iter().map(|(g, n)| (g.to_string(), n)).collect();
            wrong.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Row {
                language: label.to_string(),
                files: os.len(),
                correct: os.iter().filter(|o| o.correct()).count(),
                wrong,
                confidence: mean(os.iter().filter(|o| o.correct()).map(|o| o.confidence)),
            }
        })
        .collect();
    Report {
        rows,
        files: outcomes.len(),
        correct: outcomes.iter().filter(|o| o.correct()).count(),
        confidence_right: mean(
            outcomes
                .iter()
                .filter(|o| o.correct())
                .map(|o| o.confidence),
        ),
        confidence_wrong: mean(
            outcomes
                .iter()
                .filter(|o| !o.correct())
                .map(|o| o.confidence),
        ),
    }
}

/// The report as a table, then the micro and macro averages.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>5} {:>7} {:>7} {:>6}  wrong answers",
        "language", "files", "correct", "top-1", "conf"
    );
    for r in &report.rows {
        let wrong: Vec<String> = r.wrong.iter().map(|(g, n)| format!("{g} {n}")).collect();
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>7} {:>6.1}% {:>6.2}  {}",
            r.language,
            r.files,
            r.correct,
            100.0 * r.accuracy(),
            r.confidence,
            wrong.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "overall (micro): {:.1}% ({} of {} files)",
        100.0 * report.micro(),
        report.correct,
        report.files
    );
    let _ = writeln!(
        out,
        "per-language mean (macro): {:.1}% over {} languages",
        100.0 * report.macro_avg(),
        report.rows.len()
    );
    let _ = writeln!(
        out,
        "mean confidence: {:.2} when right, {:.2} when wrong",
        report.confidence_right, report.confidence_wrong
    );
    out
}

/// `code` without its first line when that is a shebang.
pub fn strip_shebang(code: &str) -> Option<&str> {
    code.starts_with("#!")
        .then(|| code.split_once('\n').map_or("", |(_, rest)| rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(label: &str, guess: Option<&str>, confidence: f64) -> Outcome {
        Outcome {
            label: label.into(),
            guess: guess.map(String::from),
            confidence,
        }
    }

    #[test]
    fn micro_macro_and_wrong_answers() {
        let r = score(&[
            o("python", Some("python"), 0.9),
            o("python", Some("ruby"), 0.4),
            o("python", Some("ruby"), 0.5),
            o("python", None, 0.0),
            o("c", Some("c"), 0.7),
        ]);
        assert_eq!(r.files, 5);
        assert_eq!(r.correct, 2);
        assert!((r.micro() - 0.4).abs() < 1e-9);
        assert!((r.macro_avg() - (0.25 + 1.0) / 2.0).abs() < 1e-9);
        assert_eq!(r.rows[0].language, "c");
        assert_eq!(
            r.rows[1].wrong,
            vec![("ruby".to_string(), 2), ("none".to_string(), 1)]
        );
        assert!((r.confidence_right - 0.8).abs() < 1e-9);
        assert!((r.confidence_wrong - 0.3).abs() < 1e-9);
        let table = render(&r);
        assert!(
            table.contains("python           4       1   25.0%"),
            "{table}"
        );
        assert!(
            table.contains("overall (micro): 40.0% (2 of 5 files)"),
            "{table}"
        );
        assert!(table.contains("macro): 62.5% over 2 languages"), "{table}");
    }

    #[test]
    fn empty_report() {
        let r = score(&[]);
        assert_eq!(r.micro(), 0.0);
        assert_eq!(r.macro_avg(), 0.0);
    }

    #[test]
    fn catalog_has_neighbours_and_extras() {
        let c = catalog(&["python".into(), "zig".into()]);
        assert_eq!(c.iter().filter(|e| e.name == "python").count(), 1);
        assert!(c.iter().any(|e| e.name == "zig"));
        assert!(c.iter().any(|e| e.name == "kotlin"));
        assert_eq!(c.len(), SERVED.len() + 1);
        let mut names: Vec<&str> = SERVED.iter().map(|s| s.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SERVED.len(), "a name twice");
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(strip_shebang("#!/bin/sh\necho hi\n"), Some("echo hi\n"));
        assert_eq!(strip_shebang("#!/bin/sh"), Some(""));
        assert_eq!(strip_shebang("echo hi\n"), None);
    }
}
