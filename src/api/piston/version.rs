//! Piston's version selectors: a request's `version` is a node-semver range
//! (`*`, `3`, `3.11.x`, `^`, `~`, comparisons, hyphen ranges, `||`), matched
//! by the `nodejs-semver` crate against the version a host serves. What an
//! image reports is not always semver (`5.2.15(1)-release`): it is coerced to
//! its numeric part first, as node-semver's `coerce` does. Pure.

use nodejs_semver::{Range, Version};

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
    let (Some([major, minor, patch]), Ok(range)) = (coerce(served), Range::parse(selector)) else {
        return false;
    };
    range.satisfies(&Version::new(major, minor, patch, vec![], vec![]))
}

/// Selectors that mean any version; `latest` is Piston's, not node-semver's.
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
