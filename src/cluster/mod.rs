//! The agent on Kubernetes: pools, images and its node's labels come from the
//! API server; it reports its node's entry in each pool's status; and it
//! finds peer agents to forward executions to.

pub(crate) mod changes;
pub mod peers;
pub(crate) mod report;
pub(crate) mod source;
