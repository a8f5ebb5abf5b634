//! The features a program's text offers the language model: its words and
//! punctuation, which of them start and end lines, and neighbouring pairs.
//! Training and detection read a text through this one function, so both
//! see the same features. Pure.

/// Only this much of a program is read.
pub const MAX_BYTES: usize = 32 * 1024;
/// Longer words are identifiers of one program, not traits of a language.
const MAX_WORD: usize = 24;
/// A punctuation run is kept up to this many characters (`:=`, `<-`, `);`).
const MAX_PUNCT: usize = 3;

/// Marks a feature as a line's first token.
const START: char = '⟨';
/// Marks a feature as a line's last token.
const END: char = '⟩';

/// What of `code` is read: its first [`MAX_BYTES`], cut at a character.
pub fn head(code: &str) -> &str {
    let mut end = code.len().min(MAX_BYTES);
    while !code.is_char_boundary(end) {
        end -= 1;
    }
    &code[..end]
}

/// The distinct features of `code`, sorted: every token, each line's first
/// and last token marked as such, and each pair of neighbouring tokens on a
/// line. A token is a word (letters, digits and `_`, starting with a letter
/// or `_`) or a run of ASCII punctuation; numbers and other characters only
/// separate tokens.
///
/// Of a copyright or licence notice ([`super::notice`]) only the comment
/// mark that starts each line is read.
pub fn features(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = head(code).lines().collect();
    let notice = super::notice::notice_lines(&lines);
    for (line, notice) in lines.into_iter().zip(notice) {
        let tokens = tokens(line);
        let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
            continue;
        };
        if notice {
            if first.starts_with(|c: char| c.is_ascii_punctuation()) {
                out.push(format!("{START}{first}"));
            }
            continue;
        }
        out.push(format!("{START}{first}"));
        out.push(format!("{last}{END}"));
        for pair in tokens.windows(2) {
            out.push(format!("{} {}", pair[0], pair[1]));
        }
        out.extend(tokens.iter().map(|t| t.to_string()));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The tokens of one line, in order; a word in capitals only is read in
/// lower case (`PROCEDURE DIVISION` is `procedure division`: languages
/// that ignore case are written both ways).
fn tokens(line: &str) -> Vec<std::borrow::Cow<'_, str>> {
    raw_tokens(line)
        .into_iter()
        .map(|t| {
            let shouting = t.len() > 1
                && t.bytes().any(|b| b.is_ascii_uppercase())
                && !t.bytes().any(|b| b.is_ascii_lowercase());
            if shouting {
                t.to_ascii_lowercase().into()
            } else {
                t.into()
            }
        })
        .collect()
}

/// The tokens of one line as written.
fn raw_tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let mut j = i + c.len_utf8();
        if c.is_alphabetic() || c == '_' {
            while let Some(&(k, d)) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                j = k + d.len_utf8();
                chars.next();
            }
            if line[i..j].chars().count() <= MAX_WORD {
                out.push(&line[i..j]);
            }
        } else if c.is_ascii_punctuation() {
            let mut n = 1;
            while let Some(&(k, d)) = chars.peek() {
                if !d.is_ascii_punctuation() {
                    break;
                }
                if n < MAX_PUNCT {
                    j = k + 1;
                    n += 1;
                }
                chars.next();
            }
            out.push(&line[i..j]);
        } else if c.is_numeric() {
            while chars.peek().is_some_and(|&(_, d)| d.is_alphanumeric()) {
                chars.next();
            }
        }
    }
    out
}

/// A feature's 32-bit FNV-1a hash: how the model stores it.
pub fn hash(feature: &str) -> u32 {
    feature.bytes().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_punctuation_starts_ends_and_pairs() {
        let f = features("  let x := 42; // ok\n\n");
        for want in [
            "let", "x", ":=", ";", "//", "ok", "⟨let", "ok⟩", "let x", "x :=", ":= ;", "; //",
        ] {
            assert!(f.contains(&want.to_string()), "{want} in {f:?}");
        }
        assert!(
            !f.iter().any(|t| t.contains("42")),
            "numbers are separators"
        );
    }

    #[test]
    fn long_runs_are_bounded_and_text_is_cut_at_a_character() {
        let f = features("x ))))))) y");
        assert!(f.contains(&")))".to_string()), "{f:?}");
        assert!(!f.iter().any(|t| t.contains("))))")));
        let long = "ü".repeat(MAX_BYTES);
        let f = features(&long);
        assert!(f.is_empty(), "a word over the length limit is dropped");
        assert_eq!(hash("a"), 0xe40c_292c);
    }

    #[test]
    fn a_notice_gives_its_comment_marks_only() {
        let f = features("/*\n * Licensed to the Apache Software Foundation\n */\nclass A {}\n");
        for want in ["⟨/*", "⟨*", "class", "⟨class", "class A"] {
            assert!(f.contains(&want.to_string()), "{want} in {f:?}");
        }
        assert!(
            !f.iter()
                .any(|t| t.contains("Apache") || t.contains("Licensed"))
        );
    }

    #[test]
    fn sorted_and_distinct() {
        let f = features("a b a b\na b\n");
        let mut sorted = f.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(f, sorted);
    }
}
