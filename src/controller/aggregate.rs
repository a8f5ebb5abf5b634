//! Pure decisions of the controller: which nodes a pool covers, the pool's
//! status from its nodes' reports (stale ones left out), and where a deleted
//! pool's cleanup stands.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

use super::heartbeat::{Freshness, freshness};
use crate::crd::condition::{DEGRADED, Desired, READY, RECONCILING, Reason, STALLED};
use crate::crd::{ExecutorPool, LanguageImage, NodePoolStatus, Problem, labels, pool_problem};

/// Nodes that run the agent (match `agent_selector`) and match the pool's
/// node selector, sorted.
pub fn covered_nodes<'a>(
    pool: &ExecutorPool,
    nodes: impl IntoIterator<Item = &'a Node>,
    agent_selector: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .into_iter()
        .filter(|n| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            labels::selects(agent_selector, &labels)
                && labels::selects(&pool.spec.node_selector, &labels)
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// What the pool's status is computed from, besides the pool itself.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The pool's LanguageImage, if it exists.
    pub image: Option<&'a LanguageImage>,
    /// Names of the nodes the pool covers ([`covered_nodes`]).
    pub covered: &'a [String],
    /// Labels of the nodes that run the agent, for messages.
    pub agent_selector: &'a BTreeMap<String, String>,
    /// The current time.
    pub now: Timestamp,
    /// How long a node's entry counts without a heartbeat.
    pub stale_after: Duration,
}

/// What the controller writes in a pool's status (besides the nodes' own entries).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Warm containers wanted across the covered nodes.
    pub desired: u32,
    /// Warm containers on covered nodes with a current heartbeat.
    pub warm: u32,
    /// Busy containers on covered nodes with a current heartbeat.
    pub busy: u32,
    /// Ready nodes out of covered nodes (`2/3`).
    pub nodes_ready: String,
    /// Ready, Degraded, Reconciling and Stalled, in that order.
    pub conditions: Vec<Desired>,
    /// Whether the spec itself is wrong (no point in requeueing soon).
    pub invalid: bool,
    /// When the first entry counted now goes stale without a new heartbeat:
    /// the status must be recomputed then, even if nothing else happens.
    pub recheck_at: Option<Timestamp>,
}

/// The pool's status from its spec, its image and its covered nodes' entries.
pub fn summarize(pool: &ExecutorPool, seen: &Observed<'_>) -> Summary {
    let covered = seen.covered;
    let desired = covered.iter().map(|n| pool.spec.warm_for(n)).sum();
    let entries: Vec<(&NodePoolStatus, Freshness)> = pool
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .filter(|e| covered.contains(&e.node))
        .map(|e| (e, freshness(e, seen.now, seen.stale_after)))
        .collect();
    let fresh: Vec<&NodePoolStatus> = entries
        .iter()
        .filter(|(_, f)| f.is_fresh())
        .map(|(e, _)| *e)
        .collect();
    let stale: Vec<String> = entries
        .iter()
        .filter(|(_, f)| !f.is_fresh())
        .map(|(e, f)| f.describe(&e.node))
        .collect();
    let recheck_at = entries
        .iter()
        .filter_map(|(_, f)| match f {
            Freshness::Fresh { stale_at } => Some(*stale_at),
            Freshness::Stale { .. } => None,
        })
        .min();
    let warm = fresh.iter().map(|e| e.warm).sum();
    let busy = fresh.iter().map(|e| e.busy).sum();
    let ready: BTreeSet<&str> = fresh
        .iter()
        .filter(|e| e.ready)
        .map(|e| e.node.as_str())
        .collect();
    let nodes_ready = format!("{}/{}", ready.len(), covered.len());
    let problem = pool_problem(&pool.spec, seen.image);
    let invalid = problem.is_some();
    let conditions = if let Some(Problem { reason, message }) = problem {
        vec![
            Desired::new(READY, false, reason, message.clone()),
            Desired::new(DEGRADED, true, reason, message.clone()),
            Desired::new(
                RECONCILING,
                false,
                reason,
                "waiting for a change to the spec",
            ),
            Desired::new(STALLED, true, reason, message),
        ]
    } else if covered.is_empty() {
        let msg = no_nodes_message(pool, seen.agent_selector);
        vec![
            Desired::new(READY, false, Reason::NoNodes, msg.clone()),
            Desired::new(DEGRADED, true, Reason::NoNodes, msg.clone()),
            Desired::new(RECONCILING, true, Reason::NoNodes, msg),
            valid_spec(),
        ]
    } else {
        let fresh_nodes: BTreeSet<&str> = fresh.iter().map(|e| e.node.as_str()).collect();
        let waiting: Vec<&str> = covered
            .iter()
            .map(String::as_str)
            .filter(|n| !ready.contains(n) && (fresh_nodes.contains(n) || !has_entry(&entries, n)))
            .collect();
        let ready_cond = if waiting.is_empty() && stale.is_empty() {
            Desired::new(
                READY,
                true,
                Reason::NodesReady,
                format!("{nodes_ready} nodes ready, {warm}/{desired} warm, {busy} busy"),
            )
        } else {
            let mut parts = vec![format!("{nodes_ready} nodes ready")];
            if !stale.is_empty() {
                parts.push(format!("stale: {}", stale.join(", ")));
            }
            if !waiting.is_empty() {
                parts.push(format!("waiting for {}", waiting.join(", ")));
            }
            Desired::new(READY, false, Reason::NodesNotReady, parts.join("; "))
        };
        let reconciling = if ready_cond.status {
            Desired::new(
                RECONCILING,
                false,
                Reason::NodesReady,
                "every covered node is ready",
            )
        } else {
            Desired::new(
                RECONCILING,
                true,
                Reason::NodesNotReady,
                ready_cond.message.clone(),
            )
        };
        vec![
            ready_cond,
            degraded(seen.image, &stale, &fresh),
            reconciling,
            valid_spec(),
        ]
    };
    Summary {
        desired,
        warm,
        busy,
        nodes_ready,
        conditions,
        invalid,
        recheck_at,
    }
}

fn has_entry(entries: &[(&NodePoolStatus, Freshness)], node: &str) -> bool {
    entries.iter().any(|(e, _)| e.node == node)
}

fn valid_spec() -> Desired {
    Desired::new(
        STALLED,
        false,
        Reason::SpecValid,
        "the spec and its image are valid",
    )
}

/// Degraded: the first problem's reason, every problem in the message.
fn degraded(image: Option<&LanguageImage>, stale: &[String], fresh: &[&NodePoolStatus]) -> Desired {
    let mut problems: Vec<(Reason, String)> = Vec::new();
    if let Some(i) = image.filter(|i| i.metadata.deletion_timestamp.is_some()) {
        problems.push((
            Reason::ImageDeleting,
            format!(
                "LanguageImage {:?} is being deleted (it stays while pools refer to it)",
                i.metadata.name.as_deref().unwrap_or_default()
            ),
        ));
    }
    if !stale.is_empty() {
        problems.push((Reason::NodesStale, format!("stale: {}", stale.join(", "))));
    }
    problems.extend(fresh.iter().filter_map(|e| {
        e.message
            .as_ref()
            .map(|m| (Reason::NodeProblems, format!("{}: {m}", e.node)))
    }));
    match problems.first() {
        None => Desired::new(
            DEGRADED,
            false,
            Reason::Healthy,
            "no node reports a problem",
        ),
        Some((reason, _)) => {
            let message: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            Desired::new(DEGRADED, true, *reason, message.join("; "))
        }
    }
}

/// Why no node is covered: the agent runs nowhere, or the pool's selector
/// matches none of the nodes it runs on.
fn no_nodes_message(pool: &ExecutorPool, agent_selector: &BTreeMap<String, String>) -> String {
    let agent = selector_string(agent_selector);
    if pool.spec.node_selector.is_empty() {
        format!("no node runs the unsandbox agent (label {agent})")
    } else {
        format!(
            "no node running the unsandbox agent (label {agent}) matches spec.nodeSelector ({})",
            selector_string(&pool.spec.node_selector)
        )
    }
}

/// `k=v,k2=v2`.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    labels::to_string(selector)
}

/// The conditions of a pool being deleted while `waiting` (node names) still
/// report its containers.
pub fn terminating(waiting: &[String]) -> Vec<Desired> {
    let message = format!("waiting for {} to remove containers", waiting.join(", "));
    vec![
        Desired::new(READY, false, Reason::Terminating, message.clone()),
        Desired::new(
            DEGRADED,
            false,
            Reason::Terminating,
            "the pool is being deleted",
        ),
        Desired::new(RECONCILING, true, Reason::Terminating, message),
        Desired::new(
            STALLED,
            false,
            Reason::Terminating,
            "the pool is being deleted",
        ),
    ]
}

/// Where the cleanup of a deleted pool stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Every existing node reports no container of the pool.
    Clean,
    /// These nodes still report containers; keep waiting.
    Waiting(Vec<String>),
    /// These nodes still reported containers when the grace period ran out;
    /// the finalizer goes anyway (a node whose agent is gone cannot report).
    GraceExpired(Vec<String>),
}

/// Where a deleted pool's cleanup stands: nodes that no longer exist are
/// ignored; after `grace` since deletion the pool is released regardless.
pub fn cleanup(
    pool: &ExecutorPool,
    existing: &BTreeSet<String>,
    now: Timestamp,
    grace: Duration,
) -> Cleanup {
    let holding: Vec<String> = pool
        .status
        .iter()
        .flat_map(|s| &s.nodes)
        .filter(|e| existing.contains(&e.node))
        .filter(|e| e.warm > 0 || e.busy > 0 || e.launching > 0)
        .map(|e| e.node.clone())
        .collect();
    let expired = pool
        .metadata
        .deletion_timestamp
        .as_ref()
        .is_some_and(|t| now.duration_since(t.0).unsigned_abs() >= grace);
    match (holding.is_empty(), expired) {
        (true, _) => Cleanup::Clean,
        (false, false) => Cleanup::Waiting(holding),
        (false, true) => Cleanup::GraceExpired(holding),
    }
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

    fn agent() -> BTreeMap<String, String> {
        BTreeMap::from([("unsandbox.com/lxd".to_string(), "true".to_string())])
    }

    /// "Now" in these tests; heartbeats are written relative to it.
    const NOW: i64 = 1_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// `heartbeatTime` `ago` seconds before [`NOW`].
    fn beat(ago: i64) -> String {
        at(NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn summary(p: &ExecutorPool, image: Option<&LanguageImage>, covered: &[&str]) -> Summary {
        let covered: Vec<String> = covered.iter().map(|s| s.to_string()).collect();
        let agent = agent();
        summarize(
            p,
            &Observed {
                image,
                covered: &covered,
                agent_selector: &agent,
                now: at(NOW),
                stale_after: Duration::from_secs(30),
            },
        )
    }

    fn condition<'a>(s: &'a Summary, type_: &str) -> &'a Desired {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: py, namespace: t}\nspec:\n  image: small\n  nodeSelector: {tier: fast}\n";

    #[test]
    fn covered_nodes_need_the_agent_label_and_the_pool_selector() {
        let nodes = [
            node("a", &[("unsandbox.com/lxd", "true"), ("tier", "fast")]),
            node("b", &[("unsandbox.com/lxd", "true")]),
            node("c", &[("tier", "fast")]),
        ];
        assert_eq!(covered_nodes(&pool(POOL), &nodes, &agent()), ["a"]);
    }

    #[test]
    fn status_sums_covered_fresh_nodes_only() {
        let p = pool(&format!(
            "{POOL}  nodeOverrides: [{{node: b, warm: 5}}]\nstatus:\n  nodes:\n  - {{node: a, desired: 2, warm: 2, busy: 1, launching: 0, ready: true, heartbeatTime: '{}'}}\n  - {{node: b, desired: 2, warm: 1, busy: 0, launching: 1, ready: false, message: 'launch failed: disk full', heartbeatTime: '{}'}}\n  - {{node: gone, desired: 2, warm: 9, busy: 9, launching: 0, ready: true, heartbeatTime: '{}'}}\n",
            beat(5),
            beat(20),
            beat(1)
        ));
        let s = summary(&p, Some(&image()), &["a", "b"]);
        assert_eq!(
            (s.desired, s.warm, s.busy, s.nodes_ready.as_str()),
            (7, 3, 1, "1/2")
        );
        assert_eq!(s.conditions[0].reason, Reason::NodesNotReady);
        assert!(s.conditions[0].message.contains("waiting for b"));
        assert_eq!(s.conditions[1].reason, Reason::NodeProblems);
        assert!(s.conditions[1].status);
        assert!(condition(&s, RECONCILING).status);
        assert!(!condition(&s, STALLED).status);
        assert!(!s.invalid);
        // b's heartbeat (20 s ago) is the first to go stale: 10 s from now.
        assert_eq!(s.recheck_at, Some(at(NOW + 10)));
    }

    #[test]
    fn stale_entries_are_not_counted_and_are_named() {
        // (case, heartbeat of a, warm, ready, Ready reason, message part, Degraded)
        let cases = [
            (
                "fresh",
                Some(5),
                2,
                "1/1",
                Reason::NodesReady,
                "1/1 nodes ready",
                false,
            ),
            (
                "silent 45 s",
                Some(45),
                0,
                "0/1",
                Reason::NodesNotReady,
                "stale: a (no heartbeat for 45 s)",
                true,
            ),
            (
                "never beat",
                None,
                0,
                "0/1",
                Reason::NodesNotReady,
                "stale: a (no heartbeat)",
                true,
            ),
        ];
        for (case, ago, warm, nodes_ready, reason, part, degraded) in cases {
            let hb = ago
                .map(|a| format!(", heartbeatTime: '{}'", beat(a)))
                .unwrap_or_default();
            let p = pool(&format!(
                "{POOL}status:\n  nodes:\n  - {{node: a, desired: 2, warm: 2, busy: 0, launching: 0, ready: true{hb}}}\n"
            ));
            let s = summary(&p, Some(&image()), &["a"]);
            assert_eq!(s.warm, warm, "{case}");
            assert_eq!(s.nodes_ready, nodes_ready, "{case}");
            assert_eq!(s.conditions[0].reason, reason, "{case}");
            assert!(s.conditions[0].message.contains(part), "{case}: {s:?}");
            assert_eq!(s.conditions[1].status, degraded, "{case}");
            if degraded {
                assert_eq!(s.conditions[1].reason, Reason::NodesStale, "{case}");
                assert!(s.conditions[1].message.contains(part), "{case}");
                assert_eq!(s.recheck_at, None, "{case}: nothing left to go stale");
            }
        }
    }

    /// (case, pool, image, covered nodes, [Ready, Degraded, Reconciling,
    /// Stalled] as (reason, status)).
    type Case<'a> = (
        &'a str,
        ExecutorPool,
        Option<&'a LanguageImage>,
        &'a [&'a str],
        Vec<(Reason, bool)>,
    );

    #[test]
    fn problems_and_the_conditions_they_set() {
        let all = |p: &ExecutorPool, img: Option<&LanguageImage>, covered: &[&str]| {
            let s = summary(p, img, covered);
            let flags: Vec<(Reason, bool)> =
                s.conditions.iter().map(|c| (c.reason, c.status)).collect();
            (s, flags)
        };
        let ok = format!(
            "{POOL}status:\n  nodes:\n  - {{node: a, desired: 1, warm: 1, busy: 0, launching: 0, ready: true, heartbeatTime: '{}'}}\n",
            beat(1)
        );
        let bad = pool(&format!(
            "{POOL}  execution: {{wallTimeMs: {{default: 10, max: 1}}}}\n"
        ));
        let mut deleting = image();
        deleting.metadata.deletion_timestamp = Some(Time(at(NOW)));
        let stalled = |r: Reason| vec![(r, false), (r, true), (r, false), (r, true)];
        // (case, pool, image, covered) -> [Ready, Degraded, Reconciling, Stalled]
        let img = image();
        let cases: Vec<Case<'_>> = vec![
            (
                "invalid spec",
                bad,
                Some(&img),
                &["a"],
                stalled(Reason::InvalidSpec),
            ),
            (
                "no image",
                pool(POOL),
                None,
                &["a"],
                stalled(Reason::ImageNotFound),
            ),
            (
                "egress on a zerotrust pool",
                pool(&format!("{POOL}  egress: {{allow: [{{host: a.org}}]}}\n")),
                Some(&img),
                &["a"],
                stalled(Reason::InvalidSpec),
            ),
            (
                "no nodes",
                pool(POOL),
                Some(&img),
                &[],
                vec![
                    (Reason::NoNodes, false),
                    (Reason::NoNodes, true),
                    (Reason::NoNodes, true),
                    (Reason::SpecValid, false),
                ],
            ),
            (
                "ready",
                pool(&ok),
                Some(&img),
                &["a"],
                vec![
                    (Reason::NodesReady, true),
                    (Reason::Healthy, false),
                    (Reason::NodesReady, false),
                    (Reason::SpecValid, false),
                ],
            ),
            (
                "image being deleted",
                pool(&ok),
                Some(&deleting),
                &["a"],
                vec![
                    (Reason::NodesReady, true),
                    (Reason::ImageDeleting, true),
                    (Reason::NodesReady, false),
                    (Reason::SpecValid, false),
                ],
            ),
        ];
        for (case, p, image, covered, want) in cases {
            let (s, flags) = all(&p, image, covered);
            assert_eq!(flags, want, "{case}");
            assert_eq!(
                s.invalid,
                matches!(
                    case,
                    "invalid spec" | "no image" | "egress on a zerotrust pool"
                ),
                "{case}"
            );
        }
    }

    /// The pool's status written by the controller and each agent's view of
    /// the same pool (which decides whether it launches anything) give the
    /// same reason and message for what keeps it from being served.
    #[test]
    fn controller_and_agents_agree_on_a_bad_pool() {
        use crate::agent::desired::{Resources, resolve};
        let good = image();
        let mut bad = image();
        bad.spec.languages.clear();
        let semi = "  network: semitrusted\n";
        let invalid = format!("  execution: {{wallTimeMs: {{default: 10, max: 1}}}}\n{semi}");
        let cases = [
            (
                "invalid spec",
                invalid.as_str(),
                Some(&good),
                Reason::InvalidSpec,
            ),
            ("no image", semi, None, Reason::ImageNotFound),
            ("invalid image", semi, Some(&bad), Reason::ImageInvalid),
            (
                "egress on a zerotrust pool",
                "  egress: {allow: [{host: a.org}]}\n",
                Some(&good),
                Reason::InvalidSpec,
            ),
        ];
        for (case, extra, img, want) in cases {
            let p = pool(&format!("{POOL}{extra}"));
            let listed =
                Resources::listed(vec![p.clone()], img.into_iter().cloned().collect(), None);
            let on_agent = resolve(&listed, "a").remove(0);
            let agent = on_agent.problem.expect(case);
            assert_eq!(agent.reason, want, "{case}");
            assert_eq!(
                on_agent.image.is_some(),
                img.is_some() && want != Reason::ImageInvalid,
                "{case}: the agent keeps a valid image only"
            );
            let s = summary(&p, img, &["a"]);
            for type_ in [READY, DEGRADED, STALLED] {
                let c = condition(&s, type_);
                assert_eq!(c.reason, agent.reason, "{case}: {type_}");
                assert_eq!(c.message, agent.message, "{case}: {type_}");
            }
        }
    }

    #[test]
    fn no_nodes_blames_the_selector_only_when_there_is_one() {
        let with = summary(&pool(POOL), Some(&image()), &[]);
        assert_eq!(
            with.conditions[0].message,
            "no node running the unsandbox agent (label unsandbox.com/lxd=true) matches spec.nodeSelector (tier=fast)"
        );
        let without = pool(&POOL.replace("  nodeSelector: {tier: fast}\n", ""));
        let s = summary(&without, Some(&image()), &[]);
        assert_eq!(
            s.conditions[0].message,
            "no node runs the unsandbox agent (label unsandbox.com/lxd=true)"
        );
    }

    #[test]
    fn cleanup_waits_for_existing_nodes_or_grace() {
        let mut p = pool(&format!(
            "{POOL}status:\n  nodes:\n  - {{node: a, desired: 0, warm: 0, busy: 1, launching: 0, ready: false}}\n  - {{node: gone, desired: 0, warm: 3, busy: 0, launching: 0, ready: false}}\n"
        ));
        let t0 = at(NOW);
        p.metadata.deletion_timestamp = Some(Time(t0));
        let grace = Duration::from_secs(300);
        let existing = BTreeSet::from(["a".to_string()]);
        assert_eq!(
            cleanup(&p, &existing, t0, grace),
            Cleanup::Waiting(vec!["a".into()]),
            "a still has a busy container"
        );
        assert_eq!(
            cleanup(&p, &existing, at(NOW + 300), grace),
            Cleanup::GraceExpired(vec!["a".into()]),
            "grace passed while a still held one"
        );
        p.status.as_mut().unwrap().nodes[0].busy = 0;
        assert_eq!(
            cleanup(&p, &existing, t0, grace),
            Cleanup::Clean,
            "node gone is ignored; a is clean"
        );
        assert_eq!(
            terminating(&["a".into(), "b".into()])[0].message,
            "waiting for a, b to remove containers"
        );
    }
}
