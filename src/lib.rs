//! unsandbox: run untrusted code in warm, single-use, isolated LXD containers.
//!
//! # Layering
//!
//! Modules import only from their own layer and the layers below, and the
//! modules of one layer never import each other in a cycle. Bottom to top:
//!
//! 1. `crd` (the resources), `lxd` (the LXD client), `egress` (the
//!    filtering proxy of `semitrusted` pools), and pure helpers:
//!    `metrics`, `telemetry`, `languages` (detection), `settings` (what
//!    more than one command takes), `http_error` (the shape of every error
//!    answer).
//! 2. `execution` (one run in one container), `agent` (a host's pools),
//!    `controller` (the cluster-wide status and cleanup).
//! 3. `api` (the execution API), `cluster` (the agent on Kubernetes: its
//!    resources, reports and peers), `standalone` (resources from files),
//!    `auth` (who may call the API), `service` (the execution service every
//!    API calls: request rules, a warm container, the stages, the retry).
//! 4. `tools`: benchmark, smoke proof, detection accuracy. Tooling, never on
//!    the serving path.
//! 5. `cli`: the commands, which put the layers together.
//!
//! So the serving path never depends on tooling, and a change to the API
//! cannot reach the agent. A unit test reads `src/` and fails on an import
//! that breaks this.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod egress;
pub mod execution;
mod http_error;
pub mod languages;
#[cfg(test)]
mod layering;
pub mod lxd;
pub mod metrics;
mod service;
mod settings;
pub mod standalone;
mod telemetry;
pub mod tools;
