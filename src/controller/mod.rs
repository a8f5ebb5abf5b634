//! `unsandbox controller`: validates pools and images, aggregates the agents'
//! per-node reports into each pool's status, holds a finalizer until a
//! deleted pool's containers are gone and one on each image while pools use
//! it. One replica leads through a Lease.

pub(crate) mod aggregate;
pub(crate) mod cache;
pub(crate) mod finalizer;
pub(crate) mod heartbeat;
pub(crate) mod in_use;
pub mod leader;
pub mod reconcile;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch as signal;

pub use cache::Caches;
pub use watch::{run_controllers, run_until};

use crate::crd::ExecutorPool;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A patch the controller built did not serialize (a bug).
    #[error("building a patch: {0}")]
    Patch(#[from] serde_json::Error),
}

impl Error {
    /// Short label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) if self.is_conflict() => "conflict",
            Error::Kube(_) => "kube",
            Error::Patch(_) => "patch",
        }
    }

    /// The object changed on the server since the cache saw it (a stale
    /// `resourceVersion`, or a finalizer patch whose `test` failed): retry
    /// soon, with what the watch brings.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(e)) if e.code == 409 || e.code == 422)
    }
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Labels of the nodes that run the agent (the DaemonSet's node selector).
    pub agent_selector: BTreeMap<String, String>,
    /// After this long, a deleted pool's finalizer goes even if some node
    /// never reported its containers gone (its agent is down).
    pub cleanup_grace: Duration,
}

impl ControllerConfig {
    /// The agent selector as a label selector (`k=v,k2=v2`).
    pub fn agent_selector_string(&self) -> String {
        aggregate::selector_string(&self.agent_selector)
    }
}

/// The controller's metrics.
pub struct ControllerMetrics {
    /// Duration of one pool reconcile.
    pub reconcile_seconds: Histogram,
    /// Failed reconciles by error.
    pub failures: Family<Vec<(String, String)>, Counter>,
    /// Whether this replica leads, and how often it became leader.
    pub leader: leader::LeaderMetrics,
}

impl ControllerMetrics {
    /// Registers the metrics under `controller_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let reconcile_seconds = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let failures = Family::<Vec<(String, String)>, Counter>::default();
        let leader = leader::LeaderMetrics::default();
        let sub = registry.sub_registry_with_prefix("controller");
        sub.register(
            "reconcile_seconds",
            "Duration of one pool reconcile",
            reconcile_seconds.clone(),
        );
        sub.register(
            "reconcile_failures",
            "Failed reconciles by error",
            failures.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica leads, 0 while it stands by",
            leader.leader.clone(),
        );
        sub.register(
            "leader_transitions",
            "Times this replica became leader",
            leader.transitions.clone(),
        );
        Self {
            reconcile_seconds,
            failures,
            leader,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events as `unsandbox-controller`.
    pub recorder: Recorder,
    /// Settings.
    pub cfg: ControllerConfig,
    /// How long a node's entry in a pool's status counts without a heartbeat.
    pub node_stale: Duration,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// Pools, images and agent nodes, as the watches last saw them.
    pub caches: Caches,
}

impl Context {
    /// The shared context, with the default staleness limit
    /// ([`heartbeat::DEFAULT_STALE_AFTER`]); registers the controller's
    /// metrics in `registry`.
    pub fn new(
        client: Client,
        cfg: ControllerConfig,
        identity: &str,
        registry: &mut Registry,
    ) -> Arc<Self> {
        Self::with_node_stale(
            client,
            cfg,
            heartbeat::DEFAULT_STALE_AFTER,
            identity,
            registry,
        )
    }

    /// The shared context, with entries older than `node_stale` not counted.
    pub fn with_node_stale(
        client: Client,
        cfg: ControllerConfig,
        node_stale: Duration,
        identity: &str,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let metrics = ControllerMetrics::register(registry);
        let reporter = Reporter {
            controller: reconcile::MANAGER.into(),
            instance: Some(identity.to_string()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Self {
            client,
            recorder,
            cfg,
            node_stale,
            metrics,
            caches: Caches::new(),
        })
    }
}

fn error_policy(_: Arc<ExecutorPool>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&vec![("error".to_string(), err.metric_label().to_string())])
        .inc();
    if err.is_conflict() {
        // The watch brings the newer object; nothing to warn about.
        tracing::debug!(error = %err, "reconcile conflicted; retrying");
        Action::requeue(Duration::from_secs(1))
    } else {
        tracing::warn!(error = %err, "reconcile failed");
        Action::requeue(Duration::from_secs(10))
    }
}

/// Stands by until this replica leads, then runs the reconcilers until
/// `stop` turns true, lets them finish, and releases the lease. Returns
/// early when the lease is lost.
pub async fn lead(
    ctx: Arc<Context>,
    lease: LeaseSettings,
    stop: signal::Receiver<bool>,
) -> Result<(), kube::Error> {
    let lock = leader::LeaseLock::new(
        Api::<Lease>::namespaced(ctx.client.clone(), &lease.namespace),
        lease.name,
        lease.identity,
        lease.duration,
        ctx.metrics.leader.clone(),
    );
    let stopped = |mut rx: signal::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    lock.lead(run_until(ctx, stopped(stop.clone())), stopped(stop))
        .await
}

/// Where the leader lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity in it.
    pub identity: String,
    /// How long it lasts without renewal.
    pub duration: Duration,
}
