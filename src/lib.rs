//! unsandbox: run untrusted code in warm, single-use, isolated LXD containers.

pub mod agent;
pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod execution;
pub mod languages;
pub mod lxd;
pub mod metrics;
pub mod prove;
pub mod standalone;
pub mod telemetry;
