//! A Piston-compatible API (engineer-man/piston, API v2), so existing Piston
//! clients run code here unchanged: `POST /api/v2/execute` and
//! `GET /api/v2/runtimes`, with Piston's field names, defaults, status codes
//! (RE, SG, TO, OL, EL, XX) and error bodies (`{"message": ...}`, 400 for a
//! bad request).
//!
//! Where it differs from Piston, on purpose:
//! - Any content type is accepted: piston-client (npm) posts JSON as
//!   `text/plain`, which Piston itself answers 415.
//! - `version` may be left out (any version); piston-client leaves it out
//!   when the language is named by an alias.
//! - `output` is stdout followed by stderr: LXD hands the two streams over
//!   separately, so Piston's interleaving in order of arrival is lost.
//! - `*_memory_limit` (bytes) becomes the stage's container memory limit in
//!   MiB, rounded down; -1 (piston-client's default) or absent means the
//!   pool's limit; at least 32 MiB; above the pool's limit is a 400.
//! - `*_cpu_time` is not a kill switch: the stage's CPU time is measured
//!   from its cgroup and a stage that used more is reported `TO` afterwards
//!   (it ran until it finished or hit its wall-clock timeout).
//! - File names are plain names (no folders). The first utf8 file is the
//!   source, written to the language's source file whatever its name; at
//!   most 64 others, as in the native API.
//! - Timeouts, memory and output caps default to the pool's, not Piston's.
//! - A request runs on the host that received it (no forwarding to peers).

mod error;
mod request;
mod response;
mod version;

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::agent::ChoiceError;
use crate::crd::NetworkTier;
use crate::metrics::RouteLabels;

use super::AppState;
use super::error::ApiError;
use super::openapi::{AuthErrors, PistonErrors};

pub use error::{PistonError, PistonErrorBody};
pub use response::{ExecuteResponse, Runtime};

use request::{parse, submission};
use response::{response, runtime_list, served_version};

/// `GET /api/v2/runtimes`.
#[utoipa::path(
    get,
    path = "/api/v2/runtimes",
    tag = "piston",
    responses(
        (status = 200, description = "The languages Piston clients can run here", body = Vec<Runtime>),
        AuthErrors,
    )
)]
pub async fn runtimes(State(app): State<AppState>) -> Json<Vec<Runtime>> {
    Json(runtime_list(&app.agent.catalog()))
}

/// `POST /api/v2/execute`. Any content type is taken as JSON, as
/// piston-client posts it as `text/plain`.
#[utoipa::path(
    post,
    path = "/api/v2/execute",
    tag = "piston",
    request_body = request::Contract,
    responses(
        (status = 200, description = "What ran, in Piston's shape", body = ExecuteResponse),
        PistonErrors,
        AuthErrors,
    )
)]
pub async fn execute(
    State(app): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ExecuteResponse>, PistonError> {
    let started = Instant::now();
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
    let result = run(&app, body, started, caps).await;
    if let Err(e) = &result {
        let labels = RouteLabels {
            route: "piston_execute".into(),
            code: e.status.as_u16().to_string(),
        };
        app.agent.metrics().rejected.get_or_create(&labels).inc();
    }
    result.map(Json)
}

async fn run(
    app: &AppState,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
    caps: crate::auth::Quota,
) -> Result<ExecuteResponse, PistonError> {
    let body = body.map_err(|r| PistonError {
        status: r.status(),
        message: r.body_text(),
        retry_after: None,
    })?;
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| PistonError::bad(format!("the body is not valid JSON: {e}")))?
    };
    let req = parse(&value)?;
    let (choice, version) = lookup(app, &req.language, &req.version)?;
    let mut sub = submission(&req, caps)?;
    if choice.language.arguments_are_inputs {
        // As Piston's runners for these languages do.
        sub.args.clear();
    }
    let ran = app.executions().run(choice, sub, started).await?;
    Ok(response(
        &ran.outcome,
        &ran.choice.language.name,
        &version,
        &req.asked,
    ))
}

/// Piston's answer when no pool can take the language: 400 "runtime is
/// unknown" for what this host will not serve, and the native API's 503
/// with `Retry-After` while it is still getting ready (starting, fetching an
/// image, proving its languages).
fn choice_error(e: ChoiceError, unknown: &str) -> PistonError {
    if matches!(e, ChoiceError::UnknownLanguage { .. }) {
        return PistonError::bad(unknown);
    }
    let detail = e.to_string();
    let mut err = PistonError::from(ApiError::from(e));
    if err.status == StatusCode::BAD_REQUEST {
        err.message = format!("{unknown}: {detail}");
    }
    err
}

/// The pool and served version for a language and version selector.
fn lookup(
    app: &AppState,
    language: &str,
    selector: &str,
) -> Result<(crate::agent::Choice, String), PistonError> {
    let unknown = format!("{language}-{selector} runtime is unknown");
    let choice = app
        .executions()
        .choose(language, NetworkTier::Zerotrust)
        .map_err(|e| choice_error(e, &unknown))?;
    let served = app
        .agent
        .catalog()
        .iter()
        .find(|e| e.name == choice.language.name)
        .map(served_version)
        .unwrap_or_else(|| version::UNKNOWN.to_string());
    if !version::matches(&served, selector) {
        return Err(PistonError::bad(unknown));
    }
    Ok((choice, served))
}

#[cfg(test)]
mod tests;
