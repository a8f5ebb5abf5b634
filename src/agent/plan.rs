//! Pure decisions of a resync: given what LXD reports for the containers this
//! host's agent owns, what the agent tracks in memory, and what each pool
//! wants, decide what to forget, destroy and adopt.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::keys;
use crate::lxd::InstanceInfo;

/// Where a container the agent tracks stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Being created, started and readied.
    Launching,
    /// Ready, in its pool's warm queue.
    Warm,
    /// Handed to one execution.
    Busy,
    /// A recycling pool's container after an execution: being checked and
    /// given a fresh sandbox before it goes back to the warm queue.
    Recycling,
    /// Running its pool's smoke suite.
    Proving,
    /// Left by an earlier run, being checked before it is adopted.
    Inspecting,
    /// Being stopped and deleted.
    Destroying,
}

/// What a pool wants on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Its image is still being looked up: nothing is decided for it.
    Undecided,
    /// Containers of shape (container hash) `adopt`; the templates of the
    /// `keep` shapes stay too (a newer image being proven, an image rolled
    /// away from whose containers still serve).
    Shape { adopt: String, keep: Vec<String> },
    /// Nothing: it cannot be served, whatever its image.
    Nothing,
}

impl Want {
    /// Containers of shape `hash` and nothing else.
    #[cfg(test)]
    pub fn shape(hash: &str) -> Self {
        Want::Shape {
            adopt: hash.to_string(),
            keep: Vec::new(),
        }
    }

    fn adopts(&self) -> Option<&str> {
        match self {
            Want::Shape { adopt, .. } => Some(adopt),
            _ => None,
        }
    }

    fn keeps(&self, hash: &str) -> bool {
        match self {
            Want::Shape { adopt, keep } => adopt == hash || keep.iter().any(|k| k == hash),
            _ => false,
        }
    }
}

/// The decisions of one resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Warm containers LXD no longer has running: drop them from the pool.
    pub forget: Vec<String>,
    /// Containers to stop and delete.
    pub destroy: Vec<String>,
    /// Untracked running containers that fit a pool: adopt each as warm if it
    /// was never handed to an execution and the pool has room, else destroy
    /// it (pool key, container name). Room is decided after the used check,
    /// so a used container never takes an unused one's place.
    pub adopt: Vec<(String, String)>,
}

/// Decides a resync. `owned` is LXD's list, already limited to this node's
/// managed containers; `tracked` maps container name to its phase.
pub fn resync(
    owned: &[InstanceInfo],
    tracked: &HashMap<&str, Phase>,
    wants: &BTreeMap<String, Want>,
) -> Plan {
    let mut plan = Plan::default();
    let listed: BTreeSet<&str> = owned.iter().map(|i| i.name.as_str()).collect();
    for inst in owned {
        if inst.config.get(keys::TEMPLATE).map(String::as_str) == Some("true") {
            // A template stays while some pool still has its shape.
            let hash = inst
                .config
                .get(keys::SPEC)
                .map(String::as_str)
                .unwrap_or_default();
            let undecided = wants.values().any(|w| *w == Want::Undecided);
            if !undecided && !wants.values().any(|w| w.keeps(hash)) {
                plan.destroy.push(inst.name.clone());
            }
            continue;
        }
        match tracked.get(inst.name.as_str()) {
            Some(Phase::Warm) if !inst.is_running() => {
                plan.forget.push(inst.name.clone());
                plan.destroy.push(inst.name.clone());
            }
            Some(_) => {}
            None => {
                let pool = inst
                    .config
                    .get(keys::POOL)
                    .map(String::as_str)
                    .unwrap_or_default();
                let hash = inst
                    .config
                    .get(keys::SPEC)
                    .map(String::as_str)
                    .unwrap_or_default();
                // Its pool's shape is not known yet: decide on a later resync.
                if inst.is_running() && wants.get(pool) == Some(&Want::Undecided) {
                    continue;
                }
                let fits =
                    inst.is_running() && wants.get(pool).is_some_and(|w| w.adopts() == Some(hash));
                if fits {
                    plan.adopt.push((pool.to_string(), inst.name.clone()));
                } else {
                    plan.destroy.push(inst.name.clone());
                }
            }
        }
    }
    let mut gone: Vec<String> = tracked
        .iter()
        .filter(|(name, phase)| **phase == Phase::Warm && !listed.contains(**name))
        .map(|(name, _)| name.to_string())
        .collect();
    gone.sort();
    plan.forget.extend(gone);
    plan
}

/// Only the containers of `node` that an unsandbox agent created.
pub fn owned_by(instances: Vec<InstanceInfo>, node: &str) -> Vec<InstanceInfo> {
    instances
        .into_iter()
        .filter(|i| {
            i.config.get(keys::MANAGED).map(String::as_str) == Some("true")
                && i.config.get(keys::NODE).map(String::as_str) == Some(node)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str, pool: &str, hash: &str, status: &str) -> InstanceInfo {
        InstanceInfo {
            name: name.into(),
            status: status.into(),
            ephemeral: true,
            config: BTreeMap::from([
                (keys::MANAGED.to_string(), "true".to_string()),
                (keys::NODE.to_string(), "n1".to_string()),
                (keys::POOL.to_string(), pool.to_string()),
                (keys::SPEC.to_string(), hash.to_string()),
            ]),
        }
    }

    fn wants() -> BTreeMap<String, Want> {
        BTreeMap::from([("ns/py".to_string(), Want::shape("h1"))])
    }

    #[test]
    fn warm_container_stopped_or_deleted_out_of_band_is_forgotten() {
        let tracked = HashMap::from([("a", Phase::Warm), ("b", Phase::Warm), ("c", Phase::Busy)]);
        let owned = vec![
            inst("a", "ns/py", "h1", "Stopped"),
            inst("c", "ns/py", "h1", "Running"),
        ];
        let plan = resync(&owned, &tracked, &wants());
        assert_eq!(plan.forget, ["a", "b"]);
        assert_eq!(plan.destroy, ["a"]);
        assert!(plan.adopt.is_empty());
    }

    #[test]
    fn restart_offers_fitting_containers_for_adoption_and_destroys_the_rest() {
        let owned = vec![
            inst("a", "ns/py", "h1", "Running"),
            inst("b", "ns/py", "h1", "Running"),
            inst("c", "ns/py", "old", "Running"),
            inst("d", "ns/gone", "h1", "Running"),
            inst("e", "ns/py", "h1", "Stopped"),
            inst("f", "ns/py", "h1", "Running"),
        ];
        let plan = resync(&owned, &HashMap::new(), &wants());
        let adopt: Vec<&str> = plan.adopt.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(adopt, ["a", "b", "f"]);
        assert!(plan.adopt.iter().all(|(p, _)| p == "ns/py"));
        assert_eq!(plan.destroy, ["c", "d", "e"]);
    }

    #[test]
    fn nothing_is_decided_while_the_pool_shape_is_unknown() {
        let mut tpl = inst("us-tpl-h1-000000", "", "h1", "Stopped");
        tpl.config.insert(keys::TEMPLATE.into(), "true".into());
        let owned = vec![inst("a", "ns/py", "h1", "Running"), tpl];
        let wants = BTreeMap::from([("ns/py".to_string(), Want::Undecided)]);
        assert_eq!(resync(&owned, &HashMap::new(), &wants), Plan::default());
    }

    #[test]
    fn launching_and_destroying_are_left_alone() {
        let tracked = HashMap::from([
            ("a", Phase::Launching),
            ("b", Phase::Destroying),
            ("c", Phase::Inspecting),
        ]);
        let owned = vec![
            inst("a", "ns/py", "h1", "Stopped"),
            inst("b", "ns/py", "h1", "Stopped"),
            inst("c", "ns/py", "h1", "Running"),
        ];
        assert_eq!(resync(&owned, &tracked, &wants()), Plan::default());
    }

    #[test]
    fn templates_stay_while_their_shape_is_wanted() {
        let mut kept = inst("us-tpl-h1-000000", "", "h1", "Stopped");
        kept.config.insert(keys::TEMPLATE.into(), "true".into());
        let mut stale = inst("us-tpl-old-000000", "", "old", "Stopped");
        stale.config.insert(keys::TEMPLATE.into(), "true".into());
        let plan = resync(&[kept.clone(), stale.clone()], &HashMap::new(), &wants());
        assert_eq!(plan.destroy, ["us-tpl-old-000000"]);
        assert!(plan.adopt.is_empty());
        // While containers of the old shape serve (a rollout), its template stays;
        // an untracked container of it is still not adopted.
        let rolling = BTreeMap::from([(
            "ns/py".to_string(),
            Want::Shape {
                adopt: "h1".into(),
                keep: vec!["old".into()],
            },
        )]);
        let leftover = inst("c", "ns/py", "old", "Running");
        let plan = resync(&[kept, stale, leftover], &HashMap::new(), &rolling);
        assert_eq!(plan.destroy, ["c"]);
    }

    #[test]
    fn ownership_filter() {
        let mut other = inst("x", "ns/py", "h1", "Running");
        other.config.insert(keys::NODE.into(), "n2".into());
        let mut foreign = inst("y", "ns/py", "h1", "Running");
        foreign.config.clear();
        let kept = owned_by(
            vec![inst("a", "ns/py", "h1", "Running"), other, foreign],
            "n1",
        );
        assert_eq!(kept.len(), 1);
    }
}
