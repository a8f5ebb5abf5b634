//! `unsandbox bench --network`: what the `semitrusted` tier costs against
//! `zerotrust`, measured in one run on the same image: the refill time of
//! one container (its launch, the egress socket and the loopback setup
//! included), an execution's latency end to end, and the proxy's first
//! byte as a program inside a semitrusted container sees it (connect to
//! 127.0.0.1:3128, send a request, read the first byte of the answer: the
//! relay through LXD's forkproxy and the agent's proxy, with no upstream).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::agent::Agent;
use crate::crd::NetworkTier;
use crate::egress::{EgressConfig, EgressProxy};
use crate::lxd::Lxd;

use super::bench::{BenchArgs, BenchPool, start_agent, summarize, wait_warm};

const WARM: u32 = 4;
/// Proxy round trips timed inside one execution.
const ROUND_TRIPS: usize = 50;

/// Python that times `ROUND_TRIPS` first bytes from the egress proxy and
/// prints each in milliseconds.
fn first_byte_program() -> String {
    format!(
        "import socket, time\n\
         for _ in range({ROUND_TRIPS}):\n    \
         t = time.perf_counter()\n    \
         s = socket.create_connection(('127.0.0.1', 3128))\n    \
         s.sendall(b'GET http://bench.invalid/ HTTP/1.1\\r\\nHost: bench.invalid\\r\\n\\r\\n')\n    \
         s.recv(1)\n    \
         print((time.perf_counter() - t) * 1000)\n    \
         s.close()\n"
    )
}

/// One tier's figures.
struct Figures {
    refill_p50: f64,
    refill_max: f64,
    exec_p50: f64,
    exec_p99: f64,
    first_byte: Option<(f64, f64)>,
}

pub async fn measure(args: &BenchArgs, lxd: &Lxd, node: &str) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("unsandbox-bench-egress-{}", std::process::id()));
    let mut rows = Vec::new();
    for tier in [NetworkTier::Zerotrust, NetworkTier::Semitrusted] {
        let egress = match tier {
            NetworkTier::Zerotrust => None,
            NetworkTier::Semitrusted => Some(EgressProxy::new(
                EgressConfig::new(&dir),
                &mut prometheus_client::registry::Registry::default(),
            )?),
        };
        let pool = BenchPool {
            tier,
            egress,
            ..BenchPool::fresh(&args.image, WARM, args.templates)
        };
        let (agent, stop, task) = start_agent(args, lxd, node, pool).await?;
        let result = one_tier(args, &agent, tier).await;
        let _ = stop.send(true);
        let _ = task.await;
        agent.settle(Duration::from_secs(60)).await;
        agent.destroy_all().await?;
        rows.push((tier, result?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "unsandbox bench --network: {} `{}`, {WARM} warm, {} requests, {} refills per tier",
        args.language, args.code, args.requests, args.refill_samples
    );
    println!(
        "{:<12} {:>13} {:>13} {:>12} {:>12} {:>16} {:>16}",
        "tier",
        "refill p50 s",
        "refill max s",
        "exec p50 ms",
        "exec p99 ms",
        "1st byte p50 ms",
        "1st byte p99 ms"
    );
    for (tier, f) in &rows {
        let (fb50, fb99) = f
            .first_byte
            .map(|(a, b)| (format!("{a:.2}"), format!("{b:.2}")))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        println!(
            "{:<12} {:>13.2} {:>13.2} {:>12.1} {:>12.1} {:>16} {:>16}",
            tier.as_str(),
            f.refill_p50,
            f.refill_max,
            f.exec_p50,
            f.exec_p99,
            fb50,
            fb99
        );
    }
    if let [(_, z), (_, s)] = rows.as_slice() {
        println!(
            "semitrusted / zerotrust: refill p50 {:.2}, exec p50 {:.2}",
            s.refill_p50 / z.refill_p50,
            s.exec_p50 / z.exec_p50
        );
    }
    Ok(())
}

async fn one_tier(args: &BenchArgs, agent: &Agent, tier: NetworkTier) -> anyhow::Result<Figures> {
    wait_warm(agent, WARM, Duration::from_secs(600)).await?;
    // Refill: one container taken, time until the pool is full again.
    let mut refills = Vec::new();
    for _ in 0..args.refill_samples {
        let t = Instant::now();
        let lease = agent
            .acquire("bench/bench", Instant::now() + Duration::from_secs(60))
            .await?;
        drop(lease);
        wait_warm(agent, WARM, Duration::from_secs(600)).await?;
        refills.push(t.elapsed().as_secs_f64());
        agent.settle(Duration::from_secs(60)).await;
    }
    refills.sort_by(f64::total_cmp);
    let (refill_p50, _) = summarize(refills.clone());
    let refill_max = refills.last().copied().unwrap_or(f64::NAN);

    let app = crate::api::router(crate::api::AppState::local(agent.clone()), 1 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    // Executions one at a time, each from a full pool: latency, not the
    // launch rate.
    let body = serde_json::json!({"code": args.code, "network": tier});
    let mut execs = Vec::new();
    for _ in 0..args.requests {
        wait_warm(agent, WARM, Duration::from_secs(600)).await?;
        let t = Instant::now();
        execute(&client, addr, &args.language, &body).await?;
        execs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (exec_p50, exec_p99) = summarize(execs);
    let first_byte = if tier == NetworkTier::Semitrusted {
        wait_warm(agent, WARM, Duration::from_secs(600)).await?;
        let body = serde_json::json!({
            "code": first_byte_program(),
            "network": tier,
            "timeout_ms": 30000,
        });
        let answer = execute(&client, addr, "python", &body).await?;
        let times: Vec<f64> = answer["stdout"]
            .as_str()
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        anyhow::ensure!(
            times.len() == ROUND_TRIPS,
            "the first-byte program printed {} of {ROUND_TRIPS} times: {answer}",
            times.len()
        );
        Some(summarize(times))
    } else {
        None
    };
    server.abort();
    Ok(Figures {
        refill_p50,
        refill_max,
        exec_p50,
        exec_p99,
        first_byte,
    })
}

/// One execution through the API; its answer, which must be `ok`.
async fn execute(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    language: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let req = hyper::Request::post(format!("http://{addr}/execute/{language}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
    anyhow::ensure!(
        status.is_success() && answer["status"] == "ok",
        "{status}: {answer}"
    );
    Ok(answer)
}
