//! How a content feature is matched and counted. The features themselves,
//! with their weights, are in [`super::lexicon`]. Pure.

use std::collections::HashMap;

/// Where a feature's pattern must occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Anywhere in the text.
    Has,
    /// Anywhere, in any case (the pattern is written in lower case).
    HasCi,
    /// As a whole word: not touching a letter, digit or `_`.
    Word,
    /// As a whole word, in any case (pattern in lower case).
    WordCi,
    /// At the start of a line, after indentation.
    Start,
    /// At the start of a line, in any case (pattern in lower case).
    StartCi,
    /// At the end of a line, before trailing blanks.
    End,
    /// A whole line, indentation and trailing blanks aside.
    Line,
    /// `a…b`: a line that starts with `a` and ends with `b`.
    StartEnd,
    /// `a…b`: a line that starts with `a` and has `b` after it.
    StartHas,
    /// `a…b`: a line that starts with `a` and has no `b` after it.
    StartLacks,
    /// The start of the text, leading blank lines aside.
    First,
    /// The start of the first line that is not a comment (`//`, `/*`, `*`,
    /// `# `, `#!`, `--`, `%`, `;`); `a…b` as for [`Kind::StartEnd`].
    FirstCode,
    /// Counts once when any other feature of the language matched: a prior
    /// between languages that share features (plain JavaScript over
    /// TypeScript when no type shows). The pattern is unused.
    Bonus,
}

/// A feature: where, what, and how much it counts for its language
/// (negative when it counts against).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F(pub Kind, pub &'static str, pub f64);

/// Longest prefix of the text that is looked at: features saturate long
/// before, and it keeps detection within a millisecond.
pub const MAX_BYTES: usize = 32 * 1024;

/// A set of features compiled for counting all of them in one pass over the
/// text and one over its lines: patterns are bucketed by their first byte
/// (last byte for [`Kind::End`]), so each position is compared only with the
/// few patterns that can start there.
pub struct Index {
    features: Vec<(Kind, &'static str)>,
    ids: HashMap<(Kind, &'static str), usize>,
    /// `Has`, `Word`: by first byte, scanned over the text.
    text: Vec<Vec<usize>>,
    /// `HasCi`, `WordCi`: by first byte, scanned over the lower-cased text.
    lower: Vec<Vec<usize>>,
    /// For `text` and `lower`: per first byte, the second bytes their
    /// patterns have (a 256-bit set), to skip most positions at once.
    text_next: Vec<[u64; 4]>,
    lower_next: Vec<[u64; 4]>,
    /// Line kinds: by the first byte of the line start they need.
    start: Vec<Vec<usize>>,
    /// `StartCi`: by first byte, over lower-cased lines.
    start_ci: Vec<Vec<usize>>,
    /// `End`: by last byte.
    end: Vec<Vec<usize>>,
    /// `First`, `FirstCode`, `Bonus`, and patterns that start with no byte.
    once: Vec<usize>,
}

fn split(pat: &str) -> (&str, &str) {
    pat.split_once('…').unwrap_or((pat, ""))
}

impl Index {
    /// Compiles the distinct `(kind, pattern)` pairs, in first-seen order.
    pub fn new(features: impl IntoIterator<Item = (Kind, &'static str)>) -> Self {
        let buckets = || vec![Vec::new(); 256];
        let mut ix = Index {
            features: Vec::new(),
            ids: HashMap::new(),
            text: buckets(),
            lower: buckets(),
            text_next: vec![[0; 4]; 256],
            lower_next: vec![[0; 4]; 256],
            start: buckets(),
            start_ci: buckets(),
            end: buckets(),
            once: Vec::new(),
        };
        for (kind, pat) in features {
            if ix.id(kind, pat).is_some() {
                continue;
            }
            let id = ix.features.len();
            ix.features.push((kind, pat));
            ix.ids.insert((kind, pat), id);
            let first = split(pat).0.bytes().next();
            let (table, byte) = match kind {
                Kind::Has | Kind::Word => (&mut ix.text, first),
                Kind::HasCi | Kind::WordCi => (&mut ix.lower, first),
                Kind::Start | Kind::Line | Kind::StartEnd | Kind::StartHas | Kind::StartLacks => {
                    (&mut ix.start, first)
                }
                Kind::StartCi => (&mut ix.start_ci, first),
                Kind::End => (&mut ix.end, pat.bytes().last()),
                Kind::First | Kind::FirstCode | Kind::Bonus => (&mut ix.end, None),
            };
            match byte {
                Some(b) => table[usize::from(b)].push(id),
                None => ix.once.push(id),
            }
            let next = match kind {
                Kind::Has | Kind::Word => &mut ix.text_next,
                Kind::HasCi | Kind::WordCi => &mut ix.lower_next,
                _ => continue,
            };
            if let Some(b) = byte {
                let set = &mut next[usize::from(b)];
                match pat.as_bytes().get(1) {
                    Some(&c) => set[usize::from(c >> 6)] |= 1 << (c & 63),
                    None => *set = [u64::MAX; 4],
                }
            }
        }
        ix
    }

    /// The position of a feature in [`Index::count`]'s answer.
    pub fn id(&self, kind: Kind, pat: &str) -> Option<usize> {
        self.ids.get(&(kind, pat)).copied()
    }

    /// How many times each feature occurs in `code` (its first
    /// [`MAX_BYTES`]), in the order of [`Index::id`]. Occurrences may overlap.
    pub fn count(&self, code: &str) -> Vec<usize> {
        let mut end = code.len().min(MAX_BYTES);
        while !code.is_char_boundary(end) {
            end -= 1;
        }
        let text = &code[..end];
        let lower = text.to_ascii_lowercase();
        let mut counts = vec![0; self.features.len()];
        self.scan(text.as_bytes(), &self.text, &self.text_next, &mut counts);
        self.scan(lower.as_bytes(), &self.lower, &self.lower_next, &mut counts);
        let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
        for line in lines() {
            let b = line.as_bytes();
            for &id in &self.start[usize::from(b[0])] {
                counts[id] += usize::from(line_matches(self.features[id], line));
            }
            for &id in &self.end[usize::from(b[b.len() - 1])] {
                counts[id] += usize::from(line.ends_with(self.features[id].1));
            }
            for &id in &self.start_ci[usize::from(b[0].to_ascii_lowercase())] {
                let p = self.features[id].1.as_bytes();
                let head = b.get(..p.len());
                counts[id] += usize::from(head.is_some_and(|h| h.eq_ignore_ascii_case(p)));
            }
        }
        for &id in &self.once {
            let (kind, pat) = self.features[id];
            counts[id] = match kind {
                Kind::First => usize::from(text.trim_start().starts_with(pat)),
                Kind::FirstCode => lines()
                    .find(|l| !is_comment(l))
                    .map_or(0, |l| usize::from(line_matches((Kind::StartEnd, pat), l))),
                Kind::Bonus => 1,
                // A pattern with no first byte matches nothing.
                _ => 0,
            };
        }
        counts
    }

    fn scan(&self, bytes: &[u8], buckets: &[Vec<usize>], next: &[[u64; 4]], counts: &mut [usize]) {
        for (i, b) in bytes.iter().enumerate() {
            let set = &next[usize::from(*b)];
            let c = bytes.get(i + 1).copied().unwrap_or(0);
            // No pattern here has this second byte (one-byte patterns have all).
            if set[usize::from(c >> 6)] & (1 << (c & 63)) == 0 {
                continue;
            }
            for &id in &buckets[usize::from(*b)] {
                let (kind, pat) = self.features[id];
                let p = pat.as_bytes();
                if !bytes[i..].starts_with(p) {
                    continue;
                }
                if matches!(kind, Kind::Word | Kind::WordCi) {
                    let before = i.checked_sub(1).map(|j| bytes[j]);
                    let after = bytes.get(i + p.len()).copied();
                    if before.is_some_and(is_word_byte) || after.is_some_and(is_word_byte) {
                        continue;
                    }
                }
                counts[id] += 1;
            }
        }
    }
}

/// Whether a trimmed line matches a line-start feature.
fn line_matches((kind, pat): (Kind, &str), line: &str) -> bool {
    let (a, b) = split(pat);
    let Some(rest) = line.strip_prefix(a) else {
        return false;
    };
    match kind {
        Kind::Line => rest.is_empty(),
        Kind::StartEnd => rest.ends_with(b),
        Kind::StartHas => rest.contains(b),
        Kind::StartLacks => !rest.contains(b),
        _ => true,
    }
}

/// Whether a trimmed line is a comment in one of the usual syntaxes.
fn is_comment(line: &str) -> bool {
    [
        "//", "/*", "*", "--", "%", ";", "(*", "{-", "\"\"\"", "#!", "##", "# ",
    ]
    .iter()
    .any(|p| line.starts_with(p))
        || line == "#"
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(code: &str, kind: Kind, pat: &'static str) -> usize {
        let ix = Index::new([(kind, pat)]);
        ix.count(code)[0]
    }

    #[test]
    fn kinds() {
        let code = "  def f(x):\n\treturn x\nEND IF\nelse:  \nmy_end end\n";
        assert_eq!(count(code, Kind::Start, "def "), 1);
        assert_eq!(count(code, Kind::End, "):"), 1);
        assert_eq!(count(code, Kind::Line, "else:"), 1);
        assert_eq!(count(code, Kind::Word, "end"), 1);
        assert_eq!(count(code, Kind::WordCi, "end"), 2);
        assert_eq!(count(code, Kind::Has, "end"), 2);
        assert_eq!(count(code, Kind::HasCi, "end if"), 1);
        assert_eq!(count(code, Kind::StartCi, "end if"), 1);
        assert_eq!(count(code, Kind::StartEnd, "def …:"), 1);
        assert_eq!(count(code, Kind::StartHas, "def …(x"), 1);
        assert_eq!(count(code, Kind::StartHas, "def …return"), 0);
        assert_eq!(count(code, Kind::StartLacks, "def …return"), 1);
        assert_eq!(count(code, Kind::StartLacks, "def …(x"), 0);
        assert_eq!(count(code, Kind::First, "def"), 1);
        let code = "// Copyright\n/*\n * x\n */\n# note\npackage main\n";
        assert_eq!(count(code, Kind::FirstCode, "package "), 1);
        assert_eq!(count(code, Kind::FirstCode, "package …;"), 0);
    }

    #[test]
    fn one_index_many_features() {
        let ix = Index::new([
            (Kind::Has, "=="),
            (Kind::Word, "if"),
            (Kind::Has, "=="),
            (Kind::End, "{"),
        ]);
        assert_eq!(ix.id(Kind::End, "{"), Some(2));
        assert_eq!(ix.count("if (a === b) {\n  iff = 1 }\n"), vec![2, 1, 1]);
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_BYTES) + "needle";
        assert_eq!(count(&s, Kind::Has, "needle"), 0);
        assert_eq!(count("needle", Kind::Has, "needle"), 1);
    }
}
