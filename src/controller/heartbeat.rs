//! Whether a node's entry in a pool's status is current. Each agent refreshes
//! `heartbeatTime` in its own entry; an agent that died (or lost the API
//! server) leaves its last numbers behind, and those must neither count as
//! warm capacity nor attract forwarded requests. One rule, used by the
//! controller's status and by the agents' routing.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::NodePoolStatus;

/// How long an entry counts without a new heartbeat, unless configured.
/// Agents refresh theirs at least every 10 s, so this allows two misses.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// Whether an entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Confirmed recently; becomes stale at `stale_at` without a new heartbeat.
    Fresh {
        /// When the entry goes stale if nothing refreshes it.
        stale_at: Timestamp,
    },
    /// Not confirmed within the limit.
    Stale {
        /// Time since the last heartbeat; `None` when the entry has none.
        silent_for: Option<Duration>,
    },
}

impl Freshness {
    /// Whether the entry may be counted.
    pub fn is_fresh(&self) -> bool {
        matches!(self, Freshness::Fresh { .. })
    }

    /// `n1 (no heartbeat for 45 s)`, or `n1 (no heartbeat)` when it never had one.
    pub fn describe(&self, node: &str) -> String {
        match self {
            Freshness::Fresh { .. } => node.to_string(),
            Freshness::Stale { silent_for: None } => format!("{node} (no heartbeat)"),
            Freshness::Stale {
                silent_for: Some(d),
            } => format!("{node} (no heartbeat for {} s)", d.as_secs()),
        }
    }
}

/// The entry's freshness at `now`, with entries older than `stale_after`
/// (or without a heartbeat) stale. A heartbeat from the future (clock skew
/// between hosts) counts as fresh from now.
pub fn freshness(entry: &NodePoolStatus, now: Timestamp, stale_after: Duration) -> Freshness {
    let Some(beat) = entry.heartbeat_time.as_ref().map(|t| t.0) else {
        return Freshness::Stale { silent_for: None };
    };
    let beat = beat.min(now);
    let age = now.duration_since(beat).unsigned_abs();
    if age < stale_after {
        Freshness::Fresh {
            stale_at: beat + stale_after,
        }
    } else {
        Freshness::Stale {
            silent_for: Some(age),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn entry(beat: Option<i64>) -> NodePoolStatus {
        NodePoolStatus {
            node: "n1".into(),
            heartbeat_time: beat.map(|s| Time(Timestamp::from_second(s).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn freshness_table() {
        let now = Timestamp::from_second(1_000).unwrap();
        let limit = Duration::from_secs(30);
        let at = |s| Timestamp::from_second(s).unwrap();
        let cases = [
            (None, Freshness::Stale { silent_for: None }),
            (
                Some(990),
                Freshness::Fresh {
                    stale_at: at(1_020),
                },
            ),
            (
                Some(971),
                Freshness::Fresh {
                    stale_at: at(1_001),
                },
            ),
            (
                Some(970),
                Freshness::Stale {
                    silent_for: Some(Duration::from_secs(30)),
                },
            ),
            (
                Some(955),
                Freshness::Stale {
                    silent_for: Some(Duration::from_secs(45)),
                },
            ),
            // Skewed clock: counted from now, not from the future.
            (
                Some(1_100),
                Freshness::Fresh {
                    stale_at: at(1_030),
                },
            ),
        ];
        for (beat, want) in cases {
            assert_eq!(freshness(&entry(beat), now, limit), want, "{beat:?}");
        }
        assert_eq!(
            freshness(&entry(Some(955)), now, limit).describe("n1"),
            "n1 (no heartbeat for 45 s)"
        );
        assert_eq!(
            freshness(&entry(None), now, limit).describe("n1"),
            "n1 (no heartbeat)"
        );
    }
}
