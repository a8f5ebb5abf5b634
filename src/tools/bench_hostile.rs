//! `unsandbox bench --hostile`: how much hostile neighbours slow benign
//! executions. A benign client sends the benchmark program back to back,
//! first alone, then while hostile clients keep a CPU spin, a fork bomb, a
//! memory hog and an output flood running beside it. It prints the benign
//! run stage's and end-to-end p50/p99 in both phases and their ratios
//! (target: run-stage p99 beside hostile programs at most 2x alone).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::bench::{BenchArgs, summarize};
use crate::agent::Agent;

type Http = Client<HttpConnector, Full<Bytes>>;

/// The hostile programs (python), each with the verdict it must get.
const HOSTILE: &[(&str, &str)] = &[
    ("while True: pass", "timeout"),
    (
        "import os\nwhile True:\n    os.fork()",
        "process_limit_exceeded",
    ),
    (
        "a = []\nwhile True:\n    a.append(b'x' * 1000000)",
        "memory_limit_exceeded",
    ),
    ("while True: print('x' * 1000)", "output_limit_exceeded"),
];

/// One execution over HTTP: its answer and end-to-end time in ms.
async fn execute(client: &Http, url: &str, body: Value) -> anyhow::Result<(Value, f64)> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let t = Instant::now();
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok((serde_json::from_slice(&bytes)?, ms))
}

/// The benign program `requests` times, one at a time: (run stage ms,
/// end-to-end ms) of each. Any wrong answer is an error.
async fn benign(
    client: &Http,
    url: &str,
    code: &str,
    requests: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut run, mut total) = (Vec::new(), Vec::new());
    let mut expected: Option<Value> = None;
    for _ in 0..requests {
        let (b, ms) = execute(client, url, json!({"code": code})).await?;
        anyhow::ensure!(b["status"] == "ok", "a benign execution failed: {b}");
        match &expected {
            None => expected = Some(b["stdout"].clone()),
            Some(e) => anyhow::ensure!(
                *e == b["stdout"],
                "a benign execution answered differently: {b}"
            ),
        }
        run.push(b["timings"]["run_ms"].as_f64().unwrap_or(f64::NAN));
        total.push(ms);
    }
    Ok((run, total))
}

/// Runs the hostile programs in turn until `stop`; counts each verdict
/// that differs from the expected one.
async fn hostile(
    client: Http,
    url: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(usize, usize)> {
    let (mut runs, mut wrong) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let (code, verdict) = HOSTILE[runs % HOSTILE.len()];
        let (b, _) = execute(&client, &url, json!({"code": code, "timeout_ms": 3000})).await?;
        if b["status"] != verdict {
            wrong += 1;
            tracing::warn!(code, expected = verdict, got = %b["status"], "unexpected hostile verdict");
        }
        runs += 1;
    }
    Ok((runs, wrong))
}

/// Measures benign executions alone and beside `neighbours` hostile clients.
pub async fn measure(args: &BenchArgs, agent: &Agent, warm: u32) -> anyhow::Result<()> {
    let app = crate::api::router(crate::api::AppState::local(agent.clone()), 1 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let benign_url = format!("http://{addr}/execute/{}", args.language);
    let hostile_url = format!("http://{addr}/execute/python");

    super::bench::wait_warm(agent, warm, Duration::from_secs(600)).await?;
    let (alone_run, alone_total) = benign(&client, &benign_url, &args.code, args.requests).await?;

    super::bench::wait_warm(agent, warm, Duration::from_secs(600)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let neighbours: Vec<_> = (0..args.hostile_clients.max(1))
        .map(|_| tokio::spawn(hostile(client.clone(), hostile_url.clone(), stop.clone())))
        .collect();
    let beside = benign(&client, &benign_url, &args.code, args.requests).await;
    stop.store(true, Ordering::Relaxed);
    let (mut runs, mut wrong) = (0, 0);
    for n in neighbours {
        let (r, w) = n.await??;
        runs += r;
        wrong += w;
    }
    let (beside_run, beside_total) = beside?;

    let (a_run50, a_run99) = summarize(alone_run);
    let (a_tot50, a_tot99) = summarize(alone_total);
    let (b_run50, b_run99) = summarize(beside_run);
    let (b_tot50, b_tot99) = summarize(beside_total);
    println!(
        "unsandbox bench --hostile: {} `{}`, {} benign requests per phase, {} hostile clients",
        args.language, args.code, args.requests, args.hostile_clients
    );
    println!("{:<44} {:>9} {:>9}", "benign", "p50 ms", "p99 ms");
    println!("{:<44} {a_run50:>9.1} {a_run99:>9.1}", "run stage, alone");
    println!(
        "{:<44} {b_run50:>9.1} {b_run99:>9.1}",
        "run stage, beside hostile programs"
    );
    println!("{:<44} {a_tot50:>9.1} {a_tot99:>9.1}", "end to end, alone");
    println!(
        "{:<44} {b_tot50:>9.1} {b_tot99:>9.1}",
        "end to end, beside hostile programs"
    );
    println!(
        "ratio run-stage p99 beside / alone:        {:.2}  (target <= 2.0)",
        b_run99 / a_run99
    );
    println!(
        "ratio end-to-end p99 beside / alone:       {:.2}  (containers are shared: includes waiting for one)",
        b_tot99 / a_tot99
    );
    println!("hostile executions: {runs}, with an unexpected verdict: {wrong}");
    Ok(())
}
