//! Pure decisions of the controller: which nodes a pool covers, the pool's
//! status from its nodes' reports, and whether a deleted pool is clean.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

use crate::crd::condition::{DEGRADED, Desired, READY};
use crate::crd::{ExecutorPool, LanguageImage, NetworkTier, validate};

/// Nodes that run the agent (match `agent_selector`) and match the pool's
/// node selector, sorted.
pub fn covered_nodes(
    pool: &ExecutorPool,
    nodes: &[Node],
    agent_selector: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let matches =
                |sel: &BTreeMap<String, String>| sel.iter().all(|(k, v)| labels.get(k) == Some(v));
            matches(agent_selector) && matches(&pool.spec.node_selector)
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// What the controller writes in a pool's status (besides the nodes' own entries).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub warm: u32,
    pub busy: u32,
    pub nodes_ready: String,
    pub conditions: Vec<Desired>,
    /// Whether the spec itself is wrong (no point in requeueing soon).
    pub invalid: bool,
}

/// The pool's status from its spec, its image and its covered nodes' entries.
pub fn summarize(
    pool: &ExecutorPool,
    image: Option<&LanguageImage>,
    covered: &[String],
) -> Summary {
    let problem = spec_problem(pool, image);
    let entries: Vec<_> = pool
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .filter(|e| covered.contains(&e.node))
        .collect();
    let warm = entries.iter().map(|e| e.warm).sum();
    let busy = entries.iter().map(|e| e.busy).sum();
    let ready: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.ready)
        .map(|e| e.node.as_str())
        .collect();
    let nodes_ready = format!("{}/{}", ready.len(), covered.len());
    let invalid = problem
        .as_ref()
        .is_some_and(|(reason, _)| *reason != "NetworkTierUnsupported");
    let conditions = if let Some((reason, message)) = problem {
        vec![
            Desired::new(READY, false, reason, message.clone()),
            Desired::new(DEGRADED, true, reason, message),
        ]
    } else if covered.is_empty() {
        let msg = "no node running the unsandbox agent matches spec.nodeSelector";
        vec![
            Desired::new(READY, false, "NoNodes", msg),
            Desired::new(DEGRADED, true, "NoNodes", msg),
        ]
    } else {
        let missing: Vec<&str> = covered
            .iter()
            .map(String::as_str)
            .filter(|n| !ready.contains(n))
            .collect();
        let troubled: Vec<String> = entries
            .iter()
            .filter_map(|e| e.message.as_ref().map(|m| format!("{}: {m}", e.node)))
            .collect();
        let ready_cond = if missing.is_empty() {
            Desired::new(
                READY,
                true,
                "NodesReady",
                format!("{nodes_ready} nodes ready, {warm} warm, {busy} busy"),
            )
        } else {
            Desired::new(
                READY,
                false,
                "NodesNotReady",
                format!(
                    "{nodes_ready} nodes ready; waiting for {}",
                    missing.join(", ")
                ),
            )
        };
        let degraded = if troubled.is_empty() {
            Desired::new(DEGRADED, false, "Healthy", "no node reports a problem")
        } else {
            Desired::new(DEGRADED, true, "NodeProblems", troubled.join("; "))
        };
        vec![ready_cond, degraded]
    };
    Summary {
        warm,
        busy,
        nodes_ready,
        conditions,
        invalid,
    }
}

fn spec_problem(
    pool: &ExecutorPool,
    image: Option<&LanguageImage>,
) -> Option<(&'static str, String)> {
    if let Err(e) = validate::pool(&pool.spec) {
        return Some(("InvalidSpec", e.to_string()));
    }
    let Some(image) = image else {
        return Some((
            "ImageNotFound",
            format!("LanguageImage {:?} does not exist", pool.spec.image),
        ));
    };
    if let Err(e) = validate::image(&image.spec) {
        return Some((
            "ImageInvalid",
            format!("LanguageImage {:?}: {e}", pool.spec.image),
        ));
    }
    if pool.spec.network == NetworkTier::Semitrusted {
        return Some((
            "NetworkTierUnsupported",
            "network tier semitrusted (egress through a filtering proxy) is not available yet; \
             no containers are started rather than run with other isolation"
                .to_string(),
        ));
    }
    None
}

/// Whether a deleted pool's finalizer may go: every node that still exists
/// reports no container of it, or `grace` has passed since deletion (a node
/// whose agent is gone cannot report).
pub fn cleanup_done(
    pool: &ExecutorPool,
    existing: &BTreeSet<String>,
    now: Timestamp,
    grace: Duration,
) -> bool {
    let clean = pool
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .filter(|e| existing.contains(&e.node))
        .all(|e| e.warm == 0 && e.busy == 0 && e.launching == 0);
    let expired = pool
        .metadata
        .deletion_timestamp
        .as_ref()
        .is_some_and(|t| now.duration_since(t.0).unsigned_abs() >= grace);
    clean || expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pool(yaml: &str) -> ExecutorPool {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    fn image() -> LanguageImage {
        serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, sourceFile: main.py, run: python3 main.py}]\n",
        )
        .unwrap()
    }

    const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: py, namespace: t}\nspec:\n  image: small\n  nodeSelector: {tier: fast}\n";

    #[test]
    fn covered_nodes_need_the_agent_label_and_the_pool_selector() {
        let agent = BTreeMap::from([("unsandbox.com/lxd".to_string(), "true".to_string())]);
        let nodes = [
            node("a", &[("unsandbox.com/lxd", "true"), ("tier", "fast")]),
            node("b", &[("unsandbox.com/lxd", "true")]),
            node("c", &[("tier", "fast")]),
        ];
        assert_eq!(covered_nodes(&pool(POOL), &nodes, &agent), ["a"]);
    }

    #[test]
    fn status_sums_covered_nodes_only() {
        let p = pool(&format!(
            "{POOL}status:\n  nodes:\n  - {{node: a, desired: 2, warm: 2, busy: 1, launching: 0, ready: true}}\n  - {{node: b, desired: 2, warm: 1, busy: 0, launching: 1, ready: false, message: 'launch failed: disk full'}}\n  - {{node: gone, desired: 2, warm: 9, busy: 9, launching: 0, ready: true}}\n"
        ));
        let s = summarize(&p, Some(&image()), &["a".into(), "b".into()]);
        assert_eq!((s.warm, s.busy, s.nodes_ready.as_str()), (3, 1, "1/2"));
        assert_eq!(s.conditions[0].reason, "NodesNotReady");
        assert!(s.conditions[0].message.contains("waiting for b"));
        assert_eq!(s.conditions[1].reason, "NodeProblems");
        assert!(s.conditions[1].status);
        assert!(!s.invalid);
    }

    #[test]
    fn invalid_spec_missing_image_and_unsupported_tier() {
        let bad = pool(&format!(
            "{POOL}  execution: {{wallTimeMs: {{default: 10, max: 1}}}}\n"
        ));
        let s = summarize(&bad, Some(&image()), &["a".into()]);
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(s.invalid);
        let s = summarize(&pool(POOL), None, &["a".into()]);
        assert_eq!(s.conditions[0].reason, "ImageNotFound");
        let semi = pool(&format!("{POOL}  network: semitrusted\n"));
        let s = summarize(&semi, Some(&image()), &["a".into()]);
        assert_eq!(s.conditions[0].reason, "NetworkTierUnsupported");
        assert!(!s.conditions[0].status);
        let s = summarize(&pool(POOL), Some(&image()), &[]);
        assert_eq!(s.conditions[0].reason, "NoNodes");
        let all = pool(&format!(
            "{POOL}status:\n  nodes:\n  - {{node: a, desired: 1, warm: 1, busy: 0, launching: 0, ready: true}}\n"
        ));
        let s = summarize(&all, Some(&image()), &["a".into()]);
        assert!(s.conditions[0].status);
        assert_eq!(s.nodes_ready, "1/1");
    }

    #[test]
    fn cleanup_waits_for_existing_nodes_or_grace() {
        let mut p = pool(&format!(
            "{POOL}status:\n  nodes:\n  - {{node: a, desired: 0, warm: 0, busy: 1, launching: 0, ready: false}}\n  - {{node: gone, desired: 0, warm: 3, busy: 0, launching: 0, ready: false}}\n"
        ));
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        p.metadata.deletion_timestamp = Some(Time(t0));
        let grace = Duration::from_secs(300);
        let existing = BTreeSet::from(["a".to_string()]);
        assert!(
            !cleanup_done(&p, &existing, t0, grace),
            "a still has a busy container"
        );
        assert!(
            cleanup_done(
                &p,
                &existing,
                Timestamp::from_second(1_000_300).unwrap(),
                grace
            ),
            "grace passed"
        );
        p.status.as_mut().unwrap().nodes[0].busy = 0;
        assert!(
            cleanup_done(&p, &existing, t0, grace),
            "node gone is ignored; a is clean"
        );
    }
}
