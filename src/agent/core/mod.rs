//! The agent's decisions, with no I/O and no locks: events come in (the
//! resources changed, an image resolved, LXD was listed, a launch finished,
//! a container was taken or given back, a smoke suite finished, time passed)
//! and effects go out (`Effect`) for the driver to carry out on a
//! `ContainerHost`. Every change of a container's phase goes through one
//! method, so the warm queue and the per-pool counts cannot drift apart.

pub mod choose;
mod demand;
mod effect;
mod ids;
mod images;
mod pool;
mod roll;
mod rollout;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::crd::{ImageSource, NetworkTier, Reason};
use crate::lxd::InstanceInfo;

use super::desired::{self, Problem, ResolvedPool, Resources};
use super::keys;
use super::plan::{self, Phase, Want};
use super::smoke::LanguageCheck;

pub use effect::{Effect, LaunchOrder, LaunchOutcome, SmokeOrder};
pub use ids::{ContainerName, PoolKey, ShapeHash};
use images::IMAGE_REFRESH;
#[cfg(test)]
use images::IMAGE_RETRY;
pub use images::{ImageReady, ImageState};
pub use pool::PoolRuntime;
use rollout::{Candidate, Seen};

/// The warm containers a pool keeps before its replacements may wait for
/// the host's executions to end: half its target, at least one.
pub fn reserve(target: u32) -> u32 {
    target.div_ceil(2).max(1)
}

/// The longest a replacement waits for running executions: enough for a
/// typical compile and run to have the CPU to itself, short enough that a
/// long execution does not keep its pool under its target.
pub const EXECUTIONS_FIRST_WAIT: Duration = Duration::from_secs(5);

/// How long after its last take a host counts as serving executions
/// (see [`Core::lifecycle_one_at_a_time`]).
pub const SERVING_QUIET: Duration = Duration::from_secs(1);

/// How long launching waits after `failures` failed launches in a row:
/// 1 s, doubling, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}

/// One container the agent is responsible for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub pool: PoolKey,
    pub phase: Phase,
    /// The shape it was launched with, and when the launch was ordered
    /// (launches only).
    shape: Option<ShapeHash>,
    since: Option<Instant>,
    /// When it became warm first (the age a recycling pool limits).
    born: Option<Instant>,
    /// Executions it was handed to.
    uses: u32,
    /// Whether it comes back to its pool after the current execution (a
    /// recycling pool's container before its last execution).
    returns: bool,
}

/// Why a container could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// The pool is not served on this host.
    NotServed,
    /// Nothing is warm now; `none_can_come` when nothing is launching and
    /// the warm target is zero, so waiting cannot help.
    Empty { none_can_come: bool },
}

/// The agent's state and decisions.
#[derive(Debug)]
pub struct Core {
    node: String,
    /// Whether a complete listing of the resources has arrived; before
    /// that nothing is decided (see `Resources::complete`).
    listed: bool,
    /// Set by `retire`: the pools are gone for good, resources are ignored.
    retired: bool,
    /// The pools covering this host, as resolved from the last complete
    /// listing.
    desired: Vec<ResolvedPool>,
    pools: BTreeMap<PoolKey, PoolRuntime>,
    containers: HashMap<ContainerName, Tracked>,
    images: HashMap<ImageSource, ImageState>,
    /// Images in the store being looked up again (see `image_refresh`).
    refreshing: BTreeSet<ImageSource>,
    /// How often an image in the store is looked up again.
    image_refresh: Duration,
    /// Whether the host is short of memory: autoscaled pools keep their
    /// minimum.
    pressure: bool,
    /// Set by `stop_taking`: nothing new is handed out.
    stopping: bool,
    /// When an execution last took a container on this host.
    last_take: Option<Instant>,
    /// Whether this host runs an egress proxy, so `semitrusted` pools can
    /// be served here (see `offer_semitrusted`).
    semitrusted: bool,
}

impl Core {
    /// An empty core for the agent of `node`.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            listed: false,
            retired: false,
            desired: Vec::new(),
            pools: BTreeMap::new(),
            containers: HashMap::new(),
            images: HashMap::new(),
            refreshing: BTreeSet::new(),
            image_refresh: IMAGE_REFRESH,
            pressure: false,
            stopping: false,
            last_take: None,
            semitrusted: false,
        }
    }

    /// Whether this host can give containers the `semitrusted` tier (its
    /// egress proxy runs). Without it such pools get the problem
    /// `NetworkTierUnsupported` here and start no container, rather than
    /// run with other isolation.
    pub fn offer_semitrusted(&mut self, offered: bool) {
        self.semitrusted = offered;
    }

    // ----- queries -----

    /// Whether a complete listing of the resources has been applied.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// The pools on this host, by key.
    pub fn pools(&self) -> impl Iterator<Item = (&PoolKey, &PoolRuntime)> {
        self.pools.iter()
    }

    /// One pool, by `namespace/name`.
    pub fn pool(&self, key: &str) -> Option<&PoolRuntime> {
        self.pools.get(&PoolKey::parse(key))
    }

    /// Containers of pool `key` tracked in any phase.
    pub fn containers_of(&self, key: &str) -> u32 {
        self.containers
            .values()
            .filter(|t| t.pool.as_str() == key)
            .count() as u32
    }

    /// Every tracked container's name, sorted.
    pub fn tracked(&self) -> Vec<String> {
        let mut v: Vec<String> = self.containers.keys().map(|c| c.0.clone()).collect();
        v.sort();
        v
    }

    /// One tracked container.
    pub fn container(&self, name: &str) -> Option<&Tracked> {
        self.containers.get(&ContainerName::from(name))
    }

    /// Whether some container is between states (launching, handed out,
    /// being proven, inspected or destroyed): a process that stops now
    /// would leave it half-done.
    pub fn in_flight(&self) -> bool {
        self.containers.values().any(|t| t.phase != Phase::Warm)
    }

    // ----- events -----

    /// The resources changed. An incomplete listing is ignored: an empty
    /// or partial list then means "not known yet", and acting on it would
    /// remove pools and destroy (instead of adopt) the warm containers and
    /// templates of an earlier run. Returns whether it was applied.
    pub fn resources(&mut self, res: &Resources) -> bool {
        if !res.complete || self.retired {
            return false;
        }
        self.listed = true;
        self.desired = desired::resolve(res, &self.node);
        if !self.semitrusted {
            for p in &mut self.desired {
                if p.spec.network == NetworkTier::Semitrusted && p.problem.is_none() {
                    p.problem = Some(Problem::new(
                        Reason::NetworkTierUnsupported,
                        "this host runs no egress proxy (its agent has --egress-dir none), \
                         so it cannot give containers the semitrusted tier",
                    ));
                }
            }
        }
        true
    }

    /// The agent is shutting down: no container is handed out any more, and
    /// this host reports itself not ready, so requests go elsewhere while
    /// what runs finishes. Warm containers stay for the next start.
    pub fn stop_taking(&mut self) {
        self.stopping = true;
    }

    /// Whether the agent is shutting down (see `stop_taking`).
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// The host's memory is short (or no longer): autoscaled pools shrink
    /// their warm capacity to their minimum first, before anything running
    /// is hurt.
    pub fn memory_pressure(&mut self, short: bool) {
        if short != self.pressure {
            tracing::info!(short, "host memory pressure changed");
        }
        self.pressure = short;
    }

    /// One pass: applies the desired pools, fills each to its warm count,
    /// trims surplus, starts smoke suites, and records each pool's
    /// conditions with the times they changed (`wall`).
    pub fn tick(&mut self, now: Instant, wall: Timestamp) -> Vec<Effect> {
        if !self.listed {
            return vec![];
        }
        let mut out = self.apply(now);
        self.autoscale(now);
        self.roll(&mut out);
        self.fill(now, &mut out);
        self.prove(now, &mut out);
        self.observe(wall, &mut out);
        out
    }

    /// LXD was listed: `owned` are this node's managed instances. Forgets
    /// warm containers lost out of band, offers unused containers of an
    /// earlier run for adoption, destroys what is owned but unused.
    pub fn listing(&mut self, owned: &[InstanceInfo]) -> Vec<Effect> {
        let mut out = Vec::new();
        // Templates stay for every shape a pool still has containers of (an
        // image rolled away from) or is proving.
        let mut kept: BTreeMap<&PoolKey, BTreeSet<String>> = BTreeMap::new();
        for t in self.containers.values() {
            if let Some(shape) = &t.shape {
                kept.entry(&t.pool).or_default().insert(shape.0.clone());
            }
        }
        let wants: BTreeMap<String, Want> = self
            .pools
            .iter()
            .map(|(k, p)| {
                let want = match (p.problem(), &p.hash) {
                    // A pool that cannot be served wants nothing, whatever its image.
                    (Some(_), _) => Want::Nothing,
                    (None, None) => Want::Undecided,
                    (None, Some(h)) => {
                        let mut keep = kept.get(k).cloned().unwrap_or_default();
                        keep.extend(p.candidate.iter().map(|c| c.generation.hash.0.clone()));
                        Want::Shape {
                            adopt: h.0.clone(),
                            keep: keep.into_iter().collect(),
                        }
                    }
                };
                (k.as_str().to_string(), want)
            })
            .collect();
        let phases: HashMap<&str, Phase> = self
            .containers
            .iter()
            .map(|(n, t)| (n.as_str(), t.phase))
            .collect();
        let decided = plan::resync(owned, &phases, &wants);
        tracing::debug!(owned = owned.len(), ?decided, "resync");
        for name in decided.forget {
            let name = ContainerName(name);
            if self.containers.get(&name).map(|t| t.phase) == Some(Phase::Warm) {
                let pool = self.containers[&name].pool.clone();
                tracing::info!(container = %name, %pool, "warm container lost out of band; replacing it");
                self.enter(&name, None);
            }
        }
        let pool_of = |name: &str| {
            owned
                .iter()
                .find(|i| i.name == name)
                .and_then(|i| i.config.get(keys::POOL))
                .map(|p| PoolKey::parse(p))
                .unwrap_or_else(|| PoolKey::new("", ""))
        };
        for name in decided.destroy {
            let pool = pool_of(&name);
            tracing::info!(container = %name, %pool, "removing a container this agent owns but does not use");
            out.push(self.destroy(ContainerName(name), pool));
        }
        for (pool, name) in decided.adopt {
            let (pool, container) = (PoolKey::parse(&pool), ContainerName(name));
            self.enter(&container, Some(tracked(&pool, Phase::Inspecting)));
            out.push(Effect::Inspect { container, pool });
        }
        for p in self.pools.values_mut() {
            if p.hash.is_some() {
                p.needs_listing = false;
            }
        }
        out
    }

    /// A container offered for adoption was inspected: `Some(true)` when it
    /// is ready and was never handed to an execution, `None` when it could
    /// not be inspected (decided on the next listing).
    pub fn inspected(
        &mut self,
        container: &ContainerName,
        unused: Option<bool>,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(t) = self.containers.get(container).cloned() else {
            return vec![];
        };
        if t.phase != Phase::Inspecting {
            return vec![];
        }
        // Room among warm and launching containers only: the others being
        // inspected may turn out used, and whichever is inspected first is
        // adopted first.
        self.enter(container, None);
        let room = self
            .pools
            .get(&t.pool)
            .is_some_and(|p| p.warm_count() + p.launching < p.target());
        match unused {
            None => vec![],
            Some(true) if room => {
                tracing::info!(%container, pool = %t.pool, "adopted a warm container from an earlier run");
                let mut warm = tracked(&t.pool, Phase::Warm);
                warm.shape = self.pools.get(&t.pool).and_then(|p| p.hash.clone());
                warm.born = Some(now);
                self.enter(container, Some(warm));
                vec![Effect::WarmAdded(t.pool)]
            }
            Some(_) => vec![self.destroy(container.clone(), t.pool)],
        }
    }

    /// Whether a launch order still fits its pool (the pool exists with the
    /// same shape): the driver asks before it creates anything.
    pub fn launch_wanted(&self, order: &LaunchOrder) -> bool {
        self.pools
            .get(&order.pool)
            .is_some_and(|p| p.hash.as_ref() == Some(&order.shape))
    }

    /// A launch finished.
    pub fn launched(
        &mut self,
        container: &ContainerName,
        outcome: LaunchOutcome,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(t) = self.containers.get(container).cloned() else {
            return vec![];
        };
        let pool = self.pools.get_mut(&t.pool);
        match (pool, outcome) {
            (Some(p), LaunchOutcome::Ready) => {
                if let Some(since) = t.since {
                    p.demand.launched(now.saturating_duration_since(since));
                }
                p.failures = 0;
                p.backoff_until = None;
                p.last_error = None;
                let fits = p.hash == t.shape && p.warm_count() < p.target();
                if fits {
                    let mut warm = moved(&t, Phase::Warm);
                    warm.born = Some(now);
                    self.enter(container, Some(warm));
                    vec![Effect::WarmAdded(t.pool)]
                } else {
                    vec![self.destroy(container.clone(), t.pool)]
                }
            }
            (None, LaunchOutcome::Ready) => vec![self.destroy(container.clone(), t.pool)],
            (Some(p), LaunchOutcome::Failed(message)) => {
                p.failures += 1;
                p.backoff_until = Some(now + backoff(p.failures));
                p.last_error = Some(message);
                // A failed launch removes what it created.
                self.enter(container, None);
                vec![]
            }
            (_, LaunchOutcome::Failed(_) | LaunchOutcome::Skipped) => {
                self.enter(container, None);
                vec![]
            }
        }
    }

    /// Whether a launch ordered for `pool` may start now. Executions come
    /// first: while an execution runs on this host, a replacement waits as
    /// long as its pool keeps its reserve warm ([`reserve`]: half its warm
    /// target, at least one), so that the execution does not share the CPU
    /// with a launch the pool can do without for now. A pool under its
    /// reserve, or a host with nothing running, launches at once; no launch
    /// waits longer than [`EXECUTIONS_FIRST_WAIT`] (the driver's part).
    pub fn launch_may_start(&self, pool: &PoolKey) -> bool {
        !self.executions_running() || self.lifecycle_urgent(pool)
    }

    /// Whether an execution runs on this host.
    fn executions_running(&self) -> bool {
        self.pools.values().any(|p| p.busy > 0)
    }

    /// Whether `pool`'s container work (a replacement launch, a deferrable
    /// stop) is urgent: the agent is stopping, the pool is gone, or it
    /// keeps less than its reserve warm ([`reserve`]).
    pub fn lifecycle_urgent(&self, pool: &PoolKey) -> bool {
        self.stopping
            || self
                .pools
                .get(pool)
                .is_none_or(|p| (p.warm.len() as u32) < reserve(p.target()))
    }

    /// Whether `pool`'s container work goes one operation at a time (the
    /// driver's background slot): it is not urgent
    /// ([`Core::lifecycle_urgent`]) and the host is serving executions
    /// (one runs, or one took a container in the last [`SERVING_QUIET`]).
    /// Replacements and stops that fell due together then follow one
    /// another instead of taking both cores from the executions being
    /// served at once; an idle host refills side by side.
    pub fn lifecycle_one_at_a_time(&self, pool: &PoolKey, now: Instant) -> bool {
        let recent = self
            .last_take
            .is_some_and(|t| now.saturating_duration_since(t) < SERVING_QUIET);
        (self.executions_running() || recent) && !self.lifecycle_urgent(pool)
    }

    /// Whether a deferrable destroy (`Effect::Destroy::deferrable`) of a
    /// container of `pool` may start: by the rule of a launch
    /// ([`Core::launch_may_start`]), since a stop costs about as much CPU
    /// as a start. While its pool keeps its reserve, it waits for the
    /// host's executions; a drained pool (sustained load) destroys at once,
    /// so that stops do not pile up behind executions that never pause.
    pub fn destroy_may_start(&self, pool: &PoolKey) -> bool {
        self.launch_may_start(pool)
    }

    /// Takes the oldest warm container of `pool` for one execution.
    pub fn take(&mut self, pool: &str, now: Instant) -> Result<ContainerName, TakeError> {
        let key = PoolKey::parse(pool);
        if self.stopping {
            return Err(TakeError::NotServed);
        }
        let p = self
            .pools
            .get_mut(&key)
            .filter(|p| p.serving())
            .ok_or(TakeError::NotServed)?;
        let Some(container) = p.warm.front().cloned() else {
            return Err(TakeError::Empty {
                none_can_come: p.none_can_come(),
            });
        };
        p.demand.took(now);
        self.last_take = Some(now);
        let spec = &p.resolved.spec;
        let Some(t) = self.containers.get(&container) else {
            return Err(TakeError::NotServed);
        };
        let mut busy = moved(t, Phase::Busy);
        busy.uses += 1;
        busy.returns = reusable(spec, &busy, now);
        self.enter(&container, Some(busy));
        Ok(container)
    }

    /// Whether `pool` can never have a container for a request (see
    /// `PoolRuntime::none_can_come`); `None` when it is not served.
    pub fn none_can_come(&self, pool: &str) -> Option<bool> {
        self.pool(pool)
            .filter(|p| p.serving())
            .map(PoolRuntime::none_can_come)
    }

    /// A container handed out for an execution came back. It is destroyed,
    /// unless its pool recycles containers, it may serve again (uses, age)
    /// and the execution ended `clean` (without an anomaly): then it is
    /// recycled (checked, given a fresh sandbox; `Core::recycled`).
    pub fn released(
        &mut self,
        container: &ContainerName,
        clean: bool,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(t) = self.containers.get(container).cloned() else {
            return vec![self.destroy(container.clone(), PoolKey::new("", ""))];
        };
        let again = clean
            && t.phase == Phase::Busy
            && t.returns
            && !self.stopping
            && self.pools.get(&t.pool).is_some_and(|p| {
                p.serving() && p.hash == t.shape && reusable(&p.resolved.spec, &t, now)
            });
        if !again {
            let deferrable = clean && t.phase == Phase::Busy;
            return vec![self.order_destroy(container.clone(), t.pool, deferrable)];
        }
        let mut next = moved(&t, Phase::Recycling);
        next.returns = true;
        self.enter(container, Some(next));
        vec![Effect::Recycle {
            container: container.clone(),
            pool: t.pool,
        }]
    }

    /// A recycle finished: `ok` when the check found nothing left and the
    /// fresh sandbox was built. The container goes back to the front of its
    /// warm queue (its caches are warm) when its pool still wants it, and is
    /// destroyed otherwise.
    pub fn recycled(&mut self, container: &ContainerName, ok: bool) -> Vec<Effect> {
        let Some(t) = self.containers.get(container).cloned() else {
            return vec![];
        };
        if t.phase != Phase::Recycling {
            return vec![];
        }
        let wanted = ok
            && !self.stopping
            && self
                .pools
                .get(&t.pool)
                .is_some_and(|p| p.serving() && p.hash == t.shape);
        if !wanted {
            return vec![self.destroy(container.clone(), t.pool)];
        }
        self.enter(container, Some(moved(&t, Phase::Warm)));
        // `enter` queued it last; it goes first.
        if let Some(p) = self.pools.get_mut(&t.pool)
            && let Some(c) = p.warm.pop_back()
        {
            p.warm.push_front(c);
        }
        vec![Effect::WarmAdded(t.pool)]
    }

    /// LXD confirmed a destroy, or it failed (a container that survived is
    /// owned but untracked, so the next listing destroys it again).
    pub fn destroyed(&mut self, container: &ContainerName) {
        self.enter(container, None);
    }

    /// A pool's smoke suite finished: `checks` are its results, `None` when
    /// its container could not be started (tried again after a back-off).
    /// `left` says whether the container still exists (the driver removes
    /// it before it reports, so the container count has settled when the
    /// pool becomes ready; a failed removal is ordered again here).
    pub fn smoke_finished(
        &mut self,
        order: &SmokeOrder,
        checks: Option<Vec<LanguageCheck>>,
        left: bool,
        now: Instant,
    ) -> Vec<Effect> {
        if let Some(p) = self.pools.get_mut(&order.launch.pool) {
            p.smoke_running = None;
            let current = p.smoke_key();
            let candidate = p
                .candidate
                .as_mut()
                .filter(|c| c.generation.hash == order.launch.shape);
            match (checks, candidate) {
                // A newer image's suite: `roll` judges it.
                (Some(checks), Some(c)) => c.smoke = Some((order.key.clone(), checks)),
                (None, Some(c)) => {
                    c.failures += 1;
                    c.backoff_until = Some(now + backoff(c.failures));
                }
                // Results for a shape or languages since replaced are stale.
                (Some(checks), None) if current.as_ref() == Some(&order.key) => {
                    p.smoke = Some((order.key.clone(), checks))
                }
                (Some(_), None) => {}
                (None, None) => {
                    p.failures += 1;
                    p.backoff_until = Some(now + backoff(p.failures));
                }
            }
        }
        let container = &order.launch.container;
        if left {
            vec![self.destroy(container.clone(), order.launch.pool.clone())]
        } else {
            self.enter(container, None);
            vec![]
        }
    }

    /// Stops serving for good (shutdown with cleanup): every pool goes, and
    /// later resources are ignored. The driver then destroys what LXD has.
    pub fn retire(&mut self) {
        self.retired = true;
        self.desired.clear();
        self.pools.clear();
    }

    /// Forgets every container (after the driver destroyed all of them).
    pub fn forget_all(&mut self) {
        self.containers.clear();
    }

    // ----- decisions -----

    /// Brings the pool map in line with the desired pools.
    fn apply(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        let wanted: BTreeSet<PoolKey> = self
            .desired
            .iter()
            .map(|r| PoolKey::parse(&r.key))
            .collect();
        let removed: Vec<PoolKey> = self
            .pools
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in removed {
            tracing::info!(pool = %key, "pool removed: destroying its warm containers");
            let warm: Vec<ContainerName> = self.pools[&key].warm.iter().cloned().collect();
            for c in warm {
                out.push(self.destroy(c, key.clone()));
            }
            self.pools.remove(&key);
            out.push(Effect::PoolRemoved(key));
        }
        let mut image_jobs: BTreeSet<ImageSource> = BTreeSet::new();
        let mut listing = false;
        for r in self.desired.clone() {
            let source = r
                .image
                .as_ref()
                .filter(|_| r.servable())
                .map(|i| i.source.clone());
            let seen = self.seen(source.as_ref(), &r, now, &mut image_jobs, &mut out);
            let key = PoolKey::parse(&r.key);
            let p = self
                .pools
                .entry(key.clone())
                .or_insert_with(|| PoolRuntime::new(r.clone()));
            // Whether it serves as it was: an edit of the languages re-proves
            // the current image in place, and does not let a newer one in
            // unproven.
            let serves = !p.served_languages().is_empty();
            p.resolved = r;
            let next = match rollout::step(
                p.generation().as_ref(),
                serves,
                &p.resolved.spec,
                seen.clone(),
            ) {
                rollout::Step::Keep { blocked } => {
                    if let Some(c) = p.candidate.take() {
                        tracing::info!(
                            pool = %key,
                            dropped = c.generation.fingerprint,
                            "the image named now is the one served, or not had yet: rollout dropped"
                        );
                    }
                    p.image_blocked = blocked;
                    continue;
                }
                rollout::Step::Prove(generation) => {
                    p.image_blocked = None;
                    if p.candidate.as_ref().map(|c| &c.generation.hash) != Some(&generation.hash) {
                        tracing::info!(
                            pool = %key,
                            serving = p.fingerprint.as_deref().unwrap_or_default(),
                            new = generation.fingerprint,
                            "a new image: smoke-testing it while the old one serves"
                        );
                        p.candidate = Some(Candidate::new(generation));
                    }
                    continue;
                }
                rollout::Step::Switch(next) => next,
            };
            p.candidate = None;
            p.image_blocked = None;
            p.runtime_problem = match seen {
                Seen::Failed(message) => Some(Problem {
                    reason: crate::crd::Reason::ImageUnavailable,
                    message,
                }),
                _ => None,
            };
            let hash = next.as_ref().map(|g| g.hash.clone());
            p.fingerprint = next.as_ref().map(|g| g.fingerprint.clone());
            p.versions = next.map(|g| g.versions).unwrap_or_default();
            if hash == p.hash {
                continue;
            }
            if p.hash.is_some() {
                tracing::info!(pool = %key, "container shape changed: replacing warm containers");
            }
            p.needs_listing = hash.is_some();
            listing |= hash.is_some();
            p.hash = hash;
            p.retiring = None;
            p.filled_once = false;
            p.failures = 0;
            p.backoff_until = None;
            p.last_error = None;
            let warm: Vec<ContainerName> = p.warm.iter().cloned().collect();
            for c in warm {
                out.push(self.destroy(c, key.clone()));
            }
        }
        let conflicts = choose::alias_conflicts(&self.pools);
        for (key, p) in self.pools.iter_mut() {
            p.alias_conflicts = conflicts.get(key).cloned().unwrap_or_default();
        }
        for s in image_jobs {
            self.images.insert(s.clone(), ImageState::Pending);
            out.push(Effect::EnsureImage(s));
        }
        // Until LXD is listed for a new shape, nothing is launched for it;
        // a failed listing is retried on every pass.
        if listing || self.pools.values().any(|p| p.needs_listing) {
            out.push(Effect::List);
        }
        out
    }

    /// Orders launches for every deficit and destroys every surplus.
    fn fill(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let keys: Vec<PoolKey> = self.pools.keys().cloned().collect();
        for key in keys {
            let p = &self.pools[&key];
            let surplus: Vec<ContainerName> = p.warm.iter().take(p.surplus()).cloned().collect();
            for c in surplus {
                out.push(self.destroy(c, key.clone()));
            }
            let p = &self.pools[&key];
            let n = p.deficit(now);
            let (Some(fingerprint), Some(shape)) = (p.fingerprint.clone(), p.hash.clone()) else {
                continue;
            };
            let ready_command = crate::execution::ready_command(
                p.languages(),
                p.resolved.spec.network,
                p.resolved.spec.recycles(),
            );
            let (name, spec) = (p.resolved.name.clone(), p.resolved.spec.clone());
            for _ in 0..n {
                let order = LaunchOrder {
                    pool: key.clone(),
                    container: ContainerName(keys::container_name(&name)),
                    spec: spec.clone(),
                    fingerprint: fingerprint.clone(),
                    shape: shape.clone(),
                    ready_command: ready_command.clone(),
                };
                let mut t = tracked(&key, Phase::Launching);
                t.shape = Some(shape.clone());
                t.since = Some(now);
                self.enter(&order.container, Some(t));
                out.push(Effect::Launch(order));
            }
        }
    }

    /// Chooses the warm target of every autoscaled pool from its demand.
    fn autoscale(&mut self, now: Instant) {
        for (key, p) in self.pools.iter_mut() {
            let next = p
                .resolved
                .spec
                .autoscale
                .as_ref()
                .map(|scale| p.demand.target(scale, now, self.pressure));
            let before = p.autoscaled.as_ref().map(|t| t.warm);
            if let (Some(before), Some(t)) = (before, &next)
                && before != t.warm
            {
                tracing::info!(pool = %key, from = before, to = t.warm, why = %t.why, "autoscale");
            }
            p.autoscaled = next;
        }
    }

    /// Orders a smoke suite for every pool whose languages are not proven on
    /// this host for its current shape.
    fn prove(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let mut orders = Vec::new();
        for (key, p) in self.pools.iter_mut() {
            let (Some(fingerprint), Some(shape), Some(smoke_key)) =
                (p.fingerprint.clone(), p.hash.clone(), p.smoke_key())
            else {
                continue;
            };
            if !p.serving()
                || p.needs_listing
                || p.smoke_results().is_some()
                || p.smoke_running.as_deref() == Some(&smoke_key)
                || p.backing_off(now)
            {
                continue;
            }
            p.smoke_running = Some(smoke_key.clone());
            let languages = p.languages().to_vec();
            orders.push(SmokeOrder {
                key: smoke_key,
                launch: LaunchOrder {
                    pool: key.clone(),
                    container: ContainerName(keys::container_name(&p.resolved.name)),
                    spec: p.resolved.spec.clone(),
                    fingerprint,
                    shape,
                    ready_command: crate::execution::ready_command(
                        &languages,
                        p.resolved.spec.network,
                        p.resolved.spec.recycles(),
                    ),
                },
                languages,
            });
        }
        for order in orders {
            let t = tracked(&order.launch.pool, Phase::Proving);
            self.enter(&order.launch.container, Some(t));
            out.push(Effect::Smoke(order));
        }
        self.prove_candidates(now, out);
    }

    /// Marks pools that reached their warm count, and records every pool's
    /// conditions with the times they changed: a change is stamped when it
    /// happens, not when someone asks. A pool whose conditions changed
    /// status or reason is reported.
    fn observe(&mut self, wall: Timestamp, out: &mut Vec<Effect>) {
        for (key, p) in self.pools.iter_mut() {
            if p.serving() && p.warm_count() >= p.target() {
                p.filled_once = true;
            }
            let desired = status::conditions(p);
            let (next, became_ready) = status::transition(
                &p.observed_conditions,
                &desired,
                p.resolved.generation,
                wall,
            );
            if became_ready {
                let languages: Vec<&str> = p
                    .served_languages()
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect();
                tracing::info!(
                    pool = %key,
                    warm = p.warm.len(),
                    ?languages,
                    "pool ready on this host: filled and its languages proven"
                );
            }
            // A change of status or reason is reported at once; the counts
            // in the messages change with every execution and go out with
            // the reporter's next regular pass.
            let changed = next.len() != p.observed_conditions.len()
                || next
                    .iter()
                    .zip(&p.observed_conditions)
                    .any(|(a, b)| a.status != b.status || a.reason != b.reason);
            p.observed_conditions = next;
            if changed {
                out.push(Effect::Report(key.clone()));
            }
        }
    }

    /// Marks a container as being destroyed and orders it, at once.
    fn destroy(&mut self, container: ContainerName, pool: PoolKey) -> Effect {
        self.order_destroy(container, pool, false)
    }

    /// Marks a container as being destroyed and orders it; a `deferrable`
    /// one may wait for the host's executions (`Effect::Destroy`).
    fn order_destroy(
        &mut self,
        container: ContainerName,
        pool: PoolKey,
        deferrable: bool,
    ) -> Effect {
        self.enter(&container, Some(tracked(&pool, Phase::Destroying)));
        Effect::Destroy {
            container,
            pool,
            deferrable,
        }
    }

    /// The one place a container changes phase (`None`: forgotten): the
    /// pool's warm queue and counts follow.
    fn enter(&mut self, container: &ContainerName, next: Option<Tracked>) {
        if let Some(prev) = self.containers.remove(container)
            && let Some(p) = self.pools.get_mut(&prev.pool)
        {
            match prev.phase {
                Phase::Warm => p.warm.retain(|c| c != container),
                Phase::Launching => p.launching = p.launching.saturating_sub(1),
                Phase::Busy => p.busy = p.busy.saturating_sub(1),
                Phase::Inspecting => p.inspecting = p.inspecting.saturating_sub(1),
                Phase::Recycling | Phase::Proving | Phase::Destroying => {}
            }
            if prev.returns {
                p.returning = p.returning.saturating_sub(1);
            }
        }
        let Some(next) = next else { return };
        if let Some(p) = self.pools.get_mut(&next.pool) {
            match next.phase {
                Phase::Warm => p.warm.push_back(container.clone()),
                Phase::Launching => p.launching += 1,
                Phase::Busy => p.busy += 1,
                Phase::Inspecting => p.inspecting += 1,
                Phase::Recycling | Phase::Proving | Phase::Destroying => {}
            }
            if next.returns {
                p.returning += 1;
            }
        }
        self.containers.insert(container.clone(), next);
    }
}

/// A core that has applied a listing with exactly these pools.
#[cfg(test)]
pub(crate) fn with_pools(pools: Vec<(&str, PoolRuntime)>) -> Core {
    let mut core = Core::new("n1");
    core.listed = true;
    core.pools = pools
        .into_iter()
        .map(|(k, p)| (PoolKey::parse(k), p))
        .collect();
    core
}

fn tracked(pool: &PoolKey, phase: Phase) -> Tracked {
    Tracked {
        pool: pool.clone(),
        phase,
        shape: None,
        since: None,
        born: None,
        uses: 0,
        returns: false,
    }
}

/// Whether a container of a pool with `spec` may serve another execution
/// after its current one: the pool recycles, the container has executions
/// left and is younger than the pool's age limit. Pure.
fn reusable(spec: &crate::crd::ExecutorPoolSpec, t: &Tracked, now: Instant) -> bool {
    let young = match (spec.reuse.as_ref().and_then(|r| r.max_age_seconds), t.born) {
        (Some(max), Some(born)) => {
            now.saturating_duration_since(born) < Duration::from_secs(max.into())
        }
        _ => true,
    };
    spec.recycles() && t.uses < spec.executions_per_container() && young
}

/// `t` in another phase, keeping what it is (shape, age, uses).
fn moved(t: &Tracked, phase: Phase) -> Tracked {
    Tracked {
        phase,
        since: None,
        returns: false,
        ..t.clone()
    }
}
