//! Piston's version selectors: a request's `version` is a node-semver range
//! matched against the version a host serves. Covers what clients send: `*`,
//! exact and partial versions (`3`, `3.11`, `3.11.x`), `^`, `~`, `<`, `<=`,
//! `>`, `>=`, `=`, hyphen ranges, space-separated conjunctions and `||`.
//! Pre-release tags are ignored. Pure.

use std::cmp::Ordering;

/// The served version used when an image does not report one.
pub const UNKNOWN: &str = "0.0.0";

/// Whether `served` satisfies `selector`. An unparsable selector matches
/// nothing (node-semver's `satisfies` answers false), except that a selector
/// equal to the served string always matches.
pub fn matches(served: &str, selector: &str) -> bool {
    let selector = selector.trim();
    if selector == served || is_any(selector) {
        return true;
    }
    let Some(v) = coerce(served) else {
        return false;
    };
    selector
        .split("||")
        .any(|set| conjunction(v, set).unwrap_or(false))
}

fn is_any(s: &str) -> bool {
    matches!(s, "" | "*" | "x" | "X" | "latest")
}

/// The first one to three numeric components of a version string, missing
/// ones as 0 (`5.2.15(1)-release` is 5.2.15); `None` when it has none.
pub fn coerce(v: &str) -> Option<[u64; 3]> {
    let v = v.trim().trim_start_matches(['v', 'V', '=']);
    let mut out = [0u64; 3];
    let mut n = 0;
    for part in v.split('.') {
        let digits: &str = &part[..part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len())];
        if digits.is_empty() {
            break;
        }
        out[n] = digits.parse().ok()?;
        n += 1;
        if n == 3 || digits.len() != part.len() {
            break;
        }
    }
    (n > 0).then_some(out)
}

/// The specified components of a partial version: `3.11.x` is `[3, 11]`.
fn partial(v: &str) -> Option<Vec<u64>> {
    let v = v.trim_start_matches(['v', 'V']);
    let v = v.split(['-', '+']).next().unwrap_or_default();
    let mut out = Vec::new();
    for part in v.split('.') {
        if is_any(part) && !part.is_empty() {
            break;
        }
        if out.len() == 3 {
            return None;
        }
        out.push(part.parse().ok()?);
    }
    Some(out)
}

/// All comparators of one space-separated set.
fn conjunction(v: [u64; 3], set: &str) -> Option<bool> {
    // Glue operators written apart from their version (`>= 3`).
    let mut tokens: Vec<String> = Vec::new();
    for t in set.split_whitespace() {
        match tokens.last_mut() {
            Some(last) if is_operator(last) => last.push_str(t),
            _ => tokens.push(t.to_string()),
        }
    }
    if tokens.is_empty() {
        return Some(true);
    }
    // Hyphen range: `a - b` is `>=a <=b`.
    if let [a, dash, b] = tokens.as_slice()
        && dash == "-"
    {
        return Some(comparator(v, &format!(">={a}"))? && comparator(v, &format!("<={b}"))?);
    }
    let mut all = true;
    for t in &tokens {
        all &= comparator(v, t)?;
    }
    Some(all)
}

fn is_operator(t: &str) -> bool {
    matches!(t, ">" | ">=" | "<" | "<=" | "=" | "^" | "~" | "~>")
}

fn comparator(v: [u64; 3], c: &str) -> Option<bool> {
    let op_len = c
        .find(|ch: char| !matches!(ch, '<' | '>' | '=' | '^' | '~'))
        .unwrap_or(c.len());
    let (op, rest) = c.split_at(op_len);
    let p = partial(rest)?;
    let n = p.len();
    let mut lo = [0u64; 3];
    lo[..n].copy_from_slice(&p);
    let prefix = v[..n].cmp(&p[..]);
    Some(match op {
        "" | "=" => prefix == Ordering::Equal,
        ">=" => v >= lo,
        "<" => v < lo,
        ">" => prefix == Ordering::Greater,
        "<=" => prefix != Ordering::Greater,
        "~" | "~>" => {
            let k = n.min(2);
            v >= lo && v[..k] == p[..k]
        }
        "^" => {
            // The left-most non-zero component may not change.
            let k = p.iter().position(|&x| x != 0).map_or(n, |i| i + 1);
            v >= lo && v[..k] == p[..k]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_exact_and_partial_versions() {
        for s in [
            "*", "", "x", "3.11.2", "3", "3.11", "3.11.x", "3.x", "v3.11.2", "=3.11.2",
        ] {
            assert!(matches("3.11.2", s), "{s}");
        }
        for s in ["3.10", "3.11.3", "2", "4.x", "abc", "3.11.2.1"] {
            assert!(!matches("3.11.2", s), "{s}");
        }
        assert!(matches(UNKNOWN, "*"));
        assert!(matches("5.2.15(1)-release", "5.2"));
        assert!(matches("weird", "weird"));
        assert!(!matches("weird", "1.0.0"));
    }

    #[test]
    fn ranges_as_node_semver_reads_them() {
        let yes = [
            "^3.9",
            "^3.11.2",
            "~3.11",
            "~3",
            ">=3.11",
            ">= 3.11.2",
            ">3.10",
            "<3.12",
            "<=3.11",
            ">=3 <4",
            "2.x || 3.x",
            "3.10 - 3.12",
            "^3.11.2-beta",
        ];
        for s in yes {
            assert!(matches("3.11.2", s), "{s}");
        }
        let no = [
            "^4",
            "~3.10",
            ">3.11",
            "<3.11.2",
            "<=3.10",
            ">=3 <3.11",
            "1.x || 2.x",
            "^0.3",
        ];
        for s in no {
            assert!(!matches("3.11.2", s), "{s}");
        }
        assert!(matches("0.2.5", "^0.2.3"));
        assert!(!matches("0.3.0", "^0.2.3"));
        assert!(!matches("0.0.4", "^0.0.3"));
    }
}
