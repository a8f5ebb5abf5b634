//! unsandbox: run untrusted code in warm, single-use, isolated LXD containers.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod execution;
pub mod languages;
pub mod lxd;
pub mod metrics;
pub mod settings;
pub mod standalone;
pub mod telemetry;
pub mod tools;
