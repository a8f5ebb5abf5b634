//! A job's callback: a POST of the finished job to a URL on a host the
//! operator allows, signed with the callback secret, retried a bounded
//! number of times with growing pauses.
//!
//! The signature is the one clients sign requests with (see
//! `auth::sign`): `X-Signature` is the lowercase hex HMAC-SHA256, under the
//! callback secret, of `X-Timestamp` (Unix seconds), `POST`, the URL's path
//! and query, and the body, concatenated. A receiver recomputes it, compares
//! in constant time, and refuses old timestamps.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "callbacks are off on this agent: it has no callback secret or no allowed callback hosts (--callback-secret-file, --callback-allow)"
    )]
    Off,
    #[error("callback_url {0:?} is not an absolute http:// or https:// URL")]
    NotUrl(String),
    #[error("callback_url may not carry user information")]
    UserInfo,
    #[error("callback host {0} is not one this agent may call (--callback-allow)")]
    NotAllowed(String),
}

/// Where callbacks may go, and how they are signed and sent.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// `host` (any port) or `host:port`, lowercase.
    pub allow: Vec<String>,
    pub secret: Option<Vec<u8>>,
    /// Attempts per callback, the first included.
    pub attempts: u32,
    /// Longest one attempt may take.
    pub timeout: Duration,
    /// Pause after the first failed attempt; it doubles after each.
    pub backoff: Duration,
}

impl CallbackSettings {
    /// Checks `url` against the allowed hosts. Pure.
    pub fn check(&self, url: &str) -> Result<Uri, Refused> {
        if self.secret.is_none() || self.allow.is_empty() {
            return Err(Refused::Off);
        }
        let uri: Uri = url.parse().map_err(|_| Refused::NotUrl(url.into()))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        let (Some(authority), true) = (uri.authority(), matches!(scheme, "http" | "https")) else {
            return Err(Refused::NotUrl(url.into()));
        };
        if authority.as_str().contains('@') {
            return Err(Refused::UserInfo);
        }
        let host = authority.host().to_ascii_lowercase();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let allowed = self
            .allow
            .iter()
            .any(|a| *a == host || *a == format!("{host}:{port}"));
        if allowed {
            Ok(uri)
        } else {
            Err(Refused::NotAllowed(format!("{host}:{port}")))
        }
    }
}

/// The pause before attempt `n` (from 2): `backoff`, doubled after each
/// failure, at most a minute. Pure.
pub fn pause_before(n: u32, backoff: Duration) -> Duration {
    let doublings = n.saturating_sub(2).min(16);
    (backoff * 2u32.pow(doublings)).min(Duration::from_secs(60))
}

/// An HTTP(S) client for callbacks.
#[derive(Clone)]
pub struct Sender {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Sender {
    pub fn new() -> std::io::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// One attempt: POSTs `body` to `uri`, signed; `Ok` on a 2xx answer.
    pub async fn post(
        &self,
        uri: &Uri,
        job: &str,
        attempt: u32,
        body: &Bytes,
        settings: &CallbackSettings,
    ) -> Result<(), String> {
        let secret = settings.secret.as_deref().ok_or("no callback secret")?;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let signature = crate::auth::sign(secret, &ts, "POST", path, body);
        let request = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .header(crate::auth::TIMESTAMP, ts)
            .header(crate::auth::SIGNATURE, signature)
            .header("x-unsandbox-job", job)
            .header("x-unsandbox-attempt", attempt.to_string())
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let send = async {
            let resp = self
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            // Read (a bounded wait for) the answer so the connection is reused.
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        };
        tokio::time::timeout(settings.timeout, send)
            .await
            .map_err(|_| format!("no answer within {:?}", settings.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allow: &[&str]) -> CallbackSettings {
        CallbackSettings {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            secret: Some(b"s".to_vec()),
            attempts: 3,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(10),
        }
    }

    #[test]
    fn only_allowed_hosts_and_ports_are_called() {
        let s = settings(&["hooks.example", "127.0.0.1:9000"]);
        assert!(s.check("https://hooks.example/done?x=1").is_ok());
        assert!(s.check("http://HOOKS.example:8080/").is_ok(), "any port");
        assert!(s.check("http://127.0.0.1:9000/cb").is_ok());
        assert_eq!(
            s.check("http://127.0.0.1:9001/cb"),
            Err(Refused::NotAllowed("127.0.0.1:9001".into()))
        );
        assert_eq!(
            s.check("http://127.0.0.1/cb"),
            Err(Refused::NotAllowed("127.0.0.1:80".into()))
        );
        assert_eq!(
            s.check("http://evil.example/hooks.example"),
            Err(Refused::NotAllowed("evil.example:80".into()))
        );
        assert_eq!(s.check("http://u:p@hooks.example/"), Err(Refused::UserInfo));
        assert!(matches!(
            s.check("ftp://hooks.example/"),
            Err(Refused::NotUrl(_))
        ));
        assert!(matches!(s.check("/relative"), Err(Refused::NotUrl(_))));
        let mut off = settings(&["hooks.example"]);
        off.secret = None;
        assert_eq!(off.check("https://hooks.example/"), Err(Refused::Off));
        assert_eq!(
            settings(&[]).check("https://hooks.example/"),
            Err(Refused::Off)
        );
    }

    #[test]
    fn pauses_double_up_to_a_minute() {
        let b = Duration::from_secs(1);
        let pauses: Vec<u64> = (2..=9).map(|n| pause_before(n, b).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
