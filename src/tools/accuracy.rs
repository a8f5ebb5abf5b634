//! Scoring detection on a labelled corpus: per-language and overall top-1
//! accuracy, the most common wrong answers, and how the confidence behaved.
//! Pure; the `detect-accuracy` command ([`super::corpus`]) reads the files.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::agent::CatalogEntry;

/// The polyglot image's LanguageImage: what the service serves, and so
/// what a corpus is measured against (all of its languages are candidates,
/// so that near neighbours compete too).
pub const POLYGLOT: &str = include_str!("../../manifests/polyglot/languageimage.yaml");

/// The catalog a LanguageImage document serves, as the agent builds it
/// (name, aliases, extensions); `with_extensions: false` leaves the
/// extensions out, for corpora whose files have no names.
pub fn catalog_of(image_yaml: &str, with_extensions: bool) -> Result<Vec<CatalogEntry>, String> {
    let image: crate::crd::LanguageImage =
        serde_yaml::from_str(image_yaml).map_err(|e| e.to_string())?;
    let mut out: Vec<CatalogEntry> = image
        .spec
        .languages
        .into_iter()
        .map(|l| CatalogEntry {
            name: l.name,
            aliases: l.aliases,
            version: None,
            extensions: if with_extensions {
                l.extensions
            } else {
                vec![]
            },
            pools: vec![],
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The polyglot image's catalog without extensions.
pub fn served() -> Vec<CatalogEntry> {
    catalog_of(POLYGLOT, false).expect("the polyglot LanguageImage parses")
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
    /// Right when the guess is the label or a variant of the same
    /// language (`scheme-guile` for `scheme`).
    pub fn correct(&self) -> bool {
        let class =
            |n: &str| crate::languages::detect::canonical(n).map_or(n.to_string(), String::from);
        self.guess
            .as_deref()
            .is_some_and(|g| g == self.label || class(g) == class(&self.label))
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

/// The most frequent confusions over the whole corpus, `truth → answer`.
pub fn confusions(outcomes: &[Outcome], top: usize) -> String {
    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| !o.correct()) {
        *pairs
            .entry((o.label.as_str(), o.guess.as_deref().unwrap_or("none")))
            .or_default() += 1;
    }
    let mut pairs: Vec<((&str, &str), usize)> = pairs.into_iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let shown: Vec<String> = pairs
        .iter()
        .take(top)
        .map(|((t, g), n)| format!("{t}→{g} {n}"))
        .collect();
    format!("confusions: {}\n", shown.join(", "))
}

/// How the confidence held up: accuracy per confidence band, and what the
/// service does at `threshold` (answers below it are refused with the
/// likeliest languages, 422 `language_uncertain`).
pub fn calibration(outcomes: &[Outcome], threshold: f64) -> String {
    let mut out = String::from("confidence   files  right\n");
    let bands = [0.0, 0.3, 0.5, 0.7, 0.9, 0.97, 1.0001];
    for w in bands.windows(2) {
        let inside: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.guess.is_some() && o.confidence >= w[0] && o.confidence < w[1])
            .collect();
        let right = inside.iter().filter(|o| o.correct()).count();
        let _ = writeln!(
            out,
            "{:.2}–{:.2} {:>7} {:>6.1}%",
            w[0],
            w[1].min(1.0),
            inside.len(),
            100.0 * right as f64 / inside.len().max(1) as f64
        );
    }
    let sure: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.guess.is_some() && o.confidence >= threshold)
        .collect();
    let right = sure.iter().filter(|o| o.correct()).count();
    let _ = writeln!(
        out,
        "at the threshold {threshold:.2}: {} answered ({:.1}%), {:.1}% of them right; {} refused as uncertain",
        sure.len(),
        100.0 * sure.len() as f64 / outcomes.len().max(1) as f64,
        100.0 * right as f64 / sure.len().max(1) as f64,
        outcomes.len() - sure.len()
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
    fn confusions_and_calibration() {
        let os = [
            o("python", Some("python"), 0.99),
            o("python", Some("ruby"), 0.4),
            o("python", Some("ruby"), 0.5),
            o("c", Some("cpp"), 0.95),
            o("c", None, 0.0),
        ];
        assert_eq!(confusions(&os, 2), "confusions: python→ruby 2, c→cpp 1\n");
        let text = calibration(&os, 0.9);
        assert!(text.contains("0.97–1.00       1  100.0%"), "{text}");
        assert!(text.contains("0.30–0.50       1    0.0%"), "{text}");
        assert!(
            text.contains(
                "at the threshold 0.90: 2 answered (40.0%), 50.0% of them right; 3 refused"
            ),
            "{text}"
        );
    }

    #[test]
    fn empty_report() {
        let r = score(&[]);
        assert_eq!(r.micro(), 0.0);
        assert_eq!(r.macro_avg(), 0.0);
    }

    #[test]
    fn the_served_catalog_is_the_polyglot_image() {
        let c = served();
        assert!(c.len() >= 78, "{}", c.len());
        assert!(
            c.iter()
                .any(|e| e.name == "kotlin" && e.aliases.contains(&"kt".to_string()))
        );
        assert!(c.iter().all(|e| e.extensions.is_empty()));
        let named = catalog_of(POLYGLOT, true).unwrap();
        assert!(
            named
                .iter()
                .any(|e| e.extensions.contains(&"py".to_string()))
        );
        assert!(catalog_of("kind: [", true).is_err());
    }

    #[test]
    fn variants_count_as_their_language() {
        assert!(o("scheme", Some("scheme-guile"), 0.9).correct());
        assert!(o("python", Some("pypy"), 0.9).correct());
        assert!(!o("scheme", Some("racket"), 0.9).correct());
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(strip_shebang("#!/bin/sh\necho hi\n"), Some("echo hi\n"));
        assert_eq!(strip_shebang("#!/bin/sh"), Some(""));
        assert_eq!(strip_shebang("echo hi\n"), None);
    }
}
