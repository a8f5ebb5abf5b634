//! Watches ExecutorPools, LanguageImages and this node, and publishes them as
//! the agent's `Resources` whenever what the agent acts on changes.

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
    pub pools: Store<ExecutorPool>,
    pub images: Store<LanguageImage>,
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
    Resources {
        pools,
        images,
        node_labels: Some(labels),
    }
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

/// Starts the watches and returns the stores and the resources channel.
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
    .map(|_| ());
    let images = reflector::reflector(
        image_writer,
        watcher(
            Api::<LanguageImage>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ());
    let own = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let nodes = reflector::reflector(node_writer, watcher(Api::<Node>::all(client), own))
        .default_backoff()
        .map(|_| ());
    let (tx, rx) = watch::channel(Resources::default());
    let view = stores.clone();
    tokio::spawn(async move {
        let mut events =
            futures::stream::select_all([pools.boxed(), images.boxed(), nodes.boxed()]);
        let mut last = String::new();
        while events.next().await.is_some() {
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
