//! What each command does: the layers put together.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::{AgentArgs, ApiArgs, Cli, Command, ControllerArgs};
use crate::agent::{Agent, AgentConfig, Resources};
use crate::metrics::Metrics;
use crate::settings::{LxdArgs, hostname};
use crate::{api, cluster, controller, crd, standalone};

/// Parses the command line and runs the command.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    crate::telemetry::init(&cli.log_format);
    match cli.command {
        Command::Crds => {
            print!("{}", crd::crds_yaml());
            Ok(())
        }
        Command::Check { paths } => check(&paths),
        Command::Cleanup(args) => {
            let lxd = args.client(&args.lxd_project);
            let n = crate::agent::cleanup(&lxd, &args.node()).await?;
            println!("destroyed {n} containers");
            Ok(())
        }
        Command::SweepLogs(args) => sweep_logs(args).await,
        Command::Standalone(args) => {
            let auth = args.api.auth()?;
            let (resources, rejections) = standalone::watch_files(
                args.config.clone(),
                Duration::from_millis(args.config_poll_ms),
            )
            .await?;
            let agent = start_agent(&args.lxd, &args.agent, resources).await?;
            let state = api::AppState {
                rejections,
                jobs: args.api.jobs()?,
                batch_max_items: args.api.batch_max_items,
                ..api::AppState::local(agent)
            };
            serve(state, &args.api, auth, args.agent.cleanup_on_exit).await
        }
        Command::Agent(args) => {
            let auth = args.api.auth()?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes")?;
            let node = args.lxd.node();
            let (stores, resources) =
                cluster::source::watch_resources(client.clone(), node.clone());
            let agent = start_agent(&args.lxd, &args.agent, resources).await?;
            let report = cluster::report::ReportSettings {
                endpoint: args.advertise_url.clone(),
                interval: Duration::from_millis(args.report_ms),
                heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
            };
            tokio::spawn(cluster::report::run(
                client,
                agent.clone(),
                stores.clone(),
                report,
            ));
            let peers = Arc::new(cluster::peers::StorePeers {
                stale_after: Duration::from_secs(args.node_stale_seconds),
                ..cluster::peers::StorePeers::new(stores, node)
            });
            let forwarder = api::forward::Forwarder::new(peers).with_agent_key(auth.agent_key());
            let state = api::AppState {
                forwarder: Some(forwarder),
                jobs: args.api.jobs()?,
                batch_max_items: args.api.batch_max_items,
                ..api::AppState::local(agent)
            };
            serve(state, &args.api, auth, args.agent.cleanup_on_exit).await
        }
        Command::Controller(args) => run_controller(args).await,
        Command::Bench(args) => crate::tools::bench::run(args).await,
        Command::Smoke(args) => crate::tools::prove::run(args).await,
        Command::DetectAccuracy(args) => Ok(crate::tools::corpus::run(&args)?),
        Command::DetectTrain(args) => Ok(crate::tools::train::run(&args)?),
    }
}

/// Checks resource files as `standalone` and a cluster's admission would:
/// prints each document's verdict, fails if any is not served as written.
fn check(paths: &[PathBuf]) -> anyhow::Result<()> {
    let (docs, _) = standalone::files::read(paths)?;
    let accepted = standalone::accept::accept(&docs, None);
    let mut bad = accepted.rejected.len();
    for r in &accepted.rejected {
        println!("problem {r}");
    }
    let res = &accepted.resources;
    for r in &crate::agent::desired::resolve(res, "check") {
        match &r.problem {
            None => println!("ok      ExecutorPool {}", r.key),
            Some(p) => {
                bad += 1;
                println!(
                    "problem ExecutorPool {}: {}: {}",
                    r.key, p.reason, p.message
                );
            }
        }
    }
    for i in &res.images {
        println!(
            "ok      LanguageImage {} ({} languages)",
            i.metadata.name.as_deref().unwrap_or_default(),
            i.spec.languages.len()
        );
    }
    anyhow::ensure!(bad == 0, "{bad} resources have problems");
    Ok(())
}

/// Lists the project now and every `every_seconds` (each listing sweeps the
/// log folders of its deleted instances: `Lxd::instances`), until SIGTERM.
async fn sweep_logs(args: super::SweepArgs) -> anyhow::Result<()> {
    let lxd = args.lxd.client(&args.lxd.lxd_project);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        if let Err(e) = lxd.instances().await {
            tracing::warn!(error = %e, "cannot list the project; sweeping again later");
        }
        if args.every_seconds == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.every_seconds)) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Connects to LXD, makes sure the project exists, and builds the agent.
async fn start_agent(
    lxd: &LxdArgs,
    agent: &AgentArgs,
    resources: tokio::sync::watch::Receiver<Resources>,
) -> anyhow::Result<Agent> {
    let client = lxd.client(&lxd.lxd_project);
    let server = client
        .server()
        .await
        .with_context(|| format!("cannot reach LXD at {}", client.socket().display()))?;
    tracing::info!(version = %server.environment.server_version, project = client.project(), "connected to LXD");
    // Seen only where the daemon's processes are (on the host, not in a pod).
    match crate::lxd::daemon_cpu_weight() {
        Some((weight, file)) if weight >= 100 => tracing::warn!(
            weight,
            file,
            "the LXD daemon has the default CPU weight or more: its launches compete with \
             running executions (images/lxd-host.sh gives it 50)"
        ),
        Some((weight, file)) => tracing::info!(weight, file, "the LXD daemon's CPU weight"),
        None => tracing::debug!("the LXD daemon's CPU weight cannot be seen from here"),
    }
    client
        .ensure_project()
        .await
        .context("creating the LXD project")?;
    let images_dir = (agent.images_dir != "none").then(|| PathBuf::from(&agent.images_dir));
    let cfg = AgentConfig {
        node: lxd.node(),
        storage_pool: agent.storage_pool.clone(),
        images_dir,
        launch_parallelism: agent.launch_parallelism,
        resync_interval: Duration::from_millis(agent.resync_ms),
        templates: agent.templates,
        executions_first: agent.executions_first,
    };
    let mut metrics = Metrics::new();
    let egress = start_egress(&agent.egress, &mut metrics)?;
    Ok(Agent::new(
        client,
        cfg,
        resources,
        Arc::new(metrics),
        egress,
    ))
}

/// The egress proxy of the `semitrusted` tier, unless `--egress-dir none`.
fn start_egress(
    args: &super::EgressArgs,
    metrics: &mut Metrics,
) -> anyhow::Result<Option<crate::egress::EgressProxy>> {
    if args.egress_dir == "none" {
        tracing::info!("no egress proxy (--egress-dir none): this host offers no semitrusted tier");
        return Ok(None);
    }
    let mut cfg = crate::egress::EgressConfig::new(&args.egress_dir);
    cfg.hosts_file = args.egress_hosts_file.clone();
    cfg.deny_cidrs = args.egress_deny_cidrs.clone();
    cfg.connect_timeout = Duration::from_millis(args.egress_connect_timeout_ms);
    if let Some(hosts) = &cfg.hosts_file {
        tracing::warn!(file = %hosts.display(), "the egress proxy resolves names from a hosts file (a test setting)");
    }
    let proxy = crate::egress::EgressProxy::new(cfg, &mut metrics.registry)
        .context("starting the egress proxy")?;
    tracing::info!(dir = %args.egress_dir, "egress proxy ready for semitrusted pools");
    Ok(Some(proxy))
}

/// Runs the reconcile loop and the API until a signal, then drains: in-flight
/// executions finish, used containers are destroyed, and with cleanup the
/// warm ones too.
async fn serve(
    state: api::AppState,
    api_args: &ApiArgs,
    auth: crate::auth::Auth,
    cleanup: bool,
) -> anyhow::Result<()> {
    let agent = state.agent.clone();
    let jobs = state.jobs.clone();
    // The language model is read, and the grammar rules and signatures
    // compiled, once; do it now rather than on the first `/run`.
    tokio::task::spawn_blocking(|| {
        crate::languages::model::builtin();
        crate::languages::grammar::ruled_out("");
        crate::languages::signature::find("");
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_agent = agent.clone();
    let mut loop_stop = stop_rx;
    let reconciler = tokio::spawn(async move {
        loop_agent
            .run(async move {
                let _ = loop_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let app = api::router_with_auth(state, api_args.max_body_bytes, auth);
    let (api_stop_tx, mut api_stop) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(api::serve(api_args.listen, app, async move {
        let _ = api_stop.wait_for(|s| *s).await;
    }));
    tokio::select! {
        _ = shutdown_signal() => {}
        r = &mut server => {
            r??;
            anyhow::bail!("API server stopped");
        }
    }
    // Drain: readiness turns false and new executions are refused (or go
    // to a peer) while what runs goes on; then the listener closes and the
    // running executions get the grace period to finish.
    agent.drain();
    tokio::time::sleep(Duration::from_millis(api_args.drain_delay_ms)).await;
    let _ = api_stop_tx.send(true);
    let grace = Duration::from_secs(api_args.drain_grace_seconds);
    let drained = async {
        let _ = (&mut server).await;
        // Jobs run beside the requests: they get the same grace.
        jobs.wait().await;
    };
    let drained = tokio::time::timeout(grace, drained).await;
    match drained {
        Ok(_) => tracing::info!("drained: every running execution and job finished"),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "executions still running after the grace period; cutting them"
            );
            server.abort();
        }
    }
    let _ = stop_tx.send(true);
    let _ = reconciler.await;
    if !agent.settle(Duration::from_secs(30)).await {
        tracing::warn!("some containers were still being destroyed; the next start removes them");
    }
    if cleanup {
        let n = agent.destroy_all().await?;
        tracing::info!(containers = n, "destroyed every container on exit");
    }
    Ok(())
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let agent_selector =
        super::parse_selector(&args.agent_node_selector).map_err(anyhow::Error::msg)?;
    let cfg = controller::ControllerConfig {
        agent_selector,
        cleanup_grace: Duration::from_secs(args.cleanup_grace_seconds),
    };
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let mut registry = prometheus_client::registry::Registry::with_prefix("unsandbox");
    let ctx = controller::Context::with_node_stale(
        client,
        cfg,
        Duration::from_secs(args.node_stale_seconds),
        &identity,
        &mut registry,
    );
    let registry = Arc::new(registry);
    let http = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut out = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                    out
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    tokio::spawn(async move { axum::serve(listener, http).await });
    let lease = controller::LeaseSettings {
        namespace: args.lease_namespace,
        name: args.lease_name,
        identity,
        duration: Duration::from_secs(args.lease_seconds),
    };
    // SIGTERM stops the reconcilers (those in flight finish), then the
    // leader releases its lease so a standby takes over at once.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    controller::lead(ctx, lease, stop_rx).await?;
    Ok(())
}
