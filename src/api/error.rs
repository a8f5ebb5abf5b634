//! API errors as precise JSON answers: a stable `error` code, a message that
//! names the problem, and extra fields where they help. Internals never leak.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;

use crate::agent::{AcquireError, Blocker, ChoiceError};
use crate::service::{ExecError, Invalid, Limit};

pub use crate::http_error::{ApiError, Detail};

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match &r {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            JsonRejection::JsonDataError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (r.status(), "invalid_body"),
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    /// 400: a path segment that does not decode (not UTF-8 once
    /// percent-decoded).
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

/// Status and code for a language that cannot be served now. Temporary
/// conditions are 503 (with `Retry-After`, see `Blocker::retry_after`); a
/// pool that needs fixing is 503 without it; only what the request itself
/// cannot get here (a tier, a language that failed its smoke tests) is 422.
pub fn blocked_status(blocker: &Blocker) -> (StatusCode, &'static str) {
    match blocker {
        Blocker::Starting => (StatusCode::SERVICE_UNAVAILABLE, "agent_starting"),
        Blocker::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Blocker::ImagePending { .. } => (StatusCode::SERVICE_UNAVAILABLE, "image_pending"),
        Blocker::Proving { .. } => (StatusCode::SERVICE_UNAVAILABLE, "languages_not_ready"),
        Blocker::ImageFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "image_unavailable"),
        Blocker::PoolInvalid { .. } => (StatusCode::SERVICE_UNAVAILABLE, "pool_misconfigured"),
        Blocker::LanguageFailed { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "language_unavailable")
        }
        Blocker::TierUnavailable { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "network_unavailable")
        }
    }
}

impl From<ChoiceError> for ApiError {
    fn from(e: ChoiceError) -> Self {
        let message = e.to_string();
        match e {
            ChoiceError::UnknownLanguage { available, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_language", message).with(Detail {
                    available: Some(available),
                    ..Detail::default()
                })
            }
            ChoiceError::Ambiguous { meanings, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ambiguous_language",
                message,
            )
            .with(Detail {
                meanings: Some(meanings),
                ..Detail::default()
            }),
            ChoiceError::Blocked { blocker, .. } => ApiError::blocked(&blocker, message),
        }
    }
}

impl ApiError {
    /// The answer for a request `blocker` keeps from running, with
    /// `Retry-After` when the condition is temporary.
    pub fn blocked(blocker: &Blocker, message: String) -> Self {
        let (status, code) = blocked_status(blocker);
        let mut err = ApiError::new(status, code, message);
        if let Blocker::TierUnavailable { offered } = blocker {
            err = err.with(Detail {
                offered: Some(offered.clone()),
                ..Detail::default()
            });
        }
        err.retry_after = blocker.retry_after();
        err
    }
}

impl From<AcquireError> for ApiError {
    /// 503 either way; `Retry-After` only when a container will come.
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::NoCapacity(_) if e.temporary() => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_capacity",
                    format!("{e}; retry shortly"),
                );
                err.retry_after = Some(1);
                err
            }
            AcquireError::NoCapacity(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_capacity",
                e.to_string(),
            ),
            AcquireError::PoolGone(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "pool_unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Unavailable(e) => e.into(),
            ExecError::DetectionPending(ref b) => ApiError::blocked(b, e.to_string()),
            ExecError::Undetected { available } => ApiError::invalid(
                "could not tell the language of this code; name it in `language` or use /execute/{language}",
            )
            .with(Detail {
                    available: Some(available),
                    ..Detail::default()
                }),
            ExecError::Uncertain { ref candidates } => {
                let candidates = candidates
                    .iter()
                    .map(|(language, confidence)| crate::http_error::Candidate {
                        language: language.clone(),
                        confidence: *confidence,
                    })
                    .collect();
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "language_uncertain",
                    format!(
                        "{e}; name it in `language`, give `file_name`, or use /execute/{{language}}"
                    ),
                )
                .with(Detail {
                    candidates: Some(candidates),
                    ..Detail::default()
                })
            }
            ExecError::Invalid(e) => e.into(),
            ExecError::NoContainer(e) => e.into(),
        }
    }
}

/// The native API's name of the field that asks for `limit`.
pub fn field(limit: Limit) -> &'static str {
    match limit {
        Limit::OutputBytes => "max_output_bytes",
        Limit::RunTimeout => "timeout_ms",
        Limit::CompileTimeout => "compile_timeout_ms",
        // The native API cannot ask for CPU time; named for completeness.
        Limit::RunCpuTime => "cpu_time_ms",
        Limit::CompileCpuTime => "compile_cpu_time_ms",
        Limit::RunMemory => "memory_mib",
        Limit::CompileMemory => "compile_memory_mib",
    }
}

impl From<Invalid> for ApiError {
    /// 422 `invalid_request`, but a limit above the pool's maximum is 422
    /// `limit_exceeds_maximum` with the field and the maximum.
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::AboveMaximum {
                limit,
                asked,
                maximum,
                ..
            } => {
                let name = field(limit);
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "limit_exceeds_maximum",
                    format!("{name} {asked} is above this pool's maximum of {maximum}"),
                )
                .with(Detail {
                    field: Some(name.to_string()),
                    maximum: Some(maximum),
                    ..Detail::default()
                })
            }
            Invalid::BelowFloor { limit, floor, .. } => {
                ApiError::invalid(format!("{} must be at least {floor}", field(limit)))
            }
            // The source takes its name: to the caller, a name sent twice.
            Invalid::FileIsSource { index, name } => {
                ApiError::invalid(format!("files[{index}].name {name:?} is used twice"))
            }
            e => ApiError::invalid(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NetworkTier;
    use axum::http::header;
    use axum::response::IntoResponse;

    fn blocked(blocker: Blocker) -> ApiError {
        ChoiceError::Blocked {
            language: "python".into(),
            tier: NetworkTier::Zerotrust,
            blocker,
        }
        .into()
    }

    #[test]
    fn temporary_conditions_are_503_with_retry_after() {
        let pool = || "t/p".to_string();
        for (blocker, code) in [
            (Blocker::Starting, "agent_starting"),
            (Blocker::ImagePending { pool: pool() }, "image_pending"),
            (Blocker::Proving { pool: pool() }, "languages_not_ready"),
            (
                Blocker::ImageFailed {
                    pool: pool(),
                    message: "x".into(),
                },
                "image_unavailable",
            ),
        ] {
            let e = blocked(blocker);
            assert_eq!((e.status, e.code), (StatusCode::SERVICE_UNAVAILABLE, code));
            assert!(e.retry_after.is_some(), "{code}");
        }
        let e = blocked(Blocker::Proving { pool: pool() });
        assert!(
            e.message.contains("smoke tests still running on this host"),
            "{}",
            e.message
        );
        let resp = e.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn permanent_conditions_name_their_cause() {
        let e = blocked(Blocker::LanguageFailed {
            pool: "t/p".into(),
            message: "hello: printed \"\"".into(),
        });
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "language_unavailable",
                None
            )
        );
        let e = blocked(Blocker::TierUnavailable {
            offered: vec![NetworkTier::Zerotrust],
        });
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "network_unavailable",
                None
            )
        );
        assert_eq!(e.detail.offered, Some(vec![NetworkTier::Zerotrust]));
        let e = blocked(Blocker::PoolInvalid {
            pool: "t/p".into(),
            message: "LanguageImage \"x\" does not exist".into(),
        });
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "pool_misconfigured", None)
        );
        let e: ApiError = ChoiceError::UnknownLanguage {
            language: "cobol".into(),
            available: vec!["python".into()],
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "unknown_language")
        );
        let e: ApiError = ChoiceError::Ambiguous {
            language: "py".into(),
            meanings: vec!["pypy (t/b)".into(), "python (t/a)".into()],
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "ambiguous_language")
        );
        assert_eq!(e.detail.meanings.unwrap()[1], "python (t/a)");
    }

    #[test]
    fn execution_errors_keep_their_status_code_and_message() {
        use crate::service::{Invalid, Limit, Unit};
        let cases: Vec<(ExecError, StatusCode, &str, &str)> = vec![
            (
                Invalid::TooManyFiles.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "at most 64 files may be sent",
            ),
            (
                Invalid::FileIsSource {
                    index: 2,
                    name: "main.py".into(),
                }
                .into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "files[2].name \"main.py\" is used twice",
            ),
            (
                Invalid::FileContent {
                    index: 0,
                    problem: "encoding \"hex\": use utf8 or base64".into(),
                }
                .into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "files[0].encoding \"hex\": use utf8 or base64",
            ),
            (
                Invalid::BelowFloor {
                    limit: Limit::CompileMemory,
                    floor: 32,
                    unit: Unit::Mib,
                }
                .into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "compile_memory_mib must be at least 32",
            ),
            (
                Invalid::BelowFloor {
                    limit: Limit::RunTimeout,
                    floor: 1,
                    unit: Unit::Ms,
                }
                .into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "timeout_ms must be at least 1",
            ),
            (
                Invalid::AboveMaximum {
                    limit: Limit::OutputBytes,
                    asked: 9,
                    maximum: 8,
                    unit: Unit::Bytes,
                }
                .into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "limit_exceeds_maximum",
                "max_output_bytes 9 is above this pool's maximum of 8",
            ),
            (
                Invalid::NulInArgs.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "args must not contain NUL bytes",
            ),
            (
                ExecError::Undetected {
                    available: vec!["python".into()],
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "could not tell the language of this code; name it in `language` or use /execute/{language}",
            ),
            (
                ExecError::Uncertain {
                    candidates: vec![("python".into(), 0.4), ("ruby".into(), 0.35)],
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "language_uncertain",
                "could not tell the language of this code for sure: python 0.40, ruby 0.35; name it in `language`, give `file_name`, or use /execute/{language}",
            ),
            (
                ExecError::DetectionPending(Blocker::Starting),
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_starting",
                "cannot detect the language yet: this host is starting and has not listed its pools yet; retry shortly",
            ),
            (
                ChoiceError::UnknownLanguage {
                    language: "cobol".into(),
                    available: vec![],
                }
                .into(),
                StatusCode::NOT_FOUND,
                "unknown_language",
                "unknown language \"cobol\"",
            ),
            (
                AcquireError::PoolGone("t/p".into()).into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "pool_unavailable",
                "pool t/p is not served on this host",
            ),
        ];
        for (e, status, code, message) in cases {
            let what = format!("{e:?}");
            let a = ApiError::from(e);
            assert_eq!(
                (a.status, a.code, a.message.as_str()),
                (status, code, message),
                "{what}"
            );
        }
    }

    #[test]
    fn extra_fields_name_the_limit_and_what_is_available() {
        use crate::service::{Invalid, Limit, Unit};
        let e = ApiError::from(ExecError::from(Invalid::AboveMaximum {
            limit: Limit::RunMemory,
            asked: 129,
            maximum: 128,
            unit: Unit::Mib,
        }));
        assert_eq!(
            *e.detail,
            Detail {
                field: Some("memory_mib".into()),
                maximum: Some(128),
                ..Detail::default()
            }
        );
        assert_eq!(
            e.message,
            "memory_mib 129 is above this pool's maximum of 128"
        );
        let e = ApiError::from(ExecError::Undetected {
            available: vec!["python".into(), "bash".into()],
        });
        assert_eq!(
            e.detail.available,
            Some(vec!["python".to_string(), "bash".to_string()])
        );
        let e = ApiError::from(ExecError::DetectionPending(Blocker::Starting));
        assert_eq!(e.retry_after, Some(2));
    }
}
