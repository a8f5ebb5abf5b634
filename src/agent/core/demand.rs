//! Demand-driven warm counts (`spec.autoscale`): how fast a pool's
//! containers are taken, how long a replacement takes to launch, and the
//! warm count that rides out the bursts seen (Little's law). Pure.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::crd::Autoscale;

/// Takes are counted in spans of this length...
const SPAN: Duration = Duration::from_secs(5);
/// ...and the busiest span of this long decides: a burst is remembered for a
/// minute, and a quiet minute brings the target back to `min`.
const MEMORY: Duration = Duration::from_secs(60);
/// The launch time assumed before any launch was measured.
const FIRST_GUESS: Duration = Duration::from_secs(2);
/// Weight of the newest launch time in the running average.
const NEWEST: f64 = 0.3;

/// What a pool's host has seen of its demand.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// When each recent container was taken, oldest first.
    takes: VecDeque<Instant>,
    /// Running average of launch times, once one was measured.
    launch: Option<Duration>,
}

/// The warm count chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub warm: u32,
    pub why: String,
}

impl Demand {
    /// A container was taken.
    pub fn took(&mut self, now: Instant) {
        self.takes.push_back(now);
        self.forget(now);
    }

    /// A replacement launched in `took`.
    pub fn launched(&mut self, took: Duration) {
        self.launch = Some(match self.launch {
            None => took,
            Some(avg) => avg.mul_f64(1.0 - NEWEST) + took.mul_f64(NEWEST),
        });
    }

    fn forget(&mut self, now: Instant) {
        while self
            .takes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > MEMORY)
        {
            self.takes.pop_front();
        }
    }

    /// Takes per second in the busiest 5-second span of the last minute.
    pub fn peak_rate(&self, now: Instant) -> f64 {
        let recent: Vec<Instant> = self
            .takes
            .iter()
            .copied()
            .filter(|t| now.saturating_duration_since(*t) <= MEMORY)
            .collect();
        // Every span that starts at a take: the busiest one is among them.
        let busiest = recent
            .iter()
            .enumerate()
            .map(|(i, start)| {
                recent[i..]
                    .iter()
                    .take_while(|t| t.saturating_duration_since(*start) < SPAN)
                    .count()
            })
            .max()
            .unwrap_or(0);
        busiest as f64 / SPAN.as_secs_f64()
    }

    /// The warm count for `scale` now; `pressure` (host memory is short)
    /// keeps `min`.
    pub fn target(&self, scale: &Autoscale, now: Instant, pressure: bool) -> Target {
        if pressure {
            return Target {
                warm: scale.min,
                why: format!("host memory pressure: keeping the minimum of {}", scale.min),
            };
        }
        let rate = self.peak_rate(now);
        let launch = self.launch.unwrap_or(FIRST_GUESS);
        let need = rate * launch.as_secs_f64() * f64::from(scale.headroom_percent) / 100.0;
        let warm = (need.ceil() as u32).clamp(scale.min, scale.max);
        Target {
            warm,
            why: format!(
                "{rate:.1} takes/s at the busiest in the last minute × {:.1} s launch × {}% headroom = {need:.1}, kept within {}..{}",
                launch.as_secs_f64(),
                scale.headroom_percent,
                scale.min,
                scale.max
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(min: u32, max: u32) -> Autoscale {
        Autoscale {
            min,
            max,
            headroom_percent: 150,
        }
    }

    #[test]
    fn a_quiet_pool_keeps_its_minimum() {
        let d = Demand::default();
        let t = d.target(&scale(1, 10), Instant::now(), false);
        assert_eq!(t.warm, 1);
        assert!(t.why.contains("0.0 takes/s"), "{}", t.why);
    }

    #[test]
    fn a_burst_raises_the_target_by_littles_law_and_a_quiet_minute_lowers_it() {
        let start = Instant::now();
        let mut d = Demand::default();
        d.launched(Duration::from_secs(2));
        // 10 takes in 5 s: 2/s at the busiest; 2/s × 2 s × 1.5 = 6.
        for i in 0..10 {
            d.took(start + Duration::from_millis(500 * i));
        }
        let now = start + Duration::from_secs(5);
        assert_eq!(d.peak_rate(now), 2.0);
        assert_eq!(d.target(&scale(1, 10), now, false).warm, 6);
        assert_eq!(d.target(&scale(1, 4), now, false).warm, 4, "capped at max");
        // Remembered for a minute, then back to the minimum.
        assert_eq!(
            d.target(&scale(1, 10), start + Duration::from_secs(50), false)
                .warm,
            6
        );
        let quiet = start + Duration::from_secs(70);
        assert_eq!(d.target(&scale(1, 10), quiet, false).warm, 1);
        d.took(quiet);
        assert!(d.takes.len() == 1, "old takes are forgotten");
    }

    #[test]
    fn slower_launches_need_more_warm_and_pressure_keeps_the_minimum() {
        let start = Instant::now();
        let mut d = Demand::default();
        for i in 0..10 {
            d.took(start + Duration::from_millis(100 * i));
        }
        let now = start + Duration::from_secs(1);
        let before = d.target(&scale(0, 100), now, false).warm;
        d.launched(Duration::from_secs(10));
        let after = d.target(&scale(0, 100), now, false).warm;
        assert!(after > before, "{before} -> {after}");
        let t = d.target(&scale(2, 100), now, true);
        assert_eq!(t.warm, 2);
        assert!(t.why.contains("memory pressure"));
    }
}
