//! End to end on the real LXD daemon, over real TCP: an execution whose
//! output streams while it runs (the client sees the first line before the
//! program ends), async jobs (result, events, cancellation that destroys
//! the container, a restart that loses them), signed callbacks with a
//! retry delivered to a local server, and a batch whose failing item fails
//! nothing else.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Harness, free_addr, raw_http, resources, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use unsandbox::api::AppState;
use unsandbox::api::jobs::{JobSettings, Jobs};

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 20000, max: 30000}\n    queueTimeoutMs: 60000\n";

const SECRET: &[u8] = b"callback-secret";

/// A callback receiver on loopback: answers 500 to the first POST and 200
/// after, and keeps what it was sent.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Delivered>>>,
}

/// A callback as it arrived: headers, path and query, body.
type Delivered = (axum::http::HeaderMap, String, Vec<u8>);

async fn receiver() -> (SocketAddr, Receiver) {
    let r = Receiver::default();
    let kept = r.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let mut seen = kept.seen.lock().unwrap();
                seen.push((headers, uri.to_string(), body.to_vec()));
                if seen.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, r)
}

/// Serves `app` on a free loopback port.
async fn serve(app: axum::Router) -> SocketAddr {
    let addr = free_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One server-sent event and when it arrived.
#[derive(Debug)]
struct Sse {
    name: String,
    data: Value,
    at: Instant,
}

/// Sends a request and reads its server-sent events until the stream ends.
async fn events(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Vec<Sse>) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(conn).lines();
    let status_line = lines.next_line().await.unwrap().unwrap();
    let status: u16 = status_line[9..12].parse().unwrap();
    // Headers, then chunked SSE: event fields are read line by line; chunk
    // sizes and keep-alive comments are skipped.
    while !lines.next_line().await.unwrap().unwrap().is_empty() {}
    let mut out = vec![];
    let mut name = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(n) = line
            .strip_prefix("event: ")
            .or_else(|| line.strip_prefix("event:"))
        {
            name = n.to_string();
        } else if let Some(d) = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
        {
            let data = serde_json::from_str(d).unwrap_or(Value::String(d.into()));
            out.push(Sse {
                name: std::mem::take(&mut name),
                data,
                at: Instant::now(),
            });
            if matches!(out.last().unwrap().name.as_str(), "result" | "error") {
                break;
            }
        }
    }
    (status, out)
}

fn stdout_of(events: &[Sse]) -> String {
    events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| e.data["data"].as_str().unwrap().to_string())
        .collect()
}

async fn job(addr: SocketAddr, id: &str) -> Value {
    let (status, body) = raw_http(addr, "GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_jobs_callbacks_and_batches() {
    let h = Harness::start("jobs", resources(POOL)).await;
    h.wait_warm("t/small", 2).await;
    let (hook, received) = receiver().await;
    let mut settings = JobSettings::default();
    settings.callbacks.allow = vec![format!("127.0.0.1:{}", hook.port())];
    settings.callbacks.secret = Some(SECRET.to_vec());
    settings.callbacks.backoff = Duration::from_millis(200);
    let state = AppState {
        jobs: Jobs::new(settings).unwrap(),
        batch_max_items: 4,
        ..AppState::local(h.agent.clone())
    };
    let addr = serve(unsandbox::api::router(state, 1 << 20)).await;

    // 1. Streaming: the first line arrives while the program still sleeps.
    let slow = "import sys, time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second é')\nsys.stderr.write('err\\n')\n";
    let (status, ev) = events(
        addr,
        "POST",
        "/execute/python/stream",
        Some(json!({"code": slow})),
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = ev.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"), "{ev:?}");
    assert_eq!(names.last(), Some(&"result"), "{ev:?}");
    let first = ev
        .iter()
        .find(|e| e.name == "stdout")
        .expect("a stdout event");
    let result = ev.last().unwrap();
    assert!(
        first.data["data"].as_str().unwrap().starts_with("first"),
        "{ev:?}"
    );
    assert!(
        result.at.duration_since(first.at) >= Duration::from_millis(1500),
        "the first line came {:?} before the end: not while the program ran",
        result.at.duration_since(first.at)
    );
    assert_eq!(
        stdout_of(&ev),
        "first\nsecond é\n",
        "the pieces add up to the stream"
    );
    assert_eq!(result.data["stdout"], "first\nsecond é\n");
    assert_eq!(result.data["stderr"], "err\n");
    assert_eq!(result.data["status"], "ok");
    assert!(
        !format!("{ev:?}").contains("unsandbox:end"),
        "the end mark never shows"
    );

    // A streamed request that cannot run is a plain 4xx, not a stream.
    let (status, body) = raw_http(
        addr,
        "POST",
        "/execute/cobol/stream",
        Some(json!({"code": "x"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = raw_http(
        addr,
        "POST",
        "/run/stream",
        Some(json!({"code": "1", "language": "python", "timeout_ms": 99999999})),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // 2. A job: 202 with an id, then its result and its events, and a
    //    signed callback, retried once after the receiver's 500.
    let callback = format!("http://127.0.0.1:{}/hooks/done?k=1", hook.port());
    let (status, body) = raw_http(
        addr,
        "POST",
        "/jobs",
        Some(json!({"code": "print(6*7)", "language": "python", "callback_url": callback})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let accepted: Value = serde_json::from_str(&body).unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert!(id.ends_with(&format!(".{}", h.node)), "{id}");
    assert!(
        matches!(accepted["status"].as_str(), Some("queued" | "running")),
        "{accepted}"
    );
    wait_for(
        "the job to finish and call back",
        Duration::from_secs(60),
        || {
            let id = id.clone();
            async move {
                let j = job(addr, &id).await;
                j["status"] == "done" && j["callback"]["delivered"] == true
            }
        },
    )
    .await;
    let done = job(addr, &id).await;
    assert_eq!(done["result"]["stdout"], "42\n", "{done}");
    assert_eq!(done["callback"]["attempts"], 2, "{done}");
    let (_, ev) = events(addr, "GET", &format!("/jobs/{id}/events"), None).await;
    assert_eq!(stdout_of(&ev), "42\n");
    assert_eq!(ev.last().unwrap().name, "result");
    {
        let seen = received.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one failed attempt, one delivered");
        let (headers, uri, body) = &seen[1];
        assert_eq!(uri, "/hooks/done?k=1");
        let ts = headers["x-timestamp"].to_str().unwrap();
        let want = unsandbox::auth::sign(SECRET, ts, "POST", "/hooks/done?k=1", body);
        assert_eq!(
            headers["x-signature"].to_str().unwrap(),
            want,
            "signed with the callback secret"
        );
        assert_eq!(headers["x-unsandbox-attempt"], "2");
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (sent["id"].as_str(), sent["status"].as_str()),
            (Some(id.as_str()), Some("done"))
        );
    }

    // A callback to a host the operator did not allow is refused up front.
    let (status, body) = raw_http(
        addr,
        "POST",
        "/jobs",
        Some(json!({"code": "1", "language": "python", "callback_url": "http://127.0.0.1:1/x"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("callback_not_allowed"), "{body}");

    // 3. Cancelling a running job destroys its container.
    let (status, body) = raw_http(
        addr,
        "POST",
        "/jobs",
        Some(json!({"code": "import time\nprint('up', flush=True)\ntime.sleep(25)", "language": "python"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let long: Value = serde_json::from_str(&body).unwrap();
    let long = long["id"].as_str().unwrap().to_string();
    wait_for("the long job to run", Duration::from_secs(30), || {
        let long = long.clone();
        async move { job(addr, &long).await["status"] == "running" }
    })
    .await;
    let started = {
        // The events replay from the start (`started` names the container)
        // and follow the job live: its first line arrives while it sleeps.
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET /jobs/{long}/events HTTP/1.1\r\nhost: x\r\n\r\n");
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(conn).lines();
        let mut container = None;
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(d) = line.strip_prefix("data: ") else {
                continue;
            };
            let v: Value = serde_json::from_str(d).unwrap();
            if let Some(c) = v["container"].as_str() {
                container = Some(c.to_string());
            }
            if v["data"] == "up\n" {
                break;
            }
        }
        assert_eq!(job(addr, &long).await["status"], "running", "seen live");
        container.expect("a started event with the container")
    };
    assert!(h.running().await.contains(&started));
    let (status, body) = raw_http(addr, "DELETE", &format!("/jobs/{long}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"cancelled\""), "{body}");
    h.wait_gone(&started).await;
    let (status, _) = raw_http(addr, "GET", &format!("/jobs/{long}"), None).await;
    assert_eq!(status, 404, "a cancelled job is forgotten");

    // 4. A batch: answers in order; the failing item fails nothing else.
    let (status, body) = raw_http(
        addr,
        "POST",
        "/batch",
        Some(json!({"items": [
            {"code": "print('a')", "language": "python"},
            {"code": "x", "language": "cobol"},
            {"code": "import sys; sys.exit(3)", "language": "python"},
        ]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let batch: Value = serde_json::from_str(&body).unwrap();
    let items = batch["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        (
            items[0]["status"].as_u64(),
            items[0]["result"]["stdout"].as_str()
        ),
        (Some(200), Some("a\n"))
    );
    assert_eq!(
        (
            items[1]["status"].as_u64(),
            items[1]["error"]["error"].as_str()
        ),
        (Some(404), Some("unknown_language"))
    );
    assert_eq!(
        (
            items[2]["status"].as_u64(),
            items[2]["result"]["exit_code"].as_i64()
        ),
        (Some(200), Some(3))
    );
    let too_many = json!({"items": (0..5).map(|_| json!({"code": "1"})).collect::<Vec<_>>()});
    let (status, body) = raw_http(addr, "POST", "/batch", Some(too_many)).await;
    assert_eq!(status, 422, "{body}");

    // The metrics count how jobs ended and how callbacks went.
    let (_, metrics) = raw_http(addr, "GET", "/metrics", None).await;
    for line in [
        "unsandbox_api_jobs_total{outcome=\"done\"} 1",
        "unsandbox_api_jobs_total{outcome=\"cancelled\"} 1",
        "unsandbox_api_job_callbacks_total{outcome=\"failed\"} 1",
        "unsandbox_api_job_callbacks_total{outcome=\"delivered\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    // 5. The agent restarts (a new run of the API): its jobs are lost, and
    //    said so at once.
    let restarted = serve(unsandbox::api::router(
        AppState::local(h.agent.clone()),
        1 << 20,
    ))
    .await;
    let (status, body) = raw_http(restarted, "GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("restarted"), "{body}");

    h.finish().await;
}
