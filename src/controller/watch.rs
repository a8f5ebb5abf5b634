//! One watch per kind fills the caches and decides what to reconcile; two
//! appliers (pools, images) run the reconcilers. Built on kube's `applier`
//! rather than `Controller`, so that each kind is watched once and the pool
//! trigger can ignore the controller's own status writes: a change passes
//! only when a field the reconcilers read changed ([`PoolTrigger`]).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::{self, UnboundedSender};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, applier, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;

use super::{Context, Error, reconcile};
use crate::crd::{ExecutorPool, LanguageImage, NodePoolStatus};

/// Remembers the last value seen per key, to pass on only changes.
#[derive(Debug)]
pub struct Seen<V> {
    last: HashMap<String, V>,
}

impl<V> Default for Seen<V> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

impl<V: PartialEq> Seen<V> {
    /// Records `value` for `key`. `None` when unchanged; otherwise the
    /// previous value (`Some(None)` for a new key).
    pub fn record(&mut self, key: String, value: V) -> Option<Option<V>> {
        match self.last.get(&key) {
            Some(old) if *old == value => None,
            _ => Some(self.last.insert(key, value)),
        }
    }

    /// Forgets `key` (its object was deleted); returns its last value.
    pub fn forget(&mut self, key: &str) -> Option<V> {
        self.last.remove(key)
    }
}

/// What of a pool the pool reconciler reads: a change in anything else (its
/// own status fields, `resourceVersion`, `managedFields`) is not a reason to
/// reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTrigger {
    generation: Option<i64>,
    deleting: bool,
    finalizers: Vec<String>,
    nodes: Vec<NodePoolStatus>,
}

impl PoolTrigger {
    /// The fields of `pool` that the reconciler acts on.
    pub fn of(pool: &ExecutorPool) -> Self {
        Self {
            generation: pool.metadata.generation,
            deleting: pool.metadata.deletion_timestamp.is_some(),
            finalizers: pool.finalizers().to_vec(),
            nodes: pool
                .status
                .as_ref()
                .map(|s| s.nodes.clone())
                .unwrap_or_default(),
        }
    }
}

/// What of an image the reconcilers read (pools: spec and deletion; the
/// image reconciler: also its finalizers).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTrigger {
    generation: Option<i64>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl ImageTrigger {
    /// The fields of `image` that the reconcilers act on.
    pub fn of(image: &LanguageImage) -> Self {
        Self {
            generation: image.metadata.generation,
            deleting: image.metadata.deletion_timestamp.is_some(),
            finalizers: image.finalizers().to_vec(),
        }
    }
}

/// Runs both reconcilers until the watches end (never, in practice).
pub async fn run_controllers(ctx: Arc<Context>) {
    run_until(ctx, std::future::pending()).await
}

/// Runs both reconcilers until `stop` resolves, then lets the reconciles in
/// flight finish and returns.
pub async fn run_until(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopper = async move {
        stop.await;
        let _ = stop_tx.send(true);
    };
    let (pool_tx, pool_rx) = mpsc::unbounded::<ObjectRef<ExecutorPool>>();
    let (image_tx, image_rx) = mpsc::unbounded::<ObjectRef<LanguageImage>>();
    let client = ctx.client.clone();
    let pools = watcher(
        Api::<ExecutorPool>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let images = watcher(
        Api::<LanguageImage>::all(client.clone()),
        watcher::Config::default(),
    );
    let nodes = watcher(
        Api::<Node>::all(client),
        watcher::Config::default().labels(&ctx.cfg.agent_selector_string()),
    );
    let pool_watch = {
        let (ctx, pool_tx, image_tx) = (ctx.clone(), pool_tx.clone(), image_tx.clone());
        let (mut own, mut refs) = (Seen::default(), Seen::<String>::default());
        drive("ExecutorPool", pools, stopped(stop_rx.clone()), move |ev| {
            ctx.caches.observe_pool(&ev);
            on_pool(ev, &mut own, &mut refs, &pool_tx, &image_tx);
        })
    };
    let image_watch = {
        let (ctx, pool_tx) = (ctx.clone(), pool_tx.clone());
        let mut seen = Seen::default();
        drive(
            "LanguageImage",
            images,
            stopped(stop_rx.clone()),
            move |ev| {
                ctx.caches.observe_image(&ev);
                on_image(&ctx, ev, &mut seen, &pool_tx, &image_tx);
            },
        )
    };
    let node_watch = {
        let ctx = ctx.clone();
        let mut seen = Seen::<BTreeMap<String, String>>::default();
        drive("Node", nodes, stopped(stop_rx.clone()), move |ev| {
            ctx.caches.observe_node(&ev);
            if node_changed(&ev, &mut seen) {
                for p in ctx.caches.pools() {
                    let _ = pool_tx.unbounded_send(ObjectRef::from_obj(&*p));
                }
            }
        })
    };
    let config = controller::Config::default().debounce(Duration::from_millis(500));
    let pool_loop = applier(
        |p, c| reconcile::pool(p, c).boxed(),
        super::error_policy,
        ctx.clone(),
        ctx.caches.pool_store(),
        pool_rx
            .map(Ok::<_, Infallible>)
            .take_until(stopped(stop_rx.clone())),
        config.clone(),
    )
    .for_each(|_| async {});
    let image_loop = applier(
        |i, c| reconcile::image(i, c).boxed(),
        |_, e: &Error, _| {
            tracing::warn!(error = %e, "image reconcile failed");
            Action::requeue(Duration::from_secs(30))
        },
        ctx.clone(),
        ctx.caches.image_store(),
        image_rx
            .map(Ok::<_, Infallible>)
            .take_until(stopped(stop_rx.clone())),
        config,
    )
    .for_each(|_| async {});
    // Nothing is reconciled before every cache is filled: an image not
    // listed yet is not a missing image.
    let appliers = async {
        tokio::select! {
            _ = ctx.caches.wait_until_ready() => {}
            _ = stopped(stop_rx.clone()) => return,
        }
        futures::join!(pool_loop, image_loop);
    };
    futures::join!(stopper, pool_watch, image_watch, node_watch, appliers);
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Feeds every event of `stream` to `on` until `stop`; watch errors are
/// logged and retried with backoff.
async fn drive<K>(
    kind: &'static str,
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
    stop: impl Future<Output = ()>,
    mut on: impl FnMut(watcher::Event<K>),
) where
    K: Resource + Clone + std::fmt::Debug + Send + 'static,
{
    let mut stream = std::pin::pin!(stream.default_backoff().take_until(stop));
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => on(ev),
            Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
        }
    }
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    ObjectRef::from_obj(obj).to_string()
}

/// A pool event: the pool is reconciled when a field it acts on changed;
/// its image (and the one it referred to before) when the reference
/// appeared, changed or went.
fn on_pool(
    ev: watcher::Event<ExecutorPool>,
    own: &mut Seen<PoolTrigger>,
    refs: &mut Seen<String>,
    pool_tx: &UnboundedSender<ObjectRef<ExecutorPool>>,
    image_tx: &UnboundedSender<ObjectRef<LanguageImage>>,
) {
    match ev {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
            let k = key(&p);
            if own.record(k.clone(), PoolTrigger::of(&p)).is_some() {
                let _ = pool_tx.unbounded_send(ObjectRef::from_obj(&p));
            }
            if let Some(before) = refs.record(k, p.spec.image.clone()) {
                for image in before.into_iter().chain([p.spec.image.clone()]) {
                    let _ = image_tx.unbounded_send(ObjectRef::new(&image));
                }
            }
        }
        watcher::Event::Delete(p) => {
            let k = key(&p);
            own.forget(&k);
            refs.forget(&k);
            let _ = image_tx.unbounded_send(ObjectRef::new(&p.spec.image));
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// An image event: the image and the pools that refer to it are reconciled
/// when its spec, deletion or finalizers changed, or it went.
fn on_image(
    ctx: &Context,
    ev: watcher::Event<LanguageImage>,
    seen: &mut Seen<ImageTrigger>,
    pool_tx: &UnboundedSender<ObjectRef<ExecutorPool>>,
    image_tx: &UnboundedSender<ObjectRef<LanguageImage>>,
) {
    let (image, changed) = match ev {
        watcher::Event::Apply(i) | watcher::Event::InitApply(i) => {
            let changed = seen.record(key(&i), ImageTrigger::of(&i)).is_some();
            if changed {
                let _ = image_tx.unbounded_send(ObjectRef::from_obj(&i));
            }
            (i, changed)
        }
        watcher::Event::Delete(i) => {
            seen.forget(&key(&i));
            (i, true)
        }
        watcher::Event::Init | watcher::Event::InitDone => return,
    };
    if changed {
        let name = image.name_any();
        for p in ctx.caches.pools().iter().filter(|p| p.spec.image == name) {
            let _ = pool_tx.unbounded_send(ObjectRef::from_obj(&**p));
        }
    }
}

/// Whether a node event changes which pools cover which nodes: a new or
/// deleted node, or new labels.
fn node_changed(ev: &watcher::Event<Node>, seen: &mut Seen<BTreeMap<String, String>>) -> bool {
    match ev {
        watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
            seen.record(n.name_any(), n.labels().clone()).is_some()
        }
        watcher::Event::Delete(n) => {
            seen.forget(&n.name_any());
            true
        }
        watcher::Event::Init | watcher::Event::InitDone => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml_status: &str, generation: i64, rv: &str) -> ExecutorPool {
        serde_yaml::from_str(&format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: py, namespace: t, generation: {generation}, resourceVersion: '{rv}'}}\nspec: {{image: small}}\n{yaml_status}"
        ))
        .unwrap()
    }

    #[test]
    fn seen_passes_changes_only() {
        let mut seen = Seen::default();
        assert_eq!(seen.record("a".into(), 1), Some(None), "new");
        assert_eq!(seen.record("a".into(), 1), None, "same");
        assert_eq!(seen.record("a".into(), 2), Some(Some(1)), "changed");
        assert_eq!(seen.forget("a"), Some(2));
        assert_eq!(seen.record("a".into(), 2), Some(None), "new again");
    }

    #[test]
    fn the_controllers_own_status_write_does_not_trigger_a_reconcile() {
        let entry = "  nodes:\n  - {node: a, desired: 2, warm: 2, busy: 0, launching: 0, ready: true, heartbeatTime: '2025-01-01T00:00:00Z'}\n";
        let base = pool(&format!("status:\n{entry}"), 1, "1");
        // (case, next version of the pool, reconciled?)
        let cases = [
            (
                "own status fields",
                pool(
                    &format!(
                        "status:\n  warm: 2\n  nodesReady: 1/1\n  observedGeneration: 1\n{entry}"
                    ),
                    1,
                    "2",
                ),
                false,
            ),
            (
                "spec change",
                pool(&format!("status:\n{entry}"), 2, "3"),
                true,
            ),
            (
                "agent heartbeat",
                pool(
                    &format!("status:\n{}", entry.replace("00:00:00", "00:00:10")),
                    1,
                    "4",
                ),
                true,
            ),
            (
                "deletion",
                {
                    let mut p = base.clone();
                    p.metadata.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
                        ));
                    p
                },
                true,
            ),
            (
                "finalizer added",
                {
                    let mut p = base.clone();
                    p.metadata.finalizers = Some(vec!["unsandbox.com/containers".into()]);
                    p
                },
                true,
            ),
        ];
        for (case, next, want) in cases {
            let mut own = Seen::default();
            own.record("t/py".into(), PoolTrigger::of(&base));
            assert_eq!(
                own.record("t/py".into(), PoolTrigger::of(&next)).is_some(),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn pool_events_route_to_the_pool_and_its_images() {
        let (pool_tx, mut pool_rx) = mpsc::unbounded();
        let (image_tx, mut image_rx) = mpsc::unbounded();
        let (mut own, mut refs) = (Seen::default(), Seen::default());
        let p = pool("", 1, "1");
        on_pool(
            watcher::Event::InitApply(p.clone()),
            &mut own,
            &mut refs,
            &pool_tx,
            &image_tx,
        );
        let mut moved = p.clone();
        moved.spec.image = "big".into();
        moved.metadata.generation = Some(2);
        on_pool(
            watcher::Event::Apply(moved.clone()),
            &mut own,
            &mut refs,
            &pool_tx,
            &image_tx,
        );
        on_pool(
            watcher::Event::Delete(moved),
            &mut own,
            &mut refs,
            &pool_tx,
            &image_tx,
        );
        drop((pool_tx, image_tx));
        let pools: Vec<String> = futures::executor::block_on_stream(&mut pool_rx)
            .map(|r| r.to_string())
            .collect();
        let images: Vec<String> = futures::executor::block_on_stream(&mut image_rx)
            .map(|r| r.name)
            .collect();
        assert_eq!(pools.len(), 2, "listed, then its spec changed: {pools:?}");
        assert_eq!(images, ["small", "small", "big", "big"]);
    }

    #[test]
    fn nodes_trigger_on_new_relabelled_and_deleted_nodes_only() {
        let node = |labels: &[(&str, &str)]| {
            let mut n = Node::default();
            n.metadata.name = Some("n1".into());
            n.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            n
        };
        let mut seen = Seen::default();
        let cases = [
            (watcher::Event::InitApply(node(&[("a", "1")])), true),
            (watcher::Event::Apply(node(&[("a", "1")])), false),
            (watcher::Event::Apply(node(&[("a", "2")])), true),
            (watcher::Event::Delete(node(&[("a", "2")])), true),
            (watcher::Event::InitDone, false),
        ];
        for (i, (ev, want)) in cases.into_iter().enumerate() {
            assert_eq!(node_changed(&ev, &mut seen), want, "case {i}");
        }
    }
}
