//! Authentication, signing, quotas and agent credentials of the execution
//! API, without LXD: the auth middleware in front of small stand-in
//! handlers, plus the real router for the routes that must stay open.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Extension;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use unsandbox::api::forward::{FORWARDED_BY, Forwarder, PeerFinder};
use unsandbox::api::types::ExecuteRequest;
use unsandbox::auth::{
    AGENT_SIGNATURE, Auth, Caller, SIGNATURE, Settings, TIMESTAMP, TokenSet, hash_token, sign,
};
use unsandbox::cluster::peers::Peer;
use unsandbox::crd::NetworkTier;

const ALICE: &str = "alice-token-0123456789";

/// Answers with who called, what forwarding header arrived, and the body's size.
async fn echo(
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    axum::Json(json!({
        "caller": caller.map(|c| c.0.name),
        "forwarded_by": headers.get(FORWARDED_BY).and_then(|v| v.to_str().ok()),
        "body_bytes": body.len(),
        // What an execution answers, so the forwarder accepts it.
        "status": "ok", "stdout": "", "stderr": "", "exit_code": 0, "signal": null,
        "stdout_truncated": false, "stderr_truncated": false, "language": "python",
        "pool": "t/p", "host": "peer-1", "container": "c", "network": {"tier": "zerotrust"},
        "timings": {"queue_ms": 0, "exec_ms": 1, "total_ms": 1}
    }))
}

fn app(auth: Auth) -> Router {
    Router::new()
        .route("/execute/{language}", post(echo))
        .route("/run", post(echo))
        .route("/api/v2/execute", post(echo))
        .route("/languages", get(echo))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "# metrics" }))
        .route("/v1/quota", get(unsandbox::auth::quota))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            unsandbox::auth::check,
        ))
}

fn tokens(yaml: &str) -> TokenSet {
    TokenSet::parse(yaml).unwrap()
}

fn alice(extra: &str) -> Auth {
    let yaml = format!("alice:\n  sha256: {}\n{extra}", hash_token(ALICE));
    Auth::with_tokens(tokens(&yaml), Some(b"agent-secret"), 1 << 20)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Call {
    method: &'static str,
    path: &'static str,
    body: &'static str,
    headers: Vec<(&'static str, String)>,
}

fn call(method: &'static str, path: &'static str) -> Call {
    Call {
        method,
        path,
        body: "",
        headers: vec![],
    }
}

impl Call {
    fn body(mut self, body: &'static str) -> Self {
        self.body = body;
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn token(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }
    /// Signed with `secret` at `ts`, in `header`.
    fn signed(self, header: &'static str, secret: &[u8], ts: u64) -> Self {
        let sig = sign(
            secret,
            &ts.to_string(),
            self.method,
            self.path,
            self.body.as_bytes(),
        );
        self.header(TIMESTAMP, ts.to_string()).header(header, sig)
    }
    fn request(&self) -> Request<Body> {
        let mut b = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            b = b.header(*k, v);
        }
        b.body(Body::from(self.body)).unwrap()
    }
    async fn send(&self, app: &Router) -> (StatusCode, HeaderMap, Value) {
        let resp = app.clone().oneshot(self.request()).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, body)
    }
}

#[tokio::test]
async fn no_token_is_401_and_names_the_header_to_send() {
    let app = app(alice(""));
    let (status, headers, body) = call("POST", "/run").body("{}").send(&app).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "missing_token");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, body) = call("GET", "/languages")
        .header("authorization", "Basic eDp5")
        .send(&app)
        .await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (401, &json!("missing_token"))
    );
    // Unknown endpoints do not say whether they exist.
    let (status, _, _) = call("GET", "/nope").send(&app).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_wrong_token_is_401_and_never_echoed() {
    let app = app(alice(""));
    let wrong = "wrong-token-that-must-not-appear";
    let (status, headers, body) = call("POST", "/run")
        .body("{}")
        .token(wrong)
        .send(&app)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_token");
    let text = format!("{body} {headers:?}");
    assert!(!text.contains(wrong), "{text}");
    let (status, _, _) = call("POST", "/run").token(&ALICE[1..]).send(&app).await;
    assert_eq!(status, 401, "a prefix is not the token");
}

#[tokio::test]
async fn a_valid_token_passes_and_handlers_see_its_name() {
    let app = app(alice(""));
    let (status, _, body) = call("POST", "/execute/python")
        .body("{\"code\":\"1\"}")
        .token(ALICE)
        .send(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["caller"], &body["body_bytes"]),
        (&json!("alice"), &json!(12))
    );
    let (status, _, _) = call("GET", "/languages")
        .header("authorization", format!("bearer  {ALICE}"))
        .send(&app)
        .await;
    assert_eq!(status, 200, "the scheme is case-insensitive");
}

#[tokio::test]
async fn probes_and_metrics_need_no_token() {
    let app = app(alice(""));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = call("GET", path).send(&app).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn the_real_router_keeps_probes_open_and_the_rest_closed() {
    let (_tx, rx) = tokio::sync::watch::channel(unsandbox::agent::Resources::default());
    let cfg = unsandbox::agent::AgentConfig {
        node: "here".into(),
        storage_pool: "unsandbox".into(),
        images_dir: None,
        launch_parallelism: 1,
        resync_interval: Duration::from_secs(60),
        templates: false,
        executions_first: true,
    };
    let agent = unsandbox::agent::Agent::new(
        unsandbox::lxd::Lxd::new("/nonexistent/unix.socket", "unsandbox"),
        cfg,
        rx,
        Arc::new(unsandbox::metrics::Metrics::new()),
        None,
    );
    let app = unsandbox::api::router_with_auth(
        unsandbox::api::AppState::local(agent),
        1 << 20,
        alice(""),
    );
    for path in ["/healthz", "/metrics"] {
        let (status, _, _) = call("GET", path).send(&app).await;
        assert_eq!(status, 200, "{path}");
    }
    for (method, path) in [
        ("GET", "/languages"),
        ("GET", "/pools"),
        ("GET", "/api/v2/runtimes"),
        ("POST", "/run"),
        ("POST", "/execute/python"),
        ("POST", "/api/v2/execute"),
        ("GET", "/v1/quota"),
    ] {
        let (status, _, _) = call(method, path).body("{}").send(&app).await;
        assert_eq!(status, 401, "{method} {path}");
    }
    let (status, _, body) = call("POST", "/execute/python")
        .body("{\"code\":\"1\"}")
        .token(ALICE)
        .header(FORWARDED_BY, "me")
        .send(&app)
        .await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (403, &json!("forwarded_unverified"))
    );
}

#[tokio::test]
async fn a_forged_forwarded_header_is_refused() {
    let app = app(alice(""));
    // With a token, without an agent signature.
    let forged = call("POST", "/execute/python")
        .body("{}")
        .token(ALICE)
        .header(FORWARDED_BY, "node-2");
    let (status, _, body) = forged.send(&app).await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (403, &json!("forwarded_unverified"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no agent signature"),
        "{body}"
    );
    // Signed with a guessed secret.
    let guessed = call("POST", "/execute/python")
        .body("{}")
        .header(FORWARDED_BY, "node-2")
        .signed(AGENT_SIGNATURE, b"guess", now());
    let (status, _, body) = guessed.send(&app).await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (403, &json!("forwarded_unverified"))
    );
    // Signed by a peer: passes without a client token, once.
    let peer = call("POST", "/execute/python")
        .body("{}")
        .header(FORWARDED_BY, "node-2")
        .signed(AGENT_SIGNATURE, b"agent-secret", now());
    let (status, _, body) = peer.send(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["caller"], &body["forwarded_by"]),
        (&json!("agent:node-2"), &json!("node-2"))
    );
    let (status, _, _) = peer.send(&app).await;
    assert_eq!(status, 403, "an agent signature is good once");
    // An agent without the secret cannot check the header, so refuses it.
    let no_secret = Auth::with_tokens(
        tokens(&format!("alice: {}\n", hash_token(ALICE))),
        None,
        1 << 20,
    );
    let (status, _, _) = forged.send(&self::app(no_secret)).await;
    assert_eq!(status, 403);
}

struct OnePeer(String);

impl PeerFinder for OnePeer {
    fn candidates(&self, _: &str, _: NetworkTier) -> Vec<Peer> {
        vec![Peer {
            node: "peer-1".into(),
            endpoint: self.0.clone(),
            warm: 1,
        }]
    }

    fn endpoint(&self, node: &str) -> Option<String> {
        (node == "peer-1").then(|| self.0.clone())
    }
}

#[tokio::test]
async fn the_forwarder_signs_what_peers_check() {
    let peer_auth = alice("");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(peer_auth)).await });
    let req: ExecuteRequest = serde_json::from_value(json!({"code": "print(1)"})).unwrap();
    let peers = Arc::new(OnePeer(format!("http://{addr}")));
    let unsigned = Forwarder::new(peers.clone());
    let peer = &peers.candidates("python", NetworkTier::Zerotrust)[0];
    let err = unsigned
        .execute(peer, "python", &req, "here")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let same_secret = Auth::with_tokens(TokenSet::default(), Some(b"agent-secret"), 1 << 20);
    let signed = Forwarder::new(peers.clone()).with_agent_key(same_secret.agent_key());
    let resp = signed.execute(peer, "python", &req, "here").await.unwrap();
    assert_eq!(resp.host, "peer-1");
}

#[tokio::test]
async fn tokens_reload_on_change_and_a_bad_file_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.yaml");
    std::fs::write(&path, format!("alice: {}\n", hash_token(ALICE))).unwrap();
    let auth = Auth::start(&Settings {
        listen: "0.0.0.0:8080".parse().unwrap(),
        tokens_file: Some(path.clone()),
        agent_secret_file: None,
        no_auth: false,
        max_body_bytes: 1 << 20,
        reload_every: Duration::from_millis(20),
    })
    .unwrap();
    let app = app(auth);
    let status = |token: &'static str| {
        let app = app.clone();
        async move { call("GET", "/languages").token(token).send(&app).await.0 }
    };
    assert_eq!(status(ALICE).await, 200);
    assert_eq!(status("bob-token").await, 401);

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "bob: {}", hash_token("bob-token")).unwrap();
    drop(f);
    wait_for(|| status("bob-token"), 200).await;

    // A broken file is logged and ignored: both tokens still work.
    std::fs::write(&path, "alice: [not closed\n").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        (
            status(ALICE).await.as_u16(),
            status("bob-token").await.as_u16()
        ),
        (200, 200)
    );

    // Fixed again: bob is gone.
    std::fs::write(&path, format!("alice: {}\n", hash_token(ALICE))).unwrap();
    wait_for(|| status("bob-token"), 401).await;
    assert_eq!(status(ALICE).await, 200);
}

async fn wait_for<F, Fut>(mut f: F, want: u16)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StatusCode>,
{
    for _ in 0..100 {
        if f().await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never answered {want}");
}

#[tokio::test]
async fn a_rate_over_its_burst_is_429_with_retry_after_and_ratelimit_headers() {
    let app = app(alice(
        "  quota:\n    requests_per_minute: 6\n    burst: 2\n",
    ));
    let run = call("POST", "/run").body("{}").token(ALICE);
    let (status, headers, _) = run.send(&app).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&headers["ratelimit-limit"], &headers["ratelimit-remaining"]),
        (&"2".parse().unwrap(), &"1".parse().unwrap())
    );
    assert_eq!(run.send(&app).await.0, 200);
    let (status, headers, body) = run.send(&app).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("6 executions a minute"),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "10", "6 a minute: one every 10 s");
    assert_eq!(headers["ratelimit-limit"], "2");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], "10");
    // Reading is not executing: GETs are not counted.
    assert_eq!(
        call("GET", "/languages").token(ALICE).send(&app).await.0,
        200
    );
}

#[tokio::test]
async fn executions_over_the_concurrency_limit_are_429_until_one_finishes() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let auth = alice("  quota:\n    concurrent: 1\n");
    let app = Router::new()
        .route(
            "/run",
            post(move || {
                let gate = held.clone();
                async move {
                    let _permit = gate.acquire().await.unwrap();
                    "done"
                }
            }),
        )
        .route("/v1/quota", get(unsandbox::auth::quota))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            unsandbox::auth::check,
        ));
    let run = call("POST", "/run").body("{}").token(ALICE);
    let first = tokio::spawn(app.clone().oneshot(run.request()));
    for _ in 0..100 {
        let (_, _, q) = call("GET", "/v1/quota").token(ALICE).send(&app).await;
        if q["concurrent"]["in_flight"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, headers, body) = run.send(&app).await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (429, &json!("too_many_executions"))
    );
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["ratelimit-limit"], "1");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert!(headers.contains_key("ratelimit-reset"));
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    gate.add_permits(1);
    assert_eq!(run.send(&app).await.0, 200, "the slot was freed");
}

#[tokio::test]
async fn limits_above_the_tokens_maximum_are_refused() {
    let app = app(alice(
        "  quota:\n    max_timeout_ms: 5000\n    max_memory_mib: 128\n",
    ));
    let (status, _, body) = call("POST", "/run")
        .body(r#"{"code":"1","timeout_ms":6000}"#)
        .token(ALICE)
        .send(&app)
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "limit_not_allowed");
    assert_eq!(
        (&body["field"], &body["maximum"]),
        (&json!("timeout_ms"), &json!(5000))
    );
    assert!(
        body["message"].as_str().unwrap().contains("\"alice\""),
        "{body}"
    );
    let (status, _, body) = call("POST", "/api/v2/execute")
        .body(r#"{"language":"python","files":[],"run_memory_limit":268435456}"#)
        .token(ALICE)
        .send(&app)
        .await;
    assert_eq!(
        (status.as_u16(), &body["field"]),
        (403, &json!("run_memory_limit"))
    );
    let within = r#"{"code":"1","timeout_ms":5000,"memory_mib":64}"#;
    let (status, _, body) = call("POST", "/run")
        .body(within)
        .token(ALICE)
        .send(&app)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["body_bytes"],
        within.len(),
        "the handler gets the whole body"
    );
}

#[tokio::test]
async fn quota_tells_a_client_where_it_stands() {
    let app = app(alice(
        "  quota:\n    concurrent: 3\n    requests_per_minute: 60\n    burst: 5\n    max_timeout_ms: 5000\n",
    ));
    call("POST", "/run")
        .body("{}")
        .token(ALICE)
        .send(&app)
        .await;
    let (status, _, q) = call("GET", "/v1/quota").token(ALICE).send(&app).await;
    assert_eq!(status, 200);
    assert_eq!(q["name"], "alice");
    assert_eq!(q["authenticated"], true);
    assert_eq!(q["limits"]["max_timeout_ms"], 5000);
    assert_eq!(q["limits"]["max_memory_mib"], Value::Null);
    assert_eq!(q["concurrent"], json!({"limit": 3, "in_flight": 0}));
    assert_eq!(q["rate"]["requests_per_minute"], 60);
    assert_eq!(q["rate"]["burst"], 5);
    assert_eq!(q["rate"]["remaining"], 4);
    assert_eq!(call("GET", "/v1/quota").send(&app).await.0, 401);
}

#[tokio::test]
async fn signatures_are_checked_once_within_the_window() {
    let app = app(alice("  signing_secret: alice-signs\n"));
    let body = r#"{"code":"1"}"#;
    let at = |ts: u64| {
        call("POST", "/run")
            .body(body)
            .token(ALICE)
            .signed(SIGNATURE, b"alice-signs", ts)
    };
    let valid = at(now());
    let (status, _, resp) = valid.send(&app).await;
    assert_eq!(status, 200, "{resp}");
    let (status, _, resp) = valid.send(&app).await;
    assert_eq!(
        (status.as_u16(), &resp["error"]),
        (401, &json!("signature_replayed"))
    );
    let (status, _, resp) = at(now() - 600).send(&app).await;
    assert_eq!(
        (status.as_u16(), &resp["error"]),
        (401, &json!("signature_expired"))
    );
    let (status, _, resp) = call("POST", "/run")
        .body(body)
        .token(ALICE)
        .signed(SIGNATURE, b"not-the-secret", now())
        .send(&app)
        .await;
    assert_eq!(
        (status.as_u16(), &resp["error"]),
        (401, &json!("invalid_signature"))
    );
    // The signature covers the body.
    let mut tampered = at(now() + 1);
    tampered.body = r#"{"code":"2"}"#;
    assert_eq!(tampered.send(&app).await.2["error"], "invalid_signature");
    let (status, _, resp) = call("POST", "/run")
        .body(body)
        .token(ALICE)
        .send(&app)
        .await;
    assert_eq!(
        (status.as_u16(), &resp["error"]),
        (401, &json!("signature_required"))
    );
    // GETs are signed too (over an empty body).
    let (status, _, _) = call("GET", "/languages")
        .token(ALICE)
        .signed(SIGNATURE, b"alice-signs", now())
        .send(&app)
        .await;
    assert_eq!(status, 200);
}

fn settings(listen: &str) -> Settings {
    Settings {
        listen: listen.parse::<SocketAddr>().unwrap(),
        tokens_file: None,
        agent_secret_file: None,
        no_auth: false,
        max_body_bytes: 1 << 20,
        reload_every: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn loopback_needs_no_token_by_default() {
    let auth = Auth::start(&settings("127.0.0.1:8080")).unwrap();
    assert!(!auth.enabled());
    let app = app(auth);
    let (status, _, body) = call("POST", "/run").body("{}").send(&app).await;
    assert_eq!(
        (status.as_u16(), &body["caller"]),
        (200, &json!("anonymous"))
    );
    // Nothing is checked, so the forwarding header passes as it is.
    let (status, _, body) = call("POST", "/run")
        .body("{}")
        .header(FORWARDED_BY, "peer")
        .send(&app)
        .await;
    assert_eq!(
        (status.as_u16(), &body["forwarded_by"]),
        (200, &json!("peer"))
    );
    let (_, _, q) = call("GET", "/v1/quota").send(&app).await;
    assert_eq!(
        (&q["name"], &q["authenticated"]),
        (&json!("anonymous"), &json!(false))
    );

    let no_auth = Auth::start(&Settings {
        no_auth: true,
        ..settings("0.0.0.0:8080")
    })
    .unwrap();
    assert!(!no_auth.enabled(), "--no-auth serves anyone");
}

#[tokio::test]
async fn beyond_loopback_without_tokens_refuses_to_start() {
    let err = Auth::start(&settings("0.0.0.0:8080"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("--tokens-file") && err.contains("--no-auth"),
        "{err}"
    );
    let err = Auth::start(&Settings {
        tokens_file: Some("/nonexistent/tokens.yaml".into()),
        ..settings("0.0.0.0:8080")
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("/nonexistent/tokens.yaml"), "{err}");
}

#[test]
fn the_binary_refuses_to_listen_beyond_loopback_without_tokens() {
    let run = |no_auth: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_unsandbox"));
        for (k, _) in std::env::vars() {
            if k.starts_with("UNSANDBOX_") {
                cmd.env_remove(k);
            }
        }
        if let Some(v) = no_auth {
            cmd.env("UNSANDBOX_NO_AUTH", v);
        }
        let out = cmd
            .args([
                "standalone",
                "--config",
                "/nonexistent",
                "--listen",
                "0.0.0.0:18080",
            ])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(None);
    assert!(
        stderr.contains("not loopback") && stderr.contains("--tokens-file"),
        "{stderr}"
    );
    // UNSANDBOX_NO_AUTH gets past the check (to the missing config).
    let stderr = run(Some("true"));
    assert!(
        stderr.contains("/nonexistent") && !stderr.contains("not loopback"),
        "{stderr}"
    );
}
