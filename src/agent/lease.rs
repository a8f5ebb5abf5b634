//! Taking a warm container for one execution, and giving it back: a lease
//! destroys its container when dropped, so no path (error, timeout, a client
//! that hangs up, a panic) can return a used container to the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::plan::Phase;
use super::{Agent, Inner};

/// Why no container could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    #[error("{0}")]
    NoCapacity(Shortage),
    #[error("pool {0} is not served on this host")]
    PoolGone(String),
}

impl AcquireError {
    /// Whether asking again later may succeed.
    pub fn temporary(&self) -> bool {
        match self {
            AcquireError::NoCapacity(s) => s.temporary(),
            AcquireError::PoolGone(_) => false,
        }
    }
}

/// Why a served pool had no container for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortage {
    /// None became free before the deadline; one will, so asking again helps.
    Waited(Duration),
    /// The pool keeps no container warm on this host and none is launching:
    /// waiting cannot help.
    NoneWarm { pool: String },
}

impl Shortage {
    /// Whether asking again later may succeed.
    pub fn temporary(&self) -> bool {
        matches!(self, Shortage::Waited(_))
    }
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortage::Waited(d) => write!(
                f,
                "no warm container became free within {}",
                whole_millis(*d)
            ),
            Shortage::NoneWarm { pool } => write!(
                f,
                "pool {pool} keeps no container warm on this host (warm: 0) and none is launching, so none can come"
            ),
        }
    }
}

/// A duration rounded to whole milliseconds, in seconds when it is a whole
/// number of them: `10s`, `2500ms`.
fn whole_millis(d: Duration) -> String {
    let ms = (d.as_micros() + 500) / 1000;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Whether a pool can never have a container for a request: nothing warm,
/// nothing launching and a warm target of zero. Then a request fails at once
/// instead of waiting for its deadline.
fn none_can_come(p: &super::state::PoolRuntime) -> bool {
    p.warm.is_empty() && p.launching == 0 && p.target() == 0
}

/// One container, taken from its pool for exactly one execution.
pub struct Lease {
    inner: Arc<Inner>,
    pub pool: String,
    pub container: String,
    /// Time spent waiting for the container.
    pub queued: Duration,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("pool", &self.pool)
            .field("container", &self.container)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut st = self.inner.lock();
            if let Some(p) = st.pools.get_mut(&self.pool) {
                p.busy = p.busy.saturating_sub(1);
            }
        }
        Agent {
            inner: self.inner.clone(),
        }
        .destroy_later(self.container.clone(), self.pool.clone());
    }
}

fn none_warm(pool: &str) -> AcquireError {
    AcquireError::NoCapacity(Shortage::NoneWarm {
        pool: pool.to_string(),
    })
}

impl Agent {
    /// Takes a warm container of `pool`, waiting until `deadline` for one
    /// (and for a free execution slot). A replacement launch starts at once.
    /// Fails at once when none can come (see `Shortage::NoneWarm`).
    pub async fn acquire(&self, pool: &str, deadline: Instant) -> Result<Lease, AcquireError> {
        let start = Instant::now();
        let wait = deadline.saturating_duration_since(start);
        let semaphore = {
            let st = self.inner.lock();
            let p = st
                .pools
                .get(pool)
                .filter(|p| p.serving())
                .ok_or_else(|| AcquireError::PoolGone(pool.to_string()))?;
            if none_can_come(p) {
                return Err(none_warm(pool));
            }
            p.concurrency.clone()
        };
        let waited = || AcquireError::NoCapacity(Shortage::Waited(wait));
        let permit = tokio::time::timeout_at(deadline.into(), semaphore.acquire_owned())
            .await
            .map_err(|_| waited())?
            .map_err(|_| AcquireError::PoolGone(pool.to_string()))?;
        loop {
            let notified = self.inner.warm_added.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.inner.lock();
                let p = st
                    .pools
                    .get_mut(pool)
                    .ok_or_else(|| AcquireError::PoolGone(pool.to_string()))?;
                if let Some(container) = p.warm.pop_front() {
                    p.busy += 1;
                    st.set_phase(&container, Phase::Busy);
                    drop(st);
                    self.wake();
                    return Ok(Lease {
                        inner: self.inner.clone(),
                        pool: pool.to_string(),
                        container,
                        queued: start.elapsed(),
                        _permit: permit,
                    });
                }
                if none_can_come(p) {
                    return Err(none_warm(pool));
                }
            }
            self.wake();
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(waited());
            }
        }
    }

    /// Stops and deletes a container in the background; it stays tracked
    /// (as destroying) until LXD confirms, so nothing else touches it.
    pub(crate) fn destroy_later(&self, container: String, pool: String) {
        self.inner
            .lock()
            .tracked
            .insert(container.clone(), (pool.clone(), Phase::Destroying));
        let agent = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let result = agent.inner.lxd.destroy(&container).await;
            let label = match &result {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(container, error = %e, "destroy failed; the next resync retries");
                    e.metric_label()
                }
            };
            agent
                .inner
                .metrics
                .destroys
                .get_or_create(&crate::metrics::ResultLabels { pool, result: label.to_string() })
                .inc();
            // Forgotten either way: a container that survived a failed destroy
            // is owned but untracked, so the next resync destroys it again.
            agent.inner.lock().tracked.remove(&container);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;
    use crate::agent::{AgentConfig, Resources};

    /// An agent (its LXD never contacted) with one serving pool of `warm`
    /// warm containers wanted, none there.
    fn agent_with_pool(warm: u32, launching: u32) -> Agent {
        let (_tx, rx) = watch::channel(Resources::default());
        let cfg = AgentConfig {
            node: "n".into(),
            storage_pool: "unsandbox".into(),
            images_dir: None,
            launch_parallelism: 1,
            resync_interval: Duration::from_secs(60),
            templates: false,
        };
        let lxd = crate::lxd::Lxd::new("/nonexistent/unix.socket", "unsandbox");
        let agent = Agent::new(lxd, cfg, rx, Arc::new(crate::metrics::Metrics::new()));
        let mut p = crate::agent::state::test_pool("t/p", warm);
        p.launching = launching;
        agent.inner.lock().pools.insert("t/p".into(), p);
        agent
    }

    #[tokio::test]
    async fn a_pool_with_no_warm_container_fails_at_once() {
        let agent = agent_with_pool(0, 0);
        let start = Instant::now();
        let e = agent
            .acquire("t/p", start + Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1), "no wait");
        assert_eq!(
            e,
            AcquireError::NoCapacity(Shortage::NoneWarm { pool: "t/p".into() })
        );
        assert!(e.to_string().contains("keeps no container warm"), "{e}");
        let answer = crate::api::ApiError::from(e);
        assert_eq!(
            (answer.status.as_u16(), answer.code, answer.retry_after),
            (503, "no_capacity", None),
            "waiting will not help: no Retry-After"
        );
    }

    #[tokio::test]
    async fn a_pool_filling_up_is_waited_for_until_the_deadline() {
        let agent = agent_with_pool(1, 1);
        let start = Instant::now();
        let e = agent
            .acquire("t/p", start + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(290));
        let AcquireError::NoCapacity(s) = &e else {
            panic!("{e:?}")
        };
        assert!(s.temporary());
        assert_eq!(crate::api::ApiError::from(e).retry_after, Some(1));
    }

    #[test]
    fn waits_are_named_in_whole_milliseconds() {
        let e = Shortage::Waited(Duration::from_nanos(9_999_932_068));
        assert_eq!(e.to_string(), "no warm container became free within 10s");
        assert_eq!(whole_millis(Duration::from_micros(2_500_400)), "2500ms");
    }
}
