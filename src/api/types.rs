//! Request and response bodies of the native execution API.

use serde::{Deserialize, Serialize};

use crate::crd::NetworkTier;

/// `POST /execute/{language}` and `POST /run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Source code of the program.
    pub code: String,
    /// Language name or alias (`/run` only; detected when absent).
    #[serde(default)]
    pub language: Option<String>,
    /// Standard input.
    #[serde(default)]
    pub stdin: String,
    /// Arguments passed to the program.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra files written beside the source.
    #[serde(default)]
    pub files: Vec<InputFile>,
    /// Wall-clock limit in milliseconds; at most the pool's maximum.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes kept of stdout and of stderr; at most the pool's maximum.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// Network tier; `zerotrust` when absent.
    #[serde(
        default,
        alias = "network_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub network: Option<NetworkTier>,
}

/// An extra file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    /// Plain file name (no directories).
    pub name: String,
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
}

/// Timings of one execution, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timings {
    /// Waiting for a warm container.
    pub queue_ms: u64,
    /// Running the code.
    pub exec_ms: u64,
    /// From the request's arrival to the answer.
    pub total_ms: u64,
}

/// How `/run` chose the language.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetectionReport {
    /// `request`, `shebang` or `content`.
    pub method: String,
    /// 0 to 1.
    pub confidence: f64,
    /// Other languages considered, with their confidence.
    pub alternatives: Vec<(String, f64)>,
}

/// The result of an execution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecuteResponse {
    /// `ok`, `runtime_error`, `timeout`, `killed`, `output_limit_exceeded` or `internal_error`.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub language: String,
    pub pool: String,
    pub host: String,
    pub container: String,
    pub network: NetworkTier,
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<DetectionReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
