//! Taking a warm container for one execution, and giving it back: a lease
//! destroys its container when dropped, so no path (error, timeout, a client
//! that hangs up, a panic) can return a used container to the pool. Only a
//! lease `finish`ed clean offers its container for recycling (a pool with
//! `spec.reuse`), and the core still decides.

use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::super::core::{ContainerName, TakeError};
use super::Agent;

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

/// One container, taken from its pool for exactly one execution.
pub struct Lease {
    agent: Agent,
    pub pool: String,
    pub container: String,
    /// Time spent waiting for the container.
    pub queued: Duration,
    /// Set by `finish`: the execution ended without an anomaly.
    clean: bool,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Gives the container back after an execution that ended `clean`
    /// (no timeout, kill, limit hit, lost output or runner failure).
    pub fn finish(mut self, clean: bool) {
        self.clean = clean;
    }
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
        let name = ContainerName(self.container.clone());
        let effects = self
            .agent
            .inner
            .lock()
            .core
            .released(&name, self.clean, Instant::now());
        self.agent.inner.busy_changed.notify_waiters();
        self.agent.dispatch(effects);
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
        let gone = || AcquireError::PoolGone(pool.to_string());
        let slots = {
            let st = self.inner.lock();
            match st.core.none_can_come(pool) {
                None => return Err(gone()),
                Some(true) => return Err(none_warm(pool)),
                Some(false) => {}
            }
            st.slots
                .iter()
                .find(|(k, _)| k.as_str() == pool)
                .map(|(_, (sem, _))| sem.clone())
                .ok_or_else(gone)?
        };
        let waited = || AcquireError::NoCapacity(Shortage::Waited(wait));
        let permit = tokio::time::timeout_at(deadline.into(), slots.acquire_owned())
            .await
            .map_err(|_| waited())?
            .map_err(|_| gone())?;
        loop {
            let notified = self.inner.warm_added.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = self.inner.lock().core.take(pool, Instant::now());
            match taken {
                Ok(container) => {
                    self.inner.busy_changed.notify_waiters();
                    self.wake();
                    return Ok(Lease {
                        agent: self.clone(),
                        pool: pool.to_string(),
                        container: container.0,
                        queued: start.elapsed(),
                        clean: false,
                        _permit: permit,
                    });
                }
                Err(TakeError::NotServed) => return Err(gone()),
                Err(TakeError::Empty {
                    none_can_come: true,
                }) => return Err(none_warm(pool)),
                Err(TakeError::Empty { .. }) => {}
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_named_in_whole_milliseconds() {
        let e = Shortage::Waited(Duration::from_nanos(9_999_932_068));
        assert_eq!(e.to_string(), "no warm container became free within 10s");
        assert_eq!(whole_millis(Duration::from_micros(2_500_400)), "2500ms");
    }
}
