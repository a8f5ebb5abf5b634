//! `POST /execute/{language}` and `POST /run`: validate, choose a pool, take
//! a warm container, run, destroy it, answer.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::json;
use tracing::Instrument;

use crate::agent::{AcquireError, ChoiceError};
use crate::crd::validate::valid_file_name;
use crate::execution::{self, Job, Status};
use crate::languages::detect;
use crate::metrics::{ExecLabels, PoolLabels, RouteLabels};

use super::AppState;
use super::error::ApiError;
use super::forward::FORWARDED_BY;
use super::types::{DetectionReport, ExecuteRequest, ExecuteResponse, Timings};

const MAX_FILES: usize = 64;
const MAX_ARGS: usize = 256;

pub async fn execute_language(
    State(app): State<AppState>,
    Path(language): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let started = Instant::now();
    let forwarded = headers.contains_key(FORWARDED_BY);
    let result = async {
        let Json(req) = body?;
        if req
            .language
            .as_deref()
            .is_some_and(|l| !l.eq_ignore_ascii_case(&language))
        {
            return Err(ApiError::invalid(
                "`language` in the body differs from the one in the path",
            ));
        }
        execute(&app, &language, req, None, started, forwarded).await
    }
    .await;
    count_rejection(&app, "execute", &result);
    result.map(Json)
}

pub async fn run(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let started = Instant::now();
    let forwarded = headers.contains_key(FORWARDED_BY);
    let result = async {
        let Json(req) = body?;
        let (language, report) = match &req.language {
            Some(l) => (l.clone(), DetectionReport { method: "request".into(), confidence: 1.0, alternatives: vec![] }),
            None => {
                let catalog = app.agent.catalog();
                let d = detect::detect(&req.code, &catalog).ok_or_else(|| {
                    ApiError::invalid("could not tell the language of this code; name it in `language` or use /execute/{language}")
                        .with(json!({"available": catalog.iter().map(|e| &e.name).collect::<Vec<_>>()}))
                })?;
                let report = DetectionReport {
                    method: d.method.to_string(),
                    confidence: d.confidence,
                    alternatives: d.alternatives,
                };
                (d.language, report)
            }
        };
        execute(&app, &language, req, Some(report), started, forwarded).await
    }
    .await;
    count_rejection(&app, "run", &result);
    result.map(Json)
}

fn count_rejection(app: &AppState, route: &str, result: &Result<ExecuteResponse, ApiError>) {
    if let Err(e) = result {
        let labels = RouteLabels {
            route: route.to_string(),
            code: e.status.as_u16().to_string(),
        };
        app.agent.metrics().rejected.get_or_create(&labels).inc();
    }
}

fn decode_files(
    req: &ExecuteRequest,
    source_file: &str,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    if req.files.len() > MAX_FILES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_FILES} files may be sent"
        )));
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, f) in req.files.iter().enumerate() {
        if !valid_file_name(&f.name) {
            return Err(ApiError::invalid(format!(
                "files[{i}].name {:?}: a plain file name of letters, digits, '.', '_' and '-', not starting with '.'",
                f.name
            )));
        }
        if f.name == source_file || out.iter().any(|(n, _)| n == &f.name) {
            return Err(ApiError::invalid(format!(
                "files[{i}].name {:?} is used twice",
                f.name
            )));
        }
        let bytes = match f.encoding.as_deref().unwrap_or("utf8") {
            "utf8" | "utf-8" => f.content.as_bytes().to_vec(),
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(&f.content)
                .map_err(|e| {
                    ApiError::invalid(format!("files[{i}].content is not valid base64: {e}"))
                })?,
            other => {
                return Err(ApiError::invalid(format!(
                    "files[{i}].encoding {other:?}: use utf8 or base64"
                )));
            }
        };
        out.push((f.name.clone(), bytes));
    }
    Ok(out)
}

fn limit(name: &str, value: Result<u64, u64>, requested: Option<u64>) -> Result<u64, ApiError> {
    match (value, requested) {
        (_, Some(0)) => Err(ApiError::invalid(format!("{name} must be at least 1"))),
        (Ok(v), _) => Ok(v),
        (Err(max), Some(asked)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_exceeds_maximum",
            format!("{name} {asked} is above this pool's maximum of {max}"),
        )
        .with(json!({"field": name, "maximum": max}))),
        (Err(max), None) => Ok(max),
    }
}

/// Runs one request end to end.
pub(crate) async fn execute(
    app: &AppState,
    language: &str,
    req: ExecuteRequest,
    detected: Option<DetectionReport>,
    started: Instant,
    forwarded: bool,
) -> Result<ExecuteResponse, ApiError> {
    let tier = req.network.unwrap_or_default();
    let local = app.agent.choose(language, tier);
    let local_warm = local
        .as_ref()
        .map(|c| app.agent.warm_of(&c.pool))
        .unwrap_or(0);
    if let (Some(fw), false, 0) = (&app.forwarder, forwarded, local_warm) {
        for peer in fw.peers.candidates(language, tier).into_iter().take(2) {
            match fw.execute(&peer, language, &req, app.agent.node()).await {
                Ok(mut resp) => {
                    resp.detected = detected;
                    resp.timings.total_ms = started.elapsed().as_millis() as u64;
                    return Ok(resp);
                }
                Err(e) => tracing::warn!(error = %e, "forwarding failed; trying elsewhere"),
            }
        }
    }
    let choice = local.map_err(|e| match e {
        ChoiceError::UnknownLanguage { ref available, .. } => {
            let available = available.clone();
            ApiError::new(StatusCode::NOT_FOUND, "unknown_language", e.to_string())
                .with(json!({"available": available}))
        }
        ChoiceError::NoPool { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "network_unavailable",
            e.to_string(),
        ),
    })?;
    let ex = &choice.spec.execution;
    let wall = limit(
        "timeout_ms",
        ex.wall_time_ms.resolve(req.timeout_ms),
        req.timeout_ms,
    )?;
    let cap = limit(
        "max_output_bytes",
        ex.output_bytes.resolve(req.max_output_bytes),
        req.max_output_bytes,
    )?;
    if req.args.len() > MAX_ARGS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_ARGS} args may be sent"
        )));
    }
    if req.args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("args must not contain NUL bytes"));
    }
    let files = decode_files(&req, &choice.language.source_file)?;
    let job = Job {
        language: choice.language.clone(),
        code: req.code,
        files,
        stdin: req.stdin.into_bytes(),
        args: req.args,
    };
    let deadline = started + Duration::from_millis(ex.queue_timeout_ms);
    let lease = app
        .agent
        .acquire(&choice.pool, deadline)
        .await
        .map_err(|e| match e {
            AcquireError::NoCapacity(_) => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_capacity",
                    format!("{e}; retry shortly"),
                );
                err.retry_after = Some(1);
                err
            }
            AcquireError::PoolGone(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "pool_unavailable",
                e.to_string(),
            ),
        })?;
    let span = tracing::info_span!("execute", pool = %lease.pool, container = %lease.container, language = %choice.language.name);
    let outcome = execution::run(
        app.agent.lxd(),
        &lease.container,
        &job,
        Duration::from_millis(wall),
        cap as usize,
    )
    .instrument(span)
    .await;
    let container = lease.container.clone();
    let queue_ms = lease.queued.as_millis() as u64;
    drop(lease);
    let outcome = outcome.unwrap_or_else(|e| {
        tracing::error!(container, error = %e, "execution failed inside unsandbox");
        execution::Outcome {
            status: Status::InternalError,
            exit_code: None,
            signal: None,
            stdout: vec![],
            stderr: vec![],
            stdout_truncated: false,
            stderr_truncated: false,
            exec_ms: 0,
            message: Some("the container could not run the code; it was destroyed".into()),
        }
    });
    let m = app.agent.metrics();
    let pool_labels = PoolLabels {
        pool: choice.pool.clone(),
    };
    m.queue_seconds
        .get_or_create(&pool_labels)
        .observe(queue_ms as f64 / 1000.0);
    m.execution_seconds
        .get_or_create(&pool_labels)
        .observe(outcome.exec_ms as f64 / 1000.0);
    m.executions
        .get_or_create(&ExecLabels {
            language: choice.language.name.clone(),
            pool: choice.pool.clone(),
            status: outcome.status.as_str().to_string(),
        })
        .inc();
    Ok(ExecuteResponse {
        status: outcome.status.as_str().to_string(),
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        stdout_truncated: outcome.stdout_truncated,
        stderr_truncated: outcome.stderr_truncated,
        language: choice.language.name,
        pool: choice.pool,
        host: app.agent.node().to_string(),
        container,
        network: tier,
        timings: Timings {
            queue_ms,
            exec_ms: outcome.exec_ms,
            total_ms: started.elapsed().as_millis() as u64,
        },
        detected,
        message: outcome.message,
    })
}
