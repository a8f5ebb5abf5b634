//! `unsandbox bench`: measures, in one run against the local LXD, the API's
//! end-to-end latency (1 and N clients), the raw LXD exec floor, their
//! ratios, the container launch rate and a warm container's idle memory.
//! It prints numbers; it asserts nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::agent::{Agent, AgentConfig, Resources};
use crate::crd::{ExecutorPool, ExecutorPoolSpec, NetworkTier};
use crate::execution::{RUNNER_GID, RUNNER_UID};
use crate::lxd::{ExecSpec, Lxd};
use crate::metrics::Metrics;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Files or folders (comma-separated) with the LanguageImages to measure.
    #[arg(
        long,
        env = "UNSANDBOX_BENCH_CONFIG",
        value_delimiter = ',',
        default_value = "manifests/samples/languageimage-small.yaml"
    )]
    pub config: Vec<PathBuf>,
    /// LanguageImage name.
    #[arg(long, default_value = "small")]
    pub image: String,
    /// Language to run.
    #[arg(long, default_value = "python")]
    pub language: String,
    /// The program.
    #[arg(long, default_value = "print(\"hello\")")]
    pub code: String,
    /// Warm containers in the benchmark pool (each request uses one).
    #[arg(long, default_value_t = 48)]
    pub warm: u32,
    /// Requests per latency phase.
    #[arg(long, default_value_t = 40)]
    pub requests: usize,
    /// Concurrent clients of the second phase.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub lxd: crate::settings::LxdArgs,
    /// Launch from a template container (see `standalone --templates`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub templates: bool,
    /// LXD storage pool.
    #[arg(long, env = "UNSANDBOX_STORAGE_POOL", default_value = "unsandbox")]
    pub storage_pool: String,
    /// Measure only the refill time per container of these LanguageImages
    /// (comma-separated names found in `--config`), launching from a
    /// template and from the image.
    #[arg(long, value_delimiter = ',')]
    pub refill: Vec<String>,
    /// Containers created at the same time (as `standalone --launch-parallelism`).
    #[arg(long, default_value_t = 2)]
    pub launch_parallelism: usize,
    /// Replacements wait for running executions while the pool keeps its
    /// reserve (as `standalone --executions-first`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub executions_first: bool,
    /// Containers taken and refilled per image and mode with `--refill`.
    #[arg(long, default_value_t = 5)]
    pub refill_samples: usize,
    /// Measure only how hostile neighbours (CPU spin, fork bomb, memory hog,
    /// output flood) slow the benchmark program: p50/p99 alone and beside
    /// them.
    #[arg(long)]
    pub hostile: bool,
    /// Hostile clients running beside the benign one with `--hostile`.
    #[arg(long, default_value_t = 1)]
    pub hostile_clients: usize,
    /// Measure only what the semitrusted tier costs against zerotrust:
    /// refill time per container, execution latency, and the proxy's first
    /// byte as a program inside the container sees it.
    #[arg(long)]
    pub network: bool,
    /// Measure only where one fresh container's cost goes: this many
    /// containers launched, used once and destroyed one at a time, each
    /// LXD call timed, CPU time split by LXD, unsandbox and the rest.
    #[arg(long)]
    pub profile: Option<usize>,
    /// Measure only what a pool of this many warm containers costs: host
    /// memory per container, the agent's memory, fill time, LXD list and
    /// exec latency, reconcile time and acquire latency at that size.
    #[arg(long)]
    pub scale: Option<u32>,
    /// Executions per container in the reuse rows (`spec.reuse`); 0 skips
    /// them.
    #[arg(long, default_value_t = 50)]
    pub reuse_executions: u32,
    /// Warm containers of the reuse rows' pool.
    #[arg(long, default_value_t = 8)]
    pub reuse_warm: u32,
    /// Offered load of the reuse mode's paced row, in executions per second
    /// from 8 clients (requests sent on a fixed schedule, latency counted
    /// from each one's scheduled time); 0 skips it.
    #[arg(long, default_value_t = 25.0)]
    pub reuse_rate: f64,
    /// Run the reuse mode's sustained rows; `false` goes straight to its
    /// paced row (to repeat that row alone).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub reuse_sustained: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// How a row's tail stands against `limit` (ms): how many requests took
/// longer, and the p99.9 and slowest.
fn tail(times: &[f64], limit: f64) -> String {
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    let over = v.iter().filter(|t| **t > limit).count();
    format!(
        "{over} of {} ({:.1}%) over {limit:.1} ms; p99.9 {:.1} ms, slowest {:.1} ms",
        v.len(),
        100.0 * over as f64 / v.len().max(1) as f64,
        percentile(&v, 99.9),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

pub(super) fn summarize(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

pub(super) async fn wait_warm(
    agent: &Agent,
    want: u32,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let reports = agent.reports();
        let warm: u32 = reports.iter().map(|r| r.node.warm).sum();
        // Languages are served once their smoke tests ran on this host.
        let proven = reports.iter().all(|r| !r.node.languages.is_empty());
        if warm >= want && proven {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "pool reached only {warm}/{want} warm containers in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one pool a benchmark agent serves.
pub(super) struct BenchPool<'a> {
    pub image: &'a str,
    pub warm: u32,
    /// Launch from a template container.
    pub templates: bool,
    pub tier: NetworkTier,
    /// The egress proxy that serves a semitrusted pool.
    pub egress: Option<crate::egress::EgressProxy>,
    /// Executions per container (`spec.reuse`); `None`: one.
    pub reuse: Option<u32>,
}

impl<'a> BenchPool<'a> {
    /// A zerotrust pool of fresh containers.
    pub fn fresh(image: &'a str, warm: u32, templates: bool) -> Self {
        Self {
            image,
            warm,
            templates,
            tier: NetworkTier::Zerotrust,
            egress: None,
            reuse: None,
        }
    }
}

/// Starts an agent with one pool `bench/bench` (see `BenchPool`) in the
/// bench project. Returns it with its stop switch and loop task.
pub(super) async fn start_agent(
    args: &BenchArgs,
    lxd: &Lxd,
    node: &str,
    bench: BenchPool<'_>,
) -> anyhow::Result<(
    Agent,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
)> {
    let BenchPool {
        image,
        warm,
        templates,
        tier,
        egress,
        reuse,
    } = bench;
    let (mut res, _) = crate::standalone::files::load(&args.config)?;
    // The limits of a pool of this image in the files, if there is one.
    let model = res
        .pools
        .iter()
        .find(|p| p.spec.image == image)
        .map(|p| p.spec.clone());
    res.pools.clear();
    anyhow::ensure!(
        res.images
            .iter()
            .any(|i| i.metadata.name.as_deref() == Some(image)),
        "no LanguageImage {image} in {:?}",
        args.config
    );
    let mut spec: ExecutorPoolSpec = match model {
        Some(spec) => spec,
        None => serde_yaml::from_str(&format!("image: {image}"))?,
    };
    spec.warm = warm;
    spec.network = tier;
    spec.egress = (tier == NetworkTier::Semitrusted).then(Default::default);
    spec.reuse = reuse.map(|executions| crate::crd::Reuse {
        executions,
        max_age_seconds: None,
    });
    spec.max_concurrent = args.concurrency.max(1) as u32 * 2;
    spec.execution.queue_timeout_ms = 120_000;
    let mut pool = ExecutorPool::new("bench", spec);
    pool.metadata.namespace = Some("bench".into());
    res.pools.push(pool);
    let (tx, rx) = tokio::sync::watch::channel::<Resources>(res);
    let cfg = AgentConfig {
        node: node.to_string(),
        storage_pool: args.storage_pool.clone(),
        images_dir: Some(PathBuf::from("images")),
        launch_parallelism: args.launch_parallelism,
        resync_interval: Duration::from_secs(30),
        templates,
        executions_first: args.executions_first,
    };
    let agent = Agent::new(lxd.clone(), cfg, rx, Arc::new(Metrics::new()), egress);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let runner = agent.clone();
    let task = tokio::spawn(async move {
        let _keep = tx;
        runner
            .run(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok((agent, stop_tx, task))
}

/// Refill time per container: with the pool full, take one container
/// (its replacement launches at once) and time until the pool is full
/// again; for each image, from a template and from the image.
async fn refill(args: &BenchArgs, lxd: &Lxd, node: &str) -> anyhow::Result<()> {
    const WARM: u32 = 4;
    println!(
        "unsandbox bench: refill time per container ({WARM} warm, {} launches at a time)",
        args.launch_parallelism
    );
    println!(
        "{:<10} {:<9} {:>12} {:>12} {:>22}",
        "image", "launch", "one p50 s", "one max s", "burst of 4, s/container"
    );
    for image in &args.refill {
        for templates in [true, false] {
            let (agent, stop, task) =
                start_agent(args, lxd, node, BenchPool::fresh(image, WARM, templates)).await?;
            let result = async {
                wait_warm(&agent, WARM, Duration::from_secs(1800)).await?;
                // One container taken at a time: its replacement's latency.
                let mut one = Vec::new();
                for _ in 0..args.refill_samples {
                    let t = Instant::now();
                    let lease = agent
                        .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
                        .await?;
                    drop(lease);
                    wait_warm(&agent, WARM, Duration::from_secs(600)).await?;
                    one.push(t.elapsed().as_secs_f64());
                    // Let the destroy of the taken container finish.
                    agent.settle(Duration::from_secs(60)).await;
                }
                // The whole pool taken at once: refill throughput.
                let t = Instant::now();
                let mut leases = Vec::new();
                for _ in 0..WARM {
                    leases.push(
                        agent
                            .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
                            .await?,
                    );
                }
                drop(leases);
                wait_warm(&agent, WARM, Duration::from_secs(600)).await?;
                let burst = t.elapsed().as_secs_f64() / f64::from(WARM);
                anyhow::Ok((one, burst))
            }
            .await;
            let _ = stop.send(true);
            let _ = task.await;
            agent.settle(Duration::from_secs(60)).await;
            agent.destroy_all().await?;
            let (mut one, burst) = result?;
            one.sort_by(f64::total_cmp);
            let max = one.last().copied().unwrap_or(f64::NAN);
            println!(
                "{:<10} {:<9} {:>12.2} {:>12.2} {:>22.2}",
                image,
                if templates { "template" } else { "image" },
                percentile(&one, 50.0),
                max,
                burst
            );
        }
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let project = "unsandbox-bench";
    if !args.refill.is_empty() {
        let lxd = args.lxd.client(project);
        lxd.ensure_project().await?;
        let node = format!("bench-{}", args.lxd.node());
        crate::agent::cleanup(&lxd, &node).await?;
        return refill(&args, &lxd, &node).await;
    }
    if let Some(n) = args.profile {
        let lxd = args.lxd.client(project);
        lxd.ensure_project().await?;
        let node = format!("bench-{}", args.lxd.node());
        crate::agent::cleanup(&lxd, &node).await?;
        let result = super::bench_profile::measure(&args, &lxd, &node, n.max(1)).await;
        crate::agent::cleanup(&lxd, &node).await?;
        return result;
    }
    if args.network {
        let lxd = args.lxd.client(project);
        lxd.ensure_project().await?;
        let node = format!("bench-{}", args.lxd.node());
        crate::agent::cleanup(&lxd, &node).await?;
        return super::bench_network::measure(&args, &lxd, &node).await;
    }
    let lxd = args.lxd.client(project);
    lxd.ensure_project().await?;
    let node = format!("bench-{}", args.lxd.node());
    crate::agent::cleanup(&lxd, &node).await?;
    if let Some(n) = args.scale {
        let pool = BenchPool::fresh(&args.image, n, args.templates);
        let (agent, stop_tx, reconciler) = start_agent(&args, &lxd, &node, pool).await?;
        let result = super::bench_scale::measure(&args, &agent, &lxd, n).await;
        let _ = stop_tx.send(true);
        let _ = reconciler.await;
        agent.settle(Duration::from_secs(600)).await;
        let t = Instant::now();
        let destroyed = agent.destroy_all().await?;
        println!(
            "cleanup: destroyed {destroyed} containers in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        return result;
    }
    let fresh = BenchPool::fresh(&args.image, args.warm, args.templates);
    let (agent, stop_tx, reconciler) = start_agent(&args, &lxd, &node, fresh).await?;
    let result = if args.hostile {
        super::bench_hostile::measure(&args, &agent, args.warm)
            .await
            .map(|_| None)
    } else {
        measure(&args, &agent, &lxd).await.map(Some)
    };
    let _ = stop_tx.send(true);
    let _ = reconciler.await;
    agent.settle(Duration::from_secs(60)).await;
    let n = agent.destroy_all().await?;
    println!("cleanup: destroyed {n} containers");
    let Some(floor_p50) = result? else {
        return Ok(());
    };
    if args.reuse_executions < 2 {
        return Ok(());
    }
    // Reuse mode, against the same floor.
    let recycling = BenchPool {
        reuse: Some(args.reuse_executions),
        ..BenchPool::fresh(&args.image, args.reuse_warm, args.templates)
    };
    let (agent, stop_tx, reconciler) = start_agent(&args, &lxd, &node, recycling).await?;
    let result = measure_reuse(&args, &agent, floor_p50).await;
    let _ = stop_tx.send(true);
    let _ = reconciler.await;
    agent.settle(Duration::from_secs(60)).await;
    let n = agent.destroy_all().await?;
    println!("cleanup: destroyed {n} containers");
    result
}

/// Sustained rows at 1, 4 and 8 clients: `n` requests per row, each row
/// started with the pool full. Rate per second, p50 and p99 in ms.
async fn sustained_rows(
    agent: &Agent,
    language: &str,
    body: &[u8],
    warm: u32,
    n: usize,
) -> anyhow::Result<Vec<(usize, f64, f64, f64)>> {
    let (client, addr) = serve(agent).await?;
    let mut rows = Vec::new();
    for clients in [1, 4, 8] {
        wait_warm(agent, warm, Duration::from_secs(600)).await?;
        let t = Instant::now();
        let times = phase(&client, addr, language, body, n, clients, None).await?;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let (p50, p99) = summarize(times);
        rows.push((clients, rate, p50, p99));
    }
    Ok(rows)
}

/// The API, in process, over real TCP on loopback, and a client for it.
async fn serve(agent: &Agent) -> anyhow::Result<(Client<HttpConnector, Full<Bytes>>, SocketAddr)> {
    let app = crate::api::router(crate::api::AppState::local(agent.clone()), 1 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((Client::builder(TokioExecutor::new()).build_http(), addr))
}

fn print_rows(rows: &[(usize, f64, f64, f64)], floor_p50: f64) {
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>14} {:>14}",
        "clients", "per s", "p50 ms", "p99 ms", "p50 / floor", "p99 / floor"
    );
    for (clients, rate, p50, p99) in rows {
        println!(
            "{clients:<10} {rate:>10.2} {p50:>9.1} {p99:>9.1} {:>14.2} {:>14.2}",
            p50 / floor_p50,
            p99 / floor_p50
        );
    }
}

/// Reuse mode: sustained rows over three times what the warm containers
/// serve before they are replaced, so replacement launches are counted.
async fn measure_reuse(args: &BenchArgs, agent: &Agent, floor_p50: f64) -> anyhow::Result<()> {
    wait_warm(agent, args.reuse_warm, Duration::from_secs(600))
        .await
        .context("filling the reuse pool")?;
    let n = (args.reuse_warm * args.reuse_executions * 3) as usize;
    let body = serde_json::to_vec(&serde_json::json!({"code": args.code}))?;
    if args.reuse_sustained {
        let rows = sustained_rows(agent, &args.language, &body, args.reuse_warm, n).await?;
        println!(
            "reuse mode (spec.reuse.executions {}), sustained, {n} requests per row (3x what the {} warm serve):",
            args.reuse_executions, args.reuse_warm
        );
        print_rows(&rows, floor_p50);
    }
    if args.reuse_rate > 0.0 {
        let (client, addr) = serve(agent).await?;
        wait_warm(agent, args.reuse_warm, Duration::from_secs(600)).await?;
        let t = Instant::now();
        let times = phase(
            &client,
            addr,
            &args.language,
            &body,
            n,
            8,
            Some(args.reuse_rate),
        )
        .await?;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "reuse mode, paced: {n} requests offered at {:.1}/s by 8 clients (latency from each request's scheduled time):",
            args.reuse_rate
        );
        let slow = tail(&times, 3.0 * floor_p50);
        let (p50, p99) = summarize(times);
        print_rows(&[(8, rate, p50, p99)], floor_p50);
        println!("  against 3x the floor: {slow}");
    }
    Ok(())
}

/// Fresh-container mode; returns the exec floor's p50 (ms) for the rows
/// that follow.
async fn measure(args: &BenchArgs, agent: &Agent, lxd: &Lxd) -> anyhow::Result<f64> {
    // Launch rate: fill the pool from empty.
    let fill = wait_warm(agent, args.warm, Duration::from_secs(600))
        .await
        .context("filling the pool")?;
    let launch_rate = args.warm as f64 / fill.as_secs_f64();

    // Idle memory of warm containers: their cgroup's usage, split (where the
    // host's cgroup files are readable) into what cannot be reclaimed
    // (anonymous + kernel) and page cache the kernel drops under pressure.
    let names: Vec<String> = agent.tracked();
    let mut usage = Vec::new();
    let mut split = Vec::new();
    for n in names.iter().take(8) {
        if let Ok(s) = lxd.instance_state(n).await
            && let Some(m) = s.memory
        {
            usage.push(m.usage as f64 / MIB);
        }
        if let Some(x) = cgroup_memory(lxd.project(), n) {
            split.push(x);
        }
    }
    let idle_mib = usage.iter().sum::<f64>() / usage.len().max(1) as f64;
    let pinned_mib = split.iter().map(|(p, _)| p).sum::<f64>() / split.len().max(1) as f64;
    let cache_mib = split.iter().map(|(_, c)| c).sum::<f64>() / split.len().max(1) as f64;

    // The floor: a raw LXD exec of the same code in a running container, as the runner user.
    let lang = agent.choose(&args.language, Default::default())?.language;
    let floor_container = {
        let lease = agent
            .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
            .await?;
        let c = lease.container.clone();
        std::mem::forget(lease);
        c
    };
    let interp = lang
        .run
        .split_whitespace()
        .next()
        .unwrap_or("python3")
        .to_string();
    let mut floor = Vec::new();
    for _ in 0..args.requests {
        let spec = ExecSpec {
            command: vec![interp.clone(), "-c".into(), args.code.clone()],
            env: Default::default(),
            user: RUNNER_UID,
            group: RUNNER_GID,
            cwd: "/tmp".into(),
            stdin: vec![],
            output_cap: 1 << 20,
            deadline: Duration::from_secs(30),
        };
        let t = Instant::now();
        let out = lxd.exec(&floor_container, spec).await?;
        anyhow::ensure!(
            out.exit_code == Some(0),
            "floor exec failed: {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lxd.destroy(&floor_container).await?;
    let (floor_p50, floor_p99) = summarize(floor);

    let (client, addr) = serve(agent).await?;
    let body = serde_json::to_vec(&serde_json::json!({"code": args.code}))?;

    wait_warm(agent, args.warm, Duration::from_secs(600)).await?;
    let one = phase(&client, addr, &args.language, &body, args.requests, 1, None).await?;
    wait_warm(agent, args.warm, Duration::from_secs(600)).await?;
    let many = phase(
        &client,
        addr,
        &args.language,
        &body,
        args.requests,
        args.concurrency,
        None,
    )
    .await?;
    let (one_p50, one_p99) = summarize(one);
    let (many_p50, many_p99) = summarize(many);

    // Sustained: three times the warm reserve at each concurrency, so the
    // reserve runs out and the launch rate shows.
    let sustained_n = (args.warm as usize * 3).max(args.requests);
    let sustained = sustained_rows(agent, &args.language, &body, args.warm, sustained_n).await?;
    // The launch ceiling: the whole reserve taken at once, and the time
    // until it is full again.
    wait_warm(agent, args.warm, Duration::from_secs(600)).await?;
    agent.settle(Duration::from_secs(60)).await;
    let t = Instant::now();
    let cpu_before = super::bench_profile::host_busy();
    let mut leases = Vec::new();
    for _ in 0..args.warm {
        leases.push(
            agent
                .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
                .await?,
        );
    }
    drop(leases);
    wait_warm(agent, args.warm, Duration::from_secs(600)).await?;
    let ceiling = f64::from(args.warm) / t.elapsed().as_secs_f64();
    let cpu_after = super::bench_profile::host_busy();
    let (busy, all) = (
        cpu_after.0.saturating_sub(cpu_before.0),
        cpu_after.1.saturating_sub(cpu_before.1),
    );

    println!(
        "unsandbox bench: {} `{}`, {} requests per phase",
        args.language, args.code, args.requests
    );
    match crate::lxd::daemon_cpu_weight() {
        Some((w, file)) => println!("LXD daemon's CPU weight: {w} (100 is the default; {file})"),
        None => println!("LXD daemon's CPU weight: not found on this host"),
    }
    println!("{:<44} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "{:<44} {:>9.1} {:>9.1}",
        "LXD exec floor (running container)", floor_p50, floor_p99
    );
    println!(
        "{:<44} {:>9.1} {:>9.1}",
        "burst (warm reserve), 1 client", one_p50, one_p99
    );
    println!(
        "{:<44} {:>9.1} {:>9.1}",
        format!("burst (warm reserve), {} clients", args.concurrency),
        many_p50,
        many_p99
    );
    println!(
        "burst ratio p50 (1 client) / floor p50:    {:.2}",
        one_p50 / floor_p50
    );
    println!(
        "burst ratio p99 ({} clients) / floor p50:   {:.2}",
        args.concurrency,
        many_p99 / floor_p50
    );
    println!(
        "sustained, {sustained_n} requests per row (3x the {} warm):",
        args.warm
    );
    print_rows(&sustained, floor_p50);
    println!(
        "launch ceiling (the reserve taken at once, refilled): {ceiling:.2} /s ({} launches at a time)",
        args.launch_parallelism
    );
    println!(
        "  host CPU meanwhile: {:.0}% busy, {:.0} ms per container destroyed and replaced",
        busy as f64 * 100.0 / all.max(1) as f64,
        busy as f64 * 10.0 / f64::from(args.warm)
    );
    println!(
        "first fill (template and smoke tests included): {launch_rate:.2} /s ({} warm in {:.1} s)",
        args.warm,
        fill.as_secs_f64()
    );
    println!("idle warm container memory (cgroup):       {idle_mib:.2} MiB  (target <= 2)");
    if !split.is_empty() {
        println!("  of which anonymous + kernel:             {pinned_mib:.2} MiB");
        println!(
            "  of which reclaimable page cache:         {cache_mib:.2} MiB (the warm-up's toolchain files)"
        );
    }
    Ok(floor_p50)
}

const MIB: f64 = 1024.0 * 1024.0;

/// (anonymous + kernel, page cache) in MiB of a container's memory cgroup,
/// read from the host's cgroup v1 or v2 files.
fn cgroup_memory(project: &str, name: &str) -> Option<(f64, f64)> {
    let payload = if project == "default" {
        name.to_string()
    } else {
        format!("{project}_{name}")
    };
    let stat = |path: String| std::fs::read_to_string(path).ok();
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    };
    if let Some(v1) = stat(format!(
        "/sys/fs/cgroup/memory/lxc.payload.{payload}/memory.stat"
    )) {
        let kmem = stat(format!(
            "/sys/fs/cgroup/memory/lxc.payload.{payload}/memory.kmem.usage_in_bytes"
        ))
        .and_then(|k| k.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
        let rss = field(&v1, "total_rss ")?;
        let cache = field(&v1, "total_cache ")?;
        return Some(((rss + kmem) / MIB, cache / MIB));
    }
    let v2 = stat(format!("/sys/fs/cgroup/lxc.payload.{payload}/memory.stat"))?;
    Some((
        (field(&v2, "anon ")? + field(&v2, "kernel ").unwrap_or(0.0)) / MIB,
        field(&v2, "file ")? / MIB,
    ))
}

pub(super) async fn phase(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    language: &str,
    body: &[u8],
    requests: usize,
    concurrency: usize,
    pace: Option<f64>,
) -> anyhow::Result<Vec<f64>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, body) = (client.clone(), next.clone(), Bytes::copy_from_slice(body));
        let url = format!("http://{addr}/execute/{language}");
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= requests {
                    break;
                }
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                // Paced: the request is due at its place in the schedule,
                // and a late send counts as waiting.
                let t = match pace {
                    Some(rate) => {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let resp = client.request(req).await?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await?.to_bytes();
                anyhow::ensure!(
                    status.is_success(),
                    "{status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_counts_requests_over_the_limit() {
        let times: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(
            tail(&times, 990.0),
            "10 of 1000 (1.0%) over 990.0 ms; p99.9 999.0 ms, slowest 1000.0 ms"
        );
        assert!(tail(&[], 1.0).starts_with("0 of 0 (0.0%)"));
    }
}
