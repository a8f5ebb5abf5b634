//! Reports this node's entry in each pool's `status.nodes` with server-side
//! apply under a field manager of its own (`unsandbox-agent-<node>`): agents
//! never touch each other's entries, and the controller owns the rest.

use std::collections::BTreeMap;
use std::time::Duration;

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

/// Applies changed entries every `interval`, until the process ends.
pub async fn run(
    client: Client,
    agent: Agent,
    stores: Stores,
    endpoint: Option<String>,
    interval: Duration,
) {
    let params = PatchParams::apply(&manager(agent.node())).force();
    let mut sent: BTreeMap<String, NodePoolStatus> = BTreeMap::new();
    loop {
        let now = entries(&agent, &stores, endpoint.as_deref(), &sent);
        for (key, entry) in &now {
            if sent.get(key) == Some(entry) {
                continue;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let api: Api<ExecutorPool> = Api::namespaced(client.clone(), ns);
            match api
                .patch_status(name, &params, &Patch::Apply(patch_body(entry)))
                .await
            {
                Ok(p) => {
                    tracing::debug!(pool = %p.name_any(), "reported node status");
                    sent.insert(key.clone(), entry.clone());
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    sent.remove(key);
                }
                Err(e) => tracing::warn!(pool = %key, error = %e, "could not report node status"),
            }
        }
        sent.retain(|k, _| now.contains_key(k));
        tokio::time::sleep(interval).await;
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
}
