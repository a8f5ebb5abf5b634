//! Request signatures: HMAC-SHA256 over `timestamp + method + path + body`,
//! the timestamp being the `X-Timestamp` header (Unix seconds) as sent. A
//! signature is good for `WINDOW` either side of now, and only once.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::tokens::{decode_hex, encode_hex};

/// How far a request's timestamp may be from this host's clock.
pub const WINDOW_SECONDS: u64 = 300;

/// Why a signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// `X-Timestamp` or the signature header is absent.
    Missing,
    /// `X-Timestamp` is not Unix seconds.
    BadTimestamp,
    /// Outside the window.
    Expired,
    /// Not the HMAC of this request.
    Invalid,
    /// Seen before.
    Replayed,
}

fn mac(secret: &[u8], timestamp: &str, method: &str, path: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(timestamp.as_bytes());
    m.update(method.as_bytes());
    m.update(path.as_bytes());
    m.update(body);
    m
}

/// The signature of a request, in lowercase hex.
pub fn sign(secret: &[u8], timestamp: &str, method: &str, path: &str, body: &[u8]) -> String {
    encode_hex(
        &mac(secret, timestamp, method, path, body)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a signature against the request and the clock (`now`, Unix
/// seconds); the comparison is constant-time. Returns the timestamp.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    request: (&str, &str, &[u8]),
    now: u64,
) -> Result<u64, SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let at: u64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if at.abs_diff(now) > WINDOW_SECONDS {
        return Err(SignatureError::Expired);
    }
    let given = decode_hex(signature.trim()).ok_or(SignatureError::Invalid)?;
    let (method, path, body) = request;
    mac(secret, timestamp, method, path, body)
        .verify_slice(&given)
        .map_err(|_| SignatureError::Invalid)?;
    Ok(at)
}

/// Signatures seen within the window, to refuse a second use. Entries go
/// once their timestamp is out of the window (then the clock refuses them).
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashMap<String, u64>,
    /// Size at which expired entries are next swept (doubling keeps a flood
    /// of fresh signatures from sweeping on every insert).
    sweep_at: usize,
}

impl ReplayCache {
    /// Records `key` (who signed, and the signature) with its timestamp;
    /// `false` when it was already there.
    pub fn first_use(&mut self, key: String, at: u64, now: u64) -> bool {
        if self.seen.len() >= self.sweep_at.max(1024) {
            self.seen.retain(|_, t| t.abs_diff(now) <= WINDOW_SECONDS);
            self.sweep_at = self.seen.len() * 2;
        }
        self.seen.insert(key, at).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn check(ts: &str, sig: &str, body: &[u8], now: u64) -> Result<u64, SignatureError> {
        verify(b"k", Some(ts), Some(sig), ("POST", "/run", body), now)
    }

    #[test]
    fn a_signature_covers_timestamp_method_path_and_body() {
        let ts = NOW.to_string();
        let sig = sign(b"k", &ts, "POST", "/run", b"{}");
        assert_eq!(check(&ts, &sig, b"{}", NOW), Ok(NOW));
        assert_eq!(check(&ts, &sig.to_uppercase(), b"{}", NOW + 299), Ok(NOW));
        assert_eq!(check(&ts, &sig, b"{ }", NOW), Err(SignatureError::Invalid));
        assert_eq!(
            verify(b"k", Some(&ts), Some(&sig), ("GET", "/run", b"{}"), NOW),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(
                b"other",
                Some(&ts),
                Some(&sig),
                ("POST", "/run", b"{}"),
                NOW
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(check(&ts, "zz", b"{}", NOW), Err(SignatureError::Invalid));
        assert_eq!(
            check(&ts, &sig, b"{}", NOW + 301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            check(&ts, &sig, b"{}", NOW - 301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            check("soon", &sig, b"{}", NOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", None, Some(&sig), ("POST", "/run", b"{}"), NOW),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn the_signature_is_what_openssl_computes() {
        // printf '%s%s%s%s' 1800000000 POST /run '{}' | openssl dgst -sha256 -hmac k -hex
        assert_eq!(
            sign(b"k", "1800000000", "POST", "/run", b"{}"),
            "04b0bafcc6bc1325c5865ce42066afd09788f5aec0b1e46b81d61dfda5763ce2"
        );
    }

    #[test]
    fn each_signature_is_good_once() {
        let mut cache = ReplayCache::default();
        assert!(cache.first_use("a:1".into(), NOW, NOW));
        assert!(!cache.first_use("a:1".into(), NOW, NOW + 5));
        assert!(cache.first_use("b:1".into(), NOW, NOW));
        for i in 0..1022 {
            cache.first_use(format!("old:{i}"), NOW, NOW);
        }
        assert!(cache.first_use("new".into(), NOW + 1000, NOW + 1000));
        assert!(cache.seen.len() < 10, "expired entries were dropped");
    }
}
