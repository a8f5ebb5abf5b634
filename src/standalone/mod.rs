//! Standalone mode: the agent and the API on one host, with ExecutorPool and
//! LanguageImage documents read from YAML files (the same documents a cluster
//! takes with `kubectl apply`), reloaded when the files change.

pub mod files;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::agent::Resources;

/// Loads `paths` now, then polls them every `interval` and publishes every
/// change. A change that does not parse is logged and the last good set kept.
pub async fn watch_files(
    paths: Vec<PathBuf>,
    interval: Duration,
) -> Result<watch::Receiver<Resources>, files::LoadError> {
    let (initial, mut stamp) = files::load(&paths)?;
    tracing::info!(
        pools = initial.pools.len(),
        images = initial.images.len(),
        "loaded resources"
    );
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if tx.is_closed() {
                return;
            }
            match files::stamp(&paths) {
                Ok(s) if s == stamp => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read resource files; keeping the last good set");
                    continue;
                }
            }
            match files::load(&paths) {
                Ok((res, s)) => {
                    stamp = s;
                    tracing::info!(
                        pools = res.pools.len(),
                        images = res.images.len(),
                        "resource files changed: applying"
                    );
                    let _ = tx.send(res);
                }
                Err(e) => {
                    tracing::error!(error = %e, "resource files changed but do not load; keeping the last good set");
                    if let Ok(s) = files::stamp(&paths) {
                        stamp = s;
                    }
                }
            }
        }
    });
    Ok(rx)
}
