//! Standalone mode: the agent and the API on one host, with ExecutorPool and
//! LanguageImage documents read from YAML files (the same documents a cluster
//! takes with `kubectl apply`), reloaded when the files change.
//!
//! Like admission on a cluster, an invalid document is refused: on the first
//! load the process does not start; on a later change that document is
//! rejected (logged, and listed by `GET /pools`) and the last good version of
//! its pool or image goes on being served.

pub(crate) mod accept;
pub(crate) mod fields;
pub mod files;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, watch};

use crate::agent::Resources;

pub use accept::Rejection;

/// How long a change settles before the files are read, so an editor's
/// several writes are read once, complete.
const SETTLE: Duration = Duration::from_millis(100);

/// Documents the files hold that are not applied now, and why: updated on
/// every load of the files.
pub type Rejections = watch::Receiver<Vec<Rejection>>;

/// Rejections of a process that reads no files (always empty).
pub fn no_rejections() -> Rejections {
    watch::channel(Vec::new()).1
}

/// Loads `paths` now (every document must be valid), then watches them
/// (inotify; polling every `interval` where that is not available) and
/// publishes every change. A change that does not load is logged and the last
/// good set kept; an invalid document is rejected alone (see `accept`) and
/// listed in the returned rejections.
pub async fn watch_files(
    paths: Vec<PathBuf>,
    interval: Duration,
) -> Result<(watch::Receiver<Resources>, Rejections), files::LoadError> {
    let (tx, rx) = watch::channel(Vec::new());
    let resources = watch_with(paths, interval, move |r| {
        let _ = tx.send(r);
    })
    .await?;
    Ok((resources, rx))
}

/// `watch_files`, handing each load's rejections to `rejected`.
pub async fn watch_with(
    paths: Vec<PathBuf>,
    interval: Duration,
    rejected: impl Fn(Vec<Rejection>) + Send + 'static,
) -> Result<watch::Receiver<Resources>, files::LoadError> {
    let p = paths.clone();
    let (initial, stamp) = blocking(move || files::load(&p)).await?;
    tracing::info!(
        pools = initial.pools.len(),
        images = initial.images.len(),
        "loaded resources"
    );
    rejected(vec![]);
    let changed = Arc::new(Notify::new());
    let watcher = watcher(&paths, interval, changed.clone());
    let (tx, rx) = watch::channel(initial.clone());
    let follow = Follow {
        paths,
        stamp,
        last: initial,
        tx,
        changed,
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        follow.run(rejected).await
    });
    Ok(rx)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, files::LoadError> + Send + 'static,
) -> Result<T, files::LoadError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(files::LoadError::Read {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// A file watcher that wakes `changed`: inotify on the folders, else
/// polling every `interval`. `None` (logged) when neither can watch.
fn watcher(
    paths: &[PathBuf],
    interval: Duration,
    changed: Arc<Notify>,
) -> Option<Box<dyn Watcher + Send>> {
    let wake = move |event: notify::Result<notify::Event>| match event {
        Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
        _ => changed.notify_one(),
    };
    let inotify = notify::recommended_watcher(wake.clone())
        .map_err(|e| e.to_string())
        .and_then(|mut w| {
            watch_paths(&mut w, paths)?;
            Ok(Box::new(w) as Box<dyn Watcher + Send>)
        });
    let e = match inotify {
        Ok(w) => return Some(w),
        Err(e) => e,
    };
    tracing::warn!(error = %e, ?interval, "cannot watch the resource files for changes; polling them");
    let config = notify::Config::default().with_poll_interval(interval);
    match notify::PollWatcher::new(wake, config)
        .map_err(|e| e.to_string())
        .and_then(|mut w| watch_paths(&mut w, paths).map(|()| w))
    {
        Ok(w) => Some(Box::new(w)),
        Err(e) => {
            tracing::error!(error = %e, "cannot poll the resource files either: changes are not applied until a restart");
            None
        }
    }
}

/// Folders are watched with everything in them; a file through its folder,
/// so an editor that replaces the file (a rename) is still seen.
fn watch_paths(w: &mut impl Watcher, paths: &[PathBuf]) -> Result<(), String> {
    for p in paths {
        let (target, mode) = if p.is_dir() {
            (p.as_path(), RecursiveMode::Recursive)
        } else {
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
            (
                parent.unwrap_or(Path::new(".")),
                RecursiveMode::NonRecursive,
            )
        };
        w.watch(target, mode)
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// The task that applies file changes.
struct Follow {
    paths: Vec<PathBuf>,
    stamp: files::Stamp,
    /// What is served now: the last good version of every resource.
    last: Resources,
    tx: watch::Sender<Resources>,
    changed: Arc<Notify>,
}

impl Follow {
    async fn run(mut self, rejected: impl Fn(Vec<Rejection>)) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = self.tx.closed() => return,
            }
            tokio::time::sleep(SETTLE).await;
            let paths = self.paths.clone();
            match blocking(move || files::stamp(&paths)).await {
                Ok(s) if s == self.stamp => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read resource files; keeping the last good set");
                    continue;
                }
            }
            let paths = self.paths.clone();
            match blocking(move || files::read(&paths)).await {
                Ok((docs, stamp)) => {
                    self.stamp = stamp;
                    let accepted = accept::accept(&docs, Some(&self.last));
                    for r in &accepted.rejected {
                        let kept = if r.kept {
                            "its last good version is kept"
                        } else {
                            "nothing is served for it"
                        };
                        tracing::error!(
                            file = %r.file.display(),
                            document = r.document,
                            kind = r.kind,
                            name = %r.name,
                            "document rejected: {}; {kept}",
                            r.message
                        );
                    }
                    rejected(accepted.rejected);
                    self.last = accepted.resources.clone();
                    tracing::info!(
                        pools = self.last.pools.len(),
                        images = self.last.images.len(),
                        "resource files changed: applying"
                    );
                    let _ = self.tx.send(accepted.resources);
                }
                Err(e) => {
                    tracing::error!(error = %e, "resource files changed but do not load; keeping the last good set");
                    let paths = self.paths.clone();
                    if let Ok(s) = blocking(move || files::stamp(&paths)).await {
                        self.stamp = s;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, sourceFile: m.py, run: python3 m.py}]\n";

    fn pool(spec: &str) -> String {
        format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: p}}\nspec: {spec}\n"
        )
    }

    async fn next(rx: &mut watch::Receiver<Resources>) -> Resources {
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("a change is applied within a second")
            .unwrap();
        rx.borrow_and_update().clone()
    }

    #[tokio::test]
    async fn changes_apply_within_a_second_and_invalid_ones_keep_the_last_good_pool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("image.yaml"), IMAGE).unwrap();
        let file = dir.path().join("pool.yaml");
        std::fs::write(&file, pool("{image: small, warm: 2}")).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(vec![]));
        let sink = seen.clone();
        let mut rx = watch_with(vec![dir.path().into()], Duration::from_secs(1), move |r| {
            *sink.lock().unwrap() = r
        })
        .await
        .unwrap();
        assert_eq!(rx.borrow().pools[0].spec.warm, 2);

        std::fs::write(&file, pool("{image: small, warm: 3}")).unwrap();
        assert_eq!(next(&mut rx).await.pools[0].spec.warm, 3);

        for bad in [
            "{image: small, warm: 4, execution: {wallTimeMs: {default: 50000, max: 30000}}}",
            "{image: nosuch, warm: 4}",
            "{image: small, wram: 4}",
        ] {
            std::fs::write(&file, pool(bad)).unwrap();
            let res = next(&mut rx).await;
            assert_eq!(res.pools.len(), 1);
            assert_eq!(res.pools[0].spec.warm, 3, "{bad}: the last good pool stays");
            let r = seen.lock().unwrap().clone();
            assert_eq!(r.len(), 1, "{bad}: {r:?}");
            assert_eq!((r[0].name.as_str(), r[0].kept), ("default/p", true));
        }

        // A new file is seen, and a valid change clears the rejection.
        std::fs::write(
            dir.path().join("more.yml"),
            pool("{image: small}").replace("name: p", "name: q"),
        )
        .unwrap();
        std::fs::write(&file, pool("{image: small, warm: 1}")).unwrap();
        let warm_of_p = |res: &Resources| {
            res.pools
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some("p"))
                .map(|p| p.spec.warm)
        };
        let mut res = next(&mut rx).await;
        while res.pools.len() < 2 || warm_of_p(&res) != Some(1) {
            res = next(&mut rx).await;
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_first_load_refuses_invalid_documents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pool.yaml"), pool("{image: nosuch}")).unwrap();
        let e = watch_with(vec![dir.path().into()], Duration::from_secs(1), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, files::LoadError::Rejected(_)), "{e}");
    }
}
