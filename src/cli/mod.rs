//! Command-line settings: every one also readable from an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::LxdArgs;

mod commands;

pub use commands::main;

/// Run untrusted code in warm, single-use, isolated LXD containers.
#[derive(Debug, Parser)]
#[command(name = "unsandbox", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: `text` or `json`. Filter with RUST_LOG (default `info`).
    #[arg(
        long,
        env = "UNSANDBOX_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Agent and API on this host, with pools and images read from YAML files.
    Standalone(StandaloneArgs),
    /// Node agent on Kubernetes: pools from the API server, containers on
    /// this node's LXD, execution API with forwarding to peer agents.
    Agent(AgentModeArgs),
    /// Cluster controller on Kubernetes: validation, status, finalizers.
    Controller(ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Check resource files without running anything; exits non-zero on problems.
    Check {
        /// YAML files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Destroy every container this host's agent owns in the LXD project.
    Cleanup(LxdArgs),
    /// Remove the log folders LXD 5.0 leaves on the host for the project's
    /// deleted instances (quiet for a minute), now and then periodically:
    /// the agent's root sidecar on Kubernetes, where the agent itself (not
    /// root) cannot.
    SweepLogs(SweepArgs),
    /// Measure latency, launch rate and idle memory against the local LXD.
    Bench(crate::tools::bench::BenchArgs),
    /// Run every language's smoke tests in a fresh container of each pool
    /// and print the table: language, version, compile ms, run ms, pass.
    Smoke(crate::tools::prove::SmokeArgs),
    /// Measure language auto-detection on a labelled corpus (see
    /// tests/detection/corpus.sh); exits non-zero below the target accuracy.
    DetectAccuracy(crate::tools::corpus::DetectAccuracyArgs),
    /// Learn the language model from tuning corpora (see
    /// tests/detection/README.md) and write it for the build.
    DetectTrain(crate::tools::train::DetectTrainArgs),
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub lxd: LxdArgs,
    /// Seconds between sweeps; 0 sweeps once and exits.
    #[arg(long, env = "UNSANDBOX_SWEEP_EVERY_SECONDS", default_value_t = 300)]
    pub every_seconds: u64,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// ExecutorPool and LanguageImage YAML files or folders (watched for changes).
    #[arg(
        long = "config",
        short = 'c',
        env = "UNSANDBOX_CONFIG",
        value_delimiter = ',',
        required = true
    )]
    pub config: Vec<PathBuf>,
    /// How often the files are polled for changes, in milliseconds, where
    /// inotify is not available (with inotify a change applies at once).
    #[arg(long, env = "UNSANDBOX_CONFIG_POLL_MS", default_value_t = 1000)]
    pub config_poll_ms: u64,
    #[command(flatten)]
    pub lxd: LxdArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct AgentModeArgs {
    #[command(flatten)]
    pub lxd: LxdArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    /// URL peers use to reach this agent's API (for example `http://$(POD_IP):8080`).
    #[arg(long, env = "UNSANDBOX_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How often this node's status entries are compared and applied, in milliseconds.
    #[arg(long, env = "UNSANDBOX_REPORT_MS", default_value_t = 2000)]
    pub report_ms: u64,
    /// The longest an unchanged status entry goes without being applied
    /// again (with a fresh `heartbeatTime`), in milliseconds; the
    /// controller treats entries much older than this as a dead agent's.
    #[arg(long, env = "UNSANDBOX_HEARTBEAT_MS", default_value_t = 10_000)]
    pub heartbeat_ms: u64,
    /// Peers whose pool entries have had no heartbeat for this many seconds
    /// get no forwarded requests (the controller's setting of the same name
    /// stops counting them).
    #[arg(long, env = "UNSANDBOX_NODE_STALE_SECONDS", default_value_t = 30)]
    pub node_stale_seconds: u64,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "UNSANDBOX_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Labels of the nodes that run the agent DaemonSet (`k=v,k2=v2`).
    #[arg(
        long,
        env = "UNSANDBOX_AGENT_NODE_SELECTOR",
        default_value = "unsandbox.com/lxd=true"
    )]
    pub agent_node_selector: String,
    /// Seconds after which a deleted pool's finalizer goes even if a node
    /// never reported its containers removed (its agent is gone).
    #[arg(long, env = "UNSANDBOX_CLEANUP_GRACE_SECONDS", default_value_t = 300)]
    pub cleanup_grace_seconds: u64,
    /// Seconds after which a node's entry in a pool's status, not confirmed
    /// by its agent's heartbeat, no longer counts (warm, busy, ready nodes).
    #[arg(long, env = "UNSANDBOX_NODE_STALE_SECONDS", default_value_t = 30)]
    pub node_stale_seconds: u64,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "UNSANDBOX_LEASE_NAME",
        default_value = "unsandbox-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "unsandbox-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the hostname).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a lease lasts without renewal.
    #[arg(long, env = "UNSANDBOX_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
}

/// Parses `k=v,k2=v2` into a map.
pub fn parse_selector(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{p:?} is not key=value"))
        })
        .collect()
}

/// How the agent keeps its pools.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// LXD storage pool for the containers' root disks.
    #[arg(long, env = "UNSANDBOX_STORAGE_POOL", default_value = "unsandbox")]
    pub storage_pool: String,
    /// Folder with `build.sh` and image recipes, used to build a missing
    /// image; `none` disables builds.
    #[arg(long, env = "UNSANDBOX_IMAGES_DIR", default_value = "images")]
    pub images_dir: String,
    /// Containers created at the same time, at most.
    #[arg(long, env = "UNSANDBOX_LAUNCH_PARALLELISM", default_value_t = 2)]
    pub launch_parallelism: usize,
    /// How often LXD is listed to catch containers changed out of band, in
    /// milliseconds; at least twenty times what the last listing pass took,
    /// so a host with many containers is listed less often.
    #[arg(long, env = "UNSANDBOX_RESYNC_MS", default_value_t = 5000)]
    pub resync_ms: u64,
    /// Launch copies (btrfs snapshots) of a stopped template container whose
    /// files are already id-mapped, rather than creating each container from
    /// the image: LXD then skips remapping every inode, which makes refills of
    /// big images several times faster. Containers stay unprivileged and
    /// fresh; `false` creates each one from the image.
    #[arg(long, env = "UNSANDBOX_TEMPLATES", default_value_t = true, action = clap::ArgAction::Set)]
    pub templates: bool,
    /// Executions first: while executions run, a replacement launch, and
    /// the stop of a container whose execution ended clean, wait (at most
    /// 5 s) as long as the pool keeps half its warm target (at least one)
    /// warm, so that executions do not share the CPU with work the pool can
    /// do without for now; `false` launches and stops at once.
    #[arg(long, env = "UNSANDBOX_EXECUTIONS_FIRST", default_value_t = true, action = clap::ArgAction::Set)]
    pub executions_first: bool,
    /// On shutdown, also destroy the warm containers (by default they stay,
    /// and the next start adopts them).
    #[arg(long, env = "UNSANDBOX_CLEANUP_ON_EXIT", default_value_t = false)]
    pub cleanup_on_exit: bool,
    #[command(flatten)]
    pub egress: EgressArgs,
}

/// The `semitrusted` tier's egress proxy.
#[derive(Debug, Clone, Args)]
pub struct EgressArgs {
    /// Directory of the egress sockets, one per semitrusted container; LXD
    /// (root on this host) connects to them, so it is a host path. `none`:
    /// this host offers no semitrusted tier (such pools report
    /// NetworkTierUnsupported here).
    #[arg(
        long,
        env = "UNSANDBOX_EGRESS_DIR",
        default_value = "/run/unsandbox/egress"
    )]
    pub egress_dir: String,
    /// Address ranges (CIDR) the proxy never connects to, besides the ones
    /// it always refuses (loopback, private, shared, link-local and the
    /// metadata address, multicast, reserved).
    #[arg(long, env = "UNSANDBOX_EGRESS_DENY_CIDRS", value_delimiter = ',')]
    pub egress_deny_cidrs: Vec<String>,
    /// How long the proxy waits for an upstream connection, in milliseconds.
    #[arg(
        long,
        env = "UNSANDBOX_EGRESS_CONNECT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub egress_connect_timeout_ms: u64,
    /// For tests: a hosts file (`ADDRESS NAME...`) whose names the proxy
    /// resolves from it instead of DNS. The address checks still apply.
    #[arg(long, env = "UNSANDBOX_EGRESS_HOSTS_FILE")]
    pub egress_hosts_file: Option<PathBuf>,
}

/// How the execution API listens.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address of the execution API.
    #[arg(long, env = "UNSANDBOX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "UNSANDBOX_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// YAML file of client tokens (`name: SHA256-HEX`, or `name: {sha256,
    /// signing_secret, quota}`), reloaded when it changes. Tokens are then
    /// required; they always are beyond loopback, unless --no-auth.
    #[arg(long, env = "UNSANDBOX_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// File with the secret agents sign forwarded requests with (the same
    /// on every agent), reloaded when it changes.
    #[arg(long, env = "UNSANDBOX_AGENT_SECRET_FILE")]
    pub agent_secret_file: Option<PathBuf>,
    /// Serve without authentication even beyond loopback (logged as a warning).
    #[arg(long, env = "UNSANDBOX_NO_AUTH", default_value_t = false)]
    pub no_auth: bool,
    /// On SIGTERM, how long the API keeps answering (503 `draining` to new
    /// executions, `/readyz` 503) before it stops listening, in
    /// milliseconds: time for load balancers and peers to stop sending.
    #[arg(long, env = "UNSANDBOX_DRAIN_DELAY_MS", default_value_t = 2000)]
    pub drain_delay_ms: u64,
    /// On SIGTERM, how long running executions may take to finish after the
    /// API stopped listening, in seconds; past it they are cut. Keep the
    /// delay plus this within the pod's `terminationGracePeriodSeconds`.
    #[arg(long, env = "UNSANDBOX_DRAIN_GRACE_SECONDS", default_value_t = 25)]
    pub drain_grace_seconds: u64,
    /// Most jobs (`POST /jobs`) this agent holds, finished ones included;
    /// past it the oldest finished job is forgotten, and with every job
    /// still running a new one gets 503 `jobs_full`.
    #[arg(long, env = "UNSANDBOX_JOBS_MAX", default_value_t = 1000)]
    pub jobs_max: usize,
    /// How long a finished job's state and output are kept, in seconds.
    #[arg(long, env = "UNSANDBOX_JOBS_KEEP_SECONDS", default_value_t = 600)]
    pub jobs_keep_seconds: u64,
    /// Hosts jobs may call back: `host` (any port) or `host:port`.
    /// Callbacks are off without them.
    #[arg(long, env = "UNSANDBOX_CALLBACK_ALLOW", value_delimiter = ',')]
    pub callback_allow: Vec<String>,
    /// File with the secret callbacks are signed with (HMAC-SHA256).
    /// Callbacks are off without it.
    #[arg(long, env = "UNSANDBOX_CALLBACK_SECRET_FILE")]
    pub callback_secret_file: Option<PathBuf>,
    /// Attempts per callback, the first included; the pause between them
    /// starts at a second and doubles.
    #[arg(long, env = "UNSANDBOX_CALLBACK_ATTEMPTS", default_value_t = 5)]
    pub callback_attempts: u32,
    /// Most executions one `POST /batch` may hold.
    #[arg(long, env = "UNSANDBOX_BATCH_MAX_ITEMS", default_value_t = crate::api::DEFAULT_BATCH_MAX_ITEMS)]
    pub batch_max_items: usize,
}

impl ApiArgs {
    /// How jobs are held and called back: reads the callback secret.
    pub fn jobs(&self) -> anyhow::Result<crate::api::jobs::Jobs> {
        use anyhow::Context;
        let mut settings = crate::api::jobs::JobSettings {
            max_jobs: self.jobs_max.max(1),
            keep: std::time::Duration::from_secs(self.jobs_keep_seconds),
            ..Default::default()
        };
        let callbacks = &mut settings.callbacks;
        callbacks.allow = self
            .callback_allow
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        callbacks.attempts = self.callback_attempts.max(1);
        if let Some(file) = &self.callback_secret_file {
            let secret = std::fs::read(file)
                .with_context(|| format!("reading the callback secret {}", file.display()))?;
            let secret = secret.trim_ascii().to_vec();
            anyhow::ensure!(
                !secret.is_empty(),
                "callback secret file {} is empty",
                file.display()
            );
            callbacks.secret = Some(secret);
        }
        crate::api::jobs::Jobs::new(settings).context("loading TLS root certificates for callbacks")
    }

    /// The API's protection: reads the files and checks the listen address.
    pub fn auth(&self) -> Result<crate::auth::Auth, crate::auth::StartError> {
        crate::auth::Auth::start(&crate::auth::Settings {
            listen: self.listen,
            tokens_file: self.tokens_file.clone(),
            agent_secret_file: self.agent_secret_file.clone(),
            no_auth: self.no_auth,
            max_body_bytes: self.max_body_bytes,
            reload_every: std::time::Duration::from_secs(1),
        })
    }
}
