//! The tokens file: which bearer tokens exist, by name, with their quotas.
//! Tokens are stored as the SHA-256 of the token, never the token itself;
//! a signing secret is stored as given (it has to be, to check an HMAC).
//! Pure: parsing and lookup, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. Every field is optional: absent means no limit
/// beyond the pool's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Executions (POST requests) running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
    /// Executions started per minute, on average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Executions that may start at once after an idle spell; default ten
    /// seconds' worth of `requests_per_minute`, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Largest run or compile timeout a request may ask for, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// Largest run or compile memory limit a request may ask for, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    /// Largest `max_output_bytes` a request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

impl Quota {
    /// The bucket size: `burst`, or ten seconds' worth of the rate.
    pub fn burst(&self) -> Option<u32> {
        let rpm = self.requests_per_minute?;
        Some(self.burst.unwrap_or(rpm.div_ceil(6)).max(1))
    }
}

/// One client token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub sha256: [u8; 32],
    /// When set, every request must be signed with it (HMAC-SHA256).
    pub signing_secret: Option<String>,
    pub quota: Quota,
}

/// Every token of one version of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    pub tokens: Vec<Token>,
}

/// The long form of an entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sha256: String,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    quota: Quota,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not YAML: {0}")]
    Yaml(String),
    #[error("the file must be a map of token names to entries")]
    NotAMap,
    #[error("token {name:?}: {problem}")]
    Entry { name: String, problem: String },
}

fn entry_error(name: &str, problem: impl Into<String>) -> ParseError {
    ParseError::Entry {
        name: name.to_string(),
        problem: problem.into(),
    }
}

impl TokenSet {
    /// Parses the file: a YAML map of names to either the token's SHA-256
    /// in hex, or `{sha256, signing_secret, quota}`. Errors never quote a
    /// value, which might be a token pasted by mistake.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ParseError::Yaml(e.to_string()))?;
        let map: BTreeMap<String, serde_yaml::Value> = match doc {
            serde_yaml::Value::Null => BTreeMap::new(),
            v => serde_yaml::from_value(v).map_err(|_| ParseError::NotAMap)?,
        };
        let mut tokens: Vec<Token> = Vec::with_capacity(map.len());
        for (name, value) in map {
            if name.trim().is_empty() {
                return Err(entry_error(&name, "the name is empty"));
            }
            let entry = match value {
                serde_yaml::Value::String(sha256) => Entry {
                    sha256,
                    signing_secret: None,
                    quota: Quota::default(),
                },
                v @ serde_yaml::Value::Mapping(_) => {
                    serde_yaml::from_value(v).map_err(|e| entry_error(&name, e.to_string()))?
                }
                _ => {
                    return Err(entry_error(
                        &name,
                        "expected the token's SHA-256 in hex, or a map with `sha256`",
                    ));
                }
            };
            let sha256 = parse_digest(&entry.sha256).ok_or_else(|| {
                entry_error(
                    &name,
                    "sha256 must be 64 hex digits: the SHA-256 of the token \
                     (`printf %s TOKEN | sha256sum`), not the token itself",
                )
            })?;
            if tokens.iter().any(|t| t.sha256 == sha256) {
                return Err(entry_error(&name, "the same token as another entry"));
            }
            if entry.signing_secret.as_deref().is_some_and(str::is_empty) {
                return Err(entry_error(&name, "signing_secret is empty"));
            }
            check_quota(&entry.quota).map_err(|p| entry_error(&name, p))?;
            tokens.push(Token {
                name,
                sha256,
                signing_secret: entry.signing_secret,
                quota: entry.quota,
            });
        }
        Ok(Self { tokens })
    }

    /// The token whose hash is `sha256(presented)`. Every entry is compared
    /// in constant time, so the answer's timing says nothing about which
    /// bytes matched.
    pub fn find(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }
}

fn check_quota(q: &Quota) -> Result<(), &'static str> {
    if q.concurrent == Some(0) {
        return Err("quota.concurrent must be at least 1");
    }
    if q.requests_per_minute == Some(0) {
        return Err("quota.requests_per_minute must be at least 1");
    }
    if q.burst.is_some() && q.requests_per_minute.is_none() {
        return Err("quota.burst needs quota.requests_per_minute");
    }
    if q.burst == Some(0) {
        return Err("quota.burst must be at least 1");
    }
    if q.max_timeout_ms == Some(0) || q.max_output_bytes == Some(0) {
        return Err("quota.max_timeout_ms and quota.max_output_bytes must be at least 1");
    }
    // The floor of a stage's memory limit (see api::execute).
    if q.max_memory_mib.is_some_and(|m| m < 32) {
        return Err("quota.max_memory_mib must be at least 32");
    }
    Ok(())
}

/// 64 hex digits, also as pasted from `sha256sum` (with a trailing `  -`).
fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s.strip_suffix('-').map(str::trim_end).unwrap_or(s);
    let bytes = decode_hex(s)?;
    bytes.try_into().ok()
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string (either case), `None` when it is not hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// SHA-256 of a token, in hex: what the tokens file holds.
pub fn hash_token(token: &str) -> String {
    encode_hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_tokens_are_found_by_hash() {
        let alice = hash_token("alice-secret");
        let text = format!(
            "alice: {alice}\nbob:\n  sha256: \"{}  -\"\n  signing_secret: s3\n  quota:\n    concurrent: 2\n    requests_per_minute: 60\n    max_timeout_ms: 5000\n",
            hash_token("bob-secret").to_uppercase()
        );
        let set = TokenSet::parse(&text).unwrap();
        assert_eq!(set.tokens.len(), 2);
        assert_eq!(set.find("alice-secret").unwrap().name, "alice");
        let bob = set.find("bob-secret").unwrap();
        assert_eq!(
            (bob.name.as_str(), bob.signing_secret.as_deref()),
            ("bob", Some("s3"))
        );
        assert_eq!(bob.quota.concurrent, Some(2));
        assert_eq!(bob.quota.burst(), Some(10), "ten seconds' worth");
        assert!(set.find("alice-secret ").is_none());
        assert!(set.find("").is_none());
    }

    #[test]
    fn empty_file_is_no_tokens() {
        assert_eq!(TokenSet::parse("").unwrap().tokens.len(), 0);
        assert_eq!(TokenSet::parse("# none yet\n").unwrap().tokens.len(), 0);
    }

    #[test]
    fn errors_name_the_entry_but_never_quote_the_value() {
        let err = TokenSet::parse("alice: my-plain-token\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"alice\"") && msg.contains("64 hex digits"),
            "{msg}"
        );
        assert!(!msg.contains("my-plain-token"), "{msg}");

        let h = hash_token("x");
        for (text, want) in [
            (format!("a: {h}\nb: {h}\n"), "same token"),
            (
                format!("a: {{sha256: {h}, quota: {{burst: 3}}}}\n"),
                "needs quota.requests_per_minute",
            ),
            (
                format!("a: {{sha256: {h}, quota: {{concurrent: 0}}}}\n"),
                "at least 1",
            ),
            (
                format!("a: {{sha256: {h}, quota: {{max_memory_mib: 16}}}}\n"),
                "at least 32",
            ),
            (
                format!("a: {{sha256: {h}, colour: red}}\n"),
                "unknown field",
            ),
            (
                format!("a: {{sha256: {h}, signing_secret: \"\"}}\n"),
                "empty",
            ),
            ("a: 3\n".to_string(), "expected the token's SHA-256"),
        ] {
            let msg = TokenSet::parse(&text).unwrap_err().to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
        assert_eq!(TokenSet::parse("- a\n- b\n"), Err(ParseError::NotAMap));
        assert!(matches!(
            TokenSet::parse("a: [\n"),
            Err(ParseError::Yaml(_))
        ));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            decode_hex(&encode_hex(&[0, 15, 255])),
            Some(vec![0, 15, 255])
        );
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
