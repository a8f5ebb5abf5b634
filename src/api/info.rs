//! Read-only endpoints: languages, pools, health, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::agent::PoolReport;
use crate::agent::status::{self, Serving};
use crate::crd::condition::{self, Condition};
use crate::standalone::Rejection;

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
/// with its status; in standalone mode with the documents of the files that
/// are rejected (see `pools_view`).
pub async fn pools(State(app): State<AppState>) -> Json<Value> {
    let stamp = |r: &PoolReport| status::stamped(&r.observed, &r.conditions, r.generation);
    Json(pools_view(
        app.agent.reports(),
        stamp,
        &app.rejections.borrow().clone(),
    ))
}

/// The `/pools` answer. A rejected document is listed under `status.rejected`
/// of the pool it describes (or of the pools that use the image it
/// describes); a rejected pool that is not served at all gets an entry of
/// its own, `Ready=False` with reason `Rejected`. Pure but for `stamp`,
/// which gives a report's conditions with their transition times.
pub fn pools_view(
    reports: Vec<PoolReport>,
    stamp: impl Fn(&PoolReport) -> Vec<Condition>,
    rejected: &[Rejection],
) -> Value {
    let mut listed = Vec::new();
    let mut list: Vec<Value> = reports
        .into_iter()
        .map(|r| {
            let key = format!("{}/{}", r.namespace, r.name);
            let about: Vec<&Rejection> = rejected
                .iter()
                .filter(|x| {
                    (x.kind == "ExecutorPool" && x.name == key)
                        || (x.kind == "LanguageImage" && x.name == r.spec.image)
                })
                .collect();
            let conditions = stamp(&r);
            listed.push(key);
            let mut status = json!({
                "observedGeneration": r.generation,
                "warm": r.node.warm,
                "busy": r.node.busy,
                "nodesReady": format!("{}/1", u8::from(r.node.ready)),
                "conditions": conditions,
                "nodes": [r.node],
            });
            if !about.is_empty() {
                status["rejected"] = json!(about);
            }
            json!({
                "apiVersion": "unsandbox.com/v1alpha1",
                "kind": "ExecutorPool",
                "metadata": {"name": r.name, "namespace": r.namespace, "generation": r.generation},
                "spec": r.spec,
                "status": status,
            })
        })
        .collect();
    for x in rejected
        .iter()
        .filter(|x| x.kind == "ExecutorPool" && !listed.contains(&x.name))
    {
        let (namespace, name) = x.name.split_once('/').unwrap_or(("default", &x.name));
        let ready = condition::merge(
            &[],
            &[condition::Desired::new(
                condition::READY,
                false,
                condition::Reason::Rejected,
                format!("{x}"),
            )],
            None,
            k8s_openapi::jiff::Timestamp::now(),
        );
        list.push(json!({
            "apiVersion": "unsandbox.com/v1alpha1",
            "kind": "ExecutorPool",
            "metadata": {"name": name, "namespace": namespace},
            "status": {"conditions": ready, "rejected": [x]},
        }));
    }
    Value::Array(list)
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while this host serves something (at least one
/// language of a ready pool), saying what; else 503, saying why each pool
/// is not ready.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let (status, body) = readiness(&app.agent.serving(), app.agent.reports());
    (status, Json(body))
}

/// The readiness answer from what is served and each pool's report. Pure.
fn readiness(serving: &[Serving], reports: Vec<PoolReport>) -> (StatusCode, Value) {
    if !serving.is_empty() {
        return (StatusCode::OK, json!({"ready": true, "serving": serving}));
    }
    let pools: Vec<Value> = reports
        .into_iter()
        .filter_map(|r| {
            let ready = r
                .conditions
                .into_iter()
                .find(|c| c.type_ == condition::READY)?;
            Some(json!({
                "pool": format!("{}/{}", r.namespace, r.name),
                "reason": ready.reason,
                "message": ready.message,
            }))
        })
        .collect();
    let message = if pools.is_empty() {
        "this host has no pool to serve (none covers it, or its pools are not listed yet)"
    } else {
        "no pool on this host serves a language yet"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"ready": false, "message": message, "pools": pools}),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::condition::Desired;

    fn report(reason: condition::Reason) -> PoolReport {
        PoolReport {
            namespace: "t".into(),
            name: "p".into(),
            generation: None,
            spec: serde_yaml::from_str("image: small").unwrap(),
            node: Default::default(),
            conditions: vec![Desired::new(
                condition::READY,
                false,
                reason,
                "running the languages' smoke tests on this host",
            )],
            observed: Vec::new(),
        }
    }

    fn rejection(kind: &'static str, name: &str, kept: bool) -> Rejection {
        Rejection {
            file: "pools.yaml".into(),
            document: 1,
            kind,
            name: name.into(),
            message: "unknown field \"spec.wram\"".into(),
            kept,
        }
    }

    #[test]
    fn pools_list_rejected_documents() {
        let rejected = [
            rejection("ExecutorPool", "t/p", true),
            rejection("LanguageImage", "small", true),
            rejection("ExecutorPool", "t/new", false),
            rejection("LanguageImage", "unused", false),
        ];
        let view = pools_view(vec![report(condition::Reason::Warm)], |_| vec![], &rejected);
        let list = view.as_array().unwrap();
        assert_eq!(list.len(), 2, "{view}");
        let kept = &list[0]["status"]["rejected"];
        assert_eq!(kept.as_array().unwrap().len(), 2, "{view}");
        assert_eq!(kept[0]["file"], "pools.yaml");
        assert_eq!(kept[0]["document"], 1);
        assert_eq!(kept[0]["kept"], true);
        assert!(kept[0]["message"].as_str().unwrap().contains("spec.wram"));
        assert_eq!(list[1]["metadata"]["name"], "new");
        assert_eq!(list[1]["status"]["conditions"][0]["reason"], "Rejected");
        assert_eq!(list[1]["status"]["conditions"][0]["status"], "False");

        let clean = pools_view(vec![report(condition::Reason::Warm)], |_| vec![], &[]);
        assert!(clean[0]["status"].get("rejected").is_none(), "{clean}");
    }

    #[test]
    fn ready_only_while_some_language_is_served() {
        let (status, body) = readiness(&[], vec![]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);

        let (status, body) = readiness(&[], vec![report(condition::Reason::ProvingLanguages)]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["pools"][0]["pool"], "t/p");
        assert_eq!(body["pools"][0]["reason"], "ProvingLanguages");

        let serving = [Serving {
            pool: "t/p".into(),
            languages: vec!["python".into()],
        }];
        let (status, body) = readiness(&serving, vec![report(condition::Reason::Warm)]);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["serving"][0]["languages"][0], "python");
    }
}
