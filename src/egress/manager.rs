//! The agent's handle on the proxy: one unix socket per container (LXD's
//! `proxy` device relays the container's `127.0.0.1:3128` to it), the
//! pools' policies, and each container's record.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus_client::registry::Registry;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, warn};

use crate::crd::Egress;

use super::cidr::Cidr;
use super::guard::Guard;
use super::metrics::{EgressMetrics, Outcome};
use super::proxy::{self, Container, Shared};
use super::record::NetworkRecord;
use super::resolve::Resolver;
use super::{EgressConfig, EgressError};

/// The egress proxy of every `semitrusted` container on this host. Cheap
/// to clone; clones share everything.
#[derive(Clone)]
pub struct EgressProxy {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_connections: usize,
    shared: Arc<Shared>,
    open: Mutex<HashMap<String, Open>>,
}

/// A container whose socket is bound.
struct Open {
    container: Arc<Container>,
}

impl Drop for Open {
    /// Whatever way a container leaves the map, its accept loop and its
    /// connections end with it.
    fn drop(&mut self) {
        self.container.closed.cancel();
    }
}

impl EgressProxy {
    /// Creates `cfg.dir` (0755) and registers the metrics in `registry`
    /// (`egress_connections_total`, `egress_bytes_total`).
    pub fn new(cfg: EgressConfig, registry: &mut Registry) -> Result<Self, EgressError> {
        Self::build(cfg, registry, false)
    }

    /// Like [`new`](Self::new), but loopback addresses pass the address
    /// check, so tests can reach upstreams on 127.0.0.1.
    #[cfg(test)]
    pub(crate) fn new_allowing_loopback(
        cfg: EgressConfig,
        registry: &mut Registry,
    ) -> Result<Self, EgressError> {
        Self::build(cfg, registry, true)
    }

    fn build(
        cfg: EgressConfig,
        registry: &mut Registry,
        #[cfg_attr(not(test), allow(unused_variables))] allow_loopback: bool,
    ) -> Result<Self, EgressError> {
        let deny = cfg
            .deny_cidrs
            .iter()
            .map(|c| c.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()?;
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut guard = Guard::new(deny);
        #[cfg(test)]
        {
            guard.allow_loopback = allow_loopback;
        }
        let resolver = match &cfg.hosts_file {
            Some(path) => Resolver::with_hosts_file(path)?,
            None => Resolver::system(),
        };
        let dir_error = |source| EgressError::Dir {
            path: cfg.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&cfg.dir).map_err(dir_error)?;
        std::fs::set_permissions(&cfg.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(dir_error)?;
        let shared = Arc::new(Shared {
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            header_read_timeout: cfg.header_read_timeout,
            guard,
            resolver,
            policies: RwLock::default(),
            metrics: EgressMetrics::register(registry),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                dir: cfg.dir,
                max_connections: cfg.max_connections_per_container.max(1),
                shared,
                open: Mutex::default(),
            }),
        })
    }

    /// Sets the policy of `pool` (its `spec.egress`); `None` denies
    /// everything. Read per request, so a change applies to the next one.
    pub fn set_policy(&self, pool: &str, policy: Option<Egress>) {
        let mut policies = self
            .inner
            .shared
            .policies
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match policy {
            Some(p) => policies.insert(pool.to_string(), Arc::new(p)),
            None => policies.remove(pool),
        };
    }

    /// `<dir>/<container>.sock`, for an LXD container name.
    pub fn socket_path(&self, container: &str) -> Result<PathBuf, EgressError> {
        valid_container(container)?;
        Ok(self.inner.dir.join(format!("{container}.sock")))
    }

    /// Binds the socket of `container` (a pool's container), replacing a
    /// stale file, and serves it. Idempotent: a container already open
    /// for `pool` keeps its socket, connections and record.
    pub async fn open(&self, container: &str, pool: &str) -> Result<PathBuf, EgressError> {
        let path = self.socket_path(container)?;
        let mut open = self.open_map();
        if let Some(o) = open.get(container)
            && o.container.pool == pool
            && path.exists()
        {
            return Ok(path);
        }
        open.remove(container);
        remove_file(&path).map_err(|source| EgressError::Bind {
            path: path.clone(),
            source,
        })?;
        let listener = UnixListener::bind(&path).map_err(|source| EgressError::Bind {
            path: path.clone(),
            source,
        })?;
        let state = Arc::new(Container::new(pool));
        let span = tracing::info_span!("egress_proxy", container, pool);
        tokio::spawn(
            accept(
                listener,
                self.inner.shared.clone(),
                state.clone(),
                self.inner.max_connections,
            )
            .instrument(span),
        );
        open.insert(container.to_string(), Open { container: state });
        Ok(path)
    }

    /// What the connections of the container's current execution did.
    /// Empty for a container that is not open.
    pub fn report(&self, container: &str) -> NetworkRecord {
        self.open_map()
            .get(container)
            .map(|o| o.container.account().record())
            .unwrap_or_default()
    }

    /// Starts a new record and new budget counters for the container.
    pub fn reset(&self, container: &str) {
        if let Some(o) = self.open_map().get(container) {
            o.container.reset();
        }
    }

    /// Stops serving the container: its accept loop and every live
    /// connection end, its socket file goes. Its record goes too; take
    /// [`report`](Self::report) first.
    pub fn close(&self, container: &str) {
        let Ok(path) = self.socket_path(container) else {
            return;
        };
        drop(self.open_map().remove(container));
        if let Err(e) = remove_file(&path) {
            warn!(container, error = %e, "could not remove the egress socket");
        }
    }

    /// Closes every container `keep` rejects, then removes the socket
    /// files no open container owns (left by an earlier agent).
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .open_map()
            .keys()
            .filter(|name| !keep(name))
            .cloned()
            .collect();
        for name in gone {
            self.close(&name);
        }
        let entries = match std::fs::read_dir(&self.inner.dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(dir = %self.inner.dir.display(), error = %e, "cannot list the egress directory");
                return;
            }
        };
        let open = self.open_map();
        for entry in entries.flatten() {
            let path = entry.path();
            let stray = path.extension().is_some_and(|e| e == "sock")
                && entry.file_type().is_ok_and(|t| t.is_socket())
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_none_or(|name| !open.contains_key(name));
            if stray && let Err(e) = remove_file(&path) {
                warn!(path = %path.display(), error = %e, "could not remove a stray egress socket");
            }
        }
    }

    /// The containers being served, by name.
    pub fn open_containers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.open_map().keys().cloned().collect();
        names.sort();
        names
    }

    fn open_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts the container's connections until it closes, at most
/// `max_connections` at a time: beyond that a connection is closed at
/// once, so a program cannot hold the agent's memory or descriptors.
async fn accept(
    listener: UnixListener,
    shared: Arc<Shared>,
    container: Arc<Container>,
    max_connections: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            () = container.closed.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: let some close.
                warn!(error = %e, "accepting an egress connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let serving = proxy::serve(stream, shared.clone(), container.clone(), permit);
                tokio::spawn(serving.in_current_span());
            }
            Err(_) => {
                debug!(max_connections, "too many connections; refused");
                shared
                    .metrics
                    .outcome(&container.pool, Outcome::TooManyConnections);
            }
        }
    }
}

/// LXD container names: lowercase letters, digits and dashes, not
/// starting or ending with a dash, at most 63 characters.
fn valid_container(name: &str) -> Result<(), EgressError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(EgressError::ContainerName(name.to_string()))
    }
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
