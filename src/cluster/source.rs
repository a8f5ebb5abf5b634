//! Watches ExecutorPools, LanguageImages and this node, and publishes them as
//! the agent's `Resources` whenever what the agent acts on changes. Nothing
//! is published until every watch has finished its first list: before that,
//! a missing pool only means "not listed yet", and an agent that took it for
//! "deleted" would destroy the warm containers it should adopt.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

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

/// Which watch finished a list with this event, if any.
fn init_done<K>(watch: Watch, event: &Result<watcher::Event<K>, watcher::Error>) -> Option<Watch> {
    matches!(event, Ok(watcher::Event::InitDone)).then_some(watch)
}

/// What of the resources the agent acts on, to skip status-only changes.
fn fingerprint(res: &Resources) -> String {
    let pools: Vec<_> = res
        .pools
        .iter()
        .map(|p| (&p.metadata.name, &p.metadata.namespace, &p.spec))
        .collect();
    let images: Vec<_> = res
        .images
        .iter()
        .map(|i| (&i.metadata.name, &i.spec))
        .collect();
    serde_json::to_string(&(pools, images, &res.node_labels)).unwrap_or_default()
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
    .map(|e| init_done(Watch::Pools, &e));
    let images = reflector::reflector(
        image_writer,
        watcher(
            Api::<LanguageImage>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| init_done(Watch::Images, &e));
    let own = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let nodes = reflector::reflector(node_writer, watcher(Api::<Node>::all(client), own))
        .default_backoff()
        .map(|e| init_done(Watch::Node, &e));
    let (tx, rx) = watch::channel(Resources::default());
    let view = stores.clone();
    tokio::spawn(async move {
        let mut events =
            futures::stream::select_all([pools.boxed(), images.boxed(), nodes.boxed()]);
        let mut last = String::new();
        let mut listing = Listing::default();
        while let Some(event) = events.next().await {
            if let Some(watch) = event {
                listing.done(watch);
            }
            if !listing.complete() {
                continue;
            }
            let res = resources(&view, &node);
            let fp = fingerprint(&res);
            if fp != last {
                last = fp;
                let _ = tx.send(res);
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
    fn only_init_done_finishes_a_list() {
        let done: Result<watcher::Event<Node>, watcher::Error> = Ok(watcher::Event::InitDone);
        assert_eq!(init_done(Watch::Node, &done), Some(Watch::Node));
        for other in [
            watcher::Event::Init,
            watcher::Event::InitApply(Node::default()),
            watcher::Event::Apply(Node::default()),
        ] {
            assert_eq!(init_done(Watch::Node, &Ok(other)), None);
        }
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
