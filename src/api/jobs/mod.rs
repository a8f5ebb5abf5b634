//! Async jobs: `POST /jobs` accepts an execution and answers `202` with an
//! id at once; `GET /jobs/{id}` reports it, `GET /jobs/{id}/events`
//! streams it (see `feed`), `DELETE /jobs/{id}` cancels it (its container
//! is destroyed) or forgets a finished one. A finished job can call back.
//!
//! **Where a job lives.** Its state is in the memory of the agent that
//! runs it, and its id names that node and that run of the agent. Any
//! agent answers for any id: it relays the request to the node the id
//! names (found from the pools' status entries, as forwarding is). When
//! that agent is gone (no fresh status entry), or has restarted since (the
//! id names an earlier run), the answer is `410 job_lost`: nothing else
//! could have finished the job, so a client learns at once that it must
//! submit it again. Storing jobs in the API server instead would survive
//! neither case any better (the execution dies with its agent's
//! containers), and would put every output on etcd.

mod callback;
mod store;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::task::TaskTracker;
use utoipa::{IntoParams, ToSchema};

pub use callback::CallbackSettings;
use store::{Delivery, Failure, Job, JobId, Store};

use super::AppState;
use super::error::ApiError;
use super::execute::{check, count_rejection_of, language_of};
use super::feed::{Event, Feed};
use super::forward::FORWARDED_BY;
use super::openapi::{AuthErrors, ExecutionErrors, JobErrors};
use super::stream::{feed_execution, sse};
use super::types::{ExecuteRequest, ExecuteResponse};
use crate::http_error::ErrorBody;
use crate::metrics::Metrics;

/// How jobs are held and called back.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Most jobs held at once, finished ones included.
    pub max_jobs: usize,
    /// How long a finished job is kept.
    pub keep: Duration,
    pub callbacks: CallbackSettings,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            max_jobs: 1000,
            keep: Duration::from_secs(600),
            callbacks: CallbackSettings {
                allow: vec![],
                secret: None,
                attempts: 5,
                timeout: Duration::from_secs(10),
                backoff: Duration::from_secs(1),
            },
        }
    }
}

/// This agent's jobs. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    /// This run of the agent, in every id it gives out.
    run: String,
    callbacks: CallbackSettings,
    sender: Option<callback::Sender>,
    tracker: TaskTracker,
}

impl Default for Jobs {
    /// Jobs with the default bounds and no callbacks.
    fn default() -> Self {
        Self::build(JobSettings::default(), None)
    }
}

impl Jobs {
    /// Jobs under `settings`; fails when callbacks are on and no TLS root
    /// certificates can be loaded for them.
    pub fn new(settings: JobSettings) -> std::io::Result<Self> {
        let on = settings.callbacks.secret.is_some() && !settings.callbacks.allow.is_empty();
        let sender = if on {
            Some(callback::Sender::new()?)
        } else {
            None
        };
        Ok(Self::build(settings, sender))
    }

    fn build(settings: JobSettings, sender: Option<callback::Sender>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::new(settings.max_jobs, settings.keep)),
                run: format!("{:08x}", rand::random::<u32>()),
                callbacks: settings.callbacks,
                sender,
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Waits until every job (and its callback) has ended; new jobs are
    /// still accepted meanwhile, so call this once the API has stopped.
    pub async fn wait(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records how the job ended; the callback to make, if any.
    fn ended(
        &self,
        id: &str,
        outcome: Result<ExecuteResponse, Failure>,
        metrics: &Metrics,
    ) -> Option<(hyper::Uri, bytes::Bytes)> {
        let mut store = self.store();
        let job = store.get_mut(id)?;
        if job.over() {
            return None;
        }
        let name = if outcome.is_ok() { "done" } else { "failed" };
        Metrics::count(&metrics.jobs, name);
        job.ended = Some(Instant::now());
        job.outcome = Some(outcome);
        let url = job.callback_url.clone()?;
        let uri = self.inner.callbacks.check(&url).ok()?;
        let body = serde_json::to_vec(&view(job)).expect("a job serializes");
        Some((uri, body.into()))
    }

    /// Calls `uri` back with `body`, retrying with growing pauses.
    async fn call_back(&self, id: &str, uri: hyper::Uri, body: bytes::Bytes, metrics: &Metrics) {
        let Some(sender) = &self.inner.sender else {
            return;
        };
        let settings = &self.inner.callbacks;
        for attempt in 1..=settings.attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(callback::pause_before(attempt, settings.backoff)).await;
            }
            let result = sender.post(&uri, id, attempt, &body, settings).await;
            let delivered = result.is_ok();
            Metrics::count(
                &metrics.callbacks,
                if delivered { "delivered" } else { "failed" },
            );
            if let Err(e) = &result {
                tracing::warn!(job = id, attempt, error = %e, "callback failed");
            }
            if let Some(job) = self.store().get_mut(id) {
                job.delivery.attempts = attempt;
                job.delivery.delivered = delivered;
                job.delivery.last_error = result.err();
            }
            if delivered {
                return;
            }
        }
    }
}

/// `POST /jobs`: the body of `/run` (the language named or detected), and
/// where to call back when it finishes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct JobRequest {
    #[serde(flatten)]
    pub execute: ExecuteRequest,
    /// An `http://` or `https://` URL on a host the operator allows
    /// (`--callback-allow`): the finished job (a `Job`) is POSTed there,
    /// signed with the callback secret (`X-Timestamp`, `X-Signature`, as
    /// clients sign requests), with bounded retries.
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a warm container.
    Queued,
    /// Running in its container.
    Running,
    /// Finished: `result` holds the answer `/run` would have given.
    Done,
    /// Could not run: `error` holds the refusal `/run` would have given.
    Failed,
    /// Cancelled by `DELETE /jobs/{id}`, which answers with this state
    /// (the job is forgotten then); its container was destroyed.
    Cancelled,
}

/// Why a job could not run: the status and body `/run` would have answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobError {
    /// The HTTP status `/run` would have answered.
    pub status: u16,
    #[serde(flatten)]
    pub body: ErrorBody,
}

/// What became of a job's callback.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallbackReport {
    pub url: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Its id: any agent answers `GET /jobs/{id}` for it.
    pub id: String,
    pub status: JobState,
    /// The node whose agent holds it.
    pub node: String,
    /// When it was accepted, Unix seconds.
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ExecuteResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackReport>,
}

fn view(job: &Job) -> JobView {
    let status = match (&job.outcome, job.cancelled) {
        (_, true) => JobState::Cancelled,
        (Some(Ok(_)), _) => JobState::Done,
        (Some(Err(_)), _) => JobState::Failed,
        (None, _) if job.feed.is_empty() => JobState::Queued,
        (None, _) => JobState::Running,
    };
    let (result, error) = match &job.outcome {
        Some(Ok(r)) => (Some(r.clone()), None),
        Some(Err(f)) => (
            None,
            Some(JobError {
                status: f.status,
                body: f.body.clone(),
            }),
        ),
        None => (None, None),
    };
    JobView {
        id: job.id.to_string(),
        status,
        node: job.id.node.clone(),
        created_at: job
            .created
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        result,
        error,
        callback: job.callback_url.as_ref().map(|url| {
            let Delivery {
                attempts,
                delivered,
                last_error,
            } = job.delivery.clone();
            CallbackReport {
                url: url.clone(),
                attempts,
                delivered,
                last_error,
            }
        }),
    }
}

/// Reads a `POST /jobs` body: `callback_url` beside the fields of `/run`,
/// which are read as strictly as `/run` reads them.
fn job_request(body: Value) -> Result<JobRequest, ApiError> {
    let Value::Object(mut fields) = body else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    let callback_url = match fields.remove("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::invalid("callback_url: expected a string")),
    };
    let execute =
        serde_json::from_value::<super::types::Object<ExecuteRequest>>(Value::Object(fields))
            .map_err(|e| ApiError::invalid(e.to_string()))?
            .0;
    Ok(JobRequest {
        execute,
        callback_url,
    })
}

/// `POST /jobs`: accepts an execution and answers at once.
#[utoipa::path(
    post,
    path = "/jobs",
    tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 202, description = "Accepted: follow it at `Location` (`GET /jobs/{id}`)", body = JobView,
            headers(("location" = String, description = "`/jobs/{id}`"))),
        ExecutionErrors,
        AuthErrors,
    )
)]
pub async fn create(
    State(app): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    held: Option<axum::Extension<crate::auth::HeldSlot>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = async {
        let Json(body) = body?;
        let JobRequest {
            execute: req,
            callback_url,
        } = job_request(body)?;
        if let Some(url) = &callback_url {
            app.jobs.inner.callbacks.check(url).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "callback_not_allowed",
                    e.to_string(),
                )
            })?;
        }
        let caller = caller.map(|c| c.0);
        let caps = caller.as_ref().map(|c| c.quota.clone()).unwrap_or_default();
        let owner = caller.map_or_else(|| "anonymous".to_string(), |c| c.name);
        let (language, report) = language_of(&app, &req)?;
        check(&app, &language, &req, &caps)?;
        let jobs = app.jobs.clone();
        let id = JobId::new(&jobs.inner.run, app.agent.node());
        let key = id.to_string();
        let feed = Feed::new();
        let job = Job {
            id,
            owner,
            created: SystemTime::now(),
            feed: feed.clone(),
            abort: None,
            ended: None,
            outcome: None,
            cancelled: false,
            callback_url,
            delivery: Delivery::default(),
        };
        jobs.store().insert(job, Instant::now()).map_err(|full| {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "jobs_full",
                full.to_string(),
            );
            e.retry_after = Some(5);
            e
        })?;
        // The job keeps its request's slot of the caller's quota until it ends.
        let slot = held.and_then(|h| h.0.take());
        let task = {
            let (jobs, key, app) = (jobs.clone(), key.clone(), app.clone());
            jobs.inner.tracker.clone().spawn(async move {
                let metrics = app.agent.metrics().clone();
                let result =
                    feed_execution(app, feed, language, req, Some(report), started, caps).await;
                drop(slot);
                let outcome = result.map_err(|e| Failure {
                    status: e.status.as_u16(),
                    body: e.body(),
                });
                if let Some((uri, body)) = jobs.ended(&key, outcome, &metrics) {
                    jobs.call_back(&key, uri, body, &metrics).await;
                }
            })
        };
        let mut store = jobs.store();
        let job = store.get_mut(&key).expect("a job stays until it ends");
        job.abort = Some(task.abort_handle());
        let body = view(job);
        drop(store);
        let location =
            HeaderValue::from_str(&format!("/jobs/{key}")).expect("an id is a header value");
        Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(body),
        )
            .into_response())
    }
    .await;
    count_rejection_of(&app, "jobs", result.as_ref().err());
    result
}

/// Set by an agent that relays a request for a job to the agent holding
/// it: the client it relays for. Ignored unless an agent signed the request.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Relayed {
    /// The client an agent relays for (agents only).
    #[serde(default)]
    pub on_behalf_of: Option<String>,
}

/// Who is asking: the client, or the client a signed agent relays for.
fn asker(caller: &Option<axum::Extension<crate::auth::Caller>>, relayed: &Relayed) -> String {
    match caller.as_ref().map(|c| c.0.name.as_str()) {
        Some(name) if name.starts_with("agent:") => relayed
            .on_behalf_of
            .clone()
            .unwrap_or_else(|| "anonymous".into()),
        Some(name) => name.to_string(),
        None => "anonymous".into(),
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_job",
        format!("no job {id} here (it may have expired, or never existed)"),
    )
}

fn lost(id: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "job_lost",
        format!(
            "job {id} is lost: {why}; a job lives in the memory of the agent that runs it, so submit it again"
        ),
    )
}

/// Where the job an id names is held.
enum Holder {
    Here,
    Peer { node: String, endpoint: String },
}

/// Finds the agent holding `id`: this one, a live peer, or none any more.
fn holder(app: &AppState, id: &str, forwarded: bool) -> Result<Holder, ApiError> {
    let parsed = JobId::parse(id).ok_or_else(|| unknown(id))?;
    if parsed.node == app.agent.node() {
        return if parsed.run == app.jobs.inner.run {
            Ok(Holder::Here)
        } else {
            Err(lost(id, "the agent that ran it has restarted since"))
        };
    }
    // A relayed request is never relayed again.
    let (Some(fw), false) = (&app.forwarder, forwarded) else {
        return Err(unknown(id));
    };
    match fw.peers.endpoint(&parsed.node) {
        Some(endpoint) => Ok(Holder::Peer {
            node: parsed.node,
            endpoint,
        }),
        None => Err(lost(id, &format!("node {}'s agent is gone", parsed.node))),
    }
}

/// Answers a request for job `id` by `asker`: with `here` when this agent
/// holds the job, else by relaying `method` for `/jobs/{id}{suffix}` to the
/// agent that does.
async fn answer(
    app: &AppState,
    id: &str,
    asker: &str,
    forwarded: bool,
    method: Method,
    suffix: &str,
    here: impl FnOnce(&str, &str) -> Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    match holder(app, id, forwarded)? {
        Holder::Here => here(id, asker),
        Holder::Peer { node, endpoint } => {
            let path = format!("/jobs/{id}{suffix}");
            relay(app, &node, &endpoint, method, &path, asker).await
        }
    }
}

/// Relays a request for a job to the agent holding it, and its answer back.
async fn relay(
    app: &AppState,
    node: &str,
    endpoint: &str,
    method: Method,
    path: &str,
    asker: &str,
) -> Result<Response, ApiError> {
    let fw = app
        .forwarder
        .as_ref()
        .expect("a peer was found through the forwarder");
    let path = format!("{path}?on_behalf_of={}", percent_encode(asker));
    let resp = fw
        .relay(node, endpoint, method, &path, app.agent.node())
        .await
        .map_err(|e| {
            let mut err = ApiError::new(StatusCode::BAD_GATEWAY, "peer_unreachable", e.to_string());
            err.retry_after = Some(1);
            err
        })?;
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `s` with every byte but unreserved ones percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The job `id` held here, if `asker` may see it.
fn with_job<T>(
    app: &AppState,
    id: &str,
    asker: &str,
    f: impl FnOnce(&mut Job) -> T,
) -> Result<T, ApiError> {
    let mut store = app.jobs.store();
    store.expire(Instant::now());
    match store.get_mut(id) {
        Some(job) if job.owner == asker => Ok(f(job)),
        _ => Err(unknown(id)),
    }
}

/// `GET /jobs/{id}`: a job's state, and its answer once it has finished.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /jobs` gave"), Relayed),
    responses(
        (status = 200, description = "The job", body = JobView),
        JobErrors,
        AuthErrors,
    )
)]
pub async fn get(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    relayed: Query<Relayed>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let asker = asker(&caller, &relayed);
    let forwarded = headers.contains_key(FORWARDED_BY);
    answer(
        &app,
        &id,
        &asker,
        forwarded,
        Method::GET,
        "",
        |id, asker| with_job(&app, id, asker, |job| Json(view(job)).into_response()),
    )
    .await
}

/// `GET /jobs/{id}/events`: a job's events from its start, following it
/// until it ends. Hanging up does not cancel the job.
#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /jobs` gave"), Relayed),
    responses(
        (status = 200, description = "Server-sent events, as for `/run/stream`", content_type = "text/event-stream", body = crate::api::feed::StreamEvent),
        JobErrors,
        AuthErrors,
    )
)]
pub async fn events(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    relayed: Query<Relayed>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let asker = asker(&caller, &relayed);
    let forwarded = headers.contains_key(FORWARDED_BY);
    answer(
        &app,
        &id,
        &asker,
        forwarded,
        Method::GET,
        "/events",
        |id, asker| {
            let feed = with_job(&app, id, asker, |job| job.feed.clone())?;
            Ok(sse(&feed, None).into_response())
        },
    )
    .await
}

/// `DELETE /jobs/{id}`: cancels a job that has not finished (its
/// execution is dropped and its container destroyed) and forgets it, or
/// forgets a finished one. The answer is the job as it was at the end.
#[utoipa::path(
    delete,
    path = "/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The id `POST /jobs` gave"), Relayed),
    responses(
        (status = 200, description = "The job as it was cancelled or forgotten; it is gone after this", body = JobView),
        JobErrors,
        AuthErrors,
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    relayed: Query<Relayed>,
    headers: HeaderMap,
    caller: Option<axum::Extension<crate::auth::Caller>>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let asker = asker(&caller, &relayed);
    let forwarded = headers.contains_key(FORWARDED_BY);
    answer(
        &app,
        &id,
        &asker,
        forwarded,
        Method::DELETE,
        "",
        |id, asker| {
            let body = with_job(&app, id, asker, |job| {
                if !job.over() {
                    if let Some(task) = &job.abort {
                        // Dropping the execution drops its lease, which
                        // destroys the container.
                        task.abort();
                    }
                    job.cancelled = true;
                    job.ended = Some(Instant::now());
                    Metrics::count(&app.agent.metrics().jobs, "cancelled");
                    let gone = ApiError::new(
                        StatusCode::GONE,
                        "cancelled",
                        "the job was cancelled; its container was destroyed",
                    );
                    // Whoever follows its events learns it ended.
                    job.feed.push([Event::error(&gone)]);
                    tracing::info!(job = %job.id, "job cancelled");
                }
                view(job)
            })?;
            app.jobs.store().remove(id);
            Ok(Json(body).into_response())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_body_is_a_run_body_and_a_callback_url() {
        let r = job_request(
            serde_json::json!({"code": "1", "language": "python", "callback_url": "http://h/x"}),
        )
        .unwrap();
        assert_eq!(r.callback_url.as_deref(), Some("http://h/x"));
        assert_eq!(r.execute.language.as_deref(), Some("python"));
        let unknown = job_request(serde_json::json!({"code": "1", "nope": 1})).unwrap_err();
        assert!(unknown.message.contains("nope"), "{}", unknown.message);
        assert!(job_request(serde_json::json!({"code": "1", "callback_url": 5})).is_err());
        assert!(job_request(serde_json::json!(["1"])).is_err());
        assert!(
            job_request(serde_json::json!({"code": "1", "callback_url": null}))
                .unwrap()
                .callback_url
                .is_none()
        );
    }

    #[test]
    fn names_are_percent_encoded_for_a_query() {
        assert_eq!(percent_encode("team a/b&c=d"), "team%20a%2Fb%26c%3Dd");
        assert_eq!(percent_encode("ok-1_x.y~"), "ok-1_x.y~");
    }
}
