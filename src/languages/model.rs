//! The language model: a naive Bayes classifier over the features of
//! [`super::tokens`], with its calibration. `unsandbox detect-train` learns
//! it from labelled corpora (see `tests/detection/`) and writes it as text;
//! the service reads the copy built into the binary ([`builtin`]). Pure.
//!
//! The text form: `#` comment lines, then `key<TAB>value` settings
//! (`alpha`, `temperature`, `saturation`, `threshold`, `classes`, `totals`,
//! `vocabulary`), then one line per feature: its hash in hex and the
//! classes it was seen in, `class:weight` separated by spaces.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::OnceLock;

use super::tokens;

/// A trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The languages it tells apart (canonical names), sorted.
    pub classes: Vec<String>,
    /// Additive smoothing of feature counts.
    pub alpha: f64,
    /// Scores are divided by this before the softmax.
    pub temperature: f64,
    /// Evidence stops growing after this many matched features: a long
    /// program is not surer than a page of it.
    pub saturation: f64,
    /// Below this confidence a detection is not to be acted on.
    pub threshold: f64,
    /// Weighted feature occurrences per class.
    totals: Vec<f64>,
    /// Distinct features known.
    vocabulary: usize,
    /// Feature hash → (class, weighted count), classes ascending.
    features: Table,
}

/// Feature hash → its (class, count) pairs, in three flat arrays sorted by
/// hash: a few bytes a pair, where a map of vectors would take tens.
#[derive(Debug, Clone, PartialEq, Default)]
struct Table {
    hashes: Vec<u32>,
    /// Where each hash's pairs start in `pairs` (one more at the end).
    starts: Vec<u32>,
    pairs: Vec<(u16, f32)>,
}

impl Table {
    fn get(&self, h: u32) -> Option<&[(u16, f32)]> {
        let i = self.hashes.binary_search(&h).ok()?;
        Some(&self.pairs[self.starts[i] as usize..self.starts[i + 1] as usize])
    }

    /// Every hash with its pairs, by hash.
    fn iter(&self) -> impl Iterator<Item = (u32, &[(u16, f32)])> {
        self.hashes.iter().enumerate().map(|(i, h)| {
            (
                *h,
                &self.pairs[self.starts[i] as usize..self.starts[i + 1] as usize],
            )
        })
    }
}

impl From<HashMap<u32, Vec<(u16, f32)>>> for Table {
    fn from(map: HashMap<u32, Vec<(u16, f32)>>) -> Table {
        let mut entries: Vec<(u32, Vec<(u16, f32)>)> = map.into_iter().collect();
        entries.sort_unstable_by_key(|e| e.0);
        let mut t = Table {
            starts: vec![0],
            ..Table::default()
        };
        for (h, pairs) in entries {
            t.hashes.push(h);
            t.pairs.extend(pairs);
            t.starts.push(t.pairs.len() as u32);
        }
        t
    }
}

/// How a text scored: each candidate's log-likelihood, and how many of the
/// text's features the model knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub log_likelihood: Vec<f64>,
    pub matched: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("language model, line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// The model built into this binary.
pub fn builtin() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        Model::parse(include_str!("model.tsv")).expect("the built-in language model parses")
    })
}

impl Model {
    /// A model from weighted counts: `counts[hash][class]`.
    pub fn from_counts(classes: Vec<String>, counts: HashMap<u32, Vec<f64>>, alpha: f64) -> Model {
        let mut totals = vec![0.0; classes.len()];
        let features: HashMap<u32, Vec<(u16, f32)>> = counts
            .into_iter()
            .map(|(h, per_class)| {
                let sparse: Vec<(u16, f32)> = per_class
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0.0)
                    .map(|(i, c)| {
                        totals[i] += c;
                        (i as u16, *c as f32)
                    })
                    .collect();
                (h, sparse)
            })
            .collect();
        Model {
            classes,
            alpha,
            temperature: 1.0,
            saturation: f64::INFINITY,
            threshold: 0.0,
            totals,
            vocabulary: features.len(),
            features: features.into(),
        }
    }

    /// Index of a class by name.
    pub fn class(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }

    /// Scores `code` for the `candidates` (class indices).
    pub fn score(&self, code: &str, candidates: &[usize]) -> Scores {
        let hashes: Vec<u32> = tokens::features(code)
            .iter()
            .map(|f| tokens::hash(f))
            .collect();
        self.score_hashes(&hashes, candidates)
    }

    /// Scores a text given by its feature hashes.
    pub fn score_hashes(&self, hashes: &[u32], candidates: &[usize]) -> Scores {
        let v = self.vocabulary as f64;
        let mut bonus = vec![0.0; self.classes.len()];
        let mut matched = 0usize;
        for h in hashes {
            let Some(seen) = self.features.get(*h) else {
                continue;
            };
            matched += 1;
            for (class, count) in seen {
                bonus[*class as usize] += (1.0 + f64::from(*count) / self.alpha).ln();
            }
        }
        let n = matched as f64;
        let log_likelihood = candidates
            .iter()
            .map(|&c| n * (self.alpha / (self.totals[c] + self.alpha * v)).ln() + bonus[c])
            .collect();
        Scores {
            log_likelihood,
            matched,
        }
    }

    /// Calibrated probabilities of the candidates scored in `s`, in the same
    /// order: a softmax of the log-likelihoods, read at the model's
    /// temperature, with the evidence of a long text capped.
    pub fn probabilities(&self, s: &Scores) -> Vec<f64> {
        probabilities(s, self.temperature, self.saturation)
    }

    /// The features of `code` that count most for `class`: (feature, what it
    /// adds over an unseen feature), strongest first.
    pub fn explain(&self, code: &str, class: usize) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = tokens::features(code)
            .into_iter()
            .filter_map(|f| {
                let seen = self.features.get(tokens::hash(&f))?;
                let count = seen.iter().find(|(c, _)| *c as usize == class)?.1;
                Some((f, (1.0 + f64::from(count) / self.alpha).ln()))
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// The text form (see the module's documentation), features in hash
    /// order so that the same model always reads the same.
    pub fn render(&self, comment: &str) -> String {
        let mut out = String::new();
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "alpha\t{}", self.alpha);
        let _ = writeln!(out, "temperature\t{}", self.temperature);
        let _ = writeln!(out, "saturation\t{}", self.saturation);
        let _ = writeln!(out, "threshold\t{}", self.threshold);
        let _ = writeln!(out, "classes\t{}", self.classes.join("\t"));
        let totals: Vec<String> = self.totals.iter().map(|t| format!("{t:.2}")).collect();
        let _ = writeln!(out, "totals\t{}", totals.join("\t"));
        let _ = writeln!(out, "vocabulary\t{}", self.vocabulary);
        for (h, seen) in self.features.iter() {
            let counts: Vec<String> = seen
                .iter()
                .map(|(c, n)| format!("{c}:{}", trim(*n)))
                .collect();
            let _ = writeln!(out, "{h:08x}\t{}", counts.join(" "));
        }
        out
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Model, ParseError> {
        let mut settings: HashMap<&str, &str> = HashMap::new();
        let mut features = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let err = |reason: &str| ParseError {
                line: i + 1,
                reason: reason.to_string(),
            };
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once('\t').ok_or_else(|| err("no tab"))?;
            if key.chars().all(|c| c.is_ascii_hexdigit()) && key.len() == 8 {
                let h = u32::from_str_radix(key, 16).map_err(|_| err("bad hash"))?;
                let counts = value
                    .split(' ')
                    .map(|pair| {
                        let (c, n) = pair.split_once(':')?;
                        Some((c.parse::<u16>().ok()?, n.parse::<f32>().ok()?))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| err("bad counts"))?;
                features.insert(h, counts);
            } else {
                settings.insert(key, value);
            }
        }
        let get = |key: &str| {
            settings.get(key).copied().ok_or_else(|| ParseError {
                line: 0,
                reason: format!("no {key}"),
            })
        };
        let number = |key: &str| {
            get(key)?.parse::<f64>().map_err(|_| ParseError {
                line: 0,
                reason: format!("{key} is not a number"),
            })
        };
        let classes: Vec<String> = get("classes")?.split('\t').map(String::from).collect();
        let totals = get("totals")?
            .split('\t')
            .map(str::parse::<f64>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ParseError {
                line: 0,
                reason: "bad totals".into(),
            })?;
        if totals.len() != classes.len() {
            return Err(ParseError {
                line: 0,
                reason: "totals and classes differ in number".into(),
            });
        }
        let bad_class = features
            .values()
            .flatten()
            .any(|(c, _): &(u16, f32)| *c as usize >= classes.len());
        if bad_class {
            return Err(ParseError {
                line: 0,
                reason: "a feature names an unknown class".into(),
            });
        }
        Ok(Model {
            classes,
            alpha: number("alpha")?,
            temperature: number("temperature")?,
            saturation: number("saturation")?,
            threshold: number("threshold")?,
            totals,
            vocabulary: number("vocabulary")? as usize,
            features: features.into(),
        })
    }
}

/// [`Model::probabilities`] at a given temperature and saturation.
pub fn probabilities(s: &Scores, temperature: f64, saturation: f64) -> Vec<f64> {
    let Some(best) = s.log_likelihood.iter().copied().reduce(f64::max) else {
        return vec![];
    };
    let n = s.matched.max(1) as f64;
    let scale = (saturation / n).min(1.0) / temperature;
    let weights: Vec<f64> = s
        .log_likelihood
        .iter()
        .map(|l| ((l - best) * scale).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// A count as short text: whole numbers without a fraction.
fn trim(n: f32) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Model {
        let mut counts = HashMap::new();
        for (f, c) in [
            ("def", [5.0, 0.0]),
            ("⟨def", [5.0, 0.0]),
            ("fn", [0.0, 5.0]),
        ] {
            counts.insert(tokens::hash(f), c.to_vec());
        }
        counts.insert(tokens::hash("x"), vec![3.0, 3.0]);
        Model::from_counts(vec!["python".into(), "rust".into()], counts, 0.5)
    }

    #[test]
    fn the_text_form_reads_back_the_same() {
        let mut m = toy();
        m.temperature = 2.5;
        m.saturation = 40.0;
        m.threshold = 0.6;
        let text = m.render("a toy\nfor a test");
        assert!(text.starts_with("# a toy\n# for a test\n"));
        assert_eq!(Model::parse(&text).unwrap(), m);
        assert_eq!(m.render("a toy\nfor a test"), text, "deterministic");
    }

    #[test]
    fn bad_text_is_refused_with_its_line() {
        assert!(Model::parse("alpha\t1\n").is_err());
        let e = Model::parse("0000000a\t1:x\n").unwrap_err();
        assert_eq!(e.line, 1);
        let m = toy().render("");
        let bad = m.replace("classes\tpython\trust", "classes\tpython");
        assert!(Model::parse(&bad).is_err());
    }

    #[test]
    fn scores_follow_the_evidence() {
        let m = toy();
        let s = m.score("def f(x):\n    return x\n", &[0, 1]);
        assert!(s.log_likelihood[0] > s.log_likelihood[1]);
        assert_eq!(s.matched, 3);
        let p = m.probabilities(&s);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p[0] > 0.9);
        let s = m.score("fn main() {}\n", &[1]);
        assert_eq!(m.probabilities(&s), vec![1.0]);
        let none = m.score("", &[0, 1]);
        assert_eq!(none.matched, 0);
        assert_eq!(m.explain("def x", 0)[0].0, "def");
    }

    #[test]
    fn temperature_and_saturation_soften() {
        let s = Scores {
            log_likelihood: vec![0.0, -4.0],
            matched: 100,
        };
        let sharp = probabilities(&s, 1.0, f64::INFINITY)[0];
        let soft = probabilities(&s, 4.0, f64::INFINITY)[0];
        let capped = probabilities(&s, 1.0, 10.0)[0];
        assert!(sharp > soft && sharp > capped, "{sharp} {soft} {capped}");
    }

    #[test]
    fn the_builtin_model_reads() {
        let m = builtin();
        assert!(m.classes.len() >= 40, "{} classes", m.classes.len());
        assert!(m.threshold > 0.0 && m.threshold < 1.0);
        let python = m.class("python").unwrap();
        let rust = m.class("rust").unwrap();
        let s = m.score(
            "import sys\n\ndef main():\n    print(sys.argv)\n\nif __name__ == '__main__':\n    main()\n",
            &[python, rust],
        );
        assert!(m.probabilities(&s)[0] > 0.99);
    }
}
