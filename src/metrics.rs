//! Prometheus metrics of the agent and the execution API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecLabels {
    pub language: String,
    pub pool: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabels {
    pub pool: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub pool: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub code: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

/// Every metric the process exports.
pub struct Metrics {
    pub registry: Registry,
    pub executions: Family<ExecLabels, Counter>,
    pub execution_seconds: Family<PoolLabels, Histogram>,
    pub queue_seconds: Family<PoolLabels, Histogram>,
    pub containers: Family<PoolStateLabels, Gauge>,
    pub warm_target: Family<PoolLabels, Gauge>,
    pub languages: Family<PoolStateLabels, Gauge>,
    /// Warm containers by pool and image (`updated`, `outdated`).
    pub rollout: Family<PoolStateLabels, Gauge>,
    pub launches: Family<ResultLabels, Counter>,
    pub launch_seconds: Family<PoolLabels, Histogram>,
    pub launch_wait_seconds: Family<PoolLabels, Histogram>,
    pub destroy_wait_seconds: Family<PoolLabels, Histogram>,
    pub destroys: Family<ResultLabels, Counter>,
    pub recycles: Family<ResultLabels, Counter>,
    pub rejected: Family<RouteLabels, Counter>,
    /// Jobs ended, by outcome (`done`, `failed`, `cancelled`).
    pub jobs: Family<OutcomeLabels, Counter>,
    /// Callback attempts, by outcome (`delivered`, `failed`).
    pub callbacks: Family<OutcomeLabels, Counter>,
    pub reconcile_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("unsandbox");
        let executions = Family::<ExecLabels, Counter>::default();
        let execution_seconds = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let queue_seconds = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let containers = Family::<PoolStateLabels, Gauge>::default();
        let warm_target = Family::<PoolLabels, Gauge>::default();
        let languages = Family::<PoolStateLabels, Gauge>::default();
        let rollout = Family::<PoolStateLabels, Gauge>::default();
        let launches = Family::<ResultLabels, Counter>::default();
        let launch_seconds = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let launch_wait_seconds = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let destroy_wait_seconds = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let destroys = Family::<ResultLabels, Counter>::default();
        let recycles = Family::<ResultLabels, Counter>::default();
        let rejected = Family::<RouteLabels, Counter>::default();
        let jobs = Family::<OutcomeLabels, Counter>::default();
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        let reconcile_seconds = Histogram::new(latency_buckets());
        let api = registry.sub_registry_with_prefix("api");
        api.register(
            "executions",
            "Executions finished, by language, pool and status",
            executions.clone(),
        );
        api.register(
            "execution_seconds",
            "Time from taking a container to the result",
            execution_seconds.clone(),
        );
        api.register(
            "queue_seconds",
            "Time a request waited for a warm container",
            queue_seconds.clone(),
        );
        api.register(
            "rejected_requests",
            "Requests refused before execution, by route and HTTP code",
            rejected.clone(),
        );
        api.register(
            "jobs",
            "Jobs ended, by outcome (done, failed: it could not run, cancelled)",
            jobs.clone(),
        );
        api.register(
            "job_callbacks",
            "Job callback attempts, by outcome (delivered, failed)",
            callbacks.clone(),
        );
        let agent = registry.sub_registry_with_prefix("agent");
        agent.register(
            "containers",
            "Containers by pool and state (warm, busy, launching)",
            containers.clone(),
        );
        agent.register(
            "warm_target",
            "Warm containers the pool wants on this host now (fixed, or chosen by autoscale)",
            warm_target.clone(),
        );
        agent.register(
            "languages",
            "Languages of the pool's image by smoke-test state on this host (served, failed, pending)",
            languages.clone(),
        );
        agent.register(
            "rollout_containers",
            "Warm containers by pool and image on this host (updated: of the image new containers come from; outdated: of an earlier image, replaced per spec.rollout)",
            rollout.clone(),
        );
        agent.register(
            "launches",
            "Container launches by pool and result",
            launches.clone(),
        );
        agent.register(
            "launch_seconds",
            "Time to create, start and ready a container",
            launch_seconds.clone(),
        );
        agent.register(
            "launch_wait_seconds",
            "Time a replacement launch waited, while its pool kept its reserve warm, for running executions to end and then for the other container work to finish (executions first: one such operation at a time)",
            launch_wait_seconds.clone(),
        );
        agent.register(
            "destroy_wait_seconds",
            "Time a used container's stop waited for running executions to end and then for the other container work to finish (its execution ended clean: nothing of it runs)",
            destroy_wait_seconds.clone(),
        );
        agent.register(
            "destroys",
            "Container destructions by pool and result",
            destroys.clone(),
        );
        agent.register(
            "recycles",
            "Containers of recycling pools checked after an execution, by pool and result (failed: destroyed)",
            recycles.clone(),
        );
        agent.register(
            "reconcile_seconds",
            "Duration of one reconcile pass",
            reconcile_seconds.clone(),
        );
        Self {
            registry,
            executions,
            execution_seconds,
            queue_seconds,
            containers,
            warm_target,
            languages,
            rollout,
            launches,
            launch_seconds,
            launch_wait_seconds,
            destroy_wait_seconds,
            destroys,
            recycles,
            rejected,
            jobs,
            callbacks,
            reconcile_seconds,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts one more of `family` with `outcome`.
    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn set_containers(&self, pool: &str, state: &str, n: u32) {
        self.containers
            .get_or_create(&PoolStateLabels {
                pool: pool.to_string(),
                state: state.to_string(),
            })
            .set(n as i64);
    }

    /// Sets how many of a pool's warm containers are of the image new ones
    /// come from (`updated`) or of an earlier one (`outdated`).
    pub fn set_rollout(&self, pool: &str, state: &str, n: u32) {
        self.rollout
            .get_or_create(&PoolStateLabels {
                pool: pool.to_string(),
                state: state.to_string(),
            })
            .set(i64::from(n));
    }

    /// Sets how many of a pool's languages are in a smoke-test state here.
    pub fn set_languages(&self, pool: &str, state: &str, n: usize) {
        self.languages
            .get_or_create(&PoolStateLabels {
                pool: pool.to_string(),
                state: state.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
