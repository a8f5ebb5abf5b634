//! Where a caller stands: the body of `GET /v1/quota`.

use serde::Serialize;
use utoipa::ToSchema;

/// The caller's name, limits, and where its quota stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Standing {
    /// The token's name; `agent:NODE` for a request a peer forwarded;
    /// `anonymous` when authentication is off.
    pub name: String,
    /// Whether the caller presented a client token.
    pub authenticated: bool,
    /// Whether the token must sign its requests.
    pub signed: bool,
    pub limits: Limits,
    pub concurrent: Concurrency,
    /// null when the token has no rate.
    pub rate: Option<Rate>,
}

/// The largest limits the token may ask for; null where it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Limits {
    pub max_timeout_ms: Option<u64>,
    pub max_memory_mib: Option<u64>,
    pub max_output_bytes: Option<u64>,
}

/// Executions at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Concurrency {
    /// null when the token has no such limit.
    pub limit: Option<u32>,
    /// The token's executions running now.
    pub in_flight: u32,
}

/// The token's rate and its bucket now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rate {
    pub requests_per_minute: Option<u32>,
    /// Executions that may start at once after a quiet spell.
    pub burst: u32,
    /// Executions that may start now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
}
