//! The core's rollout passes: proving a pool's newer image while the old
//! one serves, taking it once it passed, and replacing the old warm
//! containers per `spec.rollout` (the decisions are `rollout`'s).

use std::time::Instant;

use super::super::keys;
use super::super::plan::Phase;
use super::super::smoke;
use super::rollout;
use super::{ContainerName, Core, Effect, LaunchOrder, PoolKey, SmokeOrder, tracked};

impl Core {
    /// Takes every newer image whose smoke tests passed (or blocks it, and
    /// the old one keeps serving), counts each pool's outdated warm
    /// containers and destroys those a `Rolling` pool replaces now.
    /// Containers running an execution are never touched: they are
    /// destroyed after it, as always.
    pub(super) fn roll(&mut self, out: &mut Vec<Effect>) {
        let keys: Vec<PoolKey> = self.pools.keys().cloned().collect();
        for key in keys {
            self.judge_candidate(&key);
            let p = &self.pools[&key];
            let outdated: Vec<ContainerName> = p
                .warm
                .iter()
                .filter(|c| {
                    self.containers
                        .get(*c)
                        .is_some_and(|t| t.shape.is_some() && t.shape != p.hash)
                })
                .cloned()
                .collect();
            let n = rollout::to_replace(
                &p.resolved.spec.rollout(),
                p.target(),
                p.warm_count(),
                outdated.len() as u32,
            );
            let p = self.pools.get_mut(&key).expect("listed above");
            p.outdated = outdated.len() as u32 - n;
            if outdated.is_empty() && p.retiring.take().is_some() {
                tracing::info!(pool = %key, "rollout done: every warm container has the new image");
            }
            for c in outdated.into_iter().take(n as usize) {
                tracing::info!(pool = %key, container = %c, "replacing a warm container of the old image");
                out.push(self.destroy(c, key.clone()));
            }
        }
    }

    /// Promotes or blocks `key`'s newer image once its smoke results for
    /// the current languages are in.
    fn judge_candidate(&mut self, key: &PoolKey) {
        let Some(p) = self.pools.get_mut(key) else {
            return;
        };
        let Some(c) = p.candidate.as_ref().filter(|c| c.blocked.is_none()) else {
            return;
        };
        let wanted = smoke::key(c.generation.hash.as_str(), p.languages());
        let Some((_, checks)) = c.smoke.as_ref().filter(|(k, _)| *k == wanted) else {
            return;
        };
        let served: Vec<&str> = p
            .served_languages()
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        match rollout::judge(&served, checks) {
            Err(why) => {
                tracing::warn!(
                    pool = %key,
                    image = c.generation.fingerprint,
                    why,
                    "the new image failed its smoke tests: this host keeps serving the old one"
                );
                if let Some(c) = p.candidate.as_mut() {
                    c.blocked = Some(why);
                }
            }
            Ok(()) => {
                let c = p.candidate.take().expect("checked above");
                tracing::info!(
                    pool = %key,
                    from = p.fingerprint.as_deref().unwrap_or_default(),
                    to = c.generation.fingerprint,
                    strategy = ?p.resolved.spec.rollout().strategy,
                    "the new image passed its smoke tests: new containers come from it"
                );
                p.retiring = p.fingerprint.take();
                p.hash = Some(c.generation.hash);
                p.fingerprint = Some(c.generation.fingerprint);
                p.versions = c.generation.versions;
                p.smoke = c.smoke;
                p.failures = 0;
                p.backoff_until = None;
                p.last_error = None;
            }
        }
    }

    /// Orders the smoke suite of each pool's newer image, once the current
    /// one is proven and no suite of the pool runs.
    pub(super) fn prove_candidates(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let mut orders = Vec::new();
        for (key, p) in self.pools.iter_mut() {
            if !p.serving()
                || p.needs_listing
                || p.smoke_running.is_some()
                || p.smoke_results().is_none()
            {
                continue;
            }
            let languages = p.languages().to_vec();
            let Some(c) = p.candidate.as_mut() else {
                continue;
            };
            let smoke_key = smoke::key(c.generation.hash.as_str(), &languages);
            // A blocked image is tried again only for other languages or
            // smoke tests (a fixed test), or as another image.
            let done = c.smoke.as_ref().is_some_and(|(k, _)| *k == smoke_key);
            if done || c.backoff_until.is_some_and(|t| now < t) {
                continue;
            }
            c.blocked = None;
            let spec = p.resolved.spec.clone();
            let ready_command =
                crate::execution::ready_command(&languages, spec.network, spec.recycles());
            let launch = LaunchOrder {
                pool: key.clone(),
                container: ContainerName(keys::container_name(&p.resolved.name)),
                spec,
                fingerprint: c.generation.fingerprint.clone(),
                shape: c.generation.hash.clone(),
                ready_command,
            };
            p.smoke_running = Some(smoke_key.clone());
            orders.push(SmokeOrder {
                key: smoke_key,
                launch,
                languages,
            });
        }
        for order in orders {
            let t = tracked(&order.launch.pool, Phase::Proving);
            self.enter(&order.launch.container, Some(t));
            out.push(Effect::Smoke(order));
        }
    }
}
