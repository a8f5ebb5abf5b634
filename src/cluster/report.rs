//! Reports this node's entry in each pool's `status.nodes` with server-side
//! apply under a field manager of its own (`unsandbox-agent-<node>`): agents
//! never touch each other's entries, and the controller owns the rest.
//! Every entry sent carries `heartbeatTime`, and an unchanged entry is sent
//! again every heartbeat, so the controller can tell a live agent (fresh
//! heartbeat) from a dead one whose last entry would otherwise look current.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::agent::Agent;
use crate::agent::desired::{covers, pool_key};
use crate::crd::{ExecutorPool, NodePoolStatus};

use super::source::Stores;

/// The field manager of one node's agent.
pub fn manager(node: &str) -> String {
    format!("unsandbox-agent-{node}")
}

/// The server-side apply body for one node's entry. Pure.
pub fn patch_body(entry: &NodePoolStatus) -> serde_json::Value {
    json!({
        "apiVersion": "unsandbox.com/v1alpha1",
        "kind": "ExecutorPool",
        "status": {"nodes": [entry]}
    })
}

/// This node's entries, by pool key: the agent's report for pools it
/// serves, and an empty entry (with whatever is still busy) for pools being
/// deleted or no longer covering it that it reported before.
pub fn entries(
    agent: &Agent,
    stores: &Stores,
    endpoint: Option<&str>,
    reported: &BTreeMap<String, NodePoolStatus>,
) -> BTreeMap<String, NodePoolStatus> {
    let node = agent.node();
    let mut out = BTreeMap::new();
    let labels = super::source::resources(stores, node).node_labels;
    let reports: BTreeMap<String, NodePoolStatus> = agent
        .reports()
        .into_iter()
        .map(|r| (format!("{}/{}", r.namespace, r.name), r.node))
        .collect();
    for pool in stores.pools.state() {
        let key = pool_key(&pool);
        let covered =
            pool.metadata.deletion_timestamp.is_none() && covers(&pool.spec, labels.as_ref());
        let entry = match reports.get(&key) {
            Some(r) if covered => r.clone(),
            _ if covered || reported.contains_key(&key) || has_entry(&pool, node) => {
                NodePoolStatus {
                    node: node.to_string(),
                    busy: agent.containers_of(&key),
                    ..Default::default()
                }
            }
            _ => continue,
        };
        out.insert(
            key,
            NodePoolStatus {
                endpoint: endpoint.map(String::from),
                ..entry
            },
        );
    }
    out
}

fn has_entry(pool: &ExecutorPool, node: &str) -> bool {
    pool.status
        .iter()
        .flat_map(|s| &s.nodes)
        .any(|e| e.node == node)
}

/// How the report loop is paced.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// URL peers reach this agent at, put in every entry.
    pub endpoint: Option<String>,
    /// How often entries are compared with what was last applied.
    pub interval: Duration,
    /// The longest an unchanged entry goes without being applied again.
    pub heartbeat: Duration,
}

/// An entry as last applied (without its heartbeat), and when.
#[derive(Debug, Clone)]
pub struct Sent {
    pub entry: NodePoolStatus,
    pub at: Instant,
}

/// Whether two entries report the same, whatever their heartbeats. Pure.
pub fn same(a: &NodePoolStatus, b: &NodePoolStatus) -> bool {
    let bare = |e: &NodePoolStatus| NodePoolStatus {
        heartbeat_time: None,
        ..e.clone()
    };
    bare(a) == bare(b)
}

/// Whether to apply `entry` now: it was never applied, it differs from
/// what was (heartbeat aside), or the last apply is `heartbeat` old. Pure.
pub fn due(last: Option<&Sent>, entry: &NodePoolStatus, now: Instant, heartbeat: Duration) -> bool {
    match last {
        None => true,
        Some(s) => !same(&s.entry, entry) || now.saturating_duration_since(s.at) >= heartbeat,
    }
}

/// The entry as sent: stamped with the time it is sent at.
pub fn stamped(entry: &NodePoolStatus, now: Time) -> NodePoolStatus {
    NodePoolStatus {
        heartbeat_time: Some(now),
        ..entry.clone()
    }
}

/// How long a status change waits for the changes that follow it.
const COALESCE: Duration = Duration::from_millis(200);

/// Applies entries that changed, or whose heartbeat is due, until the
/// process ends.
pub async fn run(client: Client, agent: Agent, stores: Stores, settings: ReportSettings) {
    let params = PatchParams::apply(&manager(agent.node())).force();
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    let pause = settings.interval.min(settings.heartbeat);
    loop {
        let reported: BTreeMap<String, NodePoolStatus> = sent
            .iter()
            .map(|(k, s)| (k.clone(), s.entry.clone()))
            .collect();
        let now = entries(&agent, &stores, settings.endpoint.as_deref(), &reported);
        for (key, entry) in &now {
            if !due(sent.get(key), entry, Instant::now(), settings.heartbeat) {
                continue;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let api: Api<ExecutorPool> = Api::namespaced(client.clone(), ns);
            let body = patch_body(&stamped(entry, Time(k8s_openapi::jiff::Timestamp::now())));
            match api.patch_status(name, &params, &Patch::Apply(body)).await {
                Ok(p) => {
                    tracing::debug!(pool = %p.name_any(), "reported node status");
                    let at = Instant::now();
                    sent.insert(
                        key.clone(),
                        Sent {
                            entry: entry.clone(),
                            at,
                        },
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    sent.remove(key);
                }
                Err(e) => tracing::warn!(pool = %key, error = %e, "could not report node status"),
            }
        }
        sent.retain(|k, _| now.contains_key(k));
        // A change of a pool's conditions is published at once, not after
        // the interval; changes that come in a burst go out together.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = agent.changed() => tokio::time::sleep(COALESCE.min(pause)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_carries_only_this_nodes_entry() {
        let entry = NodePoolStatus {
            node: "n1".into(),
            desired: 2,
            warm: 1,
            ..Default::default()
        };
        let body = patch_body(&entry);
        assert_eq!(body["status"]["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(body["status"]["nodes"][0]["node"], "n1");
        assert!(
            body["status"].get("conditions").is_none(),
            "conditions belong to the controller"
        );
        assert_eq!(manager("n1"), "unsandbox-agent-n1");
    }

    #[test]
    fn sent_entries_carry_their_heartbeat() {
        let at = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let entry = NodePoolStatus {
            node: "n1".into(),
            ..Default::default()
        };
        let body = patch_body(&stamped(&entry, at));
        assert_eq!(
            body["status"]["nodes"][0]["heartbeatTime"],
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn an_entry_is_sent_when_it_changes_or_its_heartbeat_is_due() {
        let hb = Duration::from_secs(10);
        let t0 = Instant::now();
        let entry = NodePoolStatus {
            node: "n1".into(),
            warm: 1,
            ..Default::default()
        };
        assert!(due(None, &entry, t0, hb), "never sent");
        let last = Sent {
            entry: entry.clone(),
            at: t0,
        };
        assert!(!due(Some(&last), &entry, t0 + Duration::from_secs(2), hb));
        assert!(
            due(Some(&last), &entry, t0 + hb, hb),
            "unchanged, but the heartbeat is due"
        );
        let changed = NodePoolStatus {
            warm: 2,
            ..entry.clone()
        };
        assert!(due(Some(&last), &changed, t0 + Duration::from_secs(1), hb));
        // The heartbeat itself is not a change.
        let beat = stamped(&entry, Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(same(&beat, &entry));
        assert!(!due(Some(&last), &beat, t0 + Duration::from_secs(1), hb));
    }
}
