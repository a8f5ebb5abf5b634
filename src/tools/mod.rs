//! Operator tooling run from the command line, never while serving:
//! measuring latency and launch rate (`bench`), proving every language of
//! the pools (`smoke`), and measuring language detection on a labelled
//! corpus (`detect-accuracy`) and learning its model (`detect-train`). Only `cli` and the binary reach in here; no
//! serving module depends on it, so tooling can grow without weighing on
//! the agent, the API or the controller.

pub mod accuracy;
pub mod bench;
mod bench_hostile;
mod bench_network;
mod bench_profile;
mod bench_scale;
pub mod corpus;
pub mod prove;
pub mod train;
