//! Per-token quotas: a token bucket for the rate and a counter for the
//! executions in flight. The bucket is a pure function of time so tests
//! step the clock by hand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::tokens::Quota;

/// A token bucket: `level` executions may start now; it refills at
/// `per_minute / 60` a second up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    level: f64,
    at: Instant,
}

/// Where a rate stands, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again, or (when refused) until the
    /// next execution may start.
    pub reset_seconds: u64,
}

impl Bucket {
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            level: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, per_minute: u32, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * f64::from(per_minute) / 60.0).min(f64::from(burst));
        self.at = now;
    }

    fn state(&self, per_minute: u32, burst: u32) -> RateState {
        let missing = f64::from(burst) - self.level;
        RateState {
            limit: burst,
            remaining: self.level.floor() as u32,
            reset_seconds: (missing * 60.0 / f64::from(per_minute)).ceil() as u64,
        }
    }

    /// Takes one execution from the bucket, or says how long until one is there.
    pub fn take(
        &mut self,
        per_minute: u32,
        burst: u32,
        now: Instant,
    ) -> Result<RateState, RateState> {
        self.refill(per_minute, burst, now);
        if self.level >= 1.0 {
            self.level -= 1.0;
            return Ok(self.state(per_minute, burst));
        }
        let wait = ((1.0 - self.level) * 60.0 / f64::from(per_minute))
            .ceil()
            .max(1.0);
        Err(RateState {
            reset_seconds: wait as u64,
            ..self.state(per_minute, burst)
        })
    }

    /// Where the bucket stands at `now`, without taking anything.
    pub fn peek(&self, per_minute: u32, burst: u32, now: Instant) -> RateState {
        let mut b = *self;
        b.refill(per_minute, burst, now);
        b.state(per_minute, burst)
    }
}

/// What one token has used: kept across reloads of the file by name, so
/// editing a quota does not hand out a fresh bucket.
#[derive(Debug, Default)]
pub struct Usage {
    bucket: Mutex<Option<Bucket>>,
    in_flight: AtomicU32,
}

/// Why an execution may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rate(RateState),
    Concurrency { limit: u32 },
}

/// An execution in flight; dropping it frees its slot. It may outlive the
/// request that took it (a job holds its request's slot until it ends).
#[derive(Debug)]
pub struct Slot {
    usage: Arc<Usage>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.usage.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Usage {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admits one execution under `quota`: a free slot first, then one from
    /// the bucket (a request refused for concurrency costs no rate).
    pub fn admit(
        self: &Arc<Self>,
        quota: &Quota,
        now: Instant,
    ) -> Result<(Slot, Option<RateState>), Refusal> {
        let limit = quota.concurrent.unwrap_or(u32::MAX);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Refusal::Concurrency { limit })?;
        let slot = Slot {
            usage: Arc::clone(self),
        };
        let rate = match (quota.requests_per_minute, quota.burst()) {
            (Some(rpm), Some(burst)) => {
                let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let b = bucket.get_or_insert_with(|| Bucket::full(burst, now));
                Some(b.take(rpm, burst, now).map_err(Refusal::Rate)?)
            }
            _ => None,
        };
        Ok((slot, rate))
    }

    /// The rate's state at `now`, when the quota has one.
    pub fn rate(&self, quota: &Quota, now: Instant) -> Option<RateState> {
        let (rpm, burst) = (quota.requests_per_minute?, quota.burst()?);
        let bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        Some(match *bucket {
            Some(b) => b.peek(rpm, burst, now),
            None => Bucket::full(burst, now).peek(rpm, burst, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn quota(concurrent: Option<u32>, rpm: Option<u32>, burst: Option<u32>) -> Quota {
        Quota {
            concurrent,
            requests_per_minute: rpm,
            burst,
            ..Quota::default()
        }
    }

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2, t0);
        assert_eq!(b.take(60, 2, t0).unwrap().remaining, 1);
        assert_eq!(b.take(60, 2, t0).unwrap().remaining, 0);
        let refused = b.take(60, 2, t0).unwrap_err();
        assert_eq!(
            (refused.limit, refused.remaining, refused.reset_seconds),
            (2, 0, 1)
        );
        // One a second at 60 a minute.
        let ok = b.take(60, 2, t0 + secs(1)).unwrap();
        assert_eq!((ok.remaining, ok.reset_seconds), (0, 2));
        // Never above the burst, however long it rests.
        assert_eq!(b.peek(60, 2, t0 + secs(3600)).remaining, 2);
        // A slow rate says how long to wait.
        let mut slow = Bucket::full(1, t0);
        slow.take(2, 1, t0).unwrap();
        assert_eq!(slow.take(2, 1, t0).unwrap_err().reset_seconds, 30);
    }

    #[test]
    fn concurrency_slots_are_freed_on_drop_and_cost_no_rate() {
        let usage = Arc::new(Usage::default());
        let q = quota(Some(1), Some(60), Some(5));
        let t0 = Instant::now();
        let (slot, rate) = usage.admit(&q, t0).unwrap();
        assert_eq!(rate.unwrap().remaining, 4);
        assert_eq!(usage.in_flight(), 1);
        assert_eq!(
            usage.admit(&q, t0).unwrap_err(),
            Refusal::Concurrency { limit: 1 }
        );
        assert_eq!(usage.rate(&q, t0).unwrap().remaining, 4, "no rate spent");
        drop(slot);
        assert_eq!(usage.in_flight(), 0);
        assert!(usage.admit(&q, t0).is_ok());
        assert_eq!(
            usage.in_flight(),
            0,
            "the slot of a dropped result is freed"
        );
    }

    #[test]
    fn a_rate_refusal_frees_its_slot() {
        let usage = Arc::new(Usage::default());
        let q = quota(Some(3), Some(60), Some(1));
        let t0 = Instant::now();
        let _held = usage.admit(&q, t0).unwrap();
        assert!(matches!(usage.admit(&q, t0), Err(Refusal::Rate(_))));
        assert_eq!(usage.in_flight(), 1);
        assert!(
            usage.admit(&Quota::default(), t0).is_ok(),
            "no quota, no limit"
        );
    }
}
