//! `unsandbox controller`: validates pools and images, aggregates the agents'
//! per-node reports into each pool's status, and holds a finalizer until a
//! deleted pool's containers are gone. One replica leads through a Lease.

pub mod aggregate;
pub mod leader;
pub mod reconcile;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{ExecutorPool, LanguageImage};

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("nodes still hold containers of this pool")]
    NotYetClean,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NotYetClean => "not_yet_clean",
        }
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
    pub fn agent_selector_string(&self) -> String {
        self.agent_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The controller's metrics.
pub struct ControllerMetrics {
    pub reconcile_seconds: Histogram,
    pub failures: Family<Vec<(String, String)>, Counter>,
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let reconcile_seconds = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let failures = Family::<Vec<(String, String)>, Counter>::default();
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
        Self {
            reconcile_seconds,
            failures,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub cfg: ControllerConfig,
    pub metrics: ControllerMetrics,
}

fn error_policy(_: Arc<ExecutorPool>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&vec![("error".to_string(), err.metric_label().to_string())])
        .inc();
    match err {
        Error::NotYetClean => Action::requeue(Duration::from_secs(3)),
        e => {
            tracing::warn!(error = %e, "reconcile failed");
            Action::requeue(Duration::from_secs(10))
        }
    }
}

/// Runs both reconcilers until the streams end.
pub async fn run_controllers(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let pools: Api<ExecutorPool> = Api::all(client.clone());
    let images: Api<LanguageImage> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pool_ctl = Controller::new(pools, watcher::Config::default().any_semantic());
    let store = pool_ctl.store();
    let by_image = store.clone();
    let pool_loop = pool_ctl
        .watches(
            images.clone(),
            watcher::Config::default(),
            move |img: LanguageImage| {
                let name = img.metadata.name.unwrap_or_default();
                by_image
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.image == name)
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            nodes,
            watcher::Config::default().labels(&ctx.cfg.agent_selector_string()),
            move |_: Node| {
                store
                    .state()
                    .into_iter()
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile::pool, error_policy, ctx.clone())
        .for_each(|_| async {});
    let image_loop = Controller::new(images, watcher::Config::default())
        .shutdown_on_signal()
        .run(
            reconcile::image,
            |_, _, _| Action::requeue(Duration::from_secs(30)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    futures::join!(pool_loop, image_loop);
}

impl Context {
    /// The shared context; registers the controller's metrics in `registry`.
    pub fn new(
        client: Client,
        cfg: ControllerConfig,
        identity: &str,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let metrics = ControllerMetrics::register(registry);
        let reporter = Reporter {
            controller: "unsandbox-controller".into(),
            instance: Some(identity.to_string()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Self {
            client,
            recorder,
            cfg,
            metrics,
        })
    }
}

/// Leads (or stands by), then runs the reconcilers while leading. Returns
/// when the lease is lost or the reconcilers stop.
pub async fn lead(ctx: Arc<Context>, lease: LeaseSettings) -> Result<(), kube::Error> {
    let lock = leader::LeaseLock {
        api: Api::<Lease>::namespaced(ctx.client.clone(), &lease.namespace),
        name: lease.name,
        identity: lease.identity,
        duration: lease.duration,
    };
    lock.lead(run_controllers(ctx)).await
}

/// Where the leader lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}
