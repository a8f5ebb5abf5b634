//! The reconcile loop: feed the core the resources and the time, carry out
//! what it decides, and list the host now and then to catch what changed
//! out of band.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tracing::Instrument;

use super::super::core::Effect;
use super::super::desired::Resources;
use super::Agent;

impl Agent {
    /// Runs the reconcile loop until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut resources = self.inner.resources.clone();
        let mut next_resync = Instant::now();
        let span = tracing::info_span!("agent", node = %self.inner.cfg.node);
        loop {
            let resync = Instant::now() >= next_resync;
            let pass = Instant::now();
            let acted = self.reconcile(resync).instrument(span.clone()).await;
            if resync && acted {
                let pause = resync_pause(self.inner.cfg.resync_interval, pass.elapsed());
                next_resync = Instant::now() + pause;
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

    /// One pass. `resync` also lists the host to catch out-of-band changes.
    /// Returns `false`, having done nothing, while the resources are not a
    /// complete listing (see `Core::resources`).
    pub async fn reconcile(&self, resync: bool) -> bool {
        let res = self.inner.resources.borrow().clone();
        let start = Instant::now();
        // The resources and the pass that applies them under one lock: a
        // request never sees a host that has its listing but not its pools
        // (it would answer "unknown language" for a language it serves).
        let Some(effects) = self.tick_with(Some(&res)) else {
            tracing::debug!("waiting for a complete listing of pools, images and this node");
            return false;
        };
        // Before any launch it ordered: a container serves with its pool's
        // allowlist from its first connection.
        self.sync_egress_policies();
        // A pool whose shape just became known (or changed) is compared with
        // the host before it is filled, so containers left by an earlier run
        // are adopted instead of launched again.
        let list = resync || effects.contains(&Effect::List);
        self.dispatch(effects);
        if list && self.resync().await {
            let effects = self.tick();
            self.dispatch(effects);
        }
        self.publish_gauges();
        self.inner
            .metrics
            .reconcile_seconds
            .observe(start.elapsed().as_secs_f64());
        true
    }

    /// Lets the core decide, and sizes the execution slots to what it decided.
    fn tick(&self) -> Vec<Effect> {
        self.tick_with(None).unwrap_or_default()
    }

    /// Hands the core `res` (when given) and lets it decide, all under one
    /// lock; `None` when `res` is not a complete listing.
    fn tick_with(&self, res: Option<&Resources>) -> Option<Vec<Effect>> {
        let short = super::pressure::memory_short();
        let mut st = self.inner.lock();
        if let Some(res) = res
            && !st.core.resources(res)
        {
            return None;
        }
        st.core.memory_pressure(short);
        let effects = st.core.tick(Instant::now(), Timestamp::now());
        st.resize_slots();
        Some(effects)
    }

    /// Lists the host and hands the listing to the core; adoption checks
    /// finish before it returns, so the pass that follows fills only what
    /// adoption left. Returns whether the host could be listed.
    pub(super) async fn resync(&self) -> bool {
        let _one = self.inner.resync_lock.lock().await;
        let owned = match self.inner.host.list().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the host's containers");
                return false;
            }
        };
        let effects = self.inner.lock().core.listing(&owned);
        let (inspect, rest): (Vec<Effect>, Vec<Effect>) = effects
            .into_iter()
            .partition(|e| matches!(e, Effect::Inspect { .. }));
        self.dispatch(rest);
        futures::future::join_all(inspect.into_iter().map(|e| self.inspect(e))).await;
        true
    }

    fn publish_gauges(&self) {
        let st = self.inner.lock();
        let m = &self.inner.metrics;
        for (key, p) in st.core.pools() {
            m.set_containers(key.as_str(), "warm", p.warm_count());
            m.set_containers(key.as_str(), "busy", p.busy());
            m.set_containers(key.as_str(), "launching", p.launching());
            m.warm_target
                .get_or_create(&crate::metrics::PoolLabels {
                    pool: key.to_string(),
                })
                .set(i64::from(p.target()));
            // Languages not served are failed once the smoke results for the
            // current shape are in, pending until then.
            let unavailable = p.unavailable_languages().len();
            let proven = p.smoke_results().is_some();
            m.set_languages(key.as_str(), "served", p.served_languages().len());
            m.set_languages(key.as_str(), "failed", if proven { unavailable } else { 0 });
            m.set_languages(
                key.as_str(),
                "pending",
                if proven { 0 } else { unavailable },
            );
            let outdated = p.outdated();
            let updated = p.warm_count().saturating_sub(outdated);
            m.set_rollout(key.as_str(), "updated", updated);
            m.set_rollout(key.as_str(), "outdated", outdated);
        }
    }

    /// Destroys every container this agent owns on the host (shutdown with
    /// cleanup), tracked or not. Returns how many.
    pub async fn destroy_all(&self) -> Result<usize, crate::lxd::LxdError> {
        {
            let mut st = self.inner.lock();
            st.core.retire();
            st.resize_slots();
        }
        let owned = self.inner.host.list().await?;
        let results = futures::future::join_all(
            owned
                .iter()
                .map(|i| self.inner.host.destroy(i.name.as_str())),
        )
        .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        self.inner.lock().core.forget_all();
        Ok(owned.len())
    }
}

/// How long to wait before the next pass that lists the host: the
/// configured interval, or twenty times what the last such pass took when
/// that is longer, so that listing a large host (1,000 instances take LXD
/// about half a second to list) never takes more than a twentieth of the
/// daemon's time. Taking a container needs no listing: its replacement
/// launches at once whatever the pause. Pure.
pub(super) fn resync_pause(interval: Duration, pass: Duration) -> Duration {
    interval.max(pass * 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_listing_spaces_the_next_one_out() {
        let five = Duration::from_secs(5);
        assert_eq!(resync_pause(five, Duration::from_millis(20)), five);
        assert_eq!(
            resync_pause(five, Duration::from_millis(485)),
            Duration::from_millis(9700)
        );
    }
}
