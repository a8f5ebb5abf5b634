//! Read-only endpoints: languages, pools, health, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::crd::condition;

use super::AppState;

/// `GET /languages`: every language served here, with its pools.
pub async fn languages(State(app): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = app
        .agent
        .catalog()
        .into_iter()
        .map(|e| {
            let pools: Vec<Value> = e
                .pools
                .iter()
                .map(|(pool, tier, warm)| json!({"pool": pool, "network": tier, "warm": warm}))
                .collect();
            json!({"name": e.name, "aliases": e.aliases, "version": e.version, "pools": pools})
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /pools`: each pool as this host sees it, shaped like an ExecutorPool
/// with its status.
pub async fn pools(State(app): State<AppState>) -> Json<Value> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let list: Vec<Value> = app
        .agent
        .reports()
        .into_iter()
        .map(|r| {
            let conditions = condition::merge(&[], &r.conditions, r.generation, now);
            json!({
                "apiVersion": "unsandbox.com/v1alpha1",
                "kind": "ExecutorPool",
                "metadata": {"name": r.name, "namespace": r.namespace, "generation": r.generation},
                "spec": r.spec,
                "status": {
                    "observedGeneration": r.generation,
                    "warm": r.node.warm,
                    "busy": r.node.busy,
                    "nodesReady": format!("{}/1", u8::from(r.node.ready)),
                    "conditions": conditions,
                    "nodes": [r.node],
                }
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: every served pool has reached its warm count once.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.agent.ready() {
        (StatusCode::OK, Json(json!({"ready": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "message": "a pool has not reached its warm count yet"})),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.agent.metrics().render(),
    )
}
