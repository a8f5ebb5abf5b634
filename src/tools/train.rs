//! `unsandbox detect-train`: learns the language model from labelled
//! corpora (tuning sets only: `tests/detection/sources.py` and
//! `tests/detection/corpus.sh --set tune` build them) and writes it where
//! the build picks it up (`src/languages/model.tsv`).
//!
//! Calibration never looks at the text it is judged on: each source (a
//! group of the corpora: Exercism, Linguist, Piston, Rosetta Code, Debian)
//! is scored by a model trained on the other sources, and the smoothing,
//! temperature, saturation and threshold are chosen on those scores.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use super::corpus::{self, CorpusError};
use crate::languages::model::{self, Model, Scores};
use crate::languages::{grammar, tokens};

/// Settings of `detect-train`.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectTrainArgs {
    /// Tuning corpora (repeat the flag): folders of `<language>/<n>` files
    /// with an `index.tsv` naming each file's source.
    #[arg(long, required = true)]
    pub corpus: Vec<PathBuf>,
    /// Where to write the model.
    #[arg(long, default_value = "src/languages/model.tsv")]
    pub out: PathBuf,
    /// A feature is kept when at least this many documents have it.
    #[arg(long, default_value_t = 3)]
    pub min_documents: usize,
    /// A source's documents of one language weigh at most this much
    /// together, so that no single source shapes a language.
    #[arg(long, default_value_t = 150.0)]
    pub cap: f64,
    /// A language is learned only from at least this many documents; one
    /// with fewer is told by its shebang only (a class learned from a
    /// handful of files would claim every text it has not seen).
    #[arg(long, default_value_t = 20)]
    pub min_class_documents: usize,
    /// A language is learned only from at least this many independent
    /// sources (collections with 5 or more of its documents): a class
    /// learned from one collection learns that collection's habits (one
    /// project's library, one site's snippets), and claims short texts of
    /// other languages that share a word or two with them.
    #[arg(long, default_value_t = 2)]
    pub min_sources: usize,
    /// The threshold is the lowest confidence at or above which the
    /// held-out-source answers are right at least this often.
    #[arg(long, default_value_t = 0.95)]
    pub precision: f64,
    /// Score without the grammar rules, to measure what they add (the
    /// detector always applies them).
    #[arg(long)]
    pub without_grammar: bool,
}

/// One training document.
struct Doc {
    class: usize,
    group: String,
    hashes: Vec<u32>,
    /// The languages its syntax rules out ([`grammar::ruled_out`]).
    ruled_out: Vec<&'static str>,
}

/// A source counts towards `--min-sources` for a language with this many
/// of its documents.
const SOURCE_DOCUMENTS: usize = 5;

/// Which classes the model learns: those with enough documents, from
/// enough independent sources.
fn learnable(docs: &[Doc], classes: usize, args: &DetectTrainArgs) -> Vec<bool> {
    let mut sizes = vec![0usize; classes];
    let mut per_source: HashMap<(usize, &str), usize> = HashMap::new();
    for d in docs {
        sizes[d.class] += 1;
        *per_source.entry((d.class, d.group.as_str())).or_default() += 1;
    }
    let mut sources = vec![0usize; classes];
    for ((class, _), n) in &per_source {
        sources[*class] += usize::from(*n >= SOURCE_DOCUMENTS);
    }
    (0..classes)
        .map(|c| sizes[c] >= args.min_class_documents && sources[c] >= args.min_sources)
        .collect()
}

/// Counts features over `docs` into a model with smoothing `alpha`.
fn train(docs: &[&Doc], classes: &[String], min_documents: usize, cap: f64, alpha: f64) -> Model {
    let mut sizes: HashMap<(usize, &str), usize> = HashMap::new();
    for d in docs {
        *sizes.entry((d.class, d.group.as_str())).or_default() += 1;
    }
    let mut counts: HashMap<u32, Vec<f64>> = HashMap::new();
    let mut documents: HashMap<u32, usize> = HashMap::new();
    for d in docs {
        let weight = (cap / sizes[&(d.class, d.group.as_str())] as f64).min(1.0);
        for h in &d.hashes {
            counts.entry(*h).or_insert_with(|| vec![0.0; classes.len()])[d.class] += weight;
            *documents.entry(*h).or_default() += 1;
        }
    }
    counts.retain(|h, _| documents[h] >= min_documents);
    Model::from_counts(classes.to_vec(), counts, alpha)
}

/// An answer on a held-out source: the candidates' scores and where the
/// truth is among them.
struct Trial {
    scores: Scores,
    truth: usize,
    /// The true class (an index into all classes, where `truth` is one
    /// into the candidates).
    class: usize,
}

/// Every document scored by a model trained without its source.
fn cross_source(
    docs: &[Doc],
    classes: &[String],
    args: &DetectTrainArgs,
    alpha: f64,
) -> Vec<Trial> {
    let groups: Vec<&str> = {
        let set: std::collections::BTreeSet<&str> = docs.iter().map(|d| d.group.as_str()).collect();
        set.into_iter().collect()
    };
    let mut trials = Vec::new();
    for g in groups {
        let rest: Vec<&Doc> = docs.iter().filter(|d| d.group != g).collect();
        let known: HashSet<usize> = rest.iter().map(|d| d.class).collect();
        let mut candidates: Vec<usize> = known.into_iter().collect();
        candidates.sort_unstable();
        let m = train(&rest, classes, args.min_documents, args.cap, alpha);
        for d in docs.iter().filter(|d| d.group == g) {
            // As the detector does: no language the text's syntax rules out.
            let allowed: Vec<usize> = (candidates.iter().copied())
                .filter(|c| !d.ruled_out.contains(&classes[*c].as_str()))
                .collect();
            let Some(truth) = allowed.iter().position(|c| *c == d.class) else {
                continue;
            };
            let scores = m.score_hashes(&d.hashes, &allowed);
            if scores.matched > 0 {
                trials.push(Trial {
                    scores,
                    truth,
                    class: d.class,
                });
            }
        }
    }
    trials
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn accuracy(trials: &[Trial]) -> f64 {
    let right = trials.iter().filter(|t| right(t)).count();
    right as f64 / trials.len().max(1) as f64
}

fn right(t: &Trial) -> bool {
    argmax(&t.scores.log_likelihood) == t.truth
}

/// The mean of the languages' accuracies: every language counts the same,
/// however many documents it has (the target is one for each language).
fn macro_accuracy(trials: &[Trial]) -> f64 {
    let per_class = per_class(trials);
    let sum: f64 = per_class.values().map(|(r, n)| *r as f64 / *n as f64).sum();
    sum / per_class.len().max(1) as f64
}

/// (right, scored) per true class.
fn per_class(trials: &[Trial]) -> BTreeMap<usize, (usize, usize)> {
    let mut per_class: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for t in trials {
        let e = per_class.entry(t.class).or_default();
        e.0 += usize::from(right(t));
        e.1 += 1;
    }
    per_class
}

/// Mean negative log-probability of the truth.
fn log_loss(trials: &[Trial], temperature: f64, saturation: f64) -> f64 {
    let total: f64 = trials
        .iter()
        .map(|t| {
            -model::probabilities(&t.scores, temperature, saturation)[t.truth]
                .max(1e-12)
                .ln()
        })
        .sum();
    total / trials.len().max(1) as f64
}

/// The lowest confidence step at or above which answers are right at least
/// `precision` of the time, with the share of answers it keeps.
fn threshold(trials: &[Trial], temperature: f64, saturation: f64, precision: f64) -> (f64, f64) {
    let answers: Vec<(f64, bool)> = trials
        .iter()
        .map(|t| {
            let p = model::probabilities(&t.scores, temperature, saturation);
            let best = argmax(&p);
            (p[best], best == t.truth)
        })
        .collect();
    for step in 1..20 {
        let t = f64::from(step) * 0.05;
        let kept: Vec<&(f64, bool)> = answers.iter().filter(|a| a.0 >= t).collect();
        let right = kept.iter().filter(|a| a.1).count();
        if !kept.is_empty() && right as f64 / kept.len() as f64 >= precision {
            return (t, kept.len() as f64 / answers.len() as f64);
        }
    }
    (0.95, 0.0)
}

/// Prints how often each grammar rule ruled a language out, and every
/// document whose own language it ruled out: a rule that does so is wrong.
fn report_grammar(docs: &[Doc], classes: &[String], raw: &[(String, String, String, PathBuf)]) {
    let mut fired: BTreeMap<&str, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    let documents = docs.iter().filter(|d| !d.ruled_out.is_empty()).count();
    for (d, r) in docs.iter().zip(raw) {
        for l in &d.ruled_out {
            *fired.entry(l).or_default() += 1;
        }
        if d.ruled_out.contains(&classes[d.class].as_str()) {
            wrong.push(r.3.display().to_string());
        }
    }
    let fired: Vec<String> = fired.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!(
        "grammar rules ruled out languages in {documents} documents: {}; a document's own language: {}",
        fired.join(", "),
        wrong.len()
    );
    for w in wrong {
        println!("  own language ruled out: {w}");
    }
}

/// Trains, calibrates, writes the model and prints what it chose.
pub fn run(args: &DetectTrainArgs) -> Result<(), CorpusError> {
    let mut raw = Vec::new();
    for dir in &args.corpus {
        let sources = corpus::read_sources(dir);
        for s in corpus::read_corpus(dir, &[])? {
            let group = corpus::group_of(sources.get(&s.file).map_or("", String::as_str));
            raw.push((s.label, group, s.code, dir.join(&s.file)));
        }
    }
    if raw.is_empty() {
        return Err(CorpusError::Empty(args.corpus[0].clone()));
    }
    let classes: Vec<String> = {
        let set: std::collections::BTreeSet<&String> = raw.iter().map(|r| &r.0).collect();
        set.into_iter().cloned().collect()
    };
    let docs: Vec<Doc> = raw
        .iter()
        .map(|(label, group, code, _)| Doc {
            class: classes.iter().position(|c| c == label).unwrap_or(0),
            group: group.clone(),
            hashes: tokens::features(code)
                .iter()
                .map(|f| tokens::hash(f))
                .collect(),
            ruled_out: if args.without_grammar {
                vec![]
            } else {
                grammar::ruled_out(code)
            },
        })
        .collect();
    report_grammar(&docs, &classes, &raw);
    let learnable = learnable(&docs, classes.len(), args);
    let dropped: Vec<&str> = (0..classes.len())
        .filter(|c| !learnable[*c])
        .map(|c| classes[c].as_str())
        .collect();
    if !dropped.is_empty() {
        println!(
            "fewer than {} documents or {} sources, so told by shebang only: {}",
            args.min_class_documents,
            args.min_sources,
            dropped.join(" ")
        );
    }
    let kept: Vec<String> = (0..classes.len())
        .filter(|c| learnable[*c])
        .map(|c| classes[c].clone())
        .collect();
    let docs: Vec<Doc> = docs
        .into_iter()
        .filter(|d| learnable[d.class])
        .map(|d| Doc {
            class: kept
                .iter()
                .position(|k| *k == classes[d.class])
                .unwrap_or(0),
            ..d
        })
        .collect();
    let classes = kept;
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &docs {
        *per_group.entry(d.group.as_str()).or_default() += 1;
    }
    println!(
        "{} documents in {} languages from {:?}",
        docs.len(),
        classes.len(),
        per_group
    );

    let mut best: Option<(f64, f64, Vec<Trial>)> = None;
    for alpha in [0.005, 0.01, 0.02, 0.05, 0.1, 0.2] {
        let trials = cross_source(&docs, &classes, args, alpha);
        let acc = macro_accuracy(&trials);
        println!(
            "alpha {alpha}: top-1 {:.1}% per language on average, {:.1}% of {} held-out-source documents",
            100.0 * acc,
            100.0 * accuracy(&trials),
            trials.len()
        );
        if best.as_ref().is_none_or(|b| acc > b.1) {
            best = Some((alpha, acc, trials));
        }
    }
    let (alpha, _, trials) = best.expect("at least one alpha tried");
    let weak: Vec<String> = per_class(&trials)
        .into_iter()
        .filter(|(_, (r, n))| (*r as f64) < 0.9 * *n as f64)
        .map(|(c, (r, n))| format!("{} {r}/{n}", classes[c]))
        .collect();
    println!(
        "under 90% top-1 leave-one-source-out at alpha {alpha}: {}",
        if weak.is_empty() {
            "none".to_string()
        } else {
            weak.join(", ")
        }
    );
    let mut calibration = (1.0, f64::INFINITY, f64::INFINITY);
    for temperature in [1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0] {
        for saturation in [10.0, 20.0, 40.0, 80.0, 160.0, f64::INFINITY] {
            let loss = log_loss(&trials, temperature, saturation);
            if loss < calibration.2 {
                calibration = (temperature, saturation, loss);
            }
        }
    }
    let (temperature, saturation, loss) = calibration;
    let (cut, kept) = threshold(&trials, temperature, saturation, args.precision);
    println!(
        "chosen: alpha {alpha}, temperature {temperature}, saturation {saturation} \
         (log loss {loss:.3}); threshold {cut:.2} keeps {:.1}% of answers at {:.0}% precision",
        100.0 * kept,
        100.0 * args.precision
    );

    let all: Vec<&Doc> = docs.iter().collect();
    let mut m = train(&all, &classes, args.min_documents, args.cap, alpha);
    m.temperature = temperature;
    m.saturation = saturation;
    m.threshold = cut;
    let comment = format!(
        "unsandbox language model, written by `unsandbox detect-train` (do not edit).\n\
         Trained on {} documents in {} languages: {}.\n\
         Rebuild: see tests/detection/README.md.",
        docs.len(),
        classes.len(),
        per_group
            .iter()
            .map(|(g, n)| format!("{g} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::write(&args.out, m.render(&comment)).map_err(|source| CorpusError::Read {
        path: args.out.clone(),
        source,
    })?;
    println!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_group_by_collection() {
        assert_eq!(corpus::group_of("exercism/python"), "exercism");
        assert_eq!(corpus::group_of("linguist"), "linguist");
        assert_eq!(corpus::group_of("rosetta"), "rosetta");
        assert_eq!(corpus::group_of("libpython3.11-stdlib"), "debian");
    }

    #[test]
    fn a_language_is_learned_from_enough_documents_of_two_sources() {
        let doc = |class, group: &str| Doc {
            class,
            group: group.to_string(),
            hashes: vec![],
            ruled_out: vec![],
        };
        let mut docs = Vec::new();
        // 0: 30 documents from one source; 1: 15 and 15 from two; 2: 27
        // and 3 (the second source too small to count); 3: 10 and 5.
        docs.extend((0..30).map(|_| doc(0, "rosetta")));
        docs.extend((0..15).map(|_| doc(1, "rosetta")));
        docs.extend((0..15).map(|_| doc(1, "debian")));
        docs.extend((0..27).map(|_| doc(2, "exercism")));
        docs.extend((0..3).map(|_| doc(2, "linguist")));
        docs.extend((0..10).map(|_| doc(3, "exercism")));
        docs.extend((0..5).map(|_| doc(3, "debian")));
        let args = DetectTrainArgs {
            corpus: vec![],
            out: PathBuf::new(),
            min_documents: 3,
            cap: 150.0,
            min_class_documents: 20,
            min_sources: 2,
            precision: 0.9,
            without_grammar: false,
        };
        assert_eq!(learnable(&docs, 4, &args), [false, true, false, false]);
        let one = DetectTrainArgs {
            min_sources: 1,
            ..args
        };
        assert_eq!(learnable(&docs, 4, &one), [true, true, true, false]);
    }

    #[test]
    fn the_threshold_keeps_the_precise_answers() {
        let trial = |l: Vec<f64>, truth| Trial {
            scores: Scores {
                log_likelihood: l,
                matched: 1,
            },
            truth,
            class: truth,
        };
        // Sure and right, sure and right, unsure and wrong.
        let trials = vec![
            trial(vec![0.0, -10.0], 0),
            trial(vec![-10.0, 0.0], 1),
            trial(vec![0.0, -0.1], 1),
        ];
        let (cut, kept) = threshold(&trials, 1.0, f64::INFINITY, 0.99);
        assert!(cut > 0.525 && cut <= 0.95, "{cut}");
        assert!((kept - 2.0 / 3.0).abs() < 1e-9);
        assert!((accuracy(&trials) - 2.0 / 3.0).abs() < 1e-9);
        // Class 0: two right of two; class 1: one right of two.
        let more = vec![
            trial(vec![0.0, -10.0], 0),
            trial(vec![0.0, -10.0], 0),
            trial(vec![-10.0, 0.0], 1),
            trial(vec![0.0, -10.0], 1),
        ];
        assert!((accuracy(&more) - 0.75).abs() < 1e-9);
        assert!((macro_accuracy(&more) - 0.75).abs() < 1e-9);
        let skewed = vec![
            trial(vec![0.0, -10.0], 0),
            trial(vec![0.0, -10.0], 0),
            trial(vec![0.0, -10.0], 0),
            trial(vec![0.0, -10.0], 1),
        ];
        assert!((accuracy(&skewed) - 0.75).abs() < 1e-9);
        assert!((macro_accuracy(&skewed) - 0.5).abs() < 1e-9);
    }
}
