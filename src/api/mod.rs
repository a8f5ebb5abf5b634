//! The execution API (axum): `router(state)` so tests can call it without a
//! socket, and `serve` for a listener with graceful shutdown.

mod error;
mod execute;
pub mod forward;
mod info;
pub mod piston;
pub mod types;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::agent::Agent;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub agent: Agent,
    /// Set on Kubernetes: peers that can take what this node cannot.
    pub forwarder: Option<forward::Forwarder>,
}

impl AppState {
    /// State for one host with no peers (standalone).
    pub fn local(agent: Agent) -> Self {
        Self {
            agent,
            forwarder: None,
        }
    }
}

/// The API's routes, with a body limit of `max_body_bytes`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/execute/{language}", post(execute::execute_language))
        .route("/run", post(execute::run))
        .route("/languages", get(info::languages))
        .route("/pools", get(info::pools))
        .route("/healthz", get(info::healthz))
        .route("/readyz", get(info::readyz))
        .route("/metrics", get(info::metrics))
        .route("/api/v2/execute", post(piston::execute))
        .route("/api/v2/runtimes", get(piston::runtimes))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
