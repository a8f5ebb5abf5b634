//! The reconcile loop: apply the desired pools, fill each to its warm count,
//! trim surplus, and periodically compare with what LXD really has.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::crd::ImageSource;
use crate::metrics::{PoolLabels, ResultLabels};

use super::desired::{self, Problem, container_hash};
use super::launcher::{self, Placement};
use super::plan::{self, Phase, Want};
use super::state::{ImageState, PoolRuntime};
use super::{Agent, image, keys};

/// How long a failed image lookup or build waits before it is tried again.
const IMAGE_RETRY: Duration = Duration::from_secs(30);

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}

impl Agent {
    /// Runs the reconcile loop until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut resources = self.inner.resources.clone();
        let mut next_resync = Instant::now();
        let span = tracing::info_span!("agent", node = %self.inner.cfg.node);
        loop {
            let resync = Instant::now() >= next_resync;
            let acted = self.reconcile(resync).instrument(span.clone()).await;
            if resync && acted {
                next_resync = Instant::now() + self.inner.cfg.resync_interval;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                changed = resources.changed() => {
                    if changed.is_err() {
                        // The source is gone: keep serving what we have.
                        resources = self.inner.resources.clone();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep_until(next_resync.min(Instant::now() + Duration::from_secs(1)).into()) => {}
            }
        }
    }

    /// One pass. `resync` also lists LXD to catch out-of-band changes.
    /// Returns `false`, having done nothing, while the resources are not a
    /// complete listing: an empty or partial list then means "not known
    /// yet", and acting on it would remove pools and destroy (instead of
    /// adopt) the warm containers and templates of an earlier run.
    pub async fn reconcile(&self, resync: bool) -> bool {
        let res = self.inner.resources.borrow().clone();
        if !res.complete {
            tracing::debug!("waiting for a complete listing of pools, images and this node");
            return false;
        }
        let start = Instant::now();
        // A pool whose shape just became known (or changed) is compared with
        // LXD before it is filled, so containers left by an earlier run are
        // adopted instead of launched again.
        let shape_changed = self.apply_desired(&res);
        if resync || shape_changed {
            self.resync().await;
        }
        self.fill();
        self.prove_languages();
        self.publish_gauges();
        self.inner
            .metrics
            .reconcile_seconds
            .observe(start.elapsed().as_secs_f64());
        true
    }

    /// Brings the pool map in line with the desired resources (a complete
    /// listing). Returns whether some pool's container shape changed.
    fn apply_desired(&self, res: &super::Resources) -> bool {
        let mut shape_changed = false;
        let cfg = &self.inner.cfg;
        let resolved = desired::resolve(res, &cfg.node);
        let now = Instant::now();
        let mut destroy = Vec::new();
        let mut image_jobs: BTreeSet<ImageSource> = BTreeSet::new();
        {
            let mut st = self.inner.lock();
            st.listed = true;
            let wanted: BTreeSet<&str> = resolved.iter().map(|r| r.key.as_str()).collect();
            let removed: Vec<String> = st
                .pools
                .keys()
                .filter(|k| !wanted.contains(k.as_str()))
                .cloned()
                .collect();
            for key in removed {
                if let Some(p) = st.pools.remove(&key) {
                    tracing::info!(pool = %key, "pool removed: destroying its warm containers");
                    destroy.extend(p.warm.into_iter().map(|c| (c, key.clone())));
                    for state in ["warm", "busy", "launching"] {
                        self.inner.metrics.set_containers(&key, state, 0);
                    }
                }
            }
            for r in resolved {
                let source = r
                    .image
                    .as_ref()
                    .filter(|_| r.servable())
                    .map(|i| i.source.clone());
                let mut versions = BTreeMap::new();
                let (fingerprint, problem) = match source.as_ref().map(|s| (s, st.images.get(s))) {
                    None => (None, None),
                    Some((s, None)) => {
                        image_jobs.insert(s.clone());
                        (None, None)
                    }
                    Some((_, Some(ImageState::Pending))) => (None, None),
                    Some((
                        _,
                        Some(ImageState::Ready {
                            fingerprint,
                            versions: v,
                        }),
                    )) => {
                        versions = v.clone();
                        (Some(fingerprint.clone()), None)
                    }
                    Some((s, Some(ImageState::Failed { message, retry_at }))) => {
                        if now >= *retry_at {
                            image_jobs.insert(s.clone());
                        }
                        (
                            None,
                            Some(Problem {
                                reason: crate::crd::Reason::ImageUnavailable,
                                message: message.clone(),
                            }),
                        )
                    }
                };
                let key = r.key.clone();
                let p = st
                    .pools
                    .entry(key.clone())
                    .or_insert_with(|| PoolRuntime::new(r.clone()));
                p.set_max_concurrent(r.spec.max_concurrent);
                let hash = fingerprint
                    .as_deref()
                    .filter(|_| r.servable())
                    .map(|f| container_hash(&r.spec, f));
                p.resolved = r;
                p.fingerprint = fingerprint;
                p.versions = versions;
                p.runtime_problem = problem;
                if hash != p.hash {
                    if p.hash.is_some() {
                        tracing::info!(pool = %key, "container shape changed: replacing warm containers");
                    }
                    destroy.extend(p.warm.drain(..).map(|c| (c, key.clone())));
                    shape_changed |= hash.is_some();
                    p.hash = hash;
                    p.filled_once = false;
                    p.failures = 0;
                    p.backoff_until = None;
                    p.last_error = None;
                }
            }
            for s in &image_jobs {
                st.images.insert(s.clone(), ImageState::Pending);
            }
        }
        for (c, pool) in destroy {
            self.destroy_later(c, pool);
        }
        for source in image_jobs {
            self.spawn_image_job(source);
        }
        shape_changed
    }

    fn spawn_image_job(&self, source: ImageSource) {
        let agent = self.clone();
        tokio::spawn(async move {
            let dir = agent.inner.cfg.images_dir.clone();
            let state = match image::ensure(&agent.inner.lxd, &source, dir.as_deref()).await {
                Ok(fingerprint) => {
                    let versions = image::recorded_versions(&agent.inner.lxd, &fingerprint)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(fingerprint, error = %e, "cannot read the image's recorded versions");
                            Default::default()
                        });
                    tracing::info!(
                        ?source,
                        fingerprint,
                        versions = versions.len(),
                        "image ready"
                    );
                    ImageState::Ready {
                        fingerprint,
                        versions,
                    }
                }
                Err(e) => {
                    tracing::warn!(?source, error = %e, "image unavailable");
                    ImageState::Failed {
                        message: e.to_string(),
                        retry_at: Instant::now() + IMAGE_RETRY,
                    }
                }
            };
            agent.inner.lock().images.insert(source, state);
            agent.wake();
        });
    }

    /// Starts launches for every deficit and destroys every surplus.
    fn fill(&self) {
        let now = Instant::now();
        let mut launches = Vec::new();
        let mut destroy = Vec::new();
        {
            let mut guard = self.inner.lock();
            let st = &mut *guard;
            for (key, p) in st.pools.iter_mut() {
                destroy.extend(p.surplus().into_iter().map(|c| (c, key.clone())));
                let n = p.deficit(now);
                let (Some(fp), Some(hash)) = (p.fingerprint.clone(), p.hash.clone()) else {
                    continue;
                };
                for _ in 0..n {
                    let name = keys::container_name(&p.resolved.name);
                    st.tracked
                        .insert(name.clone(), (key.clone(), Phase::Launching));
                    let languages = p
                        .resolved
                        .image
                        .as_ref()
                        .map(|i| i.languages.as_slice())
                        .unwrap_or_default();
                    let warmup = crate::execution::ready_command(languages);
                    launches.push((
                        key.clone(),
                        name,
                        p.resolved.spec.clone(),
                        fp.clone(),
                        hash.clone(),
                        warmup,
                    ));
                }
                p.launching += n;
            }
        }
        for (c, pool) in destroy {
            self.destroy_later(c, pool);
        }
        for (key, name, spec, fp, hash, warmup) in launches {
            let agent = self.clone();
            let span = tracing::info_span!("launch", pool = %key, container = %name);
            tokio::spawn(
                async move { agent.launch_one(key, name, spec, fp, hash, warmup).await }
                    .instrument(span),
            );
        }
    }

    /// Creates, starts and readies one container of pool `key` (image
    /// `fingerprint`, shape `hash`): a copy of the pool's id-mapped template
    /// when templates are on, else from the image.
    async fn create(
        &self,
        name: &str,
        spec: &crate::crd::ExecutorPoolSpec,
        (key, fingerprint, hash): (&str, &str, &str),
        ready: Vec<String>,
    ) -> Result<(), crate::lxd::LxdError> {
        let at = Placement {
            node: &self.inner.cfg.node,
            pool_key: key,
            storage_pool: &self.inner.cfg.storage_pool,
            fingerprint,
            hash,
        };
        let template = if self.inner.cfg.templates {
            let _one_at_a_time = self.inner.template_lock.lock().await;
            Some(launcher::ensure_template(&self.inner.lxd, spec, &at).await?)
        } else {
            None
        };
        launcher::launch(&self.inner.lxd, name, template.as_deref(), spec, &at, ready).await
    }

    async fn launch_one(
        &self,
        key: String,
        name: String,
        spec: crate::crd::ExecutorPoolSpec,
        fp: String,
        hash: String,
        warmup: Vec<String>,
    ) {
        let _slot = self.inner.launch_slots.acquire().await;
        let start = Instant::now();
        let still_wanted = self
            .inner
            .lock()
            .pools
            .get(&key)
            .is_some_and(|p| p.hash.as_deref() == Some(&hash));
        let result = if still_wanted {
            Some(self.create(&name, &spec, (&key, &fp, &hash), warmup).await)
        } else {
            None
        };
        let label = match &result {
            Some(Ok(())) => "ok",
            Some(Err(e)) => e.metric_label(),
            None => "skipped",
        };
        self.inner
            .metrics
            .launches
            .get_or_create(&ResultLabels {
                pool: key.clone(),
                result: label.to_string(),
            })
            .inc();
        let mut destroy = false;
        {
            let mut guard = self.inner.lock();
            let st = &mut *guard;
            let pool = st.pools.get_mut(&key);
            match (pool, result) {
                (Some(p), Some(Ok(()))) => {
                    p.launching = p.launching.saturating_sub(1);
                    p.failures = 0;
                    p.backoff_until = None;
                    p.last_error = None;
                    let fits =
                        p.hash.as_deref() == Some(&hash) && (p.warm.len() as u32) < p.target();
                    if fits {
                        p.warm.push_back(name.clone());
                        st.tracked.insert(name.clone(), (key.clone(), Phase::Warm));
                        self.inner.warm_added.notify_waiters();
                        self.inner
                            .metrics
                            .launch_seconds
                            .get_or_create(&PoolLabels { pool: key.clone() })
                            .observe(start.elapsed().as_secs_f64());
                    } else {
                        destroy = true;
                    }
                }
                (Some(p), Some(Err(e))) => {
                    p.launching = p.launching.saturating_sub(1);
                    p.failures += 1;
                    p.backoff_until = Some(Instant::now() + backoff(p.failures));
                    p.last_error = Some(e.to_string());
                    st.tracked.remove(&name);
                }
                (Some(p), None) => {
                    p.launching = p.launching.saturating_sub(1);
                    st.tracked.remove(&name);
                }
                (None, Some(Ok(()))) => destroy = true,
                (None, _) => {
                    st.tracked.remove(&name);
                }
            }
        }
        if destroy {
            self.destroy_later(name, key);
        }
        self.wake();
    }

    /// Starts a smoke suite for every pool whose languages are not proven on
    /// this host for its current shape (see `smoke`).
    fn prove_languages(&self) {
        let mut jobs = Vec::new();
        {
            let mut st = self.inner.lock();
            for (key, p) in st.pools.iter_mut() {
                let (Some(fp), Some(hash), Some(smoke_key)) =
                    (p.fingerprint.clone(), p.hash.clone(), p.smoke_key())
                else {
                    continue;
                };
                let backing_off = p.backoff_until.is_some_and(|t| Instant::now() < t);
                if !p.serving()
                    || p.smoke_results().is_some()
                    || p.smoke_running.as_deref() == Some(&smoke_key)
                    || backing_off
                {
                    continue;
                }
                p.smoke_running = Some(smoke_key.clone());
                jobs.push((
                    key.clone(),
                    smoke_key,
                    p.resolved.spec.clone(),
                    p.languages().to_vec(),
                    fp,
                    hash,
                ));
            }
        }
        for (key, smoke_key, spec, languages, fp, hash) in jobs {
            let agent = self.clone();
            let span = tracing::info_span!("smoke", pool = %key);
            tokio::spawn(
                async move {
                    agent
                        .smoke_one(key, smoke_key, spec, languages, fp, hash)
                        .await
                }
                .instrument(span),
            );
        }
    }

    /// Runs a pool's smoke suite in a fresh container and records the results.
    async fn smoke_one(
        &self,
        key: String,
        smoke_key: String,
        spec: crate::crd::ExecutorPoolSpec,
        languages: Vec<crate::crd::LanguageSpec>,
        fp: String,
        hash: String,
    ) {
        let start = Instant::now();
        let name = {
            let mut st = self.inner.lock();
            let pool_name = st
                .pools
                .get(&key)
                .map(|p| p.resolved.name.clone())
                .unwrap_or_default();
            let name = keys::container_name(&pool_name);
            // Busy: resyncs leave it alone; a restart finds it used and destroys it.
            st.tracked.insert(name.clone(), (key.clone(), Phase::Busy));
            name
        };
        let launched = {
            let _slot = self.inner.launch_slots.acquire().await;
            let ready = crate::execution::ready_command(&languages);
            self.create(&name, &spec, (&key, &fp, &hash), ready).await
        };
        let checks = match launched {
            Ok(()) => {
                let limits = super::smoke::limits(&spec);
                let checks =
                    super::smoke::run_suite(&self.inner.lxd, &name, &languages, &limits).await;
                // Gone before the languages are served, so the container
                // count settles when the pool becomes ready.
                match self.inner.lxd.destroy(&name).await {
                    Ok(()) => {
                        self.inner.lock().tracked.remove(&name);
                    }
                    Err(e) => {
                        tracing::warn!(container = %name, error = %e, "cannot remove the smoke-test container; retrying");
                        self.destroy_later(name, key.clone());
                    }
                }
                Some(checks)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the smoke-test container; retrying later");
                self.inner.lock().tracked.remove(&name);
                None
            }
        };
        {
            let mut st = self.inner.lock();
            if let Some(p) = st.pools.get_mut(&key) {
                p.smoke_running = None;
                match checks {
                    Some(checks) => {
                        let failed: Vec<&str> = checks
                            .iter()
                            .filter(|c| !c.passed)
                            .map(|c| c.language.as_str())
                            .collect();
                        tracing::info!(
                            languages = checks.len(),
                            ?failed,
                            elapsed_ms = start.elapsed().as_millis() as u64,
                            "smoke tests finished"
                        );
                        for c in checks.iter().filter(|c| !c.passed) {
                            tracing::warn!(language = %c.language, error = c.error.as_deref().unwrap_or(""), "language failed its smoke tests; not serving it here");
                        }
                        p.smoke = Some((smoke_key, checks));
                    }
                    None => {
                        p.failures += 1;
                        p.backoff_until = Some(Instant::now() + backoff(p.failures));
                    }
                }
            }
        }
        self.wake();
    }

    /// Lists LXD and reconciles it with memory: forgets warm containers that
    /// were stopped or deleted out of band, adopts unused containers left by
    /// an earlier run of this agent, destroys everything else it owns.
    async fn resync(&self) {
        let instances = match self.inner.lxd.instances().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list LXD instances");
                return;
            }
        };
        let owned = plan::owned_by(instances, &self.inner.cfg.node);
        let pool_of: BTreeMap<String, String> = owned
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.config.get(keys::POOL).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let (tracked, wants) = {
            let st = self.inner.lock();
            let wants: BTreeMap<String, Want> = st
                .pools
                .iter()
                .map(|(k, p)| {
                    // A pool that cannot be served wants nothing, whatever its image.
                    let hash = if p.problem().is_some() {
                        Some(String::new())
                    } else {
                        p.hash.clone()
                    };
                    (k.clone(), Want { hash })
                })
                .collect();
            (st.tracked.clone(), wants)
        };
        let decided = plan::resync(&owned, &tracked, &wants);
        tracing::debug!(owned = owned.len(), ?decided, "resync");
        if !decided.forget.is_empty() {
            let mut st = self.inner.lock();
            for name in &decided.forget {
                if let Some((pool, Phase::Warm)) = st.tracked.get(name).cloned() {
                    tracing::info!(container = %name, pool = %pool, "warm container lost out of band; replacing it");
                    if let Some(p) = st.pools.get_mut(&pool) {
                        p.warm.retain(|c| c != name);
                    }
                    st.tracked.remove(name);
                }
            }
        }
        for name in decided.destroy {
            let pool = pool_of.get(&name).cloned().unwrap_or_default();
            tracing::info!(container = %name, pool = %pool, "removing a container this agent owns but does not use");
            self.destroy_later(name, pool);
        }
        for (pool, name) in decided.adopt {
            self.adopt(pool, name).await;
        }
    }

    /// Adopts a container an earlier run left, if it was never used.
    async fn adopt(&self, pool: String, name: String) {
        let lxd = &self.inner.lxd;
        let unused = match (
            lxd.read_file(&name, keys::USED_MARKER).await,
            lxd.read_file(&name, keys::READY_MARKER).await,
        ) {
            (Ok(None), Ok(Some(_))) => true,
            (Ok(_), Ok(_)) => false,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(container = %name, error = %e, "cannot inspect a container to adopt; deciding on the next resync");
                return;
            }
        };
        let taken = unused && {
            let mut guard = self.inner.lock();
            let st = &mut *guard;
            match st.pools.get_mut(&pool) {
                Some(p) if p.room() > 0 && !st.tracked.contains_key(&name) => {
                    p.warm.push_back(name.clone());
                    st.tracked.insert(name.clone(), (pool.clone(), Phase::Warm));
                    true
                }
                _ => false,
            }
        };
        if taken {
            tracing::info!(container = %name, pool = %pool, "adopted a warm container from an earlier run");
            self.inner.warm_added.notify_waiters();
        } else {
            self.destroy_later(name, pool);
        }
    }

    fn publish_gauges(&self) {
        let mut st = self.inner.lock();
        for (key, p) in st.pools.iter_mut() {
            if p.serving() && p.warm.len() as u32 >= p.target() {
                p.filled_once = true;
            }
            let m = &self.inner.metrics;
            m.set_containers(key, "warm", p.warm.len() as u32);
            m.set_containers(key, "busy", p.busy);
            m.set_containers(key, "launching", p.launching);
        }
        super::status::observe(&mut st.pools);
    }

    /// Destroys every container this agent owns on LXD (shutdown with
    /// cleanup). Returns how many.
    pub async fn destroy_all(&self) -> Result<usize, crate::lxd::LxdError> {
        self.inner.lock().pools.clear();
        let n = super::cleanup(&self.inner.lxd, &self.inner.cfg.node).await?;
        self.inner.lock().tracked.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::super::{AgentConfig, Blocker, ChoiceError, Resources};
    use super::*;
    use crate::crd::NetworkTier;

    fn resources(complete: bool) -> Resources {
        let image = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, sourceFile: m.py, run: python3 m.py}]\n",
        )
        .unwrap();
        let pool = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: p, namespace: t}\nspec: {image: small, warm: 1}\n",
        )
        .unwrap();
        Resources {
            pools: vec![pool],
            images: vec![image],
            node_labels: None,
            complete,
        }
    }

    /// An agent whose LXD does not exist: any call to it fails.
    fn agent(res: Resources) -> (Agent, watch::Sender<Resources>) {
        let (tx, rx) = watch::channel(res);
        let cfg = AgentConfig {
            node: "n1".into(),
            storage_pool: "unsandbox".into(),
            images_dir: None,
            launch_parallelism: 1,
            resync_interval: Duration::from_secs(60),
            templates: true,
        };
        let lxd = crate::lxd::Lxd::new("/nonexistent/unix.socket", "unsandbox");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        (Agent::new(lxd, cfg, rx, metrics), tx)
    }

    #[tokio::test]
    async fn nothing_is_decided_before_a_complete_listing() {
        let (agent, tx) = agent(resources(false));
        assert!(!agent.reconcile(true).await, "an incomplete listing waits");
        assert!(agent.reports().is_empty(), "no pool applied");
        let starting = agent.choose("python", NetworkTier::Zerotrust);
        assert!(
            matches!(
                starting,
                Err(ChoiceError::Blocked {
                    blocker: Blocker::Starting,
                    ..
                })
            ),
            "{starting:?}"
        );

        tx.send(resources(true)).unwrap();
        assert!(agent.reconcile(false).await);
        assert_eq!(agent.reports().len(), 1);
        let pending = agent.choose("python", NetworkTier::Zerotrust);
        assert!(
            matches!(
                pending,
                Err(ChoiceError::Blocked {
                    blocker: Blocker::ImagePending { .. },
                    ..
                })
            ),
            "{pending:?}"
        );
    }
}
