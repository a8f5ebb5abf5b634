//! Routing between agents, without LXD: a node that cannot run a request
//! forwards it to a peer that reports warm containers, marks it as
//! forwarded, and a forwarded request is never forwarded again. A host that
//! is still starting answers 503 with `Retry-After`, and is not ready.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::watch;

use unsandbox::agent::{Agent, AgentConfig, Resources};
use unsandbox::api::forward::{FORWARDED_BY, Forwarder, PeerFinder};
use unsandbox::api::{AppState, router};
use unsandbox::cluster::peers::Peer;
use unsandbox::crd::NetworkTier;
use unsandbox::lxd::Lxd;
use unsandbox::metrics::Metrics;

struct FixedPeers(Vec<Peer>);

impl PeerFinder for FixedPeers {
    fn candidates(&self, _: &str, _: NetworkTier) -> Vec<Peer> {
        self.0.clone()
    }

    fn endpoint(&self, node: &str) -> Option<String> {
        self.0
            .iter()
            .find(|p| p.node == node)
            .map(|p| p.endpoint.clone())
    }
}

/// A peer agent on loopback that answers every execution as node `peer-1`
/// and records the forwarding header it saw.
async fn fake_peer(seen: Arc<Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().route(
        "/execute/{language}",
        axum::routing::post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                let by = headers.get(FORWARDED_BY).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                seen.lock().unwrap().push(by);
                Json(json!({
                    "status": "ok", "stdout": body["code"], "stderr": "", "exit_code": 0, "signal": null,
                    "stdout_truncated": false, "stderr_truncated": false, "language": "python",
                    "pool": "t/p", "host": "peer-1", "container": "us-p-1", "network": {"tier": "zerotrust"},
                    "timings": {"queue_ms": 0, "exec_ms": 5, "total_ms": 6}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An agent with no pools at all (its LXD is never contacted), after one
/// pass over a complete, empty listing.
async fn idle_agent() -> Agent {
    let agent = agent_with(Resources::listed(vec![], vec![], None));
    assert!(agent.reconcile(false).await);
    agent
}

/// An agent on `res` whose reconcile loop has not run.
fn agent_with(res: Resources) -> Agent {
    let (_tx, rx) = watch::channel(res);
    let cfg = AgentConfig {
        node: "here".into(),
        storage_pool: "unsandbox".into(),
        images_dir: None,
        launch_parallelism: 1,
        resync_interval: std::time::Duration::from_secs(60),
        templates: false,
        executions_first: true,
    };
    Agent::new(
        Lxd::new("/nonexistent/unix.socket", "unsandbox"),
        cfg,
        rx,
        Arc::new(Metrics::new()),
        None,
    )
}

#[tokio::test]
async fn forwards_to_a_warm_peer_once_and_never_loops() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let endpoint = fake_peer(seen.clone()).await;
    let peers = FixedPeers(vec![Peer {
        node: "peer-1".into(),
        endpoint,
        warm: 3,
    }]);
    let state = AppState {
        forwarder: Some(Forwarder::new(Arc::new(peers))),
        ..AppState::local(idle_agent().await)
    };
    let app = router(state, 1 << 20);

    let req = |forwarded: bool| {
        let mut b =
            axum::http::Request::post("/execute/python").header("content-type", "application/json");
        if forwarded {
            b = b.header(FORWARDED_BY, "elsewhere");
        }
        b.body(axum::body::Body::from(r#"{"code": "print(1)"}"#))
            .unwrap()
    };
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let resp = app.clone().oneshot(req(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body["host"], "peer-1",
        "the answer names the node that ran the code"
    );
    assert_eq!(body["stdout"], "print(1)");
    assert_eq!(
        *seen.lock().unwrap(),
        ["here"],
        "the peer saw who forwarded it"
    );

    // Already forwarded: answered here (this node serves nothing), not sent on.
    let resp = app.oneshot(req(true)).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(seen.lock().unwrap().len(), 1, "no second hop");
}

async fn send(app: &axum::Router, method: &str, path: &str, body: &str) -> (u16, HeaderMap, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status.as_u16(), parts.headers, value)
}

#[tokio::test]
async fn a_starting_host_answers_503_with_retry_after_on_both_apis() {
    // The watches have not listed yet: the host cannot know what it serves.
    let app = router(AppState::local(agent_with(Resources::default())), 1 << 20);
    let (status, headers, body) = send(&app, "POST", "/execute/python", r#"{"code": "1"}"#).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "agent_starting");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    // Nor can it detect a language it does not know it serves yet.
    let (status, _, body) = send(&app, "POST", "/run", r#"{"code": "print(1)"}"#).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "agent_starting");

    let (status, headers, body) = send(
        &app,
        "POST",
        "/api/v2/execute",
        r#"{"language": "python", "version": "*", "files": [{"content": "print(1)"}]}"#,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("starting"),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "Piston's shape: {body}");
    assert!(headers.contains_key("retry-after"));

    let (status, _, body) = send(&app, "GET", "/readyz", "").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
}

#[tokio::test]
async fn a_host_serving_nothing_is_not_ready_and_refuses_unknown_languages() {
    let app = router(AppState::local(idle_agent().await), 1 << 20);
    let (status, _, body) = send(&app, "GET", "/readyz", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no pool"),
        "{body}"
    );
    let (status, _, body) = send(&app, "POST", "/execute/python", r#"{"code": "1"}"#).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "unknown_language");
}

#[tokio::test]
async fn every_fallback_answers_json() {
    let app = router(AppState::local(idle_agent().await), 1 << 20);
    let (status, headers, body) = send(&app, "GET", "/execute/python", "").await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("GET"), "{body}");
    assert!(
        headers["allow"].to_str().unwrap().contains("POST"),
        "{headers:?}"
    );
    let (status, _, body) = send(&app, "DELETE", "/pools", "").await;
    assert_eq!(
        (status, &body["error"]),
        (405, &json!("method_not_allowed"))
    );
    let (status, _, body) = send(&app, "GET", "/nothing/here", "").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found", "{body}");
}

/// A log writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_expected_503_is_not_logged_as_an_error() {
    // The process-wide subscriber: a thread's own one misses events whose
    // callsites other tests' threads cached as uninteresting.
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only test that logs");
    let app = router(AppState::local(agent_with(Resources::default())), 1 << 20);
    let (status, _, body) = send(&app, "POST", "/execute/python", r#"{"code": "1"}"#).await;
    assert_eq!(status, 503, "{body}");
    let (status, _, _) = send(&app, "GET", "/readyz", "").await;
    assert_eq!(status, 503);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("503"), "the answer is logged: {text}");
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
fn check_refuses_unknown_fields_and_invalid_specs_and_logs_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let image = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/samples/languageimage-small.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("image.yaml"), image).unwrap();
    let run = |pool: &str| {
        std::fs::write(
            dir.path().join("pool.yaml"),
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: t}}\n---\napiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: p, namespace: t}}\nspec: {pool}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_unsandbox"))
            .arg("check")
            .arg(dir.path())
            .env("RUST_LOG", "debug")
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !stderr.contains('\u{1b}'),
            "no escape codes in a pipe: {stderr:?}"
        );
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = run("{image: small, warm: 1}");
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ok      ExecutorPool t/p"), "{stdout}");
    assert!(
        stderr.contains("skipping a document of another kind"),
        "{stderr}"
    );

    let (ok, stdout, _) = run("{image: small, wram: 5}");
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("pool.yaml document 1: ExecutorPool t/p: unknown field \"spec.wram\""),
        "{stdout}"
    );
    let (ok, stdout, _) =
        run("{image: small, execution: {wallTimeMs: {default: 50000, max: 30000}}}");
    assert!(!ok);
    assert!(
        stdout.contains("default 50000 is above max 30000"),
        "{stdout}"
    );
    let (ok, stdout, _) = run("{image: nosuch}");
    assert!(!ok);
    assert!(
        stdout.contains("LanguageImage \"nosuch\" is not defined in any file"),
        "{stdout}"
    );
}

/// A peer agent on loopback that holds jobs: it answers `/jobs/{id}` with
/// the caller it was relayed for and the forwarding header it saw.
async fn job_peer() -> String {
    let app = axum::Router::new().route(
        "/jobs/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>,
             axum::extract::RawQuery(query): axum::extract::RawQuery,
             headers: HeaderMap| async move {
                Json(serde_json::json!({
                    "id": id,
                    "query": query,
                    "forwarded_by": headers.get(FORWARDED_BY).and_then(|v| v.to_str().ok()),
                }))
            },
        )
        .delete(|| async { (axum::http::StatusCode::GONE, "gone") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn any_agent_answers_for_a_job_and_a_lost_one_is_gone_at_once() {
    let endpoint = job_peer().await;
    let peers = FixedPeers(vec![Peer {
        node: "peer-1".into(),
        endpoint,
        warm: 0,
    }]);
    let app = router(
        AppState {
            forwarder: Some(Forwarder::new(Arc::new(peers))),
            ..AppState::local(idle_agent().await)
        },
        1 << 20,
    );
    let on_peer = "0a0b0c0d0123456789abcdef01234567.peer-1";

    // Held by a live peer: relayed there, for the caller, marked forwarded.
    let (status, _, body) = send(&app, "GET", &format!("/jobs/{on_peer}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], on_peer);
    assert_eq!(body["query"], "on_behalf_of=anonymous");
    assert_eq!(body["forwarded_by"], "here");
    // The peer's own answer comes back as it was.
    let (status, _, _) = send(&app, "DELETE", &format!("/jobs/{on_peer}"), "").await;
    assert_eq!(status, 410);

    // Held by a node whose agent is gone: lost, and said so at once.
    let gone = "0a0b0c0d0123456789abcdef01234567.peer-2";
    let (status, _, body) = send(&app, "GET", &format!("/jobs/{gone}"), "").await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "job_lost");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("node peer-2's agent is gone"),
        "{body}"
    );

    // Held here by an earlier run of this agent: lost to the restart.
    let earlier = "0a0b0c0d0123456789abcdef01234567.here";
    let (status, _, body) = send(&app, "GET", &format!("/jobs/{earlier}/events"), "").await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("restarted"),
        "{body}"
    );

    // Not an id this API gives out.
    let (status, _, body) = send(&app, "GET", "/jobs/nope", "").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_job")));
}
