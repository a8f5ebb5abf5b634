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
    #[error("no warm container became free within {0:?}")]
    NoCapacity(Duration),
    #[error("pool {0} is not served on this host")]
    PoolGone(String),
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

impl Agent {
    /// Takes a warm container of `pool`, waiting until `deadline` for one
    /// (and for a free execution slot). A replacement launch starts at once.
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
            p.concurrency.clone()
        };
        let permit = tokio::time::timeout_at(deadline.into(), semaphore.acquire_owned())
            .await
            .map_err(|_| AcquireError::NoCapacity(wait))?
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
            }
            self.wake();
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(AcquireError::NoCapacity(wait));
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
