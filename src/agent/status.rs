//! A pool's state on this host as status and conditions. Pure.

use serde::Serialize;

use crate::crd::condition::{DEGRADED, Desired, READY};
use crate::crd::{ExecutorPoolSpec, NodePoolStatus};

use super::state::{PoolRuntime, State};

/// A pool that is ready on this host, with the languages it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Serving {
    /// The pool's key, `namespace/name`.
    pub pool: String,
    /// Languages that passed their smoke tests here, by name.
    pub languages: Vec<String>,
}

/// The ready pools that serve at least one language. Pure.
pub fn serving(st: &State) -> Vec<Serving> {
    st.pools
        .iter()
        .filter(|(_, p)| p.ready())
        .map(|(key, p)| Serving {
            pool: key.clone(),
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
}

/// The host's entry for the pool's `status.nodes`.
pub fn node_status(p: &PoolRuntime, node: &str) -> NodePoolStatus {
    let message = p
        .problem()
        .map(|pr| pr.message.clone())
        .or_else(|| p.last_error.clone());
    NodePoolStatus {
        node: node.to_string(),
        desired: p.resolved.warm,
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
            Desired::new(READY, false, "ImagePending", msg),
            Desired::new(DEGRADED, false, "ImagePending", msg),
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
            "LaunchFailing",
            format!("{n} launches failed in a row: {e}"),
        ),
        _ if !failed_languages.is_empty() => Desired::new(
            DEGRADED,
            true,
            "LanguagesUnavailable",
            format!(
                "{} languages failed their smoke tests on this host and are not served: {}",
                failed_languages.len(),
                failed_languages.join("; ")
            ),
        ),
        _ => Desired::new(DEGRADED, false, "Healthy", "no failures"),
    };
    // Ready once the pool has been full; the counts say how full it is now.
    let counts = format!(
        "{warm}/{target} warm, {} launching, {} busy",
        p.launching, p.busy
    );
    let ready = if p.ready() {
        Desired::new(READY, true, "Warm", counts)
    } else if p.smoke_results().is_none() {
        Desired::new(
            READY,
            false,
            "ProvingLanguages",
            format!("running the languages' smoke tests on this host; {counts}"),
        )
    } else {
        Desired::new(READY, false, "Filling", counts)
    };
    vec![ready, degraded]
}
