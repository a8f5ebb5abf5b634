//! Leader election through a `coordination.k8s.io` Lease: one replica leads,
//! the others stand by and take over when the lease expires or is released.
//! A leader that shuts down releases the lease (as client-go does), so a
//! standby takes over within one retry period instead of a lease duration.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// What to do with the lease, given its current holder. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire or released it, or it is
    /// ours: write it.
    Take {
        /// `leaseTransitions` to write.
        transitions: i32,
        /// Whether this replica becomes the holder now (not a renewal).
        acquired_now: bool,
    },
    /// Someone else holds a live lease.
    Wait {
        /// Who.
        holder: String,
    },
}

/// The decision for replica `me` at `now`, given the lease's spec (`None`:
/// no lease yet). A released lease has no holder.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take {
            transitions: 0,
            acquired_now: true,
        };
    };
    let transitions = spec.lease_transitions.unwrap_or(0);
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Decision::Take {
            transitions,
            acquired_now: false,
        };
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| now.duration_since(t.0).unsigned_abs() > duration || t.0 > now + duration);
    if holder.is_empty() || expired {
        Decision::Take {
            transitions: transitions + 1,
            acquired_now: true,
        }
    } else {
        Decision::Wait {
            holder: holder.to_string(),
        }
    }
}

/// How often the leader renews and a standby tries: a fifth of the lease,
/// at most 2 s (client-go's default retry period), at least 200 ms.
pub fn retry_period(duration: Duration) -> Duration {
    (duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// This replica's role after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This replica holds the lease.
    Leader,
    /// Another replica does.
    Standby {
        /// Who, as far as known.
        holder: String,
    },
}

/// The leader metrics: `controller_leader` (1 while this replica leads) and
/// `controller_leader_transitions` (times it became leader).
#[derive(Clone, Default)]
pub struct LeaderMetrics {
    /// 1 while this replica leads, 0 while it stands by.
    pub leader: Gauge,
    /// Times this replica became leader.
    pub transitions: Counter,
}

/// A lease held (or wanted) by `identity`.
pub struct LeaseLock {
    /// The Lease's namespace.
    pub api: Api<Lease>,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long the lease lasts without renewal.
    pub duration: Duration,
    /// Where the role is reported.
    pub metrics: LeaderMetrics,
    /// The lease as this replica last wrote it (for the release).
    written: Mutex<Option<Lease>>,
}

impl LeaseLock {
    /// A lock on the Lease `name` in `api`'s namespace.
    pub fn new(
        api: Api<Lease>,
        name: String,
        identity: String,
        duration: Duration,
        metrics: LeaderMetrics,
    ) -> Self {
        Self {
            api,
            name,
            identity,
            duration,
            metrics,
            written: Mutex::new(None),
        }
    }

    /// Takes or renews the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Role, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let (transitions, acquired_now) = match decision {
            Decision::Wait { holder } => return Ok(Role::Standby { holder }),
            Decision::Take {
                transitions,
                acquired_now,
            } => (transitions, acquired_now),
        };
        let acquire_time = match (&current, acquired_now) {
            (Some(l), false) => l.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            _ => Some(MicroTime(now)),
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs() as i32),
                acquire_time,
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        };
        let written = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(l) => {
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
                Ok(Role::Leader)
            }
            // Another replica wrote first: it leads.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Role::Standby {
                holder: "another replica".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (client-go style: no holder, renewed now, lasting
    /// 1 s), so a standby takes it at its next try. `Ok(false)` when there
    /// was nothing to release or another replica wrote it meanwhile.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mine) = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(false);
        };
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: mine.metadata.resource_version.clone(),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: mine.spec.as_ref().and_then(|s| s.lease_transitions),
                ..Default::default()
            }),
        };
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads, then runs `work` while renewing the
    /// lease. When `work` ends (it watches the same stop signal), the lease
    /// is released. Returns early when `stop` fires before this replica
    /// leads, or when the lease is lost (then `work` is dropped at once:
    /// another replica reconciles now).
    pub async fn lead<F: Future<Output = ()>>(
        &self,
        work: F,
        stop: impl Future<Output = ()>,
    ) -> Result<(), kube::Error> {
        let retry = retry_period(self.duration);
        let mut stop = std::pin::pin!(stop);
        let mut announced: Option<String> = None;
        self.metrics.leader.set(0);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Role::Leader) => break,
                Ok(Role::Standby { holder }) => {
                    if announced.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.name, identity = %self.identity, leader = %holder, "standing by");
                        announced = Some(holder);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(retry) => {}
            }
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "leading");
        self.metrics.leader.set(1);
        self.metrics.transitions.inc();
        let mut work = std::pin::pin!(work);
        // Renewals may fail for a while (API server restart); leading goes on
        // only while the last renewal is fresher than two thirds of the lease.
        let deadline = self.duration * 2 / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = &mut work => break,
                _ = tokio::time::sleep(retry) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(Role::Leader) => renewed = Instant::now(),
                Ok(Role::Standby { holder }) => {
                    self.metrics.leader.set(0);
                    tracing::error!(leader = %holder, "lost the lease to another replica; stepping down");
                    return Ok(());
                }
                Err(e) if renewed.elapsed() < deadline => {
                    tracing::warn!(error = %e, "could not renew the lease");
                }
                Err(e) => {
                    self.metrics.leader.set(0);
                    return Err(e);
                }
            }
        }
        self.metrics.leader.set(0);
        match self.release().await {
            Ok(true) => tracing::info!(lease = %self.name, "released the lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not release the lease; it expires"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(secs),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(
            decide(None, "me", now),
            Decision::Take {
                transitions: 0,
                acquired_now: true
            }
        );
        assert_eq!(
            decide(Some(&spec("me", 990, 15)), "me", now),
            Decision::Take {
                transitions: 3,
                acquired_now: false
            }
        );
        assert_eq!(
            decide(Some(&spec("other", 990, 15)), "me", now),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&spec("other", 900, 15)), "me", now),
            Decision::Take {
                transitions: 4,
                acquired_now: true
            }
        );
        assert_eq!(
            decide(Some(&spec("", 999, 15)), "me", now),
            Decision::Take {
                transitions: 4,
                acquired_now: true
            }
        );
        // Released by its leader on shutdown: no holder, renewed just now,
        // lasting 1 s. Taken at once, though it has not expired.
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..spec("", 1_000, 1)
        };
        assert_eq!(
            decide(Some(&released), "me", now),
            Decision::Take {
                transitions: 4,
                acquired_now: true
            }
        );
    }

    #[test]
    fn retry_periods() {
        let cases = [(15, 2_000), (5, 1_000), (60, 2_000), (0, 200)];
        for (lease, want_ms) in cases {
            assert_eq!(
                retry_period(Duration::from_secs(lease)),
                Duration::from_millis(want_ms),
                "{lease}"
            );
        }
    }
}
