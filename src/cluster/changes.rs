//! Whether a watch event changed what the agent acts on. Pure, so it is
//! tested with real objects.
//!
//! The agent acts on a pool's or an image's spec and on whether it is being
//! deleted, and on its node's labels. Everything else changes far more
//! often: every agent writes its entry in each pool's status, and the
//! kubelet updates its node every few seconds. Republishing on those would
//! make the agents react to their own reports.
//!
//! What counts is said with kube's predicates (`generation`, `labels`).
//! They are applied to watch events here rather than with
//! `WatchStreamExt::predicate_filter`, which filters a stream of objects:
//! that stream no longer says when a list is complete (the agent must not
//! act before), and kube documents that it can swallow a deletion whose
//! generation did not change, which would leave a pool deleted without a
//! finalizer published.

use std::collections::HashMap;

use kube::Resource;
use kube::runtime::watcher::Event;
use kube::runtime::{Predicate, predicates};

/// Whether the object is marked for deletion. The agent stops serving a
/// pool as soon as it is, before the controller removes its finalizer.
pub fn deletion<K: Resource>(obj: &K) -> Option<u64> {
    Some(u64::from(obj.meta().deletion_timestamp.is_some()))
}

/// What the agent acts on in an ExecutorPool or a LanguageImage: its spec,
/// which the API server versions with `metadata.generation` (status writes
/// leave it alone), and whether it is being deleted. An object without a
/// generation counts every revision, so no spec change can go unseen.
pub fn spec_or_deletion<K: Resource>(obj: &K) -> Option<u64> {
    predicates::generation
        .fallback(predicates::resource_version)
        .combine(deletion)
        .hash_property(obj)
}

/// What the agent acts on in its node: the labels pools select nodes by.
pub fn node_labels<K: Resource>(obj: &K) -> Option<u64> {
    predicates::labels(obj)
}

/// What one watch event meant for the published resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing the agent acts on changed (or a list is still arriving).
    Unchanged,
    /// An object the agent acts on appeared, changed or went away.
    Changed,
    /// A list finished: the store now holds exactly what was listed.
    /// `changed` says whether that differs from what was known before.
    Listed { changed: bool },
}

/// An object's identity: one re-created under the same name is new.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl Key {
    fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Self {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
        }
    }
}

/// A predicate's value for an object; `None` when the predicate cannot
/// tell, which never equals anything (as in kube's own filter).
type Hash = Option<u64>;

fn same(a: Hash, b: Hash) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a == b)
}

/// The predicate's value for every object of one watch, updated event by
/// event the way a reflector updates its store.
pub struct Changes<P> {
    predicate: P,
    /// Values for the objects in the store.
    known: HashMap<Key, Hash>,
    /// Values of a list still arriving, swapped in when it is complete.
    listing: Option<HashMap<Key, Hash>>,
}

impl<P> Changes<P> {
    /// Tracks the objects of one watch with `predicate`.
    pub fn new(predicate: P) -> Self {
        Self {
            predicate,
            known: HashMap::new(),
            listing: None,
        }
    }

    /// Records `event` and says whether it changed what the agent acts on.
    pub fn observe<K: Resource>(&mut self, event: &Event<K>) -> Seen
    where
        P: Predicate<K>,
    {
        match event {
            Event::Init => {
                self.listing = Some(HashMap::new());
                Seen::Unchanged
            }
            Event::InitApply(obj) => {
                let value = self.predicate.hash_property(obj);
                self.listing
                    .get_or_insert_default()
                    .insert(Key::of(obj), value);
                Seen::Unchanged
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let changed = listed.len() != self.known.len()
                    || listed
                        .iter()
                        .any(|(k, v)| !self.known.get(k).is_some_and(|old| same(*old, *v)));
                self.known = listed;
                Seen::Listed { changed }
            }
            Event::Apply(obj) => {
                let value = self.predicate.hash_property(obj);
                match self.known.insert(Key::of(obj), value) {
                    Some(old) if same(old, value) => Seen::Unchanged,
                    _ => Seen::Changed,
                }
            }
            Event::Delete(obj) => {
                self.known.remove(&Key::of(obj));
                Seen::Changed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;

    use super::*;
    use crate::crd::{ExecutorPool, LanguageImage};

    fn pool(extra: &str) -> ExecutorPool {
        serde_yaml::from_str(&format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: p, namespace: t, uid: u1, generation: 1, resourceVersion: '10'}}\nspec: {{image: small, warm: 2}}\n{extra}"
        ))
        .unwrap()
    }

    fn node(labels: &str, ready: &str) -> Node {
        serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n1, uid: n, labels: {{{labels}}}, annotations: {{seen: '{ready}'}}}}\nstatus:\n  conditions: [{{type: Ready, status: '{ready}'}}]\n"
        ))
        .unwrap()
    }

    /// A tracker that has listed `objects`.
    fn listed<K: Resource + Clone, P: Predicate<K>>(predicate: P, objects: &[K]) -> Changes<P> {
        let mut c = Changes::new(predicate);
        c.observe::<K>(&Event::Init);
        for o in objects {
            c.observe(&Event::InitApply(o.clone()));
        }
        assert_eq!(
            c.observe::<K>(&Event::InitDone),
            Seen::Listed {
                changed: !objects.is_empty()
            }
        );
        c
    }

    #[test]
    fn a_pool_status_update_is_not_a_change() {
        let mut c = listed(spec_or_deletion, &[pool("")]);
        // What every agent writes: a new revision with status, same generation.
        let mut reported = pool(
            "status:\n  nodes:\n  - {node: n1, desired: 2, warm: 2, busy: 0, launching: 0, ready: true}\n",
        );
        reported.metadata.resource_version = Some("11".into());
        assert_eq!(c.observe(&Event::Apply(reported.clone())), Seen::Unchanged);
        reported.metadata.resource_version = Some("12".into());
        reported.metadata.labels = Some([("team".into(), "a".into())].into());
        assert_eq!(c.observe(&Event::Apply(reported)), Seen::Unchanged);
    }

    #[test]
    fn a_pool_spec_change_deletion_or_removal_is_a_change() {
        let mut c = listed(spec_or_deletion, &[pool("")]);
        let mut edited = pool("");
        edited.spec.warm = 3;
        edited.metadata.generation = Some(2);
        assert_eq!(c.observe(&Event::Apply(edited.clone())), Seen::Changed);
        assert_eq!(c.observe(&Event::Apply(edited.clone())), Seen::Unchanged);

        let mut deleting = edited.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap(),
            ));
        assert_eq!(c.observe(&Event::Apply(deleting.clone())), Seen::Changed);
        // Removed without its generation changing (no finalizer, or the
        // final delete): still a change, the pool leaves the store.
        assert_eq!(c.observe(&Event::Delete(deleting)), Seen::Changed);
    }

    #[test]
    fn a_pool_recreated_under_the_same_name_is_new() {
        let mut c = listed(spec_or_deletion, &[pool("")]);
        let mut again = pool("");
        again.metadata.uid = Some("u2".into());
        assert_eq!(c.observe(&Event::Apply(again)), Seen::Changed);
    }

    #[test]
    fn an_object_without_a_generation_counts_every_revision() {
        let mut image: LanguageImage = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: small, resourceVersion: '1'}\nspec:\n  source: {recipe: small}\n  languages: [{name: python, sourceFile: main.py, run: python3 main.py}]\n",
        )
        .unwrap();
        let mut c = listed(spec_or_deletion, std::slice::from_ref(&image));
        assert_eq!(c.observe(&Event::Apply(image.clone())), Seen::Unchanged);
        image.metadata.resource_version = Some("2".into());
        assert_eq!(c.observe(&Event::Apply(image)), Seen::Changed);
    }

    #[test]
    fn only_label_changes_of_the_node_count() {
        let mut c = listed(node_labels, &[node("zone: a", "True")]);
        // The kubelet's status and annotation updates.
        assert_eq!(
            c.observe(&Event::Apply(node("zone: a", "False"))),
            Seen::Unchanged
        );
        assert_eq!(
            c.observe(&Event::Apply(node("zone: b", "False"))),
            Seen::Changed
        );
        assert_eq!(
            c.observe(&Event::Apply(node("zone: b, gpu: 'yes'", "False"))),
            Seen::Changed
        );
    }

    #[test]
    fn a_relist_changes_only_what_it_changes() {
        let mut other = pool("");
        other.metadata.name = Some("q".into());
        other.metadata.uid = Some("u9".into());
        let mut c = listed(spec_or_deletion, &[pool(""), other.clone()]);

        // The same objects again, with new statuses: nothing to publish.
        let mut reported = pool("status: {nodes: []}\n");
        reported.metadata.resource_version = Some("20".into());
        c.observe::<ExecutorPool>(&Event::Init);
        c.observe(&Event::InitApply(reported.clone()));
        c.observe(&Event::InitApply(other));
        assert_eq!(
            c.observe::<ExecutorPool>(&Event::InitDone),
            Seen::Listed { changed: false }
        );

        // `q` was deleted while the watch was down: the re-list drops it.
        c.observe::<ExecutorPool>(&Event::Init);
        assert_eq!(c.observe(&Event::InitApply(reported)), Seen::Unchanged);
        assert_eq!(
            c.observe::<ExecutorPool>(&Event::InitDone),
            Seen::Listed { changed: true }
        );
    }

    #[test]
    fn an_empty_first_list_is_a_list() {
        let mut c = Changes::new(node_labels);
        assert_eq!(c.observe::<Node>(&Event::Init), Seen::Unchanged);
        assert_eq!(
            c.observe::<Node>(&Event::InitDone),
            Seen::Listed { changed: false }
        );
    }
}
