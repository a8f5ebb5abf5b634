//! `ExecutorPool`: warm containers of one image, per host, with one network
//! tier and one set of limits.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::egress::Egress;
use super::rollout::{NodeRollout, Rollout};

/// Warm, single-use containers of one LanguageImage on every host the pool
/// covers, with one network isolation tier and one set of limits.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "unsandbox.com",
    version = "v1alpha1",
    kind = "ExecutorPool",
    plural = "executorpools",
    shortname = "xp",
    namespaced,
    status = "ExecutorPoolStatus",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Warm","type":"integer","jsonPath":".status.warm"}"#,
    printcolumn = r#"{"name":"Busy","type":"integer","jsonPath":".status.busy"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodesReady"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.egress) || self.network == 'semitrusted'").message("egress applies only to network: semitrusted"))]
#[x_kube(validation = Rule::new("!has(self.reuse) || self.reuse.executions == 1 || self.network == 'zerotrust'").message("reuse with more than one execution is available only with network: zerotrust"))]
pub struct ExecutorPoolSpec {
    /// Name of the LanguageImage whose containers this pool keeps warm.
    #[schemars(length(min = 1, max = 253))]
    pub image: String,
    /// Labels a node must have to host this pool. Empty: every node that runs
    /// the unsandbox agent. Standalone mode ignores it (it covers its one host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub node_selector: BTreeMap<String, String>,
    /// Warm containers kept ready on each host.
    #[serde(default = "default_warm")]
    #[schemars(range(max = 1000))]
    pub warm: u32,
    /// Warm containers that follow demand instead of a fixed count: each
    /// host keeps between `min` and `max`, sized to ride out the bursts it
    /// saw in the last minute. When set, `warm` and `nodeOverrides` are not
    /// used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Per-node warm counts that replace `warm` on the named nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub node_overrides: Vec<NodeOverride>,
    /// Network isolation tier: `zerotrust` (no network interface at all) or
    /// `semitrusted` (no network interface either; one loopback port leads
    /// to the agent's filtering proxy, which reaches only `egress`).
    #[serde(default)]
    pub network: NetworkTier,
    /// Hosts a `semitrusted` pool's code may reach through the agent's
    /// proxy, and what one execution may use. Only with
    /// `network: semitrusted`; without it such a pool reaches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
    /// Limits of each container, enforced by the kernel (cgroups).
    #[serde(default)]
    pub limits: ContainerLimits,
    /// Defaults and maxima of each execution.
    #[serde(default)]
    pub execution: ExecutionLimits,
    /// Whether a container serves more than one execution. Unset (or
    /// `executions: 1`): a fresh container for every execution. Otherwise a
    /// container serves up to `executions`, one at a time, each in a fresh
    /// sandbox inside it; see `Reuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    /// Executions that may run at once on each host.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: u32,
    /// How warm containers move to a new image of the LanguageImage (a new
    /// fingerprint behind its alias or recipe, or a new source). Each host
    /// smoke-tests the new image while the old one serves, and keeps
    /// serving the old one if the new one fails. Unset: `OnReplenish`.
    /// Changing it replaces no container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

fn default_warm() -> u32 {
    2
}
fn default_max_concurrent() -> u32 {
    16
}

/// Demand-driven warm containers. Each host measures how fast its
/// containers are taken (the busiest 5-second span of the last minute) and
/// how long a replacement takes to launch, and keeps `rate × launch time ×
/// headroom` warm (Little's law), within `min` and `max`. A quiet minute
/// brings it back to `min`; under host memory pressure it keeps `min`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("min must not exceed max"))]
pub struct Autoscale {
    /// Warm containers kept on each host however quiet it is.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub min: u32,
    /// Warm containers kept on each host at most, however busy it is.
    #[schemars(range(min = 1, max = 1000))]
    pub max: u32,
    /// Percent of the measured need kept warm, for bursts above the one
    /// seen (150: half as much again).
    #[serde(default = "default_headroom")]
    #[schemars(range(min = 100, max = 1000))]
    pub headroom_percent: u32,
}

fn default_headroom() -> u32 {
    150
}

/// Recycled containers. Each execution runs in a sandbox that root in the
/// container builds before it drops to the runner user: new pid, mount,
/// ipc, uts and network namespaces, fresh tmpfs home, `/tmp`, `/var/tmp`
/// and `/dev/shm`, every other mount read-only, a fresh environment. The
/// pid namespace ends every process with the execution. The container goes
/// back to the pool only when the execution ended without an anomaly (a
/// timeout, a kill, a limit hit, lost output, a runner failure) and a check
/// afterwards finds no process, mount or namespace left; otherwise, and
/// after `executions` or `maxAgeSeconds`, it is destroyed. Containers stay
/// unprivileged and serve one execution at a time, but they are no longer
/// fresh for each execution.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reuse {
    /// Executions one container serves before it is destroyed; 1 is a
    /// fresh container for every execution.
    #[schemars(range(min = 1, max = 10000))]
    pub executions: u32,
    /// Seconds after its launch when a container is destroyed instead of
    /// serving again. Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_age_seconds: Option<u32>,
}

impl ExecutorPoolSpec {
    /// Executions one container serves (1: a fresh container each).
    pub fn executions_per_container(&self) -> u32 {
        self.reuse.as_ref().map_or(1, |r| r.executions.max(1))
    }

    /// Whether containers are recycled between executions.
    pub fn recycles(&self) -> bool {
        self.executions_per_container() > 1
    }

    /// How warm containers move to a new image (the default when unset).
    pub fn rollout(&self) -> Rollout {
        self.rollout.clone().unwrap_or_default()
    }
}

/// A warm count for one node that replaces the pool-wide one.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverride {
    /// Node name.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// Warm containers kept ready on that node.
    #[schemars(range(max = 1000))]
    pub warm: u32,
}

/// Network isolation tier of a pool's containers.
#[derive(
    schemars::JsonSchema,
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum NetworkTier {
    /// No network interface: only loopback exists inside the container.
    #[default]
    Zerotrust,
    /// No network interface either; one loopback port leads to the agent's
    /// filtering proxy, which reaches only the hosts in `spec.egress`.
    Semitrusted,
}

impl NetworkTier {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkTier::Zerotrust => "zerotrust",
            NetworkTier::Semitrusted => "semitrusted",
        }
    }
}

impl std::fmt::Display for NetworkTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kernel-enforced limits of each container.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ContainerLimits {
    /// CPUs the container may use (LXD `limits.cpu`).
    #[serde(default = "default_cpus")]
    #[schemars(range(min = 1, max = 256))]
    pub cpus: u32,
    /// Memory limit in MiB, including the container's tmpfs files (LXD `limits.memory`).
    #[serde(default = "default_memory")]
    #[schemars(range(min = 32, max = 65536))]
    pub memory_mib: u32,
    /// Maximum number of processes and threads (LXD `limits.processes`).
    #[serde(default = "default_processes")]
    #[schemars(range(min = 8, max = 65536))]
    pub processes: u32,
    /// Size in MiB of each writable tmpfs (working directory, `/tmp`); the
    /// rest of the filesystem is read-only to the code.
    #[serde(default = "default_tmpfs")]
    #[schemars(range(min = 1, max = 65536))]
    pub tmpfs_mib: u32,
    /// Memory limit in MiB during the compile stage of compiled languages
    /// (compilers often need more than the programs they build). The
    /// container's limit is raised to it for the compile stage and set back
    /// to `memoryMib` before the run stage. Defaults to `memoryMib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 32, max = 65536))]
    pub compile_memory_mib: Option<u32>,
}

fn default_cpus() -> u32 {
    1
}
fn default_memory() -> u32 {
    256
}
fn default_processes() -> u32 {
    64
}
fn default_tmpfs() -> u32 {
    64
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            cpus: default_cpus(),
            memory_mib: default_memory(),
            processes: default_processes(),
            tmpfs_mib: default_tmpfs(),
            compile_memory_mib: None,
        }
    }
}

/// Per-execution limits: what applies when a request names none, and the most
/// a request may ask for.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionLimits {
    /// Wall-clock time of the run stage of one execution, in milliseconds.
    #[serde(default = "default_wall")]
    pub wall_time_ms: Bounded,
    /// Wall-clock time of the compile stage of one execution (compiled
    /// languages only), in milliseconds.
    #[serde(default = "default_compile")]
    pub compile_time_ms: Bounded,
    /// Bytes of stdout and of stderr kept from one execution; the program is
    /// stopped when it writes more.
    #[serde(default = "default_output")]
    pub output_bytes: Bounded,
    /// How long a request may wait for a warm container, in milliseconds,
    /// before it is answered 503 with Retry-After.
    #[serde(default = "default_queue")]
    #[schemars(range(max = 600000))]
    pub queue_timeout_ms: u64,
}

fn default_wall() -> Bounded {
    Bounded {
        default: 5_000,
        max: 30_000,
    }
}
fn default_compile() -> Bounded {
    Bounded {
        default: 10_000,
        max: 60_000,
    }
}
fn default_output() -> Bounded {
    Bounded {
        default: 64 * 1024,
        max: 1024 * 1024,
    }
}
fn default_queue() -> u64 {
    10_000
}

impl Default for ExecutionLimits {
    fn default() -> Self {
        Self {
            wall_time_ms: default_wall(),
            compile_time_ms: default_compile(),
            output_bytes: default_output(),
            queue_timeout_ms: default_queue(),
        }
    }
}

/// A limit with the value used when a request names none, and the most a
/// request may ask for.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[x_kube(validation = Rule::new("self.default <= self.max").message("default must not exceed max"))]
pub struct Bounded {
    /// Value used when a request names none.
    #[schemars(range(min = 1))]
    pub default: u64,
    /// Largest value a request may ask for.
    #[schemars(range(min = 1))]
    pub max: u64,
}

impl Bounded {
    /// The effective value for a request: its own if given and allowed.
    pub fn resolve(&self, requested: Option<u64>) -> Result<u64, u64> {
        match requested {
            None => Ok(self.default),
            Some(v) if v <= self.max => Ok(v),
            Some(_) => Err(self.max),
        }
    }
}

/// Observed state of an ExecutorPool.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorPoolStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Warm containers wanted across all covered hosts (`warm`, or the
    /// host's `nodeOverrides` entry, summed over the hosts).
    #[serde(default)]
    pub desired: u32,
    /// Warm containers across all hosts.
    #[serde(default)]
    pub warm: u32,
    /// Containers running an execution, across all hosts.
    #[serde(default)]
    pub busy: u32,
    /// Hosts whose warm count is reached, out of the hosts the pool covers (`2/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_ready: Option<String>,
    /// `Ready` when every covered host has its warm count; `Degraded` with a
    /// reason when something keeps the pool from working fully.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per host, written by that host's agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<NodePoolStatus>,
}

/// The pool's state on one host.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Host (node) name.
    pub node: String,
    /// Warm containers wanted on this host.
    pub desired: u32,
    /// Containers started and ready to take an execution.
    pub warm: u32,
    /// Containers running an execution.
    pub busy: u32,
    /// Containers being created.
    pub launching: u32,
    /// Whether the host has its warm count and serves the pool.
    pub ready: bool,
    /// Why the host does not serve the pool fully, if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Languages that this host serves for the pool: those whose smoke
    /// tests passed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Languages of the pool's image that this host does not serve, because
    /// their smoke tests failed here (or have not finished yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable_languages: Vec<UnavailableLanguage>,
    /// The image this host launches the pool's new containers from: the
    /// first 12 hex digits of its fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where this host stands in moving the pool to a new image, while it
    /// does: the new image being smoke-tested, blocked, or its old warm
    /// containers being replaced (`updated` of `total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<NodeRollout>,
    /// Base URL of this host's execution API, for routing between hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// When the host's agent last confirmed this entry. The agent refreshes
    /// it periodically; an entry older than the controller's staleness
    /// limit is not counted as ready and gets no forwarded requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// A language a host does not serve, and why.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnavailableLanguage {
    /// Language name.
    pub name: String,
    /// The failed smoke test and what went wrong, or that the tests are still running.
    pub message: String,
}

impl ExecutorPoolSpec {
    /// Warm containers wanted on `node`.
    pub fn warm_for(&self, node: &str) -> u32 {
        self.node_overrides
            .iter()
            .find(|o| o.node == node)
            .map(|o| o.warm)
            .unwrap_or(self.warm)
    }
}
