//! The execution API (axum): `router(state)` so tests can call it without a
//! socket, and `serve` for a listener with graceful shutdown.

mod batch;
mod error;
mod execute;
mod feed;
pub mod forward;
mod info;
pub mod jobs;
mod openapi;
mod oversize;
pub(crate) mod piston;
mod stream;
pub mod types;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::{Extension, Router};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::agent::Agent;

/// Most executions one `POST /batch` holds unless set otherwise.
pub const DEFAULT_BATCH_MAX_ITEMS: usize = 32;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub agent: Agent,
    /// Set on Kubernetes: peers that can take what this node cannot.
    pub forwarder: Option<forward::Forwarder>,
    /// Standalone: the documents of the files that are not applied, and why.
    pub rejections: crate::standalone::Rejections,
    /// Async jobs held by this agent.
    pub jobs: jobs::Jobs,
    /// Most executions one `POST /batch` may hold.
    pub batch_max_items: usize,
}

impl AppState {
    /// State for one host with no peers (standalone).
    pub fn local(agent: Agent) -> Self {
        Self {
            agent,
            forwarder: None,
            rejections: crate::standalone::no_rejections(),
            jobs: jobs::Jobs::default(),
            batch_max_items: DEFAULT_BATCH_MAX_ITEMS,
        }
    }

    /// The execution service on this host's agent.
    pub fn executions(&self) -> crate::service::Executions {
        crate::service::Executions::new(self.agent.clone())
    }
}

/// The API's routes, with a body limit of `max_body_bytes`, open to anyone.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    router_with_auth(state, max_body_bytes, crate::auth::Auth::disabled())
}

/// Every route with its contract: the router and `GET /openapi.json` are
/// built from this one list.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(execute::execute_language))
        .routes(routes!(execute::run))
        .routes(routes!(stream::execute_language))
        .routes(routes!(stream::run))
        .routes(routes!(batch::batch))
        .routes(routes!(jobs::create))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(jobs::events))
        .routes(routes!(info::languages))
        .routes(routes!(info::pools))
        .routes(routes!(info::healthz))
        .routes(routes!(info::readyz))
        .routes(routes!(info::metrics))
        .routes(routes!(piston::execute))
        .routes(routes!(piston::runtimes))
        .routes(routes!(crate::auth::quota))
        .routes(routes!(openapi::openapi_json))
}

/// The API's routes behind `auth`: tokens, quotas, agent signatures.
pub fn router_with_auth(state: AppState, max_body_bytes: usize, auth: crate::auth::Auth) -> Router {
    let (routes, api) = routes().split_for_parts();
    let served = openapi::Served::new(&openapi::contract(api, auth.enabled()));
    routes
        .fallback(|uri: Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such endpoint: {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} does not take {method}", uri.path()),
            )
        })
        .layer(Extension(served))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            oversize::refuse,
        ))
        .layer(TraceLayer::new_for_http().on_failure(on_failure))
        .with_state(state)
}

/// Logs a failed response. A 5xx the service chose to answer (503 while a
/// pool fills, 502 from a peer) is an answer, logged by what decided it, so
/// only a 500 (a bug) and a response that broke are errors here.
fn on_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &Span) {
    let latency_ms = latency.as_millis() as u64;
    match class {
        ServerErrorsFailureClass::StatusCode(StatusCode::INTERNAL_SERVER_ERROR) => {
            tracing::error!(latency_ms, "response failed: 500 Internal Server Error");
        }
        ServerErrorsFailureClass::StatusCode(status) => {
            tracing::debug!(latency_ms, %status, "answered with a server error status");
        }
        ServerErrorsFailureClass::Error(error) => {
            tracing::error!(latency_ms, error, "response failed");
        }
    }
}

/// Serves the API on `addr` until `shutdown` resolves, then drains requests.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "execution API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
