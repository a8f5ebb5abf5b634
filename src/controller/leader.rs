//! Leader election through a `coordination.k8s.io` Lease: one replica leads,
//! the others stand by and take over when the lease expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// What to do with the lease, given its current holder. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire, or it is ours: write it.
    Take {
        transitions: i32,
        acquired_now: bool,
    },
    /// Someone else holds a live lease.
    Wait,
}

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
        Decision::Wait
    }
}

/// A lease held (or wanted) by `identity`.
pub struct LeaseLock {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseLock {
    /// Takes or renews the lease; `Ok(true)` while this replica leads.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let Decision::Take {
            transitions,
            acquired_now,
        } = decision
        else {
            return Ok(false);
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
            Ok(_) => Ok(true),
            // Another replica wrote first: it leads.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads, then runs `work` while renewing the
    /// lease. Returns when `work` ends or the lease is lost.
    pub async fn lead<F: Future<Output = ()>>(&self, work: F) -> Result<(), kube::Error> {
        let retry = self.duration / 3;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(retry).await;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "leading");
        tokio::pin!(work);
        let mut failures = 0;
        loop {
            tokio::select! {
                _ = &mut work => return Ok(()),
                _ = tokio::time::sleep(retry) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => failures = 0,
                Ok(false) => {
                    tracing::error!("lost the lease to another replica; stepping down");
                    return Ok(());
                }
                Err(e) if failures < 2 => {
                    failures += 1;
                    tracing::warn!(error = %e, "could not renew the lease");
                }
                Err(e) => return Err(e),
            }
        }
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
            Decision::Wait
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
    }
}
