//! Watches ExecutorPools, LanguageImages and this node, and publishes them as
//! the agent's `Resources` whenever what the agent acts on changes (see
//! [`super::changes`]). Nothing is published until every watch has finished
//! its first list: before that, a missing pool only means "not listed yet",
//! and an agent that took it for "deleted" would destroy the warm containers
//! it should adopt.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use super::changes::{self, Changes, Seen};
use crate::agent::Resources;
use crate::crd::{ExecutorPool, LanguageImage};

/// Read-only views of the watched objects.
#[derive(Clone)]
pub struct Stores {
    /// Every ExecutorPool.
    pub pools: Store<ExecutorPool>,
    /// Every LanguageImage.
    pub images: Store<LanguageImage>,
    /// This node (at most one).
    pub nodes: Store<Node>,
}

/// The agent's resources from the stores: pools being deleted are left out,
/// so the agent removes their containers.
pub fn resources(stores: &Stores, node: &str) -> Resources {
    let mut pools: Vec<ExecutorPool> = stores
        .pools
        .state()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (**p).clone())
        .collect();
    pools.sort_by_key(crate::agent::desired::pool_key);
    let mut images: Vec<LanguageImage> = stores
        .images
        .state()
        .iter()
        .map(|i| (**i).clone())
        .collect();
    images.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let labels: BTreeMap<String, String> = stores
        .nodes
        .state()
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    Resources::listed(pools, images, Some(labels))
}

/// One of the watches behind the agent's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// ExecutorPools, in every namespace.
    Pools,
    /// LanguageImages.
    Images,
    /// This node, for its labels.
    Node,
}

/// Which watches have finished their first list. Pure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listing {
    pools: bool,
    images: bool,
    node: bool,
}

impl Listing {
    /// Records that `watch` finished a list (`InitDone`; the node watch may
    /// list no node at all, which is still a complete answer).
    pub fn done(&mut self, watch: Watch) {
        match watch {
            Watch::Pools => self.pools = true,
            Watch::Images => self.images = true,
            Watch::Node => self.node = true,
        }
    }

    /// Whether every watch has listed once: from then on the stores hold a
    /// complete view (a later re-list swaps a store only when it is done).
    pub fn complete(&self) -> bool {
        self.pools && self.images && self.node
    }
}

/// When to publish: once every watch has listed, then after every change
/// to what the agent acts on. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    listing: Listing,
    /// Something changed since the last publication (or nothing was
    /// published yet).
    pending: bool,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            listing: Listing::default(),
            pending: true,
        }
    }
}

impl Gate {
    /// Records what `watch` saw and says whether to publish now.
    pub fn observe(&mut self, watch: Watch, seen: Seen) -> bool {
        match seen {
            Seen::Unchanged => {}
            Seen::Changed => self.pending = true,
            Seen::Listed { changed } => {
                self.listing.done(watch);
                self.pending |= changed;
            }
        }
        let publish = self.pending && self.listing.complete();
        if publish {
            self.pending = false;
        }
        publish
    }
}

/// Tags a watch's events with what they changed, by `predicate`; a failed
/// watch call changes nothing (the watcher retries, then lists again).
fn track<K, P>(
    watch: Watch,
    predicate: P,
) -> impl FnMut(Result<watcher::Event<K>, watcher::Error>) -> (Watch, Seen)
where
    K: kube::Resource,
    P: kube::runtime::Predicate<K>,
{
    let mut changes = Changes::new(predicate);
    move |event| match event {
        Ok(e) => (watch, changes.observe(&e)),
        Err(_) => (watch, Seen::Unchanged),
    }
}

/// Starts the watches and returns the stores and the resources channel,
/// which holds an incomplete, empty `Resources` until every watch has listed.
pub fn watch_resources(client: Client, node: String) -> (Stores, watch::Receiver<Resources>) {
    let (pool_store, pool_writer) = reflector::store();
    let (image_store, image_writer) = reflector::store();
    let (node_store, node_writer) = reflector::store();
    let stores = Stores {
        pools: pool_store,
        images: image_store,
        nodes: node_store,
    };
    let pools = reflector::reflector(
        pool_writer,
        watcher(
            Api::<ExecutorPool>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(track(
        Watch::Pools,
        changes::spec_or_deletion::<ExecutorPool>,
    ));
    let images = reflector::reflector(
        image_writer,
        watcher(
            Api::<LanguageImage>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(track(
        Watch::Images,
        changes::spec_or_deletion::<LanguageImage>,
    ));
    let own = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let nodes = reflector::reflector(node_writer, watcher(Api::<Node>::all(client), own))
        .default_backoff()
        .map(track(Watch::Node, changes::node_labels::<Node>));
    let (tx, rx) = watch::channel(Resources::default());
    let view = stores.clone();
    tokio::spawn(async move {
        let mut events =
            futures::stream::select_all([pools.boxed(), images.boxed(), nodes.boxed()]);
        let mut gate = Gate::default();
        while let Some((watch, seen)) = events.next().await {
            if gate.observe(watch, seen) {
                let _ = tx.send(resources(&view, &node));
            }
        }
    });
    (stores, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_only_once_every_watch_has_listed() {
        let mut l = Listing::default();
        assert!(!l.complete());
        l.done(Watch::Pools);
        l.done(Watch::Node);
        assert!(!l.complete(), "images not listed yet");
        l.done(Watch::Images);
        assert!(l.complete());
        // A re-list later does not make it incomplete again.
        l.done(Watch::Pools);
        assert!(l.complete());
    }

    #[test]
    fn nothing_is_published_before_every_watch_has_listed() {
        let mut g = Gate::default();
        assert!(!g.observe(Watch::Pools, Seen::Changed));
        assert!(!g.observe(Watch::Pools, Seen::Listed { changed: true }));
        assert!(!g.observe(Watch::Node, Seen::Listed { changed: false }));
        assert!(!g.observe(Watch::Pools, Seen::Changed));
        // The last first list completes the view: published, even if empty.
        assert!(g.observe(Watch::Images, Seen::Listed { changed: false }));
    }

    #[test]
    fn published_once_per_change_after_listing() {
        let mut g = Gate::default();
        for w in [Watch::Pools, Watch::Images, Watch::Node] {
            g.observe(w, Seen::Listed { changed: false });
        }
        assert!(!g.observe(Watch::Pools, Seen::Unchanged));
        assert!(g.observe(Watch::Pools, Seen::Changed));
        assert!(!g.observe(Watch::Node, Seen::Unchanged));
        assert!(g.observe(Watch::Node, Seen::Changed));
        // A re-list publishes only when it brought something new.
        assert!(!g.observe(Watch::Images, Seen::Listed { changed: false }));
        assert!(g.observe(Watch::Images, Seen::Listed { changed: true }));
    }

    /// Status reports the agents write come back through the pool watch;
    /// they must not republish, or every report would start another round.
    #[test]
    fn reports_on_a_pool_do_not_republish() {
        let pool: ExecutorPool = serde_yaml::from_str(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: p, namespace: t, uid: u, generation: 4, resourceVersion: '1'}\nspec: {image: small}\n",
        )
        .unwrap();
        let mut track = track(Watch::Pools, changes::spec_or_deletion::<ExecutorPool>);
        let mut g = Gate::default();
        g.observe(Watch::Images, Seen::Listed { changed: false });
        g.observe(Watch::Node, Seen::Listed { changed: false });
        let mut publish = |e: watcher::Event<ExecutorPool>| {
            let (w, seen) = track(Ok(e));
            g.observe(w, seen)
        };
        assert!(!publish(watcher::Event::Init));
        assert!(!publish(watcher::Event::InitApply(pool.clone())));
        assert!(publish(watcher::Event::InitDone));
        for rv in 2..5 {
            let mut reported = pool.clone();
            reported.metadata.resource_version = Some(rv.to_string());
            reported.status = Some(Default::default());
            assert!(!publish(watcher::Event::Apply(reported)));
        }
        let mut edited = pool.clone();
        edited.metadata.generation = Some(5);
        assert!(publish(watcher::Event::Apply(edited.clone())));
        assert!(publish(watcher::Event::Delete(edited)));
    }

    #[test]
    fn store_resources_are_a_complete_listing() {
        let (pools, _) = reflector::store::<ExecutorPool>();
        let (images, _) = reflector::store::<LanguageImage>();
        let (nodes, _) = reflector::store::<Node>();
        let res = resources(
            &Stores {
                pools,
                images,
                nodes,
            },
            "n1",
        );
        assert!(res.complete);
        assert_eq!(res.node_labels, Some(BTreeMap::new()));
        assert!(!Resources::default().complete);
    }
}
