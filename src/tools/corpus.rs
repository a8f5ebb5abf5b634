//! `unsandbox detect-accuracy`: reads a labelled corpus (as built by
//! `tests/detection/corpus.sh`: `<language>/<n>` files without extensions,
//! and an optional `index.tsv` naming where each came from), runs the
//! detector on every file and prints the accuracy. The scoring itself is
//! [`super::accuracy`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::accuracy::{self, Outcome};
use crate::languages::detect::{self, detect};
use crate::languages::grammar;

/// Settings of `detect-accuracy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectAccuracyArgs {
    /// Corpus folder: one sub-folder per language, named as the language,
    /// holding the sample files (`tests/detection/corpus.sh` builds one).
    #[arg(long, env = "UNSANDBOX_DETECTION_CORPUS")]
    pub corpus: PathBuf,
    /// Exit non-zero when the overall (micro) top-1 accuracy is below this.
    #[arg(long, env = "UNSANDBOX_DETECTION_MIN_ACCURACY", default_value_t = 0.95)]
    pub min_accuracy: f64,
    /// Only these languages of the corpus (comma-separated; default all).
    /// The catalog keeps every served language either way.
    #[arg(long, env = "UNSANDBOX_DETECTION_LANGUAGES", value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Remove a first line that is a shebang before detecting, to measure
    /// content detection alone.
    #[arg(
        long,
        env = "UNSANDBOX_DETECTION_STRIP_SHEBANG",
        default_value_t = false
    )]
    pub strip_shebang: bool,
    /// Also print each wrong answer with its file, where it came from, and
    /// the features that counted most for the answer and for the truth.
    #[arg(long, default_value_t = false)]
    pub show_misses: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no sample files in {0} (build one with tests/detection/corpus.sh)")]
    Empty(PathBuf),
    #[error("overall accuracy {accuracy:.3} is below the target {target:.3}")]
    BelowTarget { accuracy: f64, target: f64 },
}

/// A labelled sample: language, file name within the corpus, content.
pub(crate) struct Sample {
    pub label: String,
    pub file: String,
    pub code: String,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Every sample of the corpus, languages sorted by name, files by number.
pub(crate) fn read_corpus(dir: &Path, only: &[String]) -> Result<Vec<Sample>, CorpusError> {
    let mut languages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    languages.sort();
    let mut out = Vec::new();
    for lang_dir in languages {
        let label = lang_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !only.is_empty() && !only.contains(&label) {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&lang_dir)
            .map_err(read_err(&lang_dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        let number = |p: &PathBuf| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            (name.parse::<u64>().unwrap_or(u64::MAX), name.to_string())
        };
        files.sort_by_key(number);
        for path in files {
            let bytes = std::fs::read(&path).map_err(read_err(&path))?;
            out.push(Sample {
                file: format!("{label}/{}", number(&path).1),
                label: label.clone(),
                code: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
    }
    Ok(out)
}

/// The rows of a corpus' `index.tsv` (file, language, source, path) that
/// have at least `columns` columns; none when it has no index.
fn index_rows(dir: &Path, columns: usize) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("index.tsv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').map(String::from).collect::<Vec<_>>())
        .filter(|cols| cols.len() >= columns)
        .collect()
}

/// `index.tsv`: corpus file → its source (package or collection).
pub(crate) fn read_sources(dir: &Path) -> HashMap<String, String> {
    index_rows(dir, 3)
        .into_iter()
        .map(|c| (c[0].clone(), c[2].clone()))
        .collect()
}

/// The collection a corpus file's source belongs to: Exercism, Linguist,
/// Piston, Rosetta Code, Sample Programs, or else a Debian package.
pub(crate) fn group_of(source: &str) -> String {
    match source.split('/').next().unwrap_or(source) {
        g @ ("exercism" | "linguist" | "piston" | "rosetta" | "sample-programs"
        | "thealgorithms" | "benchmarks") => g.to_string(),
        _ => "debian".to_string(),
    }
}

/// The sources a corpus' files came from, with how many each: what set
/// the report is about.
fn describe_sources(dir: &Path) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for source in read_sources(dir).values() {
        *counts.entry(group_of(source)).or_default() += 1;
    }
    if counts.is_empty() {
        return "no index.tsv".into();
    }
    let shown: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    shown.join(", ")
}

/// `index.tsv`: corpus file → "package path", when the corpus has one.
fn read_index(dir: &Path) -> HashMap<String, String> {
    index_rows(dir, 4)
        .into_iter()
        .map(|c| (c[0].clone(), format!("{} {}", c[2], c[3])))
        .collect()
}

/// The features that counted most for `language` in `code`, for reading misses.
fn top_features(code: &str, language: &str) -> String {
    let mut found = detect::explain(code, language);
    found.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let total: f64 = found.iter().map(|f| f.1).sum();
    let shown: Vec<String> = found
        .iter()
        .take(8)
        .map(|(f, s)| format!("{f:?} {s:+.1}"))
        .collect();
    format!("{total:.1} = {}", shown.join(", "))
}

/// Runs the measurement and prints the report; an error when the accuracy
/// is below the target.
pub fn run(args: &DetectAccuracyArgs) -> Result<(), CorpusError> {
    let samples = read_corpus(&args.corpus, &args.languages)?;
    if samples.is_empty() {
        return Err(CorpusError::Empty(args.corpus.clone()));
    }
    let catalog = accuracy::served();
    let index = read_index(&args.corpus);

    let mut outcomes = Vec::with_capacity(samples.len());
    let mut content_only = Vec::new();
    // Grammar rules: how often each ruled a language out, and the files
    // whose own language one ruled out (a wrong rule, or a wrong label).
    let mut ruled: BTreeMap<&str, usize> = BTreeMap::new();
    let mut own_ruled_out = Vec::new();
    let (mut total, mut slowest) = (Duration::ZERO, Duration::ZERO);
    for s in &samples {
        let stripped = accuracy::strip_shebang(&s.code);
        let code = if args.strip_shebang {
            stripped.unwrap_or(&s.code)
        } else {
            &s.code
        };
        for language in grammar::ruled_out(code) {
            *ruled.entry(language).or_default() += 1;
            if detect::canonical(&s.label) == Some(language) {
                own_ruled_out.push(s.file.as_str());
            }
        }
        let started = Instant::now();
        let d = detect(code, &catalog);
        let took = started.elapsed();
        total += took;
        slowest = slowest.max(took);
        let outcome = Outcome {
            label: s.label.clone(),
            guess: d.as_ref().map(|d| d.language.clone()),
            confidence: d.as_ref().map_or(0.0, |d| d.confidence),
        };
        if args.show_misses && !outcome.correct() {
            let d = d.as_ref();
            println!(
                "miss {:<16} as {:<12} {:.2} {:?}  {}",
                s.file,
                outcome.guess.as_deref().unwrap_or("none"),
                outcome.confidence,
                d.map(|d| &d.alternatives),
                index.get(&s.file).map_or("", String::as_str)
            );
            for language in [outcome.guess.as_deref().unwrap_or("none"), &s.label] {
                println!("     {language}: {}", top_features(code, language));
            }
        }
        // Files with a shebang are also measured without it, unless that is
        // what the whole run does already.
        if let (Some(rest), false) = (stripped, args.strip_shebang) {
            let d = detect(rest, &catalog);
            content_only.push(Outcome {
                label: s.label.clone(),
                guess: d.as_ref().map(|d| d.language.clone()),
                confidence: d.map_or(0.0, |d| d.confidence),
            });
        }
        outcomes.push(outcome);
    }

    let report = accuracy::score(&outcomes);
    println!(
        "corpus: {} ({})",
        args.corpus.display(),
        describe_sources(&args.corpus)
    );
    print!("{}", accuracy::render(&report));
    let model = crate::languages::model::builtin();
    let learned: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| {
            detect::canonical(&o.label).is_some_and(|c| model.class(c).is_some())
                || crate::languages::signature::languages().any(|l| l == o.label)
        })
        .cloned()
        .collect();
    let known = accuracy::score(&learned);
    println!(
        "languages with content features (the model's classes and the signatures'): {:.1}% ({} of {} files, {} languages); told by shebang only: {}",
        100.0 * known.micro(),
        known.correct,
        known.files,
        known.rows.len(),
        crate::languages::names::SHEBANG_ONLY.join(" ")
    );
    print!("{}", accuracy::confusions(&outcomes, 15));
    let ruled: Vec<String> = ruled.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!(
        "grammar rules ruled out: {}; a file's own language: {}{}",
        if ruled.is_empty() {
            "none".to_string()
        } else {
            ruled.join(", ")
        },
        own_ruled_out.len(),
        if own_ruled_out.is_empty() {
            String::new()
        } else {
            format!(" ({})", own_ruled_out.join(" "))
        }
    );
    print!(
        "{}",
        accuracy::calibration(&outcomes, crate::languages::model::builtin().threshold)
    );
    if args.strip_shebang {
        println!("(shebang lines removed: content detection alone)");
    } else if !content_only.is_empty() {
        let c = accuracy::score(&content_only);
        println!(
            "files with a shebang: {}; without that line, content detection gets {:.1}% ({} of {})",
            c.files,
            100.0 * c.micro(),
            c.correct,
            c.files
        );
    }
    println!(
        "detection time: {:.1} ms for {} files, {:.0} µs per file on average, {:.0} µs at most",
        total.as_secs_f64() * 1e3,
        samples.len(),
        total.as_secs_f64() * 1e6 / samples.len() as f64,
        slowest.as_secs_f64() * 1e6
    );
    if report.micro() < args.min_accuracy {
        return Err(CorpusError::BelowTarget {
            accuracy: report.micro(),
            target: args.min_accuracy,
        });
    }
    Ok(())
}
