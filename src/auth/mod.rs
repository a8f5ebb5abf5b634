//! Who may use the execution API, and how much: bearer tokens read from a
//! file (hashed at rest, reloaded on change), optional per-token request
//! signing, per-token quotas, and the credential agents sign forwarded
//! requests with. `check` is the axum middleware; `quota` answers
//! `GET /v1/quota`.
//!
//! Auth is on whenever the API listens beyond loopback; on loopback it is
//! off unless a tokens file is given, so a standalone host needs no setup.

mod layer;
mod limits;
mod quota;
mod reload;
mod signing;
mod standing;
mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use layer::{__path_quota, Caller, HeldSlot, OPEN, check, quota};
pub use limits::cap as cap_limits;
pub use quota::Slot;
pub use signing::{WINDOW_SECONDS, sign};
pub use standing::Standing;
pub use tokens::{ParseError, Quota, Token, TokenSet, hash_token};

use quota::Usage;
use signing::ReplayCache;

/// Unix seconds, as in `X-Timestamp`.
pub const TIMESTAMP: &str = "x-timestamp";
/// A client's HMAC of its request, when its token has a signing secret.
pub const SIGNATURE: &str = "x-signature";
/// An agent's HMAC of a request it forwards, with the agent secret.
pub const AGENT_SIGNATURE: &str = "x-unsandbox-agent-signature";
/// Header an agent sets on a request it forwards to a peer; its value is
/// the forwarding node. Only signed agent requests may carry it.
pub const FORWARDED_BY: &str = "x-unsandbox-forwarded-by";

/// How the API is to be protected, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tokens_file: Option<PathBuf>,
    pub agent_secret_file: Option<PathBuf>,
    pub no_auth: bool,
    /// Bodies read to check a signature or a limit are capped at this.
    pub max_body_bytes: usize,
    /// How often the files are checked for changes.
    pub reload_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the API listens on {0}, which is not loopback, and no tokens file is set: \
         anyone who reaches the port could run code. Set --tokens-file \
         (UNSANDBOX_TOKENS_FILE) to a file of client tokens, listen on 127.0.0.1, \
         or pass --no-auth (UNSANDBOX_NO_AUTH=true) to serve without authentication"
    )]
    NoTokens(SocketAddr),
    #[error("tokens file {0}: {1}")]
    Tokens(String, String),
    #[error("agent secret file {0}: {1}")]
    AgentSecret(String, String),
}

/// Whether client tokens are required: the decision, apart from the files.
pub fn required(listen: SocketAddr, tokens_file: bool, no_auth: bool) -> Result<bool, StartError> {
    match (no_auth, tokens_file, listen.ip().is_loopback()) {
        (true, _, _) => Ok(false),
        (false, true, _) => Ok(true),
        (false, false, true) => Ok(false),
        (false, false, false) => Err(StartError::NoTokens(listen)),
    }
}

/// The API's protection, shared by every request and by the reloader.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    /// Client tokens are required.
    enabled: bool,
    tokens: RwLock<Arc<TokenSet>>,
    /// By token name, so a reload keeps what each token has used.
    usage: Mutex<HashMap<String, Arc<Usage>>>,
    agent_secret: RwLock<Option<Arc<[u8]>>>,
    replay: Mutex<ReplayCache>,
    max_body_bytes: usize,
}

impl Auth {
    /// No tokens, no agent secret: every request passes (the default of
    /// `api::router`, and loopback without a tokens file).
    pub fn disabled() -> Self {
        Self::new(false, TokenSet::default(), None, 4 * 1024 * 1024)
    }

    /// Tokens required, from `tokens` (tests, and `start` before its reloader).
    pub fn with_tokens(
        tokens: TokenSet,
        agent_secret: Option<&[u8]>,
        max_body_bytes: usize,
    ) -> Self {
        Self::new(true, tokens, agent_secret, max_body_bytes)
    }

    fn new(
        enabled: bool,
        tokens: TokenSet,
        agent_secret: Option<&[u8]>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled,
                tokens: RwLock::new(Arc::new(tokens)),
                usage: Mutex::default(),
                agent_secret: RwLock::new(agent_secret.map(Arc::from)),
                replay: Mutex::default(),
                max_body_bytes,
            }),
        }
    }

    /// Reads the files, decides whether tokens are required, logs the
    /// decision, and starts reloading the files on change. Must run inside
    /// a Tokio runtime.
    pub fn start(s: &Settings) -> Result<Self, StartError> {
        let enabled = required(s.listen, s.tokens_file.is_some(), s.no_auth)?;
        let (tokens_file, tokens) = match (&s.tokens_file, enabled) {
            (Some(path), true) => {
                let (bytes, set) = reload::read_tokens(path)
                    .map_err(|e| StartError::Tokens(path.display().to_string(), e))?;
                (Some((path.clone(), bytes)), set)
            }
            _ => (None, TokenSet::default()),
        };
        let (secret_file, secret) = match &s.agent_secret_file {
            Some(path) => {
                let (bytes, secret) = reload::read_secret(path)
                    .map_err(|e| StartError::AgentSecret(path.display().to_string(), e))?;
                (Some((path.clone(), bytes)), Some(secret))
            }
            None => (None, None),
        };
        if s.no_auth {
            tracing::warn!(listen = %s.listen, "authentication is off (--no-auth): anyone who can reach the API can run code");
        } else if !enabled {
            tracing::info!(listen = %s.listen, "authentication is off: the API listens on loopback only and no tokens file is set");
        } else if tokens.tokens.is_empty() {
            tracing::warn!(
                "the tokens file has no tokens: every request is refused until one is added"
            );
        } else {
            tracing::info!(tokens = tokens.tokens.len(), "authentication is on");
        }
        let auth = Self::new(enabled, tokens, secret.as_deref(), s.max_body_bytes);
        reload::spawn(
            Arc::downgrade(&auth.inner),
            tokens_file,
            secret_file,
            s.reload_every,
        );
        Ok(auth)
    }

    /// Whether client tokens are required.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The current tokens.
    pub fn tokens(&self) -> Arc<TokenSet> {
        self.inner.tokens()
    }

    /// What signs this agent's forwarded requests (with the agent secret
    /// of the moment; nothing while there is none).
    pub fn agent_key(&self) -> AgentKey {
        AgentKey {
            inner: self.inner.clone(),
        }
    }
}

impl Inner {
    fn tokens(&self) -> Arc<TokenSet> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn agent_secret(&self) -> Option<Arc<[u8]>> {
        self.agent_secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn usage(&self, name: &str) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.entry(name.to_string()).or_default().clone()
    }
}

/// Signs requests this agent forwards to a peer with the (current) agent
/// secret; the peer checks the signature before trusting the
/// `x-unsandbox-forwarded-by` header.
#[derive(Clone)]
pub struct AgentKey {
    inner: Arc<Inner>,
}

impl AgentKey {
    /// `(X-Timestamp, X-Unsandbox-Agent-Signature)` for a request.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> Option<(String, String)> {
        let secret = self.inner.agent_secret()?;
        let ts = unix_now().to_string();
        let sig = sign(&secret, &ts, method, path, body);
        Some((ts, sig))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_required_beyond_loopback_unless_refused() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(!required(local, false, false).unwrap());
        assert!(!required(local6, false, false).unwrap());
        assert!(required(local, true, false).unwrap());
        assert!(required(any, true, false).unwrap());
        assert!(!required(any, false, true).unwrap());
        assert!(!required(any, true, true).unwrap());
        let err = required(any, false, false).unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:8080")
                && err.contains("--tokens-file")
                && err.contains("--no-auth"),
            "{err}"
        );
    }
}
