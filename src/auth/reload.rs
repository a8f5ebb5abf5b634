//! Reading the tokens file and the agent secret, and reading them again
//! when they change. A file that fails to parse is logged and the last good
//! version stays in force: a typo must not lock every client out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Inner;
use super::tokens::TokenSet;

/// The file's bytes and its tokens.
pub(super) fn read_tokens(path: &Path) -> Result<(Vec<u8>, TokenSet), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8".to_string())?;
    let set = TokenSet::parse(text).map_err(|e| e.to_string())?;
    Ok((bytes, set))
}

/// The file's bytes and the secret: its content without surrounding
/// whitespace (so `echo` and `kubectl create secret --from-file` both work).
pub(super) fn read_secret(path: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.is_empty() {
        return Err("is empty".into());
    }
    Ok((bytes, secret))
}

/// One watched file: what was last seen, so each change (and each new
/// problem) is acted on and logged once.
struct Watched {
    path: PathBuf,
    seen: Option<Result<Vec<u8>, String>>,
}

impl Watched {
    /// A file whose content at start was `bytes`.
    fn new((path, bytes): (PathBuf, Vec<u8>)) -> Self {
        Self {
            path,
            seen: Some(Ok(bytes)),
        }
    }

    /// The file's bytes when they differ from the last poll's.
    fn changed(&mut self) -> Option<Vec<u8>> {
        let now = std::fs::read(&self.path).map_err(|e| e.to_string());
        if self.seen.as_ref() == Some(&now) {
            return None;
        }
        self.seen = Some(now.clone());
        match now {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read the file; keeping what was read before");
                None
            }
        }
    }
}

/// Polls the files every `every` until the `Auth` they feed is dropped.
/// Polling (rather than inotify) also sees a Kubernetes Secret volume's
/// update, which swaps a symlink to a new directory.
pub(super) fn spawn(
    inner: Weak<Inner>,
    tokens: Option<(PathBuf, Vec<u8>)>,
    secret: Option<(PathBuf, Vec<u8>)>,
    every: Duration,
) {
    if tokens.is_none() && secret.is_none() {
        return;
    }
    let mut tokens = tokens.map(Watched::new);
    let mut secret = secret.map(Watched::new);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            if let Some(w) = tokens.as_mut() {
                reload_tokens(&inner, w);
            }
            if let Some(w) = secret.as_mut() {
                reload_secret(&inner, w);
            }
        }
    });
}

fn reload_tokens(inner: &Arc<Inner>, w: &mut Watched) {
    let Some(bytes) = w.changed() else { return };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| "not UTF-8".to_string())
        .and_then(|t| TokenSet::parse(t).map_err(|e| e.to_string()));
    match parsed {
        Ok(set) => {
            tracing::info!(path = %w.path.display(), tokens = set.tokens.len(), "tokens reloaded");
            *inner.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        }
        Err(e) => {
            let kept = inner.tokens().tokens.len();
            tracing::error!(path = %w.path.display(), error = %e, kept, "the tokens file is not valid; keeping the previous tokens");
        }
    }
}

fn reload_secret(inner: &Arc<Inner>, w: &mut Watched) {
    if w.changed().is_none() {
        return;
    }
    match read_secret(&w.path) {
        Ok((_, secret)) => {
            tracing::info!(path = %w.path.display(), "agent secret reloaded");
            *inner
                .agent_secret
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(secret));
        }
        Err(e) => {
            tracing::error!(path = %w.path.display(), error = %e, "the agent secret file is not valid; keeping the previous secret");
        }
    }
}
