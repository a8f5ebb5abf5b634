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

use crate::crd::validate::file_name_problem;
use crate::execution::{self, Job};
use crate::languages::detect;
use crate::metrics::{ExecLabels, PoolLabels, RouteLabels};

use super::AppState;
use super::error::ApiError;
use super::forward::FORWARDED_BY;
use super::types::{
    CompileReport, DetectionReport, ExecuteRequest, ExecuteResponse, OutputEncoding, Timings,
};

const MAX_FILES: usize = 64;
const MAX_ARGS: usize = 256;
/// The most standard input one execution may be given, in bytes.
const MAX_STDIN_BYTES: usize = 1 << 20;

pub async fn execute_language(
    State(app): State<AppState>,
    Path(language): Path<String>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let started = Instant::now();
    let forwarded = headers.contains_key(FORWARDED_BY);
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
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
        execute(&app, &language, req, None, started, forwarded, caps).await
    }
    .await;
    count_rejection(&app, "execute", &result);
    result.map(Json)
}

pub async fn run(
    State(app): State<AppState>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let started = Instant::now();
    let forwarded = headers.contains_key(FORWARDED_BY);
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
    let result = async {
        let Json(req) = body?;
        let (language, report) = match &req.language {
            Some(l) => (l.clone(), DetectionReport { method: "request".into(), confidence: 1.0, alternatives: vec![] }),
            None => {
                let catalog = app.agent.catalog();
                let d = detect::detect(&req.code, &catalog).ok_or_else(|| {
                    // Languages not proven yet cannot be detected either.
                    if let Some(b) = app.agent.pending() {
                        return ApiError::blocked(&b, format!("cannot detect the language yet: {b}"));
                    }
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
        execute(&app, &language, req, Some(report), started, forwarded, caps).await
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
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, f) in req.files.iter().enumerate() {
        if let Some(problem) = file_name_problem(&f.name) {
            let shown: String = f.name.chars().take(64).collect();
            return Err(ApiError::invalid(format!(
                "files[{i}].name {shown:?}: {problem}"
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

/// The least memory, in MiB, a stage may be given (the CRD's floor for
/// `limits.memoryMib`).
const MIN_MEMORY_MIB: u64 = 32;

/// The effective value of a limit: the pool's `value` (`Err(max)` when the
/// request asked for more than the pool's maximum), refused below `floor`.
fn limit(
    name: &str,
    value: Result<u64, u64>,
    requested: Option<u64>,
    floor: u64,
) -> Result<u64, ApiError> {
    match (value, requested) {
        (_, Some(v)) if v < floor => Err(ApiError::invalid(format!(
            "{name} must be at least {floor}"
        ))),
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

/// An execution request, whatever API it came through: decoded, not yet
/// checked against a pool's limits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Submission {
    pub code: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    pub run_timeout_ms: Option<u64>,
    pub compile_timeout_ms: Option<u64>,
    pub output_bytes: Option<u64>,
    pub memory_mib: Option<u64>,
    pub compile_memory_mib: Option<u64>,
    /// The caller's quota: limits left to the pool are capped at its maxima.
    pub caps: crate::auth::Quota,
}

/// A finished local execution, with where it ran.
#[derive(Debug)]
pub(crate) struct Ran {
    pub outcome: execution::Outcome,
    pub choice: crate::agent::Choice,
    pub container: String,
    pub queue_ms: u64,
}

/// The limits of both stages for a submission to the chosen pool.
fn stage_limits(
    spec: &crate::crd::ExecutorPoolSpec,
    sub: &Submission,
) -> Result<execution::Limits, ApiError> {
    let ex = &spec.execution;
    let l = &spec.limits;
    let cap = limit(
        "max_output_bytes",
        ex.output_bytes.resolve(sub.output_bytes),
        sub.output_bytes,
        1,
    )?;
    let wall = limit(
        "timeout_ms",
        ex.wall_time_ms.resolve(sub.run_timeout_ms),
        sub.run_timeout_ms,
        1,
    )?;
    let compile_wall = limit(
        "compile_timeout_ms",
        ex.compile_time_ms.resolve(sub.compile_timeout_ms),
        sub.compile_timeout_ms,
        1,
    )?;
    let pool_memory = u64::from(l.memory_mib);
    let pool_compile_memory = u64::from(l.compile_memory_mib.unwrap_or(l.memory_mib));
    let memory = limit(
        "memory_mib",
        at_most(pool_memory, sub.memory_mib),
        sub.memory_mib,
        MIN_MEMORY_MIB,
    )?;
    let compile_memory = limit(
        "compile_memory_mib",
        at_most(pool_compile_memory, sub.compile_memory_mib),
        sub.compile_memory_mib,
        MIN_MEMORY_MIB,
    )?;
    for (name, v) in [
        ("memory_mib", memory),
        ("compile_memory_mib", compile_memory),
    ] {
        if v < MIN_MEMORY_MIB {
            return Err(ApiError::invalid(format!(
                "{name} must be at least {MIN_MEMORY_MIB}"
            )));
        }
    }
    Ok(execution::Limits {
        compile: execution::StageLimits {
            wall: Duration::from_millis(compile_wall),
            output_cap: cap as usize,
            memory_mib: compile_memory as u32,
        },
        run: execution::StageLimits {
            wall: Duration::from_millis(wall),
            output_cap: cap as usize,
            memory_mib: memory as u32,
        },
        launched_memory_mib: l.memory_mib,
    })
}

/// A limit whose default is its maximum.
fn at_most(max: u64, requested: Option<u64>) -> Result<u64, u64> {
    match requested {
        None => Ok(max),
        Some(v) if v <= max => Ok(v),
        Some(_) => Err(max),
    }
}

/// Runs a submission on this host: checks it against the chosen pool,
/// takes a warm container, runs the stages, destroys the container.
pub(crate) async fn run_local(
    app: &AppState,
    choice: crate::agent::Choice,
    sub: Submission,
    started: Instant,
) -> Result<Ran, ApiError> {
    let mut limits = stage_limits(&choice.spec, &sub)?;
    crate::auth::cap_limits(&mut limits, &sub.caps);
    if sub.args.len() > MAX_ARGS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_ARGS} args may be sent"
        )));
    }
    if sub.stdin.len() > MAX_STDIN_BYTES {
        return Err(ApiError::invalid(format!(
            "stdin may be at most {MAX_STDIN_BYTES} bytes"
        )));
    }
    if sub.args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("args must not contain NUL bytes"));
    }
    if sub
        .files
        .iter()
        .any(|(n, _)| n == &choice.language.source_file)
    {
        return Err(ApiError::invalid(format!(
            "a file may not be named {:?}: the source goes there",
            choice.language.source_file
        )));
    }
    let job = Job {
        language: choice.language.clone(),
        code: sub.code,
        files: sub.files,
        stdin: sub.stdin,
        args: sub.args,
        subdir: None,
    };
    let deadline = started + Duration::from_millis(choice.spec.execution.queue_timeout_ms);
    // LXD before 5.14 can drop the end of an exec's output on a busy host;
    // the code then runs once more, in a fresh container: it has no network
    // and nothing outlives its container, so a second run changes nothing
    // but the answer.
    let mut attempts = 0;
    let (outcome, container, queue_ms) = loop {
        attempts += 1;
        let lease = app
            .agent
            .acquire(&choice.pool, deadline)
            .await
            .map_err(ApiError::from)?;
        let span = tracing::info_span!("execute", pool = %lease.pool, container = %lease.container, language = %choice.language.name);
        let outcome = execution::run(app.agent.lxd(), &lease.container, &job, &limits)
            .instrument(span)
            .await;
        let container = lease.container.clone();
        let queue_ms = lease.queued.as_millis() as u64;
        drop(lease);
        match outcome {
            Err(e) if attempts < 2 && execution::retryable(&e) => {
                tracing::warn!(
                    container,
                    error = %e,
                    "the code's answer was lost (output cut, or the container was not running); running it again in a fresh container"
                );
            }
            Ok(o) => break (o, container, queue_ms),
            Err(e) => {
                tracing::error!(container, error = %e, "execution failed inside unsandbox");
                let o = execution::Outcome::internal(
                    "the container could not run the code; it was destroyed",
                );
                break (o, container, queue_ms);
            }
        }
    };
    let m = app.agent.metrics();
    let pool_labels = PoolLabels {
        pool: choice.pool.clone(),
    };
    m.queue_seconds
        .get_or_create(&pool_labels)
        .observe(queue_ms as f64 / 1000.0);
    m.execution_seconds
        .get_or_create(&pool_labels)
        .observe(outcome.exec_ms() as f64 / 1000.0);
    m.executions
        .get_or_create(&ExecLabels {
            language: choice.language.name.clone(),
            pool: choice.pool.clone(),
            status: outcome.status.as_str().to_string(),
        })
        .inc();
    Ok(Ran {
        outcome,
        choice,
        container,
        queue_ms,
    })
}

/// The pool for `language` and `tier` on this host, as an API error when none.
pub(crate) fn choose(
    app: &AppState,
    language: &str,
    tier: crate::crd::NetworkTier,
) -> Result<crate::agent::Choice, ApiError> {
    Ok(app.agent.choose(language, tier)?)
}

/// Runs one native request end to end, forwarding it to a peer host when
/// this one has no warm container for it.
pub(crate) async fn execute(
    app: &AppState,
    language: &str,
    req: ExecuteRequest,
    detected: Option<DetectionReport>,
    started: Instant,
    forwarded: bool,
    caps: crate::auth::Quota,
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
    let choice = choose(app, language, tier)?;
    if req.files.len() > MAX_FILES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_FILES} files may be sent"
        )));
    }
    let files = decode_files(&req, &choice.language.source_file)?;
    let encoding = req.output_encoding.unwrap_or_default();
    let text = |b: &[u8]| encoding.encode(b);
    let sub = Submission {
        files,
        stdin: req.stdin.into_bytes(),
        args: req.args,
        run_timeout_ms: req.timeout_ms,
        compile_timeout_ms: req.compile_timeout_ms,
        output_bytes: req.max_output_bytes,
        memory_mib: req.memory_mib,
        compile_memory_mib: req.compile_memory_mib,
        code: req.code,
        caps,
    };
    let ran = run_local(app, choice, sub, started).await?;
    let o = &ran.outcome;
    let last = o.last_stage().cloned().unwrap_or_default();
    let compile = o.compile.as_ref().map(|c| CompileReport {
        status: c.status.as_str().to_string(),
        stdout: text(&c.stdout),
        stderr: text(&c.stderr),
        exit_code: c.exit_code,
        signal: c.signal,
        stdout_truncated: c.stdout_truncated,
        stderr_truncated: c.stderr_truncated,
        message: c.message.clone(),
        cpu_ms: c.cpu_ms,
        memory_bytes: c.memory_bytes,
    });
    let stages = || o.compile.iter().chain(&o.run);
    Ok(ExecuteResponse {
        status: o.status.as_str().to_string(),
        stdout: text(&last.stdout),
        stderr: text(&last.stderr),
        exit_code: last.exit_code,
        signal: last.signal,
        stdout_truncated: last.stdout_truncated,
        stderr_truncated: last.stderr_truncated,
        language: ran.choice.language.name,
        pool: ran.choice.pool,
        host: app.agent.node().to_string(),
        container: ran.container,
        network: tier,
        timings: Timings {
            queue_ms: ran.queue_ms,
            exec_ms: o.exec_ms(),
            compile_ms: o.compile.as_ref().map(|c| c.exec_ms),
            run_ms: o.run.as_ref().map(|r| r.exec_ms),
            cpu_ms: stages().map(|s| s.cpu_ms).sum(),
            memory_bytes: stages().filter_map(|s| s.memory_bytes).max(),
            total_ms: started.elapsed().as_millis() as u64,
        },
        compile,
        detected,
        message: o.message.clone().or(last.message),
        output_encoding: (encoding == OutputEncoding::Base64).then_some(encoding),
    })
}
