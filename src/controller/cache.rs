//! The watch caches the reconcilers read instead of asking the API server on
//! every reconcile: pools, images, and the nodes that run the agent. The
//! watches in [`super::watch`] fill them; tests fill them by hand with the
//! same events.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;

use crate::crd::{ExecutorPool, LanguageImage};

/// Read views of the watched objects, and their writers.
pub struct Caches {
    pools: Store<ExecutorPool>,
    images: Store<LanguageImage>,
    nodes: Store<Node>,
    writers: Mutex<Writers>,
}

struct Writers {
    pools: Writer<ExecutorPool>,
    images: Writer<LanguageImage>,
    nodes: Writer<Node>,
}

impl Default for Caches {
    fn default() -> Self {
        Self::new()
    }
}

impl Caches {
    /// Empty caches, not ready until each has seen its first full list.
    pub fn new() -> Self {
        let (pools, pool_writer) = reflector::store();
        let (images, image_writer) = reflector::store();
        let (nodes, node_writer) = reflector::store();
        Self {
            pools,
            images,
            nodes,
            writers: Mutex::new(Writers {
                pools: pool_writer,
                images: image_writer,
                nodes: node_writer,
            }),
        }
    }

    /// The LanguageImage called `name`, if it exists.
    pub fn image(&self, name: &str) -> Option<Arc<LanguageImage>> {
        self.images.get(&ObjectRef::new(name))
    }

    /// Every node that runs the agent.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    /// Every ExecutorPool.
    pub fn pools(&self) -> Vec<Arc<ExecutorPool>> {
        self.pools.state()
    }

    /// The pool store, which the pool reconciler is driven from.
    pub fn pool_store(&self) -> Store<ExecutorPool> {
        self.pools.clone()
    }

    /// The image store, which the image reconciler is driven from.
    pub fn image_store(&self) -> Store<LanguageImage> {
        self.images.clone()
    }

    /// Records a watch event of a pool.
    pub fn observe_pool(&self, event: &watcher::Event<ExecutorPool>) {
        self.with_writers(|w| w.pools.apply_watcher_event(event));
    }

    /// Records a watch event of an image.
    pub fn observe_image(&self, event: &watcher::Event<LanguageImage>) {
        self.with_writers(|w| w.images.apply_watcher_event(event));
    }

    /// Records a watch event of a node.
    pub fn observe_node(&self, event: &watcher::Event<Node>) {
        self.with_writers(|w| w.nodes.apply_watcher_event(event));
    }

    /// Waits until every cache has seen its first full list: before that, a
    /// missing image only means "not listed yet".
    pub async fn wait_until_ready(&self) {
        let (p, i, n) = futures::join!(
            self.pools.wait_until_ready(),
            self.images.wait_until_ready(),
            self.nodes.wait_until_ready()
        );
        // An error only means a writer was dropped, and they live in `self`.
        let _ = (p, i, n);
    }

    fn with_writers(&self, f: impl FnOnce(&mut Writers)) {
        // A panic while applying an event leaves a usable map behind.
        let mut w = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut w);
    }
}
