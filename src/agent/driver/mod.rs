//! The agent's shell around its core: holds the lock, feeds the core events
//! and carries its effects out on a `ContainerHost`, records metrics, and
//! answers the API's questions.

mod effects;
mod lease;
pub(crate) mod pressure;
mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use crate::crd::NetworkTier;
use crate::egress::{EgressProxy, NetworkRecord};
use crate::lxd::Lxd;
use crate::metrics::Metrics;

use super::choose::{self, Blocker, Choice, ChoiceError};
use super::core::{Core, PoolKey};
use super::desired::Resources;
use super::host::{ContainerHost, LxdHost};
use super::status::{self, PoolReport};
use super::{AgentConfig, CatalogEntry};

pub use lease::{AcquireError, Lease, Shortage};

/// What a draining host says in its status entries and `/readyz`.
pub const DRAINING: &str =
    "draining: this host is shutting down, finishing its running executions and taking no new ones";

/// The shortest interval between two lookups of an image in the store: it
/// is looked up again every `resync_interval`, but not more often than
/// this, to notice a new fingerprint behind its alias or recipe.
const MIN_IMAGE_REFRESH: Duration = Duration::from_secs(10);

/// A running agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    host: Arc<dyn ContainerHost>,
    /// The LXD the executions run on.
    lxd: Lxd,
    cfg: AgentConfig,
    metrics: Arc<Metrics>,
    state: Mutex<Shell>,
    /// Woken whenever a warm container is added.
    warm_added: Notify,
    /// Wakes the reconcile loop.
    wake: Notify,
    /// Woken whenever a pool's conditions on this host change.
    changed: Notify,
    resources: watch::Receiver<Resources>,
    launch_slots: Semaphore,
    /// Woken whenever an execution takes or gives back a container.
    busy_changed: Notify,
    /// The one slot container work runs in while it goes one operation at
    /// a time (`Core::lifecycle_one_at_a_time`): replacements and stops
    /// that fell due together go one after another while the reserve
    /// holds and executions are served.
    background_slot: Semaphore,
    /// Destroys waiting for the host's executions to end (at most
    /// `DEFERRED_DESTROYS_MAX`).
    deferred_destroys: std::sync::atomic::AtomicUsize,
    /// One listing of the host at a time.
    resync_lock: tokio::sync::Mutex<()>,
    /// The `semitrusted` containers' egress proxy, when this host runs one.
    egress: Option<EgressProxy>,
}

/// The core and what the shell keeps beside it.
struct Shell {
    core: Core,
    /// Each pool's bound on concurrent executions: (slots, their number).
    slots: HashMap<PoolKey, (Arc<Semaphore>, u32)>,
    /// The `semitrusted` pools whose allowlists the egress proxy holds.
    egress_pools: std::collections::BTreeSet<PoolKey>,
}

impl Shell {
    /// Sizes each pool's execution slots to its spec; a pool that is gone
    /// closes its slots, so requests waiting on them end.
    fn resize_slots(&mut self) {
        let wanted: BTreeMap<PoolKey, u32> = self
            .core
            .pools()
            .map(|(k, p)| (k.clone(), p.resolved().spec.max_concurrent.max(1)))
            .collect();
        self.slots.retain(|k, (sem, _)| {
            let keep = wanted.contains_key(k);
            if !keep {
                sem.close();
            }
            keep
        });
        for (key, max) in wanted {
            let (sem, current) = self
                .slots
                .entry(key)
                .or_insert_with(|| (Arc::new(Semaphore::new(max as usize)), max));
            if max > *current {
                sem.add_permits((max - *current) as usize);
            } else if max < *current {
                sem.forget_permits((*current - max) as usize);
            }
            *current = max;
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shell> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Agent {
    /// An agent for the containers of `cfg.node` on `lxd`; `egress` serves
    /// `semitrusted` pools (without it, this host offers only `zerotrust`).
    pub fn new(
        lxd: Lxd,
        cfg: AgentConfig,
        resources: watch::Receiver<Resources>,
        metrics: Arc<Metrics>,
        egress: Option<EgressProxy>,
    ) -> Self {
        let host = LxdHost::new(
            lxd.clone(),
            &cfg.node,
            &cfg.storage_pool,
            cfg.images_dir.clone(),
            cfg.templates,
            egress.clone(),
        );
        Self::build(Arc::new(host), lxd, cfg, resources, metrics, egress)
    }

    /// What `container`'s connections did through the egress proxy so far;
    /// `None` when this host runs no proxy.
    pub fn network_record(&self, container: &str) -> Option<NetworkRecord> {
        self.inner.egress.as_ref().map(|e| e.report(container))
    }

    /// Gives the egress proxy the allowlist of every `semitrusted` pool,
    /// and takes it away from pools that are gone or changed tier, so a
    /// change applies to the next connection.
    pub(super) fn sync_egress_policies(&self) {
        let Some(egress) = &self.inner.egress else {
            return;
        };
        let mut st = self.inner.lock();
        let now: BTreeMap<PoolKey, Option<crate::crd::Egress>> = st
            .core
            .pools()
            .filter(|(_, p)| p.resolved().spec.network == NetworkTier::Semitrusted)
            .map(|(k, p)| (k.clone(), p.resolved().spec.egress.clone()))
            .collect();
        for gone in st.egress_pools.iter().filter(|k| !now.contains_key(*k)) {
            egress.set_policy(gone.as_str(), None);
        }
        for (key, policy) in &now {
            egress.set_policy(key.as_str(), Some(policy.clone().unwrap_or_default()));
        }
        st.egress_pools = now.into_keys().collect();
    }

    /// An agent whose containers live on `host`; executions run on `lxd`.
    pub fn with_host(
        host: Arc<dyn ContainerHost>,
        lxd: Lxd,
        cfg: AgentConfig,
        resources: watch::Receiver<Resources>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::build(host, lxd, cfg, resources, metrics, None)
    }

    fn build(
        host: Arc<dyn ContainerHost>,
        lxd: Lxd,
        cfg: AgentConfig,
        resources: watch::Receiver<Resources>,
        metrics: Arc<Metrics>,
        egress: Option<EgressProxy>,
    ) -> Self {
        let mut core = Core::new(&cfg.node);
        core.offer_semitrusted(egress.is_some());
        core.refresh_images_every(cfg.resync_interval.max(MIN_IMAGE_REFRESH));
        let slots = cfg.launch_parallelism.max(1);
        Self {
            inner: Arc::new(Inner {
                host,
                lxd,
                state: Mutex::new(Shell {
                    core,
                    slots: HashMap::new(),
                    egress_pools: Default::default(),
                }),
                cfg,
                metrics,
                warm_added: Notify::new(),
                wake: Notify::new(),
                changed: Notify::new(),
                resources,
                launch_slots: Semaphore::new(slots),
                busy_changed: Notify::new(),
                background_slot: Semaphore::new(1),
                deferred_destroys: Default::default(),
                resync_lock: tokio::sync::Mutex::new(()),
                egress,
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
        for (key, p) in st.core.pools() {
            for l in p.served_languages() {
                let e = by_name
                    .entry(l.name.clone())
                    .or_insert_with(|| CatalogEntry {
                        name: l.name.clone(),
                        aliases: l.aliases.clone(),
                        version: p.version_of(l),
                        extensions: l.extensions.clone(),
                        pools: vec![],
                    });
                e.pools
                    .push((key.to_string(), p.resolved().spec.network, p.warm_count()));
            }
        }
        by_name.into_values().collect()
    }

    /// Picks the pool for `language` (a name or alias) and `tier`: among the
    /// pools that serve it, the one with the most warm containers; else why
    /// none can (see `choose::Blocker`).
    pub fn choose(&self, language: &str, tier: NetworkTier) -> Result<Choice, ChoiceError> {
        choose::choose(&self.inner.lock().core, language, tier)
    }

    /// Picks the pool for `language` and `tier` that also `fits` the
    /// request, if one does (see `choose::choose_fitting`).
    pub fn choose_fitting(
        &self,
        language: &str,
        tier: NetworkTier,
        fits: choose::Fits<'_>,
    ) -> Result<Choice, ChoiceError> {
        choose::choose_fitting(&self.inner.lock().core, language, tier, fits)
    }

    /// What this host is still getting ready for (see `choose::pending`).
    pub fn pending(&self) -> Option<Blocker> {
        choose::pending(&self.inner.lock().core)
    }

    /// Each pool's report for this host; while it drains, every pool is
    /// reported not ready here, so peers send nothing more.
    pub fn reports(&self) -> Vec<PoolReport> {
        let st = self.inner.lock();
        let draining = st.core.stopping();
        st.core
            .pools()
            .map(|(key, p)| {
                let mut node = status::node_status(p, &self.inner.cfg.node);
                if draining {
                    node.ready = false;
                    node.message = Some(DRAINING.to_string());
                }
                PoolReport {
                    namespace: key.namespace().to_string(),
                    name: key.name().to_string(),
                    generation: p.resolved().generation,
                    spec: p.resolved().spec.clone(),
                    node,
                    conditions: status::conditions(p),
                    observed: p.observed_conditions().to_vec(),
                }
            })
            .collect()
    }

    /// Starts shutting down: no new execution is taken (they get 503
    /// `draining`, or go to a peer), `/readyz` turns 503 and this host's
    /// status entries say so; what runs finishes, and warm containers stay
    /// for the next start to adopt.
    pub fn drain(&self) {
        self.inner.lock().core.stop_taking();
        self.inner.changed.notify_waiters();
        tracing::info!("draining: finishing running executions, taking no new ones");
    }

    /// Whether the agent is draining (see `drain`).
    pub fn draining(&self) -> bool {
        self.inner.lock().core.stopping()
    }

    /// What this host serves right now: the pools that are ready (proven
    /// and filled once) with the languages they serve. Empty while it
    /// serves nothing.
    pub fn serving(&self) -> Vec<status::Serving> {
        status::serving(&self.inner.lock().core)
    }

    /// Warm containers of one pool right now.
    pub fn warm_of(&self, pool: &str) -> u32 {
        self.inner
            .lock()
            .core
            .pool(pool)
            .map(|p| p.warm_count())
            .unwrap_or(0)
    }

    /// Containers of one pool the agent still tracks, in any phase.
    pub fn containers_of(&self, pool: &str) -> u32 {
        self.inner.lock().core.containers_of(pool)
    }

    /// Containers this agent is responsible for right now, by name.
    pub fn tracked(&self) -> Vec<String> {
        self.inner.lock().core.tracked()
    }

    /// Waits until no container is between states (launching, busy, being
    /// proven, adopted or destroyed), or `timeout` passes, so a stopping
    /// process leaves nothing half-done behind: a launch still in flight
    /// would create its container after a final cleanup had listed what to
    /// remove.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if !self.inner.lock().core.in_flight() {
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

    /// Resolves when some pool's conditions on this host change next, so a
    /// status reporter can publish at once.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.changed.notified()
    }
}
