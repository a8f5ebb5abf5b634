//! The shape of every error answer: a status, a stable `error` code a
//! program can match on, a message that names the problem, extra fields
//! where they help, and `Retry-After` when asking again will help.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::crd::NetworkTier;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Boxed: most errors have none, and a small error keeps every
    /// `Result` that can carry one small.
    pub detail: Box<Detail>,
    pub retry_after: Option<u64>,
}

/// Fields some errors add beside `error` and `message`; each is left out
/// where it does not apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Detail {
    /// Languages served here (`unknown_language`, and `/run` when the
    /// language could not be told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<Vec<String>>,
    /// What an ambiguous alias means in each pool (`ambiguous_language`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meanings: Option<Vec<String>>,
    /// The tiers the language is served with (`network_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered: Option<Vec<NetworkTier>>,
    /// The request field whose limit is refused (`limit_exceeds_maximum`,
    /// `limit_not_allowed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The most that field may ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<u64>,
    /// The largest body accepted, in bytes (`payload_too_large`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// The languages the code most likely is, best first, with the
    /// detector's calibrated confidence (`language_uncertain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<Candidate>>,
}

/// A language the code may be in, and how likely.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Candidate {
    pub language: String,
    /// 0 to 1.
    pub confidence: f64,
}

/// The body of an error answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code a program can match on: `invalid_request`,
    /// `unknown_language`, `no_capacity`, `missing_token`, …
    pub error: String,
    /// What is wrong, for a person.
    pub message: String,
    #[serde(flatten)]
    pub detail: Detail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: Box::default(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn with(mut self, detail: Detail) -> Self {
        self.detail = Box::new(detail);
        self
    }

    /// The body this error is answered with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code.to_string(),
            message: self.message.clone(),
            detail: (*self.detail).clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
