//! Read-only endpoints: languages, pools, health, readiness, metrics.

mod bodies;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::agent::status::{self, Serving};
use crate::agent::{CatalogEntry, PoolReport};
use crate::crd::condition::{self, Condition};
use crate::standalone::Rejection;

use super::AppState;
use super::openapi::AuthErrors;

use bodies::{
    ApiVersion, Health, HealthStatus, Kind, Language, LanguagePool, PoolEntry, Readiness,
    RejectedDocument, RejectedMetadata, RejectedPool, RejectedStatus, ServedMetadata, ServedPool,
    ServedStatus, UnreadyPool, Waiting,
};

/// `GET /languages`: every language served here, with its pools.
#[utoipa::path(
    get,
    path = "/languages",
    tag = "info",
    responses(
        (status = 200, description = "The languages served here", body = Vec<Language>),
        AuthErrors,
    )
)]
pub async fn languages(State(app): State<AppState>) -> Json<Vec<Language>> {
    Json(app.agent.catalog().into_iter().map(language).collect())
}

/// A catalog entry as `/languages` lists it. Pure.
fn language(e: CatalogEntry) -> Language {
    Language {
        name: e.name,
        aliases: e.aliases,
        version: e.version,
        pools: e
            .pools
            .into_iter()
            .map(|(pool, network, warm)| LanguagePool {
                pool,
                network,
                warm,
            })
            .collect(),
    }
}

/// `GET /pools`: each pool as this host sees it, shaped like an ExecutorPool
/// with its status; in standalone mode with the documents of the files that
/// are rejected (see `pools_view`).
#[utoipa::path(
    get,
    path = "/pools",
    tag = "info",
    responses(
        (status = 200, description = "Each pool as this host sees it", body = Vec<PoolEntry>),
        AuthErrors,
    )
)]
pub async fn pools(State(app): State<AppState>) -> Json<Vec<PoolEntry>> {
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
) -> Vec<PoolEntry> {
    let mut listed = Vec::new();
    let mut list: Vec<PoolEntry> = reports
        .into_iter()
        .map(|r| {
            let key = format!("{}/{}", r.namespace, r.name);
            let about: Vec<RejectedDocument> = rejected
                .iter()
                .filter(|x| {
                    (x.kind == "ExecutorPool" && x.name == key)
                        || (x.kind == "LanguageImage" && x.name == r.spec.image)
                })
                .cloned()
                .map(RejectedDocument::from)
                .collect();
            let conditions = stamp(&r);
            listed.push(key);
            PoolEntry::Served(Box::new(ServedPool {
                api_version: ApiVersion::V1alpha1,
                kind: Kind::ExecutorPool,
                metadata: ServedMetadata {
                    name: r.name,
                    namespace: r.namespace,
                    generation: r.generation,
                },
                spec: r.spec,
                status: ServedStatus {
                    observed_generation: r.generation,
                    warm: r.node.warm,
                    busy: r.node.busy,
                    nodes_ready: format!("{}/1", u8::from(r.node.ready)),
                    conditions,
                    nodes: vec![r.node],
                    rejected: about,
                },
            }))
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
        list.push(PoolEntry::Rejected(RejectedPool {
            api_version: ApiVersion::V1alpha1,
            kind: Kind::ExecutorPool,
            metadata: RejectedMetadata {
                name: name.to_string(),
                namespace: namespace.to_string(),
            },
            status: RejectedStatus {
                conditions: ready,
                rejected: vec![RejectedDocument::from(x.clone())],
            },
        }));
    }
    list
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "info",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// `GET /readyz`: 200 while this host serves something (at least one
/// language of a ready pool), saying what; else 503, saying why each pool
/// is not ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "info",
    responses(
        (status = 200, description = "What this host serves", body = Readiness),
        (status = 503, description = "Why this host serves nothing", body = Readiness),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let (status, body) = readiness(
        app.agent.serving(),
        app.agent.reports(),
        app.agent.draining(),
    );
    (status, Json(body))
}

/// The readiness answer from what is served and each pool's report, and
/// whether the host is draining. Pure.
fn readiness(
    serving: Vec<Serving>,
    reports: Vec<PoolReport>,
    draining: bool,
) -> (StatusCode, Readiness) {
    if draining {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Readiness::waiting(Waiting::Draining, vec![]),
        );
    }
    if !serving.is_empty() {
        return (StatusCode::OK, Readiness::serving(serving));
    }
    let pools: Vec<UnreadyPool> = reports
        .into_iter()
        .filter_map(|r| {
            let ready = r
                .conditions
                .into_iter()
                .find(|c| c.type_ == condition::READY)?;
            Some(UnreadyPool {
                pool: format!("{}/{}", r.namespace, r.name),
                reason: ready.reason,
                message: ready.message,
            })
        })
        .collect();
    let message = if pools.is_empty() {
        Waiting::NoPool
    } else {
        Waiting::NoLanguage
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Readiness::waiting(message, pools),
    )
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "info",
    responses((
        status = 200,
        description = "Prometheus metrics, OpenMetrics text format",
        body = String,
        content_type = "application/openmetrics-text"
    ))
)]
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
    use serde_json::Value;

    fn value(v: impl serde::Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn ready(serving: Vec<Serving>, reports: Vec<PoolReport>) -> (StatusCode, Value) {
        let (status, body) = readiness(serving, reports, false);
        (status, value(body))
    }

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
        let view = value(pools_view(
            vec![report(condition::Reason::Warm)],
            |_| vec![],
            &rejected,
        ));
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

        let clean = value(pools_view(
            vec![report(condition::Reason::Warm)],
            |_| vec![],
            &[],
        ));
        assert!(clean[0]["status"].get("rejected").is_none(), "{clean}");
    }

    #[test]
    fn ready_only_while_some_language_is_served() {
        let (status, body) = ready(vec![], vec![]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);

        let (status, body) = ready(vec![], vec![report(condition::Reason::ProvingLanguages)]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["pools"][0]["pool"], "t/p");
        assert_eq!(body["pools"][0]["reason"], "ProvingLanguages");

        let serving = vec![Serving {
            pool: "t/p".into(),
            languages: vec!["python".into()],
        }];
        let (status, body) = ready(serving.clone(), vec![report(condition::Reason::Warm)]);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["serving"][0]["languages"][0], "python");

        // Draining: not ready, whatever is served, and it says why.
        let (status, body) = readiness(serving, vec![], true);
        let body = value(body);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert!(
            body["message"].as_str().unwrap().starts_with("draining"),
            "{body}"
        );
    }

    #[test]
    fn languages_list_each_pool_with_tier_and_warm_count() {
        let entry = CatalogEntry {
            name: "python".into(),
            aliases: vec!["py".into()],
            version: None,
            extensions: vec![],
            pools: vec![("t/p".into(), crate::crd::NetworkTier::Zerotrust, 2)],
        };
        assert_eq!(
            value(language(entry)),
            serde_json::json!({"name": "python", "aliases": ["py"], "version": null,
                "pools": [{"pool": "t/p", "network": "zerotrust", "warm": 2}]})
        );
        assert_eq!(
            value(Health {
                status: HealthStatus::Ok
            }),
            serde_json::json!({"status": "ok"})
        );
    }

    #[test]
    fn readiness_bodies_have_their_fixed_words() {
        let (_, body) = ready(vec![], vec![]);
        assert_eq!(
            body,
            serde_json::json!({"ready": false, "pools": [], "message":
                "this host has no pool to serve (none covers it, or its pools are not listed yet)"})
        );
        let (_, body) = ready(vec![], vec![report(condition::Reason::ProvingLanguages)]);
        assert_eq!(
            body,
            serde_json::json!({"ready": false,
                "message": "no pool on this host serves a language yet",
                "pools": [{"pool": "t/p", "reason": "ProvingLanguages",
                    "message": "running the languages' smoke tests on this host"}]})
        );
        let serving = vec![Serving {
            pool: "t/p".into(),
            languages: vec!["python".into()],
        }];
        let (_, body) = ready(serving, vec![]);
        assert_eq!(
            body,
            serde_json::json!({"ready": true, "serving": [{"pool": "t/p", "languages": ["python"]}]})
        );
    }

    #[test]
    fn pools_are_shaped_like_executor_pools() {
        let view = value(pools_view(
            vec![report(condition::Reason::Warm)],
            |_| vec![],
            &[rejection("ExecutorPool", "t/gone", false)],
        ));
        let served = &view[0];
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(served),
            ["apiVersion", "kind", "metadata", "spec", "status"]
        );
        assert_eq!(served["apiVersion"], "unsandbox.com/v1alpha1");
        assert_eq!(served["kind"], "ExecutorPool");
        assert_eq!(
            served["metadata"],
            serde_json::json!({"name": "p", "namespace": "t", "generation": null})
        );
        assert_eq!(
            keys(&served["status"]),
            [
                "busy",
                "conditions",
                "nodes",
                "nodesReady",
                "observedGeneration",
                "warm"
            ]
        );
        assert_eq!(served["status"]["observedGeneration"], Value::Null);
        assert_eq!(served["status"]["nodesReady"], "0/1");
        assert_eq!(served["status"]["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(served["spec"]["image"], "small");
        let rejected = &view[1];
        assert_eq!(keys(rejected), ["apiVersion", "kind", "metadata", "status"]);
        assert_eq!(
            rejected["metadata"],
            serde_json::json!({"name": "gone", "namespace": "t"})
        );
        assert_eq!(keys(&rejected["status"]), ["conditions", "rejected"]);
    }

    #[test]
    fn bodies_conform_to_the_contract() {
        use crate::api::openapi::conformance::assert_conforms;
        let serving = vec![Serving {
            pool: "t/p".into(),
            languages: vec!["python".into()],
        }];
        let reports = || vec![report(condition::Reason::ProvingLanguages)];
        for (serving, reports, draining) in [
            (serving, vec![], false),
            (vec![], reports(), false),
            (vec![], vec![], false),
            (vec![], reports(), true),
        ] {
            let (_, body) = readiness(serving, reports, draining);
            assert_conforms("Readiness", &value(body));
        }
        let stamp = |r: &PoolReport| status::stamped(&r.observed, &r.conditions, r.generation);
        let view = pools_view(
            vec![report(condition::Reason::Warm)],
            stamp,
            &[
                rejection("ExecutorPool", "t/p", true),
                rejection("ExecutorPool", "t/gone", false),
            ],
        );
        assert_eq!(view.len(), 2);
        for entry in view {
            assert_conforms("PoolEntry", &value(entry));
        }
        let entry = CatalogEntry {
            name: "python".into(),
            aliases: vec!["py".into()],
            version: Some("3.11.2".into()),
            extensions: vec![],
            pools: vec![("t/p".into(), crate::crd::NetworkTier::Zerotrust, 2)],
        };
        assert_conforms("Language", &value(language(entry)));
        assert_conforms(
            "Health",
            &value(Health {
                status: HealthStatus::Ok,
            }),
        );
    }
}
