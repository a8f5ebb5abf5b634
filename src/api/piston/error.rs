//! Piston's error answers, `{"message": ...}`: 400 for whatever is wrong
//! with the request (Piston answers every invalid request 400), the native
//! API's status otherwise, with `Retry-After` when waiting helps.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::service::{ExecError, Invalid, Limit, MIN_MEMORY_MIB, Unit};

/// An error answer in Piston's shape: `{"message": ...}`.
#[derive(Debug, PartialEq)]
pub struct PistonError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl PistonError {
    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for PistonError {
    fn from(e: ApiError) -> Self {
        // Piston answers every invalid request 400.
        let status = match e.status {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND => StatusCode::BAD_REQUEST,
            s => s,
        };
        Self {
            status,
            message: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl From<ExecError> for PistonError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Invalid(e) => e.into(),
            e => ApiError::from(e).into(),
        }
    }
}

/// Piston's name of the field that asks for `limit`.
pub(super) fn field(limit: Limit) -> &'static str {
    match limit {
        Limit::RunTimeout => "run_timeout",
        Limit::CompileTimeout => "compile_timeout",
        Limit::RunCpuTime => "run_cpu_time",
        Limit::CompileCpuTime => "compile_cpu_time",
        Limit::RunMemory => "run_memory_limit",
        Limit::CompileMemory => "compile_memory_limit",
        // Piston cannot ask for an output cap; named for completeness.
        Limit::OutputBytes => "max_output_bytes",
    }
}

impl From<Invalid> for PistonError {
    /// 400, with Piston's words for limits.
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::AboveMaximum { limit, maximum, .. } => PistonError::bad(format!(
                "{} cannot exceed the configured limit of {maximum}",
                field(limit)
            )),
            Invalid::BelowFloor {
                limit,
                floor,
                unit: Unit::Bytes,
            } => PistonError::bad(format!(
                "{} must be at least {floor} bytes ({MIN_MEMORY_MIB} MiB)",
                field(limit)
            )),
            Invalid::BelowFloor { limit, floor, .. } => {
                PistonError::bad(format!("{} must be at least {floor}", field(limit)))
            }
            e => PistonError::bad(e.to_string()),
        }
    }
}

/// Piston's error body.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PistonErrorBody {
    /// What is wrong, in Piston's words where Piston has some.
    pub message: String,
}

impl IntoResponse for PistonError {
    fn into_response(self) -> Response {
        let body = PistonErrorBody {
            message: self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
