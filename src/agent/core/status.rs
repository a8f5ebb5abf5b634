//! A pool's state on this host as status and conditions (pure), and the
//! host's memory of when each condition last changed.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::crd::condition::{Condition, DEGRADED, Desired, READY, Reason, is_true, merge};
use crate::crd::{ExecutorPoolSpec, NodePoolStatus, RolloutPhase, short_fingerprint};

use super::{Core, PoolRuntime};

/// A pool that is ready on this host, with the languages it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Serving {
    /// The pool's key, `namespace/name`.
    pub pool: String,
    /// Languages that passed their smoke tests here, by name.
    pub languages: Vec<String>,
}

/// The ready pools that serve at least one language. Pure.
pub fn serving(st: &Core) -> Vec<Serving> {
    if st.stopping {
        return vec![];
    }
    st.pools
        .iter()
        .filter(|(_, p)| p.ready())
        .map(|(key, p)| Serving {
            pool: key.to_string(),
            languages: p
                .served_languages()
                .iter()
                .map(|l| l.name.clone())
                .collect(),
        })
        .filter(|s| !s.languages.is_empty())
        .collect()
}

/// One pool as this host reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub spec: ExecutorPoolSpec,
    pub node: NodePoolStatus,
    #[serde(skip)]
    pub conditions: Vec<Desired>,
    /// The conditions as the reconcile loop last observed them, with the
    /// times they changed.
    #[serde(skip)]
    pub observed: Vec<Condition>,
}

/// The host's entry for the pool's `status.nodes`.
pub fn node_status(p: &PoolRuntime, node: &str) -> NodePoolStatus {
    // A blocked rollout is a problem of this host too: the controller's
    // Degraded condition names every host whose entry has a message.
    let message = p
        .problem()
        .map(|pr| pr.message.clone())
        .or_else(|| p.last_error.clone())
        .or_else(|| p.rollout_blocked());
    NodePoolStatus {
        node: node.to_string(),
        desired: if p.autoscaled.is_some() {
            p.target()
        } else {
            p.resolved.warm
        },
        warm: p.warm.len() as u32,
        busy: p.busy,
        launching: p.launching,
        ready: p.ready(),
        message,
        languages: p
            .served_languages()
            .iter()
            .map(|l| l.name.clone())
            .collect(),
        unavailable_languages: p.unavailable_languages(),
        image: p.fingerprint().map(short_fingerprint),
        rollout: p.rollout(),
        endpoint: None,
        heartbeat_time: None,
    }
}

/// Ready and Degraded conditions for the pool on this host.
pub fn conditions(p: &PoolRuntime) -> Vec<Desired> {
    if let Some(pr) = p.problem() {
        return vec![
            Desired::new(READY, false, pr.reason, pr.message.clone()),
            Desired::new(DEGRADED, true, pr.reason, pr.message.clone()),
        ];
    }
    if !p.serving() {
        let msg = "waiting for the image to be in the LXD image store";
        return vec![
            Desired::new(READY, false, Reason::ImagePending, msg),
            Desired::new(DEGRADED, false, Reason::ImagePending, msg),
        ];
    }
    let warm = p.warm.len() as u32;
    let target = p.target();
    let failed_languages: Vec<String> = match p.smoke_results() {
        Some(_) => p
            .unavailable_languages()
            .into_iter()
            .map(|u| format!("{}: {}", u.name, u.message))
            .collect(),
        None => vec![],
    };
    let degraded = match (&p.last_error, p.failures) {
        (Some(e), n) if n > 0 => Desired::new(
            DEGRADED,
            true,
            Reason::LaunchFailing,
            format!("{n} launches failed in a row: {e}"),
        ),
        _ if p.rollout_blocked().is_some() => Desired::new(
            DEGRADED,
            true,
            Reason::RolloutBlocked,
            p.rollout_blocked().unwrap_or_default(),
        ),
        _ if !failed_languages.is_empty() => Desired::new(
            DEGRADED,
            true,
            Reason::LanguagesUnavailable,
            format!(
                "{} languages failed their smoke tests on this host and are not served: {}",
                failed_languages.len(),
                failed_languages.join("; ")
            ),
        ),
        _ if !p.alias_conflicts.is_empty() => Desired::new(
            DEGRADED,
            true,
            Reason::AliasConflict,
            format!(
                "requests for these aliases are refused as ambiguous and must name the language: {}",
                p.alias_conflicts.join("; ")
            ),
        ),
        _ => Desired::new(DEGRADED, false, Reason::Healthy, "no failures"),
    };
    // Ready once the pool has been full; the counts say how full it is now.
    let mut counts = format!(
        "{warm}/{target} warm, {} launching, {} busy",
        p.launching, p.busy
    );
    if let Some(why) = p.autoscale_reason() {
        counts.push_str(&format!(" (autoscale: {why})"));
    }
    if let Some(fp) = p.fingerprint() {
        counts.push_str(&format!("; image {}", short_fingerprint(fp)));
    }
    if let Some(r) = p.rollout() {
        counts.push_str(&match r.phase {
            RolloutPhase::Proving => format!("; smoke-testing new image {}", r.to),
            RolloutPhase::Blocked => "; new image blocked (see Degraded)".to_string(),
            RolloutPhase::Replacing => {
                format!("; rolling out: {} of {} warm updated", r.updated, r.total)
            }
        });
    }
    let ready = if p.ready() {
        Desired::new(READY, true, Reason::Warm, counts)
    } else if p.smoke_results().is_none() {
        Desired::new(
            READY,
            false,
            Reason::ProvingLanguages,
            format!("running the languages' smoke tests on this host; {counts}"),
        )
    } else {
        Desired::new(READY, false, Reason::Filling, counts)
    };
    vec![ready, degraded]
}

/// The conditions `desired` with their transition times carried over from
/// `previous` while their status holds, and whether the pool just became
/// ready. Pure.
pub fn transition(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> (Vec<Condition>, bool) {
    let next = merge(previous, desired, generation, now);
    let became_ready = is_true(&next, READY) && !is_true(previous, READY);
    (next, became_ready)
}

/// The pool's conditions with the times they last changed as `observed`
/// (the time of the query only for a change not observed yet).
pub fn stamped(
    observed: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
) -> Vec<Condition> {
    merge(observed, desired, generation, Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::desired::ResolvedPool;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_times_are_those_of_the_change() {
        let filling = [Desired::new(READY, false, Reason::Filling, "0/2 warm")];
        let warm = [Desired::new(READY, true, Reason::Warm, "2/2 warm")];
        let (c, ready) = transition(&[], &filling, None, at(10));
        assert!(!ready);
        let (c, ready) = transition(&c, &filling, None, at(20));
        assert_eq!(
            c[0].last_transition_time,
            Time(at(10)),
            "no change, no new time"
        );
        assert!(!ready);
        let (c, ready) = transition(&c, &warm, None, at(30));
        assert_eq!(c[0].last_transition_time, Time(at(30)));
        assert!(ready, "became ready");
        let (c, ready) = transition(&c, &warm, None, at(40));
        assert_eq!(c[0].last_transition_time, Time(at(30)));
        assert!(!ready, "ready once, logged once");
    }

    #[test]
    fn the_host_remembers_when_its_conditions_changed() {
        let spec: ExecutorPoolSpec = serde_yaml::from_str("image: small").unwrap();
        let p = PoolRuntime::new(ResolvedPool {
            key: "t/remember".into(),
            name: "remember".into(),
            generation: Some(3),
            spec,
            warm: 1,
            image: None,
            problem: None,
        });
        let mut core = super::super::with_pools(vec![("t/remember", p)]);
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        core.observe(at(10), &mut out);
        assert_eq!(out.len(), 1, "the first observation is reported");
        let p = core.pool("t/remember").unwrap();
        let first = stamped(&p.observed_conditions, &conditions(p), Some(3));
        assert_eq!(first[0].last_transition_time, Time(at(10)));
        out.clear();
        core.observe(at(20), &mut out);
        assert!(out.is_empty(), "nothing changed, nothing reported");
        let p = core.pool("t/remember").unwrap();
        let later = stamped(&p.observed_conditions, &conditions(p), Some(3));
        assert_eq!(first, later, "the query time is not the transition time");
        assert_eq!(later[0].observed_generation, Some(3));
        let unobserved = stamped(&[], &conditions(p), Some(3));
        assert_ne!(
            unobserved[0].last_transition_time,
            first[0].last_transition_time
        );
        let _ = now;
    }
}
