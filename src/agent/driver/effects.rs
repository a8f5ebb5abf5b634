//! Carrying out the core's effects on the host, each in its own task, and
//! handing every result back to the core.

use std::time::{Duration, Instant};

use tokio::sync::SemaphorePermit;
use tracing::Instrument;

use crate::metrics::{PoolLabels, ResultLabels};

use super::super::core::{
    ContainerName, Core, EXECUTIONS_FIRST_WAIT, Effect, LaunchOrder, LaunchOutcome, PoolKey,
    SmokeOrder,
};
use super::Agent;

/// The most destroys that wait for executions at once; more are done at
/// once (each waiting one holds its container's memory).
const DEFERRED_DESTROYS_MAX: usize = 16;

impl Agent {
    /// Carries out effects: host work in background tasks, notifications at
    /// once. `List` is the caller's (see `reconcile`).
    pub(super) fn dispatch(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::List => {}
                Effect::WarmAdded(_) => self.inner.warm_added.notify_waiters(),
                Effect::Report(_) => self.inner.changed.notify_waiters(),
                Effect::PoolRemoved(key) => {
                    for state in ["warm", "busy", "launching"] {
                        self.inner.metrics.set_containers(key.as_str(), state, 0);
                    }
                    for state in ["served", "failed", "pending"] {
                        self.inner.metrics.set_languages(key.as_str(), state, 0);
                    }
                    for state in ["updated", "outdated"] {
                        self.inner.metrics.set_rollout(key.as_str(), state, 0);
                    }
                }
                Effect::Destroy {
                    container,
                    pool,
                    deferrable,
                } => self.spawn(
                    tracing::info_span!("destroy", %pool, %container),
                    move |agent| async move { agent.destroy(container, pool, deferrable).await },
                ),
                Effect::Recycle { container, pool } => self.spawn(
                    tracing::info_span!("recycle", %pool, %container),
                    move |agent| async move { agent.recycle(container, pool).await },
                ),
                Effect::EnsureImage(source) => self.spawn(
                    tracing::info_span!("image", ?source),
                    move |agent| async move {
                        let result = agent.inner.host.ensure_image(&source).await;
                        match &result {
                            // The core says when an image is first ready or changes.
                            Ok(i) => tracing::debug!(
                                fingerprint = i.fingerprint,
                                versions = i.versions.len(),
                                "image looked up"
                            ),
                            Err(e) => tracing::warn!(error = %e, "image unavailable"),
                        }
                        agent
                            .inner
                            .lock()
                            .core
                            .image_resolved(source, result, Instant::now());
                        agent.wake();
                    },
                ),
                Effect::Launch(order) => self.spawn(
                    tracing::info_span!("launch", pool = %order.pool, container = %order.container),
                    move |agent| async move { agent.launch(order).await },
                ),
                Effect::Smoke(order) => self.spawn(
                    tracing::info_span!("smoke", pool = %order.launch.pool),
                    move |agent| async move { agent.smoke(order).await },
                ),
                inspect @ Effect::Inspect { .. } => self
                    .spawn(tracing::info_span!("inspect"), move |agent| async move {
                        agent.inspect(inspect).await
                    }),
            }
        }
    }

    /// Runs `work` in a task of the current runtime. Without one (a lease
    /// dropped as the process ends) the work is left to the next start's
    /// listing, which destroys what it finds unused.
    fn spawn<F, Fut>(&self, span: tracing::Span, work: F)
    where
        F: FnOnce(Agent) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(work(self.clone()).instrument(span));
        }
    }

    async fn destroy(&self, container: ContainerName, pool: PoolKey, deferrable: bool) {
        let _background = if deferrable {
            self.after_executions(&pool).await
        } else {
            None
        };
        let result = self.inner.host.destroy(container.as_str()).await;
        let label = match &result {
            Ok(()) => "ok",
            Err(e) => {
                tracing::warn!(error = %e, "destroy failed; the next resync retries");
                e.metric_label()
            }
        };
        self.inner
            .metrics
            .destroys
            .get_or_create(&ResultLabels {
                pool: pool.to_string(),
                result: label.to_string(),
            })
            .inc();
        // Forgotten either way: a container that survived a failed destroy
        // is owned but untracked, so the next resync destroys it again.
        self.inner.lock().core.destroyed(&container);
    }

    /// Waits, before a deferrable destroy, while executions run on this
    /// host and its pool keeps its reserve (`Core::destroy_may_start`), at
    /// most `EXECUTIONS_FIRST_WAIT` and only while fewer than
    /// `DEFERRED_DESTROYS_MAX` wait: the stop's CPU then goes to the
    /// executions' gaps. Nothing of the container runs meanwhile (its
    /// execution ended clean, the runner killed what it left). Then it
    /// takes the background slot unless the stop became urgent
    /// (`background_slot`), and returns it. A stop that finds too many
    /// waiting goes at once, without the slot.
    async fn after_executions(&self, pool: &PoolKey) -> Option<SemaphorePermit<'_>> {
        use std::sync::atomic::Ordering;
        if !self.inner.cfg.executions_first {
            return None;
        }
        let waiting = &self.inner.deferred_destroys;
        if waiting.fetch_add(1, Ordering::SeqCst) >= DEFERRED_DESTROYS_MAX {
            waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let start = Instant::now();
        self.wait_for_executions(|core| core.destroy_may_start(pool))
            .await;
        let background = self.background_slot(pool).await;
        waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner
            .metrics
            .destroy_wait_seconds
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .observe(start.elapsed().as_secs_f64());
        background
    }

    /// Checks a container after an execution and gives it a fresh sandbox;
    /// the core puts it back in its warm queue or destroys it.
    async fn recycle(&self, container: ContainerName, pool: PoolKey) {
        let result = self.inner.host.recycle(container.as_str()).await;
        let label = match &result {
            Ok(()) => "ok",
            Err(e) => {
                tracing::warn!(error = %e, "recycle check failed; destroying the container");
                "failed"
            }
        };
        self.inner
            .metrics
            .recycles
            .get_or_create(&ResultLabels {
                pool: pool.to_string(),
                result: label.to_string(),
            })
            .inc();
        let effects = self.inner.lock().core.recycled(&container, result.is_ok());
        self.dispatch(effects);
    }

    /// Creates one container, within the launch parallelism, unless its
    /// pool no longer wants it by the time a slot is free. Executions come
    /// first: it waits while the core says so (`Core::launch_may_start`),
    /// then for the background slot while the pool's work goes one
    /// operation at a time (`background_slot`).
    async fn launch(&self, order: LaunchOrder) {
        let waiting = Instant::now();
        self.executions_first(&order.pool).await;
        let _background = self.background_slot(&order.pool).await;
        if self.inner.cfg.executions_first {
            let waited = waiting.elapsed();
            self.inner
                .metrics
                .launch_wait_seconds
                .get_or_create(&PoolLabels {
                    pool: order.pool.to_string(),
                })
                .observe(waited.as_secs_f64());
        }
        let _slot = self.inner.launch_slots.acquire().await;
        let start = Instant::now();
        let wanted = self.inner.lock().core.launch_wanted(&order);
        let outcome = if wanted {
            match self.inner.host.launch(&order).await {
                Ok(()) => LaunchOutcome::Ready,
                Err(e) => LaunchOutcome::Failed(e.to_string()),
            }
        } else {
            LaunchOutcome::Skipped
        };
        let label = match &outcome {
            LaunchOutcome::Ready => "ok",
            LaunchOutcome::Failed(_) => "failed",
            LaunchOutcome::Skipped => "skipped",
        };
        let m = &self.inner.metrics;
        m.launches
            .get_or_create(&ResultLabels {
                pool: order.pool.to_string(),
                result: label.to_string(),
            })
            .inc();
        if outcome == LaunchOutcome::Ready {
            m.launch_seconds
                .get_or_create(&PoolLabels {
                    pool: order.pool.to_string(),
                })
                .observe(start.elapsed().as_secs_f64());
        }
        let effects = self
            .inner
            .lock()
            .core
            .launched(&order.container, outcome, Instant::now());
        self.dispatch(effects);
        self.wake();
    }

    /// Waits until a launch for `pool` may start while executions run on
    /// this host, at most `EXECUTIONS_FIRST_WAIT`.
    async fn executions_first(&self, pool: &PoolKey) {
        if self.inner.cfg.executions_first {
            self.wait_for_executions(|core| core.launch_may_start(pool))
                .await;
        }
    }

    /// Takes the background slot for `pool`'s container work while that
    /// work goes one operation at a time (`Core::lifecycle_one_at_a_time`);
    /// `None` when it need not, or no longer must while it waits, and with
    /// executions first off.
    async fn background_slot(&self, pool: &PoolKey) -> Option<SemaphorePermit<'_>> {
        if !self.inner.cfg.executions_first {
            return None;
        }
        // One request for the slot across every look: the semaphore serves
        // waiters first come, first served, and a waiter keeps its place
        // while it looks again.
        let acquire = self.inner.background_slot.acquire();
        tokio::pin!(acquire);
        loop {
            let changed = self.inner.busy_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self
                .inner
                .lock()
                .core
                .lifecycle_one_at_a_time(pool, Instant::now())
            {
                return None;
            }
            // A take makes the work urgent when the reserve runs low; a
            // change of the pool's target, or the host falling quiet, can
            // too, so look again every second.
            tokio::select! {
                permit = &mut acquire => return permit.ok(),
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Waits until `may_start` holds, looking again whenever an execution
    /// takes or gives back a container, at most `EXECUTIONS_FIRST_WAIT`.
    async fn wait_for_executions(&self, may_start: impl Fn(&Core) -> bool) {
        let deadline = Instant::now() + EXECUTIONS_FIRST_WAIT;
        while Instant::now() < deadline {
            let changed = self.inner.busy_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if may_start(&self.inner.lock().core) {
                return;
            }
            // A take or a release changes the answer; a change of the pool's
            // target can too, so look again every second regardless.
            let again = (Instant::now() + Duration::from_secs(1)).min(deadline);
            let _ = tokio::time::timeout_at(again.into(), changed).await;
        }
    }

    /// Launches a pool's smoke container, runs every language's tests in it,
    /// removes it, and hands the results to the core.
    async fn smoke(&self, order: SmokeOrder) {
        let start = Instant::now();
        let launched = {
            let _slot = self.inner.launch_slots.acquire().await;
            self.inner.host.launch(&order.launch).await
        };
        let checks = match launched {
            Ok(()) => {
                let checks = self
                    .inner
                    .host
                    .smoke(
                        order.launch.container.as_str(),
                        &order.launch.spec,
                        &order.languages,
                    )
                    .await;
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
                let container = order.launch.container.as_str();
                let left = match self.inner.host.destroy(container).await {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::warn!(container, error = %e, "cannot remove the smoke-test container; retrying");
                        true
                    }
                };
                (Some(checks), left)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the smoke-test container; retrying later");
                (None, false)
            }
        };
        let (checks, left) = checks;
        let effects = self
            .inner
            .lock()
            .core
            .smoke_finished(&order, checks, left, Instant::now());
        self.dispatch(effects);
        self.wake();
    }

    /// Checks a container offered for adoption.
    pub(super) async fn inspect(&self, effect: Effect) {
        let Effect::Inspect { container, .. } = effect else {
            return;
        };
        let unused = match self.inner.host.unused(container.as_str()).await {
            Ok(unused) => Some(unused),
            Err(e) => {
                tracing::warn!(%container, error = %e, "cannot inspect a container to adopt; deciding on the next resync");
                None
            }
        };
        let effects = self
            .inner
            .lock()
            .core
            .inspected(&container, unused, Instant::now());
        self.dispatch(effects);
    }
}
