//! `POST /batch`: up to `--batch-max-items` executions in one request, run
//! in parallel as far as the caller's quota allows, answered in order. Each
//! item is a `/run` body and gets the answer `/run` would give it, a
//! refusal included: one item's failure never fails the others.
//!
//! The first item runs on the request's own slot of the caller's quota;
//! each further item takes a slot of its own (and costs rate, as a request
//! does) when it starts. An item that finds the caller at its concurrency
//! limit waits for one of the batch's items to end, or, with none of them
//! running, for any of the caller's executions, up to `WAIT_FOR_SLOT`.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::execute::{count_rejection_of, execute, language_of};
use super::openapi::{AuthErrors, ExecutionErrors};
use super::types::{ExecuteRequest, ExecuteResponse, Object};
use crate::auth::Caller;
use crate::http_error::ErrorBody;

/// How long an item waits for a slot of the caller's quota.
const WAIT_FOR_SLOT: Duration = Duration::from_secs(30);

/// `POST /batch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The executions: `/run` bodies (the language named or detected).
    #[serde(deserialize_with = "super::types::objects")]
    pub items: Vec<ExecuteRequest>,
}

/// One item's answer: what `/run` would have answered it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchItem {
    /// The HTTP status `/run` would have answered.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ExecuteResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl BatchItem {
    fn of(result: Result<ExecuteResponse, ApiError>) -> Self {
        match result {
            Ok(r) => Self {
                status: 200,
                result: Some(r),
                error: None,
            },
            Err(e) => Self {
                status: e.status.as_u16(),
                result: None,
                error: Some(e.body()),
            },
        }
    }
}

/// The answers of a batch, in the order of its items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchResponse {
    pub items: Vec<BatchItem>,
}

/// `POST /batch`: runs several executions and answers them in order.
#[utoipa::path(
    post,
    path = "/batch",
    tag = "native",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One answer per item, in order; each item's `status` is what `/run` would have answered", body = BatchResponse),
        ExecutionErrors,
        AuthErrors,
    )
)]
pub async fn batch(
    State(app): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Json<Object<BatchRequest>>, JsonRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let started = Instant::now();
    let result = async {
        let Json(Object(req)) = body?;
        let max = app.batch_max_items;
        if req.items.is_empty() || req.items.len() > max {
            return Err(ApiError::invalid(format!(
                "items: a batch holds 1 to {max} executions, not {}",
                req.items.len()
            )));
        }
        if let Some((i, field)) = req
            .items
            .iter()
            .enumerate()
            .find_map(|(i, item)| out_of_range(item).map(|f| (i, f)))
        {
            return Err(ApiError::invalid(format!(
                "items[{i}].{field}: above {}, the largest integer the contract allows",
                i64::MAX
            )));
        }
        let caller = caller.map(|c| c.0);
        Ok(run_all(&app, caller.as_ref(), req.items, started).await)
    }
    .await;
    count_rejection_of(&app, "batch", result.as_ref().err());
    result.map(Json)
}

/// A limit of `item` past the contract's integers (`int64`): the whole
/// batch is malformed then, where a limit above a pool's maximum is only
/// that item's refusal.
fn out_of_range(item: &ExecuteRequest) -> Option<&'static str> {
    [
        ("timeout_ms", item.timeout_ms),
        ("compile_timeout_ms", item.compile_timeout_ms),
        ("memory_mib", item.memory_mib),
        ("compile_memory_mib", item.compile_memory_mib),
        ("max_output_bytes", item.max_output_bytes),
    ]
    .into_iter()
    .find(|(_, v)| v.is_some_and(|v| v > i64::MAX as u64))
    .map(|(field, _)| field)
}

async fn run_all(
    app: &AppState,
    caller: Option<&Caller>,
    items: Vec<ExecuteRequest>,
    started: Instant,
) -> BatchResponse {
    let caps = caller.map(|c| c.quota.clone()).unwrap_or_default();
    let mut answers: Vec<Option<BatchItem>> = vec![None; items.len()];
    let mut running = FuturesUnordered::new();
    for (index, item) in items.into_iter().enumerate() {
        // The first item has the request's slot; the others take their own.
        let mut slot = None;
        if index > 0
            && let Some(caller) = caller
        {
            let deadline = Instant::now() + WAIT_FOR_SLOT;
            loop {
                match caller.admit_more() {
                    Ok(s) => {
                        slot = s;
                        break;
                    }
                    Err(e) if caller.at_concurrency_limit() && Instant::now() < deadline => {
                        // Wait for one of ours to end, else poll briefly.
                        match running.next().await {
                            Some((i, answer)) => answers[i] = Some(answer),
                            None => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                        let _ = e;
                    }
                    Err(e) => {
                        answers[index] = Some(BatchItem::of(Err(e)));
                        break;
                    }
                }
            }
            if answers[index].is_some() {
                continue;
            }
        }
        let (app, caps) = (app.clone(), caps.clone());
        running.push(async move {
            let answer = one(&app, item, started, caps).await;
            drop(slot);
            (index, BatchItem::of(answer))
        });
    }
    while let Some((i, answer)) = running.next().await {
        answers[i] = Some(answer);
    }
    BatchResponse {
        items: answers
            .into_iter()
            .map(|a| a.expect("every item is answered"))
            .collect(),
    }
}

/// One item, as `/run` runs it.
async fn one(
    app: &AppState,
    item: ExecuteRequest,
    started: Instant,
    caps: crate::auth::Quota,
) -> Result<ExecuteResponse, ApiError> {
    let (language, report) = language_of(app, &item)?;
    execute(
        app,
        &language,
        item,
        Some(report),
        started,
        false,
        caps,
        None,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn an_item_answer_is_the_result_or_the_refusal() {
        let refused = BatchItem::of(Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_language",
            "x",
        )));
        assert_eq!(refused.status, 404);
        assert_eq!(refused.error.unwrap().error, "unknown_language");
        assert!(refused.result.is_none());
    }

    #[test]
    fn a_limit_past_the_contracts_integers_is_malformed() {
        let item = |v: u64| -> ExecuteRequest {
            serde_json::from_value(serde_json::json!({"code": "1", "compile_timeout_ms": v}))
                .unwrap()
        };
        assert_eq!(out_of_range(&item(1 << 63)), Some("compile_timeout_ms"));
        assert_eq!(out_of_range(&item(i64::MAX as u64)), None);
    }

    #[test]
    fn items_must_be_objects() {
        let ok: Object<BatchRequest> =
            serde_json::from_value(serde_json::json!({"items": [{"code": "1"}]})).unwrap();
        assert_eq!(ok.0.items.len(), 1);
        assert!(
            serde_json::from_value::<Object<BatchRequest>>(serde_json::json!({"items": [["1"]]}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<Object<BatchRequest>>(
                serde_json::json!({"items": [], "x": 1})
            )
            .is_err()
        );
    }
}
