//! `POST /execute/{language}` and `POST /run`: read the body, name the
//! language, forward to a peer when this host has no warm container, else
//! hand the request to the execution service and answer with what ran.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use base64::Engine;

use crate::crd::NetworkTier;
use crate::metrics::RouteLabels;
use crate::service::{self, Asked, Memory};

use super::AppState;
use super::error::ApiError;
use super::forward::FORWARDED_BY;
use super::openapi::{AuthErrors, ExecutionErrors};
use super::types::{
    CompileReport, DetectionReport, ExecuteRequest, ExecuteResponse, InputFile, NetworkReport,
    Object, OutputEncoding, Timings,
};

/// `POST /execute/{language}`: runs code in the language the path names.
#[utoipa::path(
    post,
    path = "/execute/{language}",
    tag = "native",
    params(("language" = String, Path, description = "A language's name or alias", example = "python")),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "What ran: the program's own failure is a 200 too, with its `status`", body = ExecuteResponse),
        ExecutionErrors,
        AuthErrors,
    )
)]
pub async fn execute_language(
    State(app): State<AppState>,
    language: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<Object<ExecuteRequest>>, JsonRejection>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let started = Instant::now();
    let forwarded = headers.contains_key(FORWARDED_BY);
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
    let result = async {
        let (language, req) = named(language, body)?;
        execute(&app, &language, req, None, started, forwarded, caps, None).await
    }
    .await;
    count_rejection(&app, "execute", &result);
    result.map(Json)
}

/// `POST /run`: runs code in the language the body names, or else the one
/// detected from the code.
#[utoipa::path(
    post,
    path = "/run",
    tag = "native",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "What ran, with `detected`: how the language was chosen", body = ExecuteResponse),
        ExecutionErrors,
        AuthErrors,
    )
)]
pub async fn run(
    State(app): State<AppState>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<Object<ExecuteRequest>>, JsonRejection>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let started = Instant::now();
    let forwarded = headers.contains_key(FORWARDED_BY);
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
    let result = async {
        let Json(Object(req)) = body?;
        let (language, report) = language_of(&app, &req)?;
        execute(
            &app,
            &language,
            req,
            Some(report),
            started,
            forwarded,
            caps,
            None,
        )
        .await
    }
    .await;
    count_rejection(&app, "run", &result);
    result.map(Json)
}

/// The language a `/execute/{language}` request names, and its body; the
/// body may name the same language, or none.
pub(super) fn named(
    language: Result<Path<String>, PathRejection>,
    body: Result<Json<Object<ExecuteRequest>>, JsonRejection>,
) -> Result<(String, ExecuteRequest), ApiError> {
    let Path(language) = language?;
    let Json(Object(req)) = body?;
    if req
        .language
        .as_deref()
        .is_some_and(|l| !l.eq_ignore_ascii_case(&language))
    {
        return Err(ApiError::invalid(
            "`language` in the body differs from the one in the path",
        ));
    }
    Ok((language, req))
}

/// The language of a `/run` body: the one it names, or else the one
/// detected from its code, with how it was chosen.
pub(super) fn language_of(
    app: &AppState,
    req: &ExecuteRequest,
) -> Result<(String, DetectionReport), ApiError> {
    Ok(match &req.language {
        Some(l) => (
            l.clone(),
            DetectionReport {
                method: "request".into(),
                confidence: 1.0,
                alternatives: vec![],
            },
        ),
        None => {
            let d = app
                .executions()
                .detect(&req.code, req.file_name.as_deref())?;
            let report = DetectionReport {
                method: d.method.to_string(),
                confidence: d.confidence,
                alternatives: d.alternatives,
            };
            (d.language, report)
        }
    })
}

/// Whether `req` could run here now (language, pool, limits), without
/// taking a container: what streamed executions and jobs check before
/// they answer.
pub(super) fn check(
    app: &AppState,
    language: &str,
    req: &ExecuteRequest,
    caps: &crate::auth::Quota,
) -> Result<(), ApiError> {
    let tier = req.network.unwrap_or_default();
    let domain = request(language, tier, req.clone(), caps.clone());
    Ok(app.executions().check(&domain)?)
}

fn count_rejection(app: &AppState, route: &str, result: &Result<ExecuteResponse, ApiError>) {
    count_rejection_of(app, route, result.as_ref().err());
}

/// Counts a request refused with `e`, by route and status.
pub(super) fn count_rejection_of(app: &AppState, route: &str, e: Option<&ApiError>) {
    if let Some(e) = e {
        let labels = RouteLabels {
            route: route.to_string(),
            code: e.status.as_u16().to_string(),
        };
        app.agent.metrics().rejected.get_or_create(&labels).inc();
    }
}

/// The domain request for a native body. Files are decoded here, in the
/// native API's encodings; what cannot be decoded is left for the
/// execution's checks to report in its turn.
fn request(
    language: &str,
    tier: NetworkTier,
    req: ExecuteRequest,
    caps: crate::auth::Quota,
) -> service::Request {
    service::Request {
        language: language.to_string(),
        tier,
        code: req.code,
        files: req.files.into_iter().enumerate().map(file).collect(),
        stdin: req.stdin.into_bytes(),
        args: req.args,
        asked: Asked {
            run_timeout_ms: req.timeout_ms,
            compile_timeout_ms: req.compile_timeout_ms,
            run_cpu_ms: None,
            compile_cpu_ms: None,
            output_bytes: req.max_output_bytes,
            run_memory: req.memory_mib.map(Memory::Mib),
            compile_memory: req.compile_memory_mib.map(Memory::Mib),
        },
        caps,
    }
}

/// A file of a native body: `utf8` (the default, also `utf-8`) or strict
/// `base64`.
fn file((index, f): (usize, InputFile)) -> service::File {
    let content = match f.encoding.as_deref().unwrap_or("utf8") {
        "utf8" | "utf-8" => Ok(f.content.into_bytes()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(&f.content)
            .map_err(|e| format!("content is not valid base64: {e}")),
        other => Err(format!("encoding {other:?}: use utf8 or base64")),
    };
    service::File {
        index,
        name: f.name,
        content,
    }
}

/// Runs one native request end to end, forwarding it to a peer host when
/// this one has no warm container for it, unless its progress is watched
/// (a streamed execution or a job runs where it was asked for).
#[allow(clippy::too_many_arguments)]
pub(super) async fn execute(
    app: &AppState,
    language: &str,
    req: ExecuteRequest,
    detected: Option<DetectionReport>,
    started: Instant,
    forwarded: bool,
    caps: crate::auth::Quota,
    watch: Option<crate::execution::Watch>,
) -> Result<ExecuteResponse, ApiError> {
    let tier = req.network.unwrap_or_default();
    let forwarded = forwarded || watch.is_some();
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
    let encoding = req.output_encoding.unwrap_or_default();
    let ran = app
        .executions()
        .execute_watched(request(language, tier, req, caps), started, watch)
        .await?;
    Ok(response(
        ran,
        app.agent.node(),
        tier,
        encoding,
        detected,
        started.elapsed().as_millis() as u64,
    ))
}

/// The native answer for what ran. Pure.
fn response(
    ran: service::Ran,
    host: &str,
    tier: NetworkTier,
    encoding: OutputEncoding,
    detected: Option<DetectionReport>,
    total_ms: u64,
) -> ExecuteResponse {
    let text = |b: &[u8]| encoding.encode(b);
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
    ExecuteResponse {
        status: o.status.as_str().to_string(),
        stdout: text(&last.stdout),
        stderr: text(&last.stderr),
        exit_code: last.exit_code,
        signal: last.signal,
        stdout_truncated: last.stdout_truncated,
        stderr_truncated: last.stderr_truncated,
        language: ran.choice.language.name,
        pool: ran.choice.pool,
        host: host.to_string(),
        container: ran.container,
        network: NetworkReport {
            tier,
            egress: ran.network.unwrap_or_default(),
        },
        timings: Timings {
            queue_ms: ran.queue_ms,
            exec_ms: o.exec_ms(),
            compile_ms: o.compile.as_ref().map(|c| c.exec_ms),
            run_ms: o.run.as_ref().map(|r| r.exec_ms),
            cpu_ms: stages().map(|s| s.cpu_ms).sum(),
            memory_bytes: stages().filter_map(|s| s.memory_bytes).max(),
            total_ms,
        },
        compile,
        detected,
        message: o.message.clone().or(last.message),
        output_encoding: (encoding == OutputEncoding::Base64).then_some(encoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(content: &str, encoding: Option<&str>) -> InputFile {
        InputFile {
            name: "f".into(),
            content: content.into(),
            encoding: encoding.map(Into::into),
        }
    }

    #[test]
    fn files_are_text_or_strict_base64_and_problems_are_kept_for_their_turn() {
        let cases: [(InputFile, Result<Vec<u8>, &str>); 6] = [
            (input("hi", None), Ok(b"hi".to_vec())),
            (input("hi", Some("utf8")), Ok(b"hi".to_vec())),
            (input("hi", Some("utf-8")), Ok(b"hi".to_vec())),
            (input("aGk=", Some("base64")), Ok(b"hi".to_vec())),
            (
                input("aGk", Some("base64")),
                Err("content is not valid base64: Invalid padding"),
            ),
            (
                input("6869", Some("hex")),
                Err("encoding \"hex\": use utf8 or base64"),
            ),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            let got = file((i, f));
            assert_eq!(got.index, i);
            assert_eq!(got.content, want.map_err(String::from), "case {i}");
        }
    }

    #[test]
    fn a_file_name_is_at_most_255_bytes() {
        let body = |n: usize| serde_json::json!({"code": "1", "file_name": "a".repeat(n)});
        assert!(serde_json::from_value::<ExecuteRequest>(body(255)).is_ok());
        let e = serde_json::from_value::<ExecuteRequest>(body(256)).unwrap_err();
        assert!(e.to_string().contains("the limit is 255"), "{e}");
    }

    #[test]
    fn a_native_body_asks_for_memory_in_mib() {
        let body: ExecuteRequest = serde_json::from_value(serde_json::json!({
            "code": "1", "memory_mib": 64, "compile_memory_mib": 96, "timeout_ms": 5,
            "max_output_bytes": 7, "args": ["a"], "stdin": "in",
            "files": [{"name": "a", "content": "x"}],
        }))
        .unwrap();
        let r = request("py", NetworkTier::Zerotrust, body, Default::default());
        assert_eq!(
            r.asked,
            Asked {
                run_timeout_ms: Some(5),
                compile_timeout_ms: None,
                run_cpu_ms: None,
                compile_cpu_ms: None,
                output_bytes: Some(7),
                run_memory: Some(Memory::Mib(64)),
                compile_memory: Some(Memory::Mib(96)),
            }
        );
        assert_eq!(
            (r.language.as_str(), r.stdin.as_slice()),
            ("py", &b"in"[..])
        );
        assert_eq!(r.files[0].name, "a");
    }
}
