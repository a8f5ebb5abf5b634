//! The controller against a mocked API server that asserts every request:
//! finalizers added and removed under the controller's field manager, status
//! from the caches (no GET of the image, no LIST of nodes), stale nodes not
//! counted, deletion that waits quietly and then tells the truth, images
//! protected while pools use them, and the leader lease released on
//! shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use unsandbox::controller::leader::{LeaderMetrics, LeaseLock};
use unsandbox::controller::{Context, ControllerConfig, reconcile};
use unsandbox::crd::{ExecutorPool, LanguageImage};

type Mock = Handle<Request<Body>, Response<Body>>;

const POOLS: &str = "/apis/unsandbox.com/v1alpha1/namespaces/t/executorpools/py";
const IMAGES: &str = "/apis/unsandbox.com/v1alpha1/languageimages/small";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/";
const MANAGER_QUERY: &str = "fieldManager=unsandbox-controller";

fn client() -> (Client, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// A context whose caches hold `image` (if any) and agent nodes `nodes`.
fn context(image: Option<LanguageImage>, nodes: &[&str]) -> (Arc<Context>, Mock) {
    let (client, handle) = client();
    let cfg = ControllerConfig {
        agent_selector: BTreeMap::from([("unsandbox.com/lxd".to_string(), "true".to_string())]),
        cleanup_grace: Duration::from_secs(300),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx = Context::with_node_stale(client, cfg, Duration::from_secs(30), "test", &mut registry);
    if let Some(i) = image {
        ctx.caches.observe_image(&Event::Apply(i));
    }
    for n in nodes {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": n, "labels": {"unsandbox.com/lxd": "true"}}}),
        )
        .unwrap();
        ctx.caches.observe_node(&Event::Apply(node));
    }
    (ctx, handle)
}

/// RFC 3339 time `secs` seconds ago.
fn ago(secs: i64) -> String {
    (Timestamp::now() - Duration::from_secs(secs as u64))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A pool `t/py` of image `small`; `deleted` is how long ago it was deleted.
fn pool(extra_spec: &str, status: &str, finalizer: bool, deleted: Option<i64>) -> ExecutorPool {
    let mut meta = String::from("{name: py, namespace: t, generation: 2, resourceVersion: '7'");
    if finalizer {
        meta.push_str(", finalizers: [unsandbox.com/containers]");
    }
    if let Some(secs) = deleted {
        meta.push_str(&format!(", deletionTimestamp: '{}'", ago(secs)));
    }
    meta.push('}');
    serde_yaml::from_str(&format!(
        "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {meta}\nspec:\n  image: small\n{extra_spec}{status}"
    ))
    .unwrap()
}

/// A node entry of a pool's status, with a heartbeat `beat` seconds ago.
fn entry(node: &str, warm: u32, busy: u32, ready: bool, beat: i64) -> String {
    format!(
        "  - {{node: {node}, desired: 2, warm: {warm}, busy: {busy}, launching: 0, ready: {ready}, heartbeatTime: '{}'}}\n",
        ago(beat)
    )
}

/// The LanguageImage `small`, with finalizers and optionally being deleted.
fn image(finalizers: &[&str], deleting: bool) -> LanguageImage {
    let mut i: LanguageImage = serde_json::from_value(json!({
        "apiVersion": "unsandbox.com/v1alpha1", "kind": "LanguageImage",
        "metadata": {"name": "small", "generation": 1, "resourceVersion": "3"},
        "spec": {"source": {"recipe": "small"}, "languages": [{"name": "python", "sourceFile": "main.py", "run": "python3 main.py"}]}
    }))
    .unwrap();
    i.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    if deleting {
        i.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        ));
    }
    i
}

/// A request as the mock saw it.
struct Seen {
    uri: String,
    content_type: String,
    body: Value,
}

/// Answers the next request with `reply` after checking its method and path.
async fn expect(handle: &mut Mock, method: Method, path_prefix: &str, reply: Value) -> Seen {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path_prefix}"))
        .expect("service called");
    let uri = req.uri().to_string();
    assert_eq!(req.method(), method, "{uri}");
    assert!(
        uri.starts_with(path_prefix),
        "expected {method} {path_prefix}, got {uri}"
    );
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let status = reply
        .get("code")
        .and_then(Value::as_u64)
        .filter(|_| reply["kind"] == "Status")
        .unwrap_or(200);
    let response = Response::builder()
        .status(status as u16)
        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
        .unwrap();
    send.send_response(response);
    Seen {
        uri,
        content_type,
        body,
    }
}

/// Fails if the reconcile made any request beyond those answered.
async fn assert_no_more(ctx: Arc<Context>, mut handle: Mock) {
    drop(ctx);
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status}"))
}

/// The requeue delay of `action` (its field is private; its Debug form is
/// `Action { requeue_after: Some(25.9s) }`).
fn requeue_after(action: &Action) -> Option<Duration> {
    let debug = format!("{action:?}");
    let secs = debug.split("Some(").nth(1)?.split("s)").next()?;
    Some(Duration::from_secs_f64(secs.parse().ok()?))
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

/// Runs one reconcile (`run`) against `verify`, which answers its requests,
/// and asserts that the reconcile sends nothing more.
async fn reconcile_with<F, R>(
    run: R,
    ctx: Arc<Context>,
    api: Mock,
    verify: impl FnOnce(Mock) -> F,
) -> Action
where
    F: Future<Output = Mock> + Send + 'static,
    R: Future<Output = Result<Action, unsandbox::controller::Error>>,
{
    let verifier = tokio::spawn(verify(api));
    let action = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("reconcile finishes")
        .expect("reconcile succeeds");
    assert_no_more(ctx, verifier.await.unwrap()).await;
    action
}

/// Runs the pool reconcile against `verify`, which answers its requests.
async fn reconcile_pool<F>(
    p: ExecutorPool,
    ctx: Arc<Context>,
    api: Mock,
    verify: impl FnOnce(Mock) -> F,
) -> Action
where
    F: Future<Output = Mock> + Send + 'static,
{
    let run = reconcile::pool(Arc::new(p), ctx.clone());
    reconcile_with(run, ctx, api, verify).await
}

#[tokio::test]
async fn a_new_pool_gets_the_finalizer_under_the_controller_field_manager() {
    let (ctx, api) = context(Some(image(&[], false)), &["a"]);
    let p = pool("", "", false, None);
    let reply = serde_json::to_value(&p).unwrap();
    let action = reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, POOLS, reply).await;
        assert!(req.uri.contains(MANAGER_QUERY), "{}", req.uri);
        assert_eq!(req.content_type, "application/json-patch+json");
        assert_eq!(
            req.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["unsandbox.com/containers"]},
            ])
        );
        api
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn status_comes_from_the_caches_without_reading_images_or_nodes() {
    let (ctx, api) = context(Some(image(&[], false)), &["a", "b"]);
    let status = format!(
        "status:\n  nodes:\n{}{}",
        entry("a", 2, 1, true, 3),
        entry("b", 0, 0, false, 2)
    );
    let p = pool(
        "  nodeOverrides: [{node: b, warm: 5}]\n",
        &status,
        true,
        None,
    );
    let reply = serde_json::to_value(&p).unwrap();
    let action = reconcile_pool(p, ctx, api, |mut api| async move {
        // The first and only request: no GET of the image, no LIST of nodes.
        let req = expect(&mut api, Method::PATCH, &format!("{POOLS}/status"), reply).await;
        assert!(req.uri.contains(MANAGER_QUERY), "{}", req.uri);
        let s = &req.body["status"];
        assert_eq!(
            (&s["desired"], &s["warm"], &s["busy"]),
            (&json!(7), &json!(2), &json!(1))
        );
        assert_eq!(s["nodesReady"], "1/2");
        assert_eq!(s["observedGeneration"], 2);
        assert!(
            s.get("nodes").is_none(),
            "node entries belong to the agents: {s}"
        );
        assert_eq!(condition(s, "Ready")["reason"], "NodesNotReady");
        assert_eq!(condition(s, "Reconciling")["status"], "True");
        assert_eq!(condition(s, "Stalled")["status"], "False");
        api
    })
    .await;
    let after = requeue_after(&action).expect("a healthy pool is looked at again");
    assert!(
        after <= Duration::from_secs(29),
        "requeued when b's entry (2 s old) would go stale, not later: {after:?}"
    );
}

#[tokio::test]
async fn a_silent_node_is_not_counted_and_is_named() {
    let (ctx, api) = context(Some(image(&[], false)), &["a", "n1"]);
    let status = format!(
        "status:\n  nodes:\n{}{}",
        entry("a", 2, 0, true, 5),
        entry("n1", 2, 1, true, 45)
    );
    let p = pool("", &status, true, None);
    let reply = serde_json::to_value(&p).unwrap();
    let action = reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, &format!("{POOLS}/status"), reply).await;
        let s = &req.body["status"];
        assert_eq!((&s["warm"], &s["busy"]), (&json!(2), &json!(0)), "{s}");
        assert_eq!(s["nodesReady"], "1/2");
        let ready = condition(s, "Ready");
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("False"), &json!("NodesNotReady"))
        );
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains("n1 (no heartbeat for 4"), "{message}");
        let degraded = condition(s, "Degraded");
        assert_eq!(
            (&degraded["status"], &degraded["reason"]),
            (&json!("True"), &json!("NodesStale"))
        );
        api
    })
    .await;
    let after = requeue_after(&action).expect("requeued");
    assert!(
        after <= Duration::from_secs(26),
        "a's entry (5 s old) goes stale in 25 s: {after:?}"
    );
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_no_requeue() {
    let (ctx, api) = context(Some(image(&[], false)), &["a"]);
    let p = pool(
        "  execution:\n    wallTimeMs: {default: 50000, max: 100}\n",
        "",
        true,
        None,
    );
    let reply = serde_json::to_value(&p).unwrap();
    let action = reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, &format!("{POOLS}/status"), reply).await;
        let ready = condition(&req.body["status"], "Ready");
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("default 50000 is above max 100"),
            "{ready}"
        );
        assert_eq!(condition(&req.body["status"], "Stalled")["status"], "True");
        let event = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        assert_eq!(event.body["reason"], "InvalidSpec");
        assert_eq!(event.body["type"], "Warning");
        api
    })
    .await;
    assert_eq!(
        action,
        Action::await_change(),
        "an invalid spec waits for a change"
    );
}

#[tokio::test]
async fn a_missing_image_is_a_condition() {
    let (ctx, api) = context(None, &["a"]);
    let p = pool("", "", true, None);
    let reply = serde_json::to_value(&p).unwrap();
    reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, &format!("{POOLS}/status"), reply).await;
        let stalled = condition(&req.body["status"], "Stalled");
        assert_eq!(
            (&stalled["status"], &stalled["reason"]),
            (&json!("True"), &json!("ImageNotFound"))
        );
        expect(&mut api, Method::POST, EVENTS, json!({})).await;
        api
    })
    .await;
}

#[tokio::test]
async fn a_pool_whose_image_is_being_deleted_says_so() {
    let (ctx, api) = context(Some(image(&["unsandbox.com/in-use"], true)), &["a"]);
    let status = format!("status:\n  nodes:\n{}", entry("a", 2, 0, true, 1));
    let p = pool("", &status, true, None);
    let reply = serde_json::to_value(&p).unwrap();
    reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, &format!("{POOLS}/status"), reply).await;
        let degraded = condition(&req.body["status"], "Degraded");
        assert_eq!(degraded["reason"], "ImageDeleting");
        assert_eq!(condition(&req.body["status"], "Ready")["status"], "True");
        api
    })
    .await;
}

#[tokio::test]
async fn deletion_waits_quietly_saying_for_whom_then_releases_with_a_true_event() {
    // Node a still reports a busy container: no error, the status says so.
    let (ctx, api) = context(Some(image(&[], false)), &["a"]);
    let busy = format!(
        "status:\n  nodes:\n{}{}",
        entry("a", 0, 1, false, 1),
        entry("gone", 4, 0, false, 1)
    );
    let p = pool("", &busy, true, Some(1));
    let reply = serde_json::to_value(&p).unwrap();
    let action = reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, &format!("{POOLS}/status"), reply).await;
        let ready = condition(&req.body["status"], "Ready");
        assert_eq!(ready["reason"], "Terminating");
        assert_eq!(ready["message"], "waiting for a to remove containers");
        assert_eq!(
            (
                &req.body["status"]["busy"],
                &req.body["status"]["nodesReady"]
            ),
            (&json!(1), &json!("0/1")),
            "the whole status, so server-side apply keeps the counts"
        );
        assert_eq!(
            condition(&req.body["status"], "Reconciling")["status"],
            "True"
        );
        api
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(3)));

    // Node a is clean now; the node that disappeared does not hold it up.
    let (ctx, api) = context(Some(image(&[], false)), &["a"]);
    let clean = format!(
        "status:\n  nodes:\n{}{}",
        entry("a", 0, 0, false, 1),
        entry("gone", 4, 0, false, 1)
    );
    let p = pool("", &clean, true, Some(1));
    let mut released = serde_json::to_value(&p).unwrap();
    released["metadata"]["finalizers"] = json!([]);
    let action = reconcile_pool(p, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, POOLS, released).await;
        assert!(req.uri.contains(MANAGER_QUERY), "{}", req.uri);
        assert_eq!(
            req.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "unsandbox.com/containers"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
        let event = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        assert_eq!(
            (&event.body["type"], &event.body["reason"]),
            (&json!("Normal"), &json!("ContainersRemoved"))
        );
        api
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn grace_expiry_releases_with_a_warning_naming_the_nodes() {
    let (ctx, api) = context(Some(image(&[], false)), &["a"]);
    let busy = format!("status:\n  nodes:\n{}", entry("a", 1, 0, false, 1));
    let p = pool("", &busy, true, Some(400));
    let reply = serde_json::to_value(&p).unwrap();
    reconcile_pool(p, ctx, api, |mut api| async move {
        expect(&mut api, Method::PATCH, POOLS, reply).await;
        let event = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        assert_eq!(
            (&event.body["type"], &event.body["reason"]),
            (&json!("Warning"), &json!("CleanupGraceExpired"))
        );
        let note = event.body["note"].as_str().unwrap();
        assert!(note.contains("a still reported containers"), "{note}");
        api
    })
    .await;
}

/// Runs the image reconcile against `verify`.
async fn reconcile_image<F>(
    i: LanguageImage,
    ctx: Arc<Context>,
    api: Mock,
    verify: impl FnOnce(Mock) -> F,
) -> Action
where
    F: Future<Output = Mock> + Send + 'static,
{
    let run = reconcile::image(Arc::new(i), ctx.clone());
    reconcile_with(run, ctx, api, verify).await
}

#[tokio::test]
async fn a_new_image_gets_the_in_use_finalizer() {
    let (ctx, api) = context(None, &[]);
    let i = image(&[], false);
    let reply = serde_json::to_value(&i).unwrap();
    let action = reconcile_image(i, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, IMAGES, reply).await;
        assert!(req.uri.contains(MANAGER_QUERY), "{}", req.uri);
        assert!(
            req.body.to_string().contains("unsandbox.com/in-use"),
            "{}",
            req.body
        );
        api
    })
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_deleted_image_in_use_keeps_its_finalizer_and_says_by_whom() {
    let (ctx, api) = context(None, &[]);
    ctx.caches
        .observe_pool(&Event::Apply(pool("", "", true, None)));
    let i = image(&["unsandbox.com/in-use"], true);
    let reply = serde_json::to_value(&i).unwrap();
    let action = reconcile_image(i, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, &format!("{IMAGES}/status"), reply).await;
        let ready = condition(&req.body["status"], "Ready");
        assert_eq!(ready["reason"], "InUse");
        assert!(
            ready["message"].as_str().unwrap().contains("t/py"),
            "{ready}"
        );
        let event = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        assert_eq!(
            (&event.body["type"], &event.body["reason"]),
            (&json!("Warning"), &json!("InUse"))
        );
        api
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn an_unused_deleted_image_loses_its_finalizer() {
    let (ctx, api) = context(None, &[]);
    let i = image(&["unsandbox.com/in-use"], true);
    let reply = serde_json::to_value(&i).unwrap();
    reconcile_image(i, ctx, api, |mut api| async move {
        let req = expect(&mut api, Method::PATCH, IMAGES, reply).await;
        assert!(req.uri.contains(MANAGER_QUERY), "{}", req.uri);
        assert_eq!(
            req.body[1],
            json!({"op": "remove", "path": "/metadata/finalizers/0"})
        );
        api
    })
    .await;
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/unsandbox-controller";

fn lock(client: Client, metrics: LeaderMetrics) -> LeaseLock {
    LeaseLock::new(
        Api::namespaced(client, "ns"),
        "unsandbox-controller".into(),
        "me".into(),
        Duration::from_secs(15),
        metrics,
    )
}

fn lease_json(holder: Option<&str>, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "unsandbox-controller", "namespace": "ns", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 0,
                 "renewTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()}
    })
}

#[tokio::test]
async fn the_leader_releases_the_lease_when_its_work_stops() {
    let (client, mut api) = client();
    let metrics = LeaderMetrics::default();
    let lock = lock(client, metrics.clone());
    let verifier = tokio::spawn(async move {
        expect(&mut api, Method::GET, LEASE, not_found()).await;
        let created = expect(
            &mut api,
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
            lease_json(Some("me"), "5"),
        )
        .await;
        assert_eq!(created.body["spec"]["holderIdentity"], "me");
        // The release: one PUT, no GET before it.
        let release = expect(&mut api, Method::PUT, LEASE, lease_json(None, "6")).await;
        (api, release)
    });
    // The work (the reconcilers) ends at once, as after SIGTERM.
    tokio::time::timeout(
        Duration::from_secs(5),
        lock.lead(async {}, std::future::pending()),
    )
    .await
    .expect("returns after the release")
    .unwrap();
    let (api, release) = verifier.await.unwrap();
    drop(lock);
    let ctx_free = api;
    let spec = &release.body["spec"];
    assert!(
        spec.get("holderIdentity").is_none_or(Value::is_null),
        "{spec}"
    );
    assert_eq!(spec["leaseDurationSeconds"], 1);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(spec["renewTime"].is_string(), "{spec}");
    assert_eq!(
        release.body["metadata"]["resourceVersion"], "5",
        "guarded by the version this replica wrote"
    );
    assert_eq!(metrics.leader.get(), 0, "no longer leading");
    assert_eq!(metrics.transitions.get(), 1);
    drop(ctx_free);
}

#[tokio::test]
async fn a_standby_stops_on_the_signal_without_writing() {
    let (client, mut api) = client();
    let metrics = LeaderMetrics::default();
    let lock = lock(client, metrics.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let verifier = tokio::spawn(async move {
        expect(&mut api, Method::GET, LEASE, lease_json(Some("other"), "9")).await;
        stop_tx.send(true).unwrap();
        api
    });
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        lock.lead(async { panic!("a standby does not run the work") }, stop),
    )
    .await
    .expect("stops")
    .unwrap();
    let mut api = verifier.await.unwrap();
    drop(lock);
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(300), api.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
    assert_eq!(metrics.leader.get(), 0);
    assert_eq!(metrics.transitions.get(), 0);
}
