//! The contract `GET /openapi.json` serves against what the router does,
//! without LXD. Every documented operation is routed and every other
//! method on its path answers 405; representative requests to every
//! operation (with and without a token, good and bad bodies, a host that
//! is starting, one whose image cannot be had, one that serves nothing)
//! answer a status the operation documents, with the documented content
//! type and a body its schema allows.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use unsandbox::agent::{Agent, AgentConfig, Resources};
use unsandbox::api::{AppState, router_with_auth};
use unsandbox::auth::{Auth, TokenSet, hash_token};
use unsandbox::lxd::Lxd;
use unsandbox::metrics::Metrics;

const TOKEN: &str = "fuzz-token-0123456789";
const MAX_BODY: usize = 64 * 1024;

/// An agent on `res` whose LXD does not exist; `listed` runs one
/// reconcile pass first.
async fn agent(res: Resources, listed: bool) -> Agent {
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
    let agent = Agent::new(
        Lxd::new("/nonexistent/unix.socket", "unsandbox"),
        cfg,
        rx,
        Arc::new(Metrics::new()),
        None,
    );
    if listed {
        agent.reconcile(false).await;
    }
    agent
}

/// The small sample image and its pool, as standalone reads them.
fn samples() -> Resources {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/samples");
    let files: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    let (res, _) = unsandbox::standalone::files::load(&files).expect("the samples load");
    res
}

fn auth(tokens_required: bool) -> Auth {
    if tokens_required {
        let yaml = format!("fuzz: {}", hash_token(TOKEN));
        Auth::with_tokens(TokenSet::parse(&yaml).unwrap(), None, MAX_BODY)
    } else {
        Auth::disabled()
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: Value,
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_string())
    };
    Answer {
        status: parts.status,
        content_type: header_text(header::CONTENT_TYPE).unwrap_or_default(),
        allow: header_text(header::ALLOW),
        body: serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
    }
}

/// Asserts that `a` is an answer the contract documents for `method
/// template`: its status, its media type, and a body the schema allows.
fn assert_documented(contract: &Value, method: &str, template: &str, a: &Answer) {
    let what = format!("{method} {template} answered {}: {}", a.status, a.body);
    let op = &contract["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{template} {method} is not documented");
    let response = &op["responses"][a.status.as_str()];
    assert!(response.is_object(), "undocumented status: {what}");
    let media = a.content_type.split(';').next().unwrap().trim();
    let content = &response["content"][media];
    assert!(
        content.is_object(),
        "undocumented content type {:?} (documented: {}): {what}",
        a.content_type,
        response["content"]
    );
    let schema = json!({
        "allOf": [content["schema"]],
        "components": contract["components"],
    });
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&a.body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}");
}

const BEARER: (&str, &str) = ("authorization", "Bearer fuzz-token-0123456789");
const JSON: (&str, &str) = ("content-type", "application/json");

/// (method, template, path, headers, body, expected status): each answer
/// must also be documented.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
    u16,
);

fn cases_with_a_token() -> Vec<Case> {
    let ok = |m, t: &'static str, s| (m, t, t, vec![BEARER], "", s);
    let post = |t: &'static str, p, h: Vec<_>, b, s| ("POST", t, p, h, b, s);
    let ex = "/execute/{language}";
    let piston = "/api/v2/execute";
    vec![
        ok("GET", "/healthz", 200),
        ok("GET", "/openapi.json", 200),
        ok("GET", "/metrics", 200),
        ok("GET", "/languages", 200),
        ok("GET", "/pools", 200),
        ok("GET", "/api/v2/runtimes", 200),
        ok("GET", "/v1/quota", 200),
        ("GET", "/v1/quota", "/v1/quota", vec![], "", 401),
        (
            "GET",
            "/pools",
            "/pools",
            vec![("authorization", "Basic x")],
            "",
            401,
        ),
        (
            "GET",
            "/languages",
            "/languages",
            vec![("authorization", "Bearer nope")],
            "",
            401,
        ),
        ("GET", "/healthz", "/healthz", vec![], "", 200),
        post(
            ex,
            "/execute/cobol",
            vec![BEARER, JSON],
            r#"{"code": "1"}"#,
            404,
        ),
        post(
            ex,
            "/execute/%FF",
            vec![BEARER, JSON],
            r#"{"code": "1"}"#,
            400,
        ),
        post(
            ex,
            "/execute/python",
            vec![BEARER, JSON],
            r#"{"code": "#,
            400,
        ),
        post(ex, "/execute/python", vec![BEARER], r#"{"code": "1"}"#, 415),
        post(ex, "/execute/python", vec![BEARER, JSON], r#"["1"]"#, 422),
        post(
            ex,
            "/execute/python",
            vec![BEARER, JSON],
            r#"{"code": "1", "x": 1}"#,
            422,
        ),
        post(
            ex,
            "/execute/python",
            vec![BEARER, JSON],
            r#"{"code": "1", "language": "lua"}"#,
            422,
        ),
        post(ex, "/execute/python", vec![JSON], r#"{"code": "1"}"#, 401),
        post(
            ex,
            "/execute/python",
            vec![BEARER, JSON, ("x-unsandbox-forwarded-by", "n")],
            "{}",
            403,
        ),
        post(
            "/run",
            "/run",
            vec![BEARER, JSON],
            r#"{"code": "1", "language": "cobol"}"#,
            404,
        ),
        post("/run", "/run", vec![BEARER, JSON], "{}", 422),
        post("/run", "/run", vec![JSON], "{}", 401),
        post(
            piston,
            piston,
            vec![BEARER],
            r#"{"language": "cobol", "files": [{"content": "1"}]}"#,
            400,
        ),
        post(
            piston,
            piston,
            vec![BEARER],
            r#"{"language": "python"}"#,
            400,
        ),
        post(piston, piston, vec![BEARER], "not json", 400),
        post(piston, piston, vec![], r#"{"language": "python"}"#, 401),
        post(
            "/execute/{language}/stream",
            "/execute/cobol/stream",
            vec![BEARER, JSON],
            r#"{"code": "1"}"#,
            404,
        ),
        post("/run/stream", "/run/stream", vec![BEARER, JSON], "{}", 422),
        post(
            "/jobs",
            "/jobs",
            vec![BEARER, JSON],
            r#"{"code": "1", "language": "cobol"}"#,
            404,
        ),
        post(
            "/jobs",
            "/jobs",
            vec![BEARER, JSON],
            r#"{"code": "1", "language": "python", "callback_url": "http://h/"}"#,
            422,
        ),
        post("/jobs", "/jobs", vec![BEARER, JSON], r#"{"code": "#, 400),
        post(
            "/batch",
            "/batch",
            vec![BEARER, JSON],
            r#"{"items": []}"#,
            422,
        ),
        post(
            "/batch",
            "/batch",
            vec![BEARER, JSON],
            r#"{"items": [{"code": "1", "language": "cobol"}]}"#,
            200,
        ),
        ("GET", "/jobs/{id}", "/jobs/nope", vec![BEARER], "", 404),
        (
            "GET",
            "/jobs/{id}",
            "/jobs/0a0b0c0d0123456789abcdef01234567.here",
            vec![BEARER],
            "",
            410,
        ),
        (
            "DELETE",
            "/jobs/{id}",
            "/jobs/0a0b0c0d0123456789abcdef01234567.elsewhere",
            vec![BEARER],
            "",
            404,
        ),
        (
            "GET",
            "/jobs/{id}/events",
            "/jobs/0a0b0c0d0123456789abcdef01234567.here",
            vec![],
            "",
            401,
        ),
    ]
}

async fn contract_of(app: &axum::Router) -> Value {
    let a = send(app, "GET", "/openapi.json", &[], "").await;
    assert_eq!(a.status, 200);
    a.body
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() {
    let app = router_with_auth(
        AppState::local(agent(Resources::listed(vec![], vec![], None), true).await),
        MAX_BODY,
        auth(false),
    );
    let contract = contract_of(&app).await;
    let paths = contract["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 17, "{:?}", paths.keys());
    for (template, item) in paths {
        let path = template
            .replace("{language}", "python")
            .replace("{id}", "0a0b0c0d0123456789abcdef01234567.here");
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let a = send(&app, method, &path, &[JSON], "{}").await;
            if documented.contains(method) {
                assert!(
                    a.status != 405 && a.body["error"] != "not_found",
                    "{method} {path} is documented but not routed: {} {}",
                    a.status,
                    a.body
                );
            } else {
                assert_eq!(a.status, 405, "{method} {path}: {}", a.body);
                let allow = a.allow.unwrap_or_default();
                for m in &documented {
                    assert!(allow.contains(m.as_str()), "{path}: Allow {allow:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn answers_with_tokens_required_are_documented() {
    let app = router_with_auth(
        AppState::local(agent(Resources::listed(vec![], vec![], None), true).await),
        MAX_BODY,
        auth(true),
    );
    let contract = contract_of(&app).await;
    for (method, template, path, headers, body, want) in cases_with_a_token() {
        let a = send(&app, method, path, &headers, body).await;
        assert_eq!(a.status, want, "{method} {path} {body}: {}", a.body);
        assert_documented(&contract, method, template, &a);
    }
    // A body declared over the limit.
    let big = "x".repeat(MAX_BODY + 1);
    for template in ["/run", "/api/v2/execute"] {
        let a = send(&app, "POST", template, &[BEARER, JSON], &big).await;
        assert_eq!(a.status, 413, "{}", a.body);
        assert_documented(&contract, "POST", template, &a);
    }
}

#[tokio::test]
async fn answers_of_hosts_that_cannot_serve_yet_are_documented() {
    // Starting: nothing listed yet. Then the samples listed, on an LXD
    // that is not there: the pool's image cannot be had.
    let hosts = [
        agent(Resources::default(), false).await,
        agent(samples(), true).await,
    ];
    for host in hosts {
        let app = router_with_auth(AppState::local(host), MAX_BODY, auth(false));
        let contract = contract_of(&app).await;
        let cases: [(&str, &str, &str, &str); 6] = [
            ("GET", "/readyz", "/readyz", ""),
            ("GET", "/pools", "/pools", ""),
            ("GET", "/languages", "/languages", ""),
            (
                "POST",
                "/execute/{language}",
                "/execute/python",
                r#"{"code": "1"}"#,
            ),
            ("POST", "/run", "/run", r#"{"code": "print(1)"}"#),
            (
                "POST",
                "/api/v2/execute",
                "/api/v2/execute",
                r#"{"language": "python", "files": [{"content": "1"}]}"#,
            ),
        ];
        for (method, template, path, body) in cases {
            let a = send(&app, method, path, &[JSON], body).await;
            if method == "POST" || template == "/readyz" {
                assert_eq!(a.status, 503, "{method} {path}: {}", a.body);
            }
            assert_documented(&contract, method, template, &a);
        }
    }
}
