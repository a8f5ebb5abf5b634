//! unsandbox: run untrusted code in warm, single-use, isolated LXD containers.

pub mod crd;
pub mod lxd;
pub mod agent;
pub mod execution;
pub mod metrics;
pub mod api;
pub mod languages;
pub mod bench;
pub mod cli;
pub mod standalone;
pub mod telemetry;
