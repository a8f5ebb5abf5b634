//! Error answers several operations share, by status, for the handlers'
//! `responses(...)`. These types are never built: they describe what
//! `ApiError` and `PistonError` answer.
#![allow(dead_code)]

use utoipa::IntoResponses;

use crate::api::piston::PistonErrorBody;
use crate::http_error::ErrorBody;

/// What the authentication layer answers on every operation that needs a
/// token (see `auth::OPEN` for those that do not).
#[derive(IntoResponses)]
pub enum AuthErrors {
    /// Tokens are required, and the request has none, an unknown one, or
    /// lacks the signature its token requires (`missing_token`,
    /// `invalid_token`, `signature_required`, `invalid_signature`, …).
    #[response(
        status = 401,
        headers(("www-authenticate" = String, description = "`Bearer`"))
    )]
    Unauthorized(ErrorBody),
    /// A limit above the token's maximum (`limit_not_allowed`), or a
    /// forwarding header without an agent's signature
    /// (`forwarded_unverified`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// What an execution request of the native API may be refused with.
#[derive(IntoResponses)]
pub enum ExecutionErrors {
    /// The body is not JSON (`invalid_json`) or cannot be read
    /// (`invalid_body`), or the path does not decode (`invalid_path`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No language of that name or alias is served here
    /// (`unknown_language`, with `available`).
    #[response(status = 404)]
    UnknownLanguage(ErrorBody),
    /// The body is larger than the server accepts (`payload_too_large`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not declared as `application/json`
    /// (`unsupported_media_type`).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// The request cannot run here as it is: `invalid_request` (the
    /// message names the field), `limit_exceeds_maximum`,
    /// `network_unavailable`, `language_unavailable`,
    /// `ambiguous_language`, `language_uncertain` (`/run`: `candidates`
    /// lists the likeliest languages), `callback_not_allowed` (`POST /jobs`).
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// Over the token's rate or concurrency (`rate_limited`,
    /// `too_many_executions`).
    #[response(
        status = 429,
        headers(
            ("retry-after" = u64, description = "Seconds to wait"),
            ("ratelimit-limit" = u64),
            ("ratelimit-remaining" = u64),
            ("ratelimit-reset" = u64),
        )
    )]
    TooMany(ErrorBody),
    /// Not now: `no_capacity`, `agent_starting`, `image_pending`,
    /// `languages_not_ready`, `image_unavailable`, `draining`, `jobs_full`
    /// (`POST /jobs`), or `pool_misconfigured` (without `Retry-After`: it
    /// waits for a fix).
    #[response(
        status = 503,
        headers(("retry-after" = u64, description = "Seconds after which asking again may help"))
    )]
    Unavailable(ErrorBody),
}

/// What a Piston execution may be refused with, in Piston's shape.
#[derive(IntoResponses)]
pub enum PistonErrors {
    /// Whatever is wrong with the request, as Piston answers it.
    #[response(status = 400)]
    BadRequest(PistonErrorBody),
    /// The body is larger than the server accepts.
    #[response(status = 413)]
    TooLarge(PistonErrorBody),
    /// Over the token's rate or concurrency.
    #[response(
        status = 429,
        headers(
            ("retry-after" = u64, description = "Seconds to wait"),
            ("ratelimit-limit" = u64),
            ("ratelimit-remaining" = u64),
            ("ratelimit-reset" = u64),
        )
    )]
    TooMany(PistonErrorBody),
    /// Not now, as for the native API.
    #[response(
        status = 503,
        headers(("retry-after" = u64, description = "Seconds after which asking again may help"))
    )]
    Unavailable(PistonErrorBody),
}

/// What a request for a job may be refused with.
#[derive(IntoResponses)]
pub enum JobErrors {
    /// The id does not decode (`invalid_path`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No such job for this caller (`unknown_job`): never given out, asked
    /// for by another caller, forgotten, or expired.
    #[response(status = 404)]
    Unknown(ErrorBody),
    /// The job's agent is gone or has restarted since it took the job
    /// (`job_lost`): submit it again.
    #[response(status = 410)]
    Lost(ErrorBody),
    /// The agent holding the job did not answer (`peer_unreachable`).
    #[response(
        status = 502,
        headers(("retry-after" = u64, description = "Seconds after which asking again may help"))
    )]
    PeerUnreachable(ErrorBody),
}
