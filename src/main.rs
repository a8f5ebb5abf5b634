use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use unsandbox::agent::{Agent, AgentConfig};
use unsandbox::cli::{Cli, Command, StandaloneArgs};
use unsandbox::lxd::Lxd;
use unsandbox::metrics::Metrics;
use unsandbox::{api, crd, standalone};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    unsandbox::telemetry::init(&cli.log_format);
    match cli.command {
        Command::Crds => {
            print!("{}", crd::crds_yaml());
            Ok(())
        }
        Command::Check { paths } => check(&paths),
        Command::Cleanup(args) => {
            let lxd = Lxd::new(args.socket(), &args.lxd_project);
            let n = unsandbox::agent::cleanup(&lxd, &args.node()).await?;
            println!("destroyed {n} containers");
            Ok(())
        }
        Command::Standalone(args) => run_standalone(args).await,
        Command::Bench(args) => unsandbox::bench::run(args).await,
    }
}

fn check(paths: &[PathBuf]) -> anyhow::Result<()> {
    let (res, _) = standalone::files::load(paths)?;
    let resolved = unsandbox::agent::desired::resolve(&res, "check", None);
    let mut bad = 0;
    for r in &resolved {
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
        let name = i.metadata.name.as_deref().unwrap_or_default();
        match crd::validate::image(&i.spec) {
            Ok(()) => println!(
                "ok      LanguageImage {name} ({} languages)",
                i.spec.languages.len()
            ),
            Err(e) => {
                bad += 1;
                println!("problem LanguageImage {name}: {e}");
            }
        }
    }
    anyhow::ensure!(bad == 0, "{bad} resources have problems");
    Ok(())
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

async fn run_standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let lxd = Lxd::new(args.lxd.socket(), &args.lxd.lxd_project);
    let server = lxd
        .server()
        .await
        .with_context(|| format!("cannot reach LXD at {}", lxd.socket().display()))?;
    tracing::info!(version = %server.environment.server_version, project = lxd.project(), "connected to LXD");
    lxd.ensure_project()
        .await
        .context("creating the LXD project")?;
    let resources = standalone::watch_files(
        args.config.clone(),
        Duration::from_millis(args.config_poll_ms),
    )
    .await?;
    let images_dir =
        (args.agent.images_dir != "none").then(|| PathBuf::from(&args.agent.images_dir));
    let cfg = AgentConfig {
        node: args.lxd.node(),
        node_labels: None,
        storage_pool: args.agent.storage_pool.clone(),
        images_dir,
        launch_parallelism: args.agent.launch_parallelism,
        resync_interval: Duration::from_millis(args.agent.resync_ms),
    };
    let agent = Agent::new(lxd, cfg, resources, Arc::new(Metrics::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_agent = agent.clone();
    let mut loop_stop = stop_rx.clone();
    let reconciler = tokio::spawn(async move {
        loop_agent
            .run(async move {
                let _ = loop_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let app = api::router(
        api::AppState {
            agent: agent.clone(),
        },
        args.api.max_body_bytes,
    );
    let mut api_stop = stop_rx.clone();
    let mut server = tokio::spawn(api::serve(args.api.listen, app, async move {
        let _ = api_stop.wait_for(|s| *s).await;
    }));
    tokio::select! {
        _ = shutdown_signal() => {}
        r = &mut server => {
            r??;
            anyhow::bail!("API server stopped");
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = reconciler.await;
    if !agent.settle(Duration::from_secs(30)).await {
        tracing::warn!("some containers were still being destroyed; the next start removes them");
    }
    if args.agent.cleanup_on_exit {
        let n = agent.destroy_all().await?;
        tracing::info!(containers = n, "destroyed every container on exit");
    }
    Ok(())
}
