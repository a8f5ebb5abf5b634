//! The controller against a mocked API server that asserts every request:
//! finalizer added, status written, invalid spec reported once with no hot
//! loop, deletion held until nodes are clean and then released.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use unsandbox::controller::{Context, ControllerConfig, reconcile};
use unsandbox::crd::ExecutorPool;

type Mock = Handle<Request<Body>, Response<Body>>;

fn context() -> (Arc<Context>, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let cfg = ControllerConfig {
        agent_selector: BTreeMap::from([("unsandbox.com/lxd".to_string(), "true".to_string())]),
        cleanup_grace: Duration::from_secs(300),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    (Context::new(client, cfg, "test", &mut registry), handle)
}

fn pool(extra_spec: &str, status: &str, finalizer: bool, deleting: bool) -> ExecutorPool {
    let mut meta = String::from("{name: py, namespace: t, generation: 2, resourceVersion: '7'");
    if finalizer {
        meta.push_str(", finalizers: [unsandbox.com/containers]");
    }
    if deleting {
        // Deleted just now: the cleanup grace has not passed.
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        meta.push_str(&format!(", deletionTimestamp: '{now}'"));
    }
    meta.push('}');
    serde_yaml::from_str(&format!(
        "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {meta}\nspec:\n  image: small\n{extra_spec}{status}"
    ))
    .unwrap()
}

const IMAGE: &str = r#"{"apiVersion":"unsandbox.com/v1alpha1","kind":"LanguageImage","metadata":{"name":"small"},"spec":{"source":{"recipe":"small"},"languages":[{"name":"python","sourceFile":"main.py","run":"python3 main.py"}]}}"#;

fn nodes(names: &[&str]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|n| json!({"metadata": {"name": n, "labels": {"unsandbox.com/lxd": "true"}}}))
        .collect();
    json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items})
}

/// Answers the next request after checking its method and path; returns its body.
async fn expect(handle: &mut Mock, method: Method, path_prefix: &str, reply: Value) -> Value {
    let status = reply
        .get("code")
        .and_then(Value::as_u64)
        .filter(|_| reply["kind"] == "Status")
        .unwrap_or(200);
    expect_status(handle, method, path_prefix, reply, status as u16).await
}

async fn expect_status(
    handle: &mut Mock,
    method: Method,
    path_prefix: &str,
    reply: Value,
    status: u16,
) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path_prefix}"))
        .expect("service called");
    let uri = req.uri().to_string();
    assert_eq!(req.method(), method, "{uri}");
    assert!(
        uri.starts_with(path_prefix),
        "expected {path_prefix}, got {uri}"
    );
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
        .unwrap();
    send.send_response(response);
    body
}

/// Answers the pool's LanguageImage lookup with the sample image.
async fn expect_image(handle: &mut Mock) {
    let image = serde_json::from_str(IMAGE).unwrap();
    expect(
        handle,
        Method::GET,
        "/apis/unsandbox.com/v1alpha1/languageimages/small",
        image,
    )
    .await;
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

#[tokio::test]
async fn a_new_pool_gets_the_finalizer_first() {
    let (ctx, mut api) = context();
    let p = pool("", "", false, false);
    let reply = serde_json::to_value(&p).unwrap();
    let verifier = tokio::spawn(async move {
        let body = expect(
            &mut api,
            Method::PATCH,
            "/apis/unsandbox.com/v1alpha1/namespaces/t/executorpools/py",
            reply,
        )
        .await;
        assert!(
            body.to_string().contains("unsandbox.com/containers"),
            "{body}"
        );
    });
    let action = reconcile::pool(Arc::new(p), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    verifier.await.unwrap();
}

#[tokio::test]
async fn status_aggregates_covered_nodes_with_the_controller_field_manager() {
    let (ctx, mut api) = context();
    let status = "status:\n  nodes:\n  - {node: a, desired: 2, warm: 2, busy: 1, launching: 0, ready: true}\n  - {node: b, desired: 2, warm: 0, busy: 0, launching: 2, ready: false}\n";
    let p = pool("", status, true, false);
    let reply = serde_json::to_value(&p).unwrap();
    let verifier = tokio::spawn(async move {
        expect_image(&mut api).await;
        expect(
            &mut api,
            Method::GET,
            "/api/v1/nodes?&labelSelector=unsandbox.com%2Flxd%3Dtrue",
            nodes(&["a", "b"]),
        )
        .await;
        let body = expect(
            &mut api,
            Method::PATCH,
            "/apis/unsandbox.com/v1alpha1/namespaces/t/executorpools/py/status?&force=true&fieldManager=unsandbox-controller",
            reply,
        )
        .await;
        assert_eq!(body["status"]["warm"], 2);
        assert_eq!(body["status"]["busy"], 1);
        assert_eq!(body["status"]["nodesReady"], "1/2");
        assert_eq!(body["status"]["observedGeneration"], 2);
        assert!(
            body["status"].get("nodes").is_none(),
            "node entries belong to the agents: {body}"
        );
        let ready = &body["status"]["conditions"][0];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("False"))
        );
        assert_eq!(ready["reason"], "NodesNotReady");
    });
    let action = reconcile::pool(Arc::new(p), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    verifier.await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_no_requeue() {
    let (ctx, mut api) = context();
    let p = pool(
        "  execution:\n    wallTimeMs: {default: 50000, max: 100}\n",
        "",
        true,
        false,
    );
    let reply = serde_json::to_value(&p).unwrap();
    let verifier = tokio::spawn(async move {
        expect_image(&mut api).await;
        expect(&mut api, Method::GET, "/api/v1/nodes", nodes(&["a"])).await;
        let body = expect(
            &mut api,
            Method::PATCH,
            "/apis/unsandbox.com/v1alpha1/namespaces/t/executorpools/py/status",
            reply,
        )
        .await;
        let ready = &body["status"]["conditions"][0];
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("default 50000 is above max 100"),
            "{ready}"
        );
        let event = expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/t/events",
            json!({}),
        )
        .await;
        assert_eq!(event["reason"], "InvalidSpec");
        assert_eq!(event["type"], "Warning");
    });
    let action = reconcile::pool(Arc::new(p), ctx).await.unwrap();
    assert_eq!(
        action,
        Action::await_change(),
        "an invalid spec waits for a change"
    );
    verifier.await.unwrap();
}

#[tokio::test]
async fn a_missing_image_is_a_condition() {
    let (ctx, mut api) = context();
    let p = pool("", "", true, false);
    let reply = serde_json::to_value(&p).unwrap();
    let verifier = tokio::spawn(async move {
        expect(
            &mut api,
            Method::GET,
            "/apis/unsandbox.com/v1alpha1/languageimages/small",
            not_found(),
        )
        .await;
        expect(&mut api, Method::GET, "/api/v1/nodes", nodes(&["a"])).await;
        let body = expect(
            &mut api,
            Method::PATCH,
            "/apis/unsandbox.com/v1alpha1/namespaces/t/executorpools/py/status",
            reply,
        )
        .await;
        assert_eq!(body["status"]["conditions"][0]["reason"], "ImageNotFound");
        expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/t/events",
            json!({}),
        )
        .await;
    });
    tokio::time::timeout(Duration::from_secs(5), reconcile::pool(Arc::new(p), ctx))
        .await
        .expect("second reconcile")
        .unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn deletion_waits_for_nodes_then_releases_the_finalizer() {
    // A node still reports a busy container: the finalizer stays.
    let (ctx, mut api) = context();
    let busy = "status:\n  nodes:\n  - {node: a, desired: 0, warm: 0, busy: 1, launching: 0, ready: false}\n  - {node: gone, desired: 0, warm: 4, busy: 0, launching: 0, ready: false}\n";
    let p = pool("", busy, true, true);
    let verifier = tokio::spawn(async move {
        expect(&mut api, Method::GET, "/api/v1/nodes", nodes(&["a"])).await;
        api
    });
    let first = tokio::spawn(reconcile::pool(Arc::new(p), ctx.clone()));
    let mut api = verifier.await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("first reconcile")
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("nodes still hold containers"),
        "{err}"
    );

    // Node a is clean now; the node that disappeared does not hold it up.
    let clean = "status:\n  nodes:\n  - {node: a, desired: 0, warm: 0, busy: 0, launching: 0, ready: false}\n  - {node: gone, desired: 0, warm: 4, busy: 0, launching: 0, ready: false}\n";
    let p = pool("", clean, true, true);
    let mut released = serde_json::to_value(&p).unwrap();
    released["metadata"]["finalizers"] = json!([]);
    let verifier = tokio::spawn(async move {
        expect(&mut api, Method::GET, "/api/v1/nodes", nodes(&["a"])).await;
        expect(
            &mut api,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/t/events",
            json!({}),
        )
        .await;
        let body = expect(
            &mut api,
            Method::PATCH,
            "/apis/unsandbox.com/v1alpha1/namespaces/t/executorpools/py",
            released,
        )
        .await;
        assert!(
            body.to_string().contains("remove"),
            "the finalizer is removed: {body}"
        );
    });
    tokio::time::timeout(Duration::from_secs(5), reconcile::pool(Arc::new(p), ctx))
        .await
        .expect("second reconcile")
        .unwrap();
    verifier.await.unwrap();
}
