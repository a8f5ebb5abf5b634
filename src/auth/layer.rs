//! The middleware: who is calling (a client token, a peer agent, or anyone
//! when auth is off), whether the request is signed as its token requires,
//! and whether its quota lets it run now. Probes and metrics pass untouched.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::quota::{RateState, Refusal, Slot, Usage};
use super::signing::{self, SignatureError, WINDOW_SECONDS};
use super::standing::{Concurrency, Limits, Rate, Standing};
use super::tokens::{Quota, Token};
use super::{AGENT_SIGNATURE, Auth, FORWARDED_BY, SIGNATURE, TIMESTAMP, limits, unix_now};
use crate::http_error::{ApiError, Detail, ErrorBody};

/// Paths reached without a token: probes, Prometheus, and the API's
/// contract.
pub const OPEN: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Who a request comes from; put in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name; `agent:NODE` for a request a peer forwarded;
    /// `anonymous` when auth is off.
    pub name: String,
    /// The token's quota (empty for agents and when auth is off). A handler
    /// caps the limits a request leaves unset at its `max_*` values.
    pub quota: Quota,
    usage: Option<Arc<Usage>>,
    signed: bool,
}

/// The execution slot a POST took under its caller's quota, in the
/// request's extensions. A handler whose work outlives the request (a job)
/// takes it; otherwise it is freed when the answer is sent.
#[derive(Debug, Clone, Default)]
pub struct HeldSlot(Arc<Mutex<Option<Slot>>>);

impl HeldSlot {
    /// The slot, for work that goes on after the answer; `None` when the
    /// caller's executions are not counted, or it was taken already.
    pub fn take(&self) -> Option<Slot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Caller {
    /// One more execution slot for work this request started (a batch's
    /// items beyond the first), under the caller's quota, costing rate as
    /// a request does. `Ok(None)` when the caller's executions are not
    /// counted; a 429 when the quota refuses.
    pub fn admit_more(&self) -> Result<Option<Slot>, ApiError> {
        let Some(usage) = &self.usage else {
            return Ok(None);
        };
        usage
            .admit(&self.quota, Instant::now())
            .map(|(slot, _)| Some(slot))
            .map_err(|r| refused(&self.name, &self.quota, r).0)
    }

    /// Whether `admit_more` would be refused for concurrency only: waiting
    /// for one of the caller's executions to end would help.
    pub fn at_concurrency_limit(&self) -> bool {
        match (&self.usage, self.quota.concurrent) {
            (Some(usage), Some(limit)) => usage.in_flight() >= limit,
            _ => false,
        }
    }

    fn open(name: String) -> Self {
        Self {
            name,
            quota: Quota::default(),
            usage: None,
            signed: false,
        }
    }
}

/// The middleware: open paths pass; a request naming a forwarding agent
/// must carry that agent's signature; with auth on, a client must present a
/// known token, sign as its token requires, stay within its limits, and
/// have quota left for an execution (a POST).
pub async fn check(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    if OPEN.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let inner = &auth.inner;
    if req.headers().contains_key(FORWARDED_BY) {
        match inner.agent_secret() {
            Some(secret) => {
                return match from_agent(&auth, req, &secret).await {
                    Ok(req) => next.run(req).await,
                    Err(resp) => resp,
                };
            }
            None if inner.enabled => {
                return forged("this agent has no agent secret to check it with");
            }
            // Nothing to skip when nothing is checked; the header still
            // keeps a request from being forwarded twice.
            None => {}
        }
    }
    if !inner.enabled {
        req.extensions_mut()
            .insert(Caller::open("anonymous".into()));
        return next.run(req).await;
    }
    let (mut req, token) = match authenticate(&auth, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let usage = inner.usage(&token.name);
    req.extensions_mut().insert(Caller {
        name: token.name.clone(),
        quota: token.quota.clone(),
        usage: Some(usage.clone()),
        signed: token.signing_secret.is_some(),
    });
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (slot, rate) = match usage.admit(&token.quota, Instant::now()) {
        Ok(admitted) => admitted,
        Err(refusal) => return too_many(&token, refusal),
    };
    let held = HeldSlot(Arc::new(Mutex::new(Some(slot))));
    req.extensions_mut().insert(held.clone());
    let mut resp = next.run(req).await;
    drop(held.take());
    if let Some(rate) = rate {
        rate_headers(resp.headers_mut(), rate);
    }
    resp
}

/// A request a peer forwarded, accepted with a valid agent signature.
async fn from_agent(auth: &Auth, req: Request, secret: &[u8]) -> Result<Request, Response> {
    let (mut req, body) = buffer(req, auth.inner.max_body_bytes).await?;
    if let Err(e) = verify(auth, &req, &body, secret, "agent") {
        return Err(forged(match e {
            SignatureError::Missing => "it carries no agent signature",
            SignatureError::Expired => "its agent signature has expired",
            SignatureError::Replayed => "its agent signature was already used",
            _ => "its agent signature is not valid",
        }));
    }
    let node = header(req.headers(), FORWARDED_BY).unwrap_or_default();
    let caller = Caller::open(format!("agent:{node}"));
    req.extensions_mut().insert(caller);
    Ok(req)
}

/// The client's token, once its signature (if its token signs) and the
/// limits its body asks for (if its token caps them) are checked.
async fn authenticate(auth: &Auth, req: Request) -> Result<(Request, Token), Response> {
    let presented = bearer(req.headers()).map_err(|m| unauthorized("missing_token", m))?;
    let token = auth
        .inner
        .tokens()
        .find(presented)
        .cloned()
        .ok_or_else(|| {
            unauthorized(
                "invalid_token",
                "the bearer token is not one this server knows",
            )
        })?;
    let check_limits = req.method() == Method::POST && limits::any(&token.quota);
    if token.signing_secret.is_none() && !check_limits {
        return Ok((req, token));
    }
    let (req, body) = buffer(req, auth.inner.max_body_bytes).await?;
    if let Some(secret) = &token.signing_secret
        && let Err(e) = verify(auth, &req, &body, secret.as_bytes(), &token.name)
    {
        return Err(bad_signature(&token, e));
    }
    if check_limits
        && let Ok(json) = serde_json::from_slice::<Value>(&body)
        && let Err(over) = limits::check(req.uri().path(), &json, &token.quota)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "limit_not_allowed",
            format!(
                "{} {} is above the maximum of {} that token {:?} may ask for",
                over.field, over.asked, over.maximum, token.name
            ),
        )
        .with(Detail {
            field: Some(over.field.to_string()),
            maximum: Some(over.maximum),
            ..Detail::default()
        })
        .into_response());
    }
    Ok((req, token))
}

/// `GET /v1/quota`: the caller's name, limits, and where its quota stands.
#[utoipa::path(
    get,
    path = "/v1/quota",
    tag = "auth",
    responses(
        (status = 200, description = "Where the caller stands", body = Standing),
        (status = 401, description = "No valid token (when tokens are required)", body = ErrorBody,
            headers(("www-authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`forwarded_unverified`", body = ErrorBody),
    )
)]
pub async fn quota(caller: Option<Extension<Caller>>) -> Json<Standing> {
    let caller = caller.map_or_else(|| Caller::open("anonymous".into()), |c| c.0);
    let q = &caller.quota;
    let in_flight = caller.usage.as_ref().map_or(0, |u| u.in_flight());
    let rate = caller
        .usage
        .as_ref()
        .and_then(|u| u.rate(q, Instant::now()))
        .map(|r| Rate {
            requests_per_minute: q.requests_per_minute,
            burst: r.limit,
            remaining: r.remaining,
            reset_seconds: r.reset_seconds,
        });
    Json(Standing {
        name: caller.name,
        authenticated: caller.usage.is_some(),
        signed: caller.signed,
        limits: Limits {
            max_timeout_ms: q.max_timeout_ms,
            max_memory_mib: q.max_memory_mib,
            max_output_bytes: q.max_output_bytes,
        },
        concurrent: Concurrency {
            limit: q.concurrent,
            in_flight,
        },
        rate,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of `Authorization: Bearer TOKEN`, or what is wrong.
fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("this API needs a token: send `Authorization: Bearer TOKEN`");
    };
    let value = value.to_str().unwrap_or_default();
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("the Authorization header must be `Bearer TOKEN`"),
    }
}

/// Reads the whole body (at most `limit` bytes) and puts it back.
async fn buffer(req: Request, limit: usize) -> Result<(Request, Bytes), Response> {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes)),
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_big {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is over {limit} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the body could not be read",
                )
            }
            .into_response())
        }
    }
}

/// Checks a request's signature by `signer` (a token's name, or `agent`),
/// once: the replay cache remembers it for the window.
fn verify(
    auth: &Auth,
    req: &Request,
    body: &[u8],
    secret: &[u8],
    signer: &str,
) -> Result<(), SignatureError> {
    let sig_header = if signer == "agent" {
        AGENT_SIGNATURE
    } else {
        SIGNATURE
    };
    let signature = header(req.headers(), sig_header);
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str());
    let now = unix_now();
    let at = signing::verify(
        secret,
        header(req.headers(), TIMESTAMP),
        signature,
        (req.method().as_str(), path, body),
        now,
    )?;
    let key = format!(
        "{signer}\n{}",
        signature.unwrap_or_default().to_ascii_lowercase()
    );
    let mut replay = auth.inner.replay.lock().unwrap_or_else(|e| e.into_inner());
    if !replay.first_use(key, at, now) {
        return Err(SignatureError::Replayed);
    }
    Ok(())
}

fn unauthorized(code: &'static str, message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn bad_signature(token: &Token, e: SignatureError) -> Response {
    let (code, message) = match e {
        SignatureError::Missing => (
            "signature_required",
            format!(
                "token {:?} must sign its requests: send X-Timestamp (Unix seconds) and \
                 X-Signature (hex HMAC-SHA256 of timestamp + method + path + body)",
                token.name
            ),
        ),
        SignatureError::BadTimestamp => (
            "invalid_timestamp",
            "X-Timestamp must be Unix seconds".into(),
        ),
        SignatureError::Expired => (
            "signature_expired",
            format!(
                "X-Timestamp is more than {WINDOW_SECONDS} s from this server's clock; sign the request again"
            ),
        ),
        SignatureError::Invalid => (
            "invalid_signature",
            format!(
                "X-Signature is not the HMAC of this request with token {:?}'s signing secret",
                token.name
            ),
        ),
        SignatureError::Replayed => (
            "signature_replayed",
            "this signature was already used; sign each request afresh".into(),
        ),
    };
    unauthorized(code, &message)
}

fn forged(why: &str) -> Response {
    tracing::info!(
        reason = why,
        "refused a request that claims to be forwarded by an agent"
    );
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forwarded_unverified",
        format!("{FORWARDED_BY} is set only by unsandbox agents, and {why}"),
    )
    .into_response()
}

fn too_many(token: &Token, refusal: Refusal) -> Response {
    let (err, rate) = refused(&token.name, &token.quota, refusal);
    let mut resp = err.into_response();
    rate_headers(resp.headers_mut(), rate);
    resp
}

/// The 429 for a refusal of `name`'s quota, and the rate to report.
fn refused(name: &str, quota: &Quota, refusal: Refusal) -> (ApiError, RateState) {
    let (code, message, rate) = match refusal {
        Refusal::Rate(rate) => (
            "rate_limited",
            format!(
                "token {:?} may start {} executions a minute (bursts of {}); retry in {} s",
                name,
                quota.requests_per_minute.unwrap_or_default(),
                rate.limit,
                rate.reset_seconds
            ),
            rate,
        ),
        Refusal::Concurrency { limit } => (
            "too_many_executions",
            format!(
                "token {:?} may run {limit} executions at once; retry when one finishes",
                name
            ),
            RateState {
                limit,
                remaining: 0,
                reset_seconds: 1,
            },
        ),
    };
    let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
    err.retry_after = Some(rate.reset_seconds.max(1));
    (err, rate)
}

fn rate_headers(headers: &mut HeaderMap, rate: RateState) {
    for (name, value) in [
        ("ratelimit-limit", u64::from(rate.limit)),
        ("ratelimit-remaining", u64::from(rate.remaining)),
        ("ratelimit-reset", rate.reset_seconds),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}
