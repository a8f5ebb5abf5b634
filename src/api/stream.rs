//! `POST /execute/{language}/stream` and `POST /run/stream`: an execution
//! whose output arrives as server-sent events while it runs (see `feed` for
//! the events). The request is checked before the stream starts, so what
//! is wrong with it is a plain 4xx; once the stream started, the execution
//! ends with a `result` event (the same answer as the synchronous API) or
//! an `error` event. A client that hangs up cancels the execution, and its
//! container is destroyed, as for the synchronous API.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::task::AbortHandle;

use super::AppState;
use super::error::ApiError;
use super::execute::{check, count_rejection_of, execute, language_of, named};
use super::feed::{Event, Feed, Translator};
use super::openapi::{AuthErrors, ExecutionErrors};
use super::types::{DetectionReport, ExecuteRequest, ExecuteResponse, Object};

/// Comments sent while nothing else is, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `POST /execute/{language}/stream`: runs code in the language the path
/// names, streaming its output.
#[utoipa::path(
    post,
    path = "/execute/{language}/stream",
    tag = "native",
    params(("language" = String, Path, description = "A language's name or alias", example = "python")),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "Server-sent events: `started`, `restart`, `stdout` and `stderr` (`{stage, data}`) as the program writes, then `result` (an `ExecuteResponse`) or `error`", content_type = "text/event-stream", body = crate::api::feed::StreamEvent),
        ExecutionErrors,
        AuthErrors,
    )
)]
pub async fn execute_language(
    State(app): State<AppState>,
    language: Result<Path<String>, PathRejection>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    held: Option<axum::Extension<crate::auth::HeldSlot>>,
    body: Result<Json<Object<ExecuteRequest>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
    let result = async {
        let (language, req) = named(language, body)?;
        streamed(&app, language, req, None, started, caps, held)
    }
    .await;
    count_rejection_of(&app, "execute_stream", result.as_ref().err());
    result
}

/// `POST /run/stream`: runs code in the language the body names, or else
/// the one detected, streaming its output.
#[utoipa::path(
    post,
    path = "/run/stream",
    tag = "native",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "Server-sent events, as for `/execute/{language}/stream`; the `result` carries `detected`", content_type = "text/event-stream", body = crate::api::feed::StreamEvent),
        ExecutionErrors,
        AuthErrors,
    )
)]
pub async fn run(
    State(app): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    held: Option<axum::Extension<crate::auth::HeldSlot>>,
    body: Result<Json<Object<ExecuteRequest>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let caps = caller.map(|c| c.0.quota).unwrap_or_default();
    let result = async {
        let Json(Object(req)) = body?;
        let (language, report) = language_of(&app, &req)?;
        streamed(&app, language, req, Some(report), started, caps, held)
    }
    .await;
    count_rejection_of(&app, "run_stream", result.as_ref().err());
    result
}

/// Checks the request, starts it, and answers with its feed as events.
fn streamed(
    app: &AppState,
    language: String,
    req: ExecuteRequest,
    detected: Option<DetectionReport>,
    started: Instant,
    caps: crate::auth::Quota,
    held: Option<axum::Extension<crate::auth::HeldSlot>>,
) -> Result<Response, ApiError> {
    check(app, &language, &req, &caps)?;
    let feed = Feed::new();
    // The execution keeps its request's slot of the caller's quota while
    // it streams.
    let slot = held.and_then(|h| h.0.take());
    let run = feed_execution(
        app.clone(),
        feed.clone(),
        language,
        req,
        detected,
        started,
        caps,
    );
    let task = tokio::spawn(async move {
        let _ = run.await;
        drop(slot);
    });
    Ok(sse(&feed, Some(task.abort_handle())).into_response())
}

/// The feed as server-sent events; dropping the stream (the client hung
/// up) aborts `cancel`.
pub(super) fn sse(
    feed: &Feed,
    cancel: Option<AbortHandle>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>> + Send + 'static> {
    let guard = cancel.map(AbortOnDrop);
    let events = feed.events().map(move |e: Event| {
        let _ = &guard;
        Ok(SseEvent::default().event(e.name).data(e.data))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a native request and writes what it does to `feed`, ending it with
/// the `result` or an `error`; returns the same.
pub(super) async fn feed_execution(
    app: AppState,
    feed: Feed,
    language: String,
    req: ExecuteRequest,
    detected: Option<DetectionReport>,
    started: Instant,
    caps: crate::auth::Quota,
) -> Result<ExecuteResponse, ApiError> {
    let mut translator = Translator::new(req.output_encoding.unwrap_or_default());
    let (watch, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let run = execute(
        &app,
        &language,
        req,
        detected,
        started,
        false,
        caps,
        Some(watch),
    );
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            biased;
            Some(p) = progress.recv() => feed.push(translator.progress(p)),
            result = &mut run => break result,
        }
    };
    // What the execution reported just before it ended.
    while let Ok(p) = progress.try_recv() {
        feed.push(translator.progress(p));
    }
    feed.push([match &result {
        Ok(resp) => Event::result(resp),
        Err(e) => Event::error(e),
    }]);
    result
}
