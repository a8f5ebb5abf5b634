//! The node agent: keeps each pool's warm containers on this host's LXD,
//! hands one out per execution and destroys it afterwards. The same code runs
//! standalone (resources from files) and on Kubernetes (from the API server).

pub mod choose;
pub mod desired;
pub mod image;
pub mod keys;
pub mod launcher;
mod lease;
pub mod plan;
mod reconcile;
pub mod smoke;
pub mod state;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use crate::crd::NetworkTier;
use crate::lxd::Lxd;
use crate::metrics::Metrics;

pub use choose::{Blocker, Choice, ChoiceError};
pub use desired::Resources;
pub use lease::{AcquireError, Lease};
pub use status::PoolReport;

use state::State;

/// Settings of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This host's name; containers are marked with it.
    pub node: String,
    /// LXD storage pool for container root disks.
    pub storage_pool: String,
    /// Folder holding `build.sh` and recipes; `None` disables builds.
    pub images_dir: Option<PathBuf>,
    /// Containers created at the same time, at most.
    pub launch_parallelism: usize,
    /// How often LXD is listed to catch containers changed out of band.
    pub resync_interval: Duration,
    /// Launch copies of a stopped, already id-mapped template container
    /// instead of creating each container from the image.
    pub templates: bool,
}

/// Destroys every container of `node` in the client's LXD project, tracked
/// by a running agent or not. Returns how many there were.
pub async fn cleanup(lxd: &Lxd, node: &str) -> Result<usize, crate::lxd::LxdError> {
    let owned = plan::owned_by(lxd.instances().await?, node);
    let results = futures::future::join_all(owned.iter().map(|i| lxd.destroy(&i.name))).await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(owned.len())
}

/// A running agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    lxd: Lxd,
    cfg: AgentConfig,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Woken whenever a warm container is added.
    warm_added: Notify,
    /// Wakes the reconcile loop.
    wake: Notify,
    resources: watch::Receiver<Resources>,
    launch_slots: Semaphore,
    /// Serializes template creation.
    template_lock: tokio::sync::Mutex<()>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A language as served on this host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogEntry {
    pub name: String,
    pub aliases: Vec<String>,
    pub version: Option<String>,
    /// `(pool key, network tier, warm containers)` of every pool serving it.
    pub pools: Vec<(String, NetworkTier, u32)>,
}

impl Agent {
    pub fn new(
        lxd: Lxd,
        cfg: AgentConfig,
        resources: watch::Receiver<Resources>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let slots = cfg.launch_parallelism.max(1);
        Self {
            inner: Arc::new(Inner {
                lxd,
                cfg,
                metrics,
                state: Mutex::new(State::default()),
                warm_added: Notify::new(),
                wake: Notify::new(),
                resources,
                launch_slots: Semaphore::new(slots),
                template_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn lxd(&self) -> &Lxd {
        &self.inner.lxd
    }

    pub fn node(&self) -> &str {
        &self.inner.cfg.node
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Every language served by a pool whose image provides it, sorted by name.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let st = self.inner.lock();
        let mut by_name: BTreeMap<String, CatalogEntry> = BTreeMap::new();
        for (key, p) in &st.pools {
            for l in p.served_languages() {
                let e = by_name
                    .entry(l.name.clone())
                    .or_insert_with(|| CatalogEntry {
                        name: l.name.clone(),
                        aliases: l.aliases.clone(),
                        version: p.version_of(l),
                        pools: vec![],
                    });
                e.pools
                    .push((key.clone(), p.resolved.spec.network, p.warm.len() as u32));
            }
        }
        by_name.into_values().collect()
    }

    /// Picks the pool for `language` (a name or alias) and `tier`: among the
    /// pools that serve it, the one with the most warm containers; else why
    /// none can (see `choose::Blocker`).
    pub fn choose(&self, language: &str, tier: NetworkTier) -> Result<Choice, ChoiceError> {
        choose::choose(&self.inner.lock(), language, tier)
    }

    /// What this host is still getting ready for (see `choose::pending`).
    pub fn pending(&self) -> Option<Blocker> {
        choose::pending(&self.inner.lock())
    }

    /// Each pool's report for this host.
    pub fn reports(&self) -> Vec<PoolReport> {
        let st = self.inner.lock();
        st.pools
            .values()
            .map(|p| {
                let (namespace, name) = p
                    .resolved
                    .key
                    .split_once('/')
                    .unwrap_or(("default", &p.resolved.key));
                PoolReport {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    generation: p.resolved.generation,
                    spec: p.resolved.spec.clone(),
                    node: status::node_status(p, &self.inner.cfg.node),
                    conditions: status::conditions(p),
                    observed: p.observed_conditions.clone(),
                }
            })
            .collect()
    }

    /// What this host serves right now: the pools that are ready (proven
    /// and filled once) with the languages they serve. Empty while it
    /// serves nothing.
    pub fn serving(&self) -> Vec<status::Serving> {
        status::serving(&self.inner.lock())
    }

    /// Warm containers of one pool right now.
    pub fn warm_of(&self, pool: &str) -> u32 {
        self.inner
            .lock()
            .pools
            .get(pool)
            .map(|p| p.warm.len() as u32)
            .unwrap_or(0)
    }

    /// Containers of one pool the agent still tracks, in any phase.
    pub fn containers_of(&self, pool: &str) -> u32 {
        self.inner
            .lock()
            .tracked
            .values()
            .filter(|(p, _)| p == pool)
            .count() as u32
    }

    /// Containers this agent is responsible for right now, by name.
    pub fn tracked(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.lock().tracked.keys().cloned().collect();
        v.sort();
        v
    }

    /// Waits until no container is being launched, busy or being destroyed
    /// (or `timeout` passes), so a stopping process leaves nothing half-done
    /// behind: a launch still in flight would create its container after a
    /// final cleanup had listed what to remove.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let pending = self.inner.lock().tracked.values().any(|(_, phase)| {
                matches!(
                    phase,
                    plan::Phase::Launching | plan::Phase::Busy | plan::Phase::Destroying
                )
            });
            if !pending {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the reconcile loop to run now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }
}
