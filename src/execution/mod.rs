//! Executions: the command that runs submitted code inside a container
//! (pure), the verdict on what happened (pure), running it (effects), the
//! rules a request must meet whatever API sent it (pure), and the service
//! that takes a warm container and runs a request in it (effects).

pub mod request;
mod run;
#[cfg(test)]
mod runner_tests;
mod script;
mod service;
pub mod usage;
mod verdict;

pub use request::{
    Asked, File, Invalid, Limit, MAX_ARGS, MAX_FILES, MAX_STDIN_BYTES, MIB, MIN_MEMORY_MIB, Memory,
    Plan, Request, Unit,
};
pub use run::{Limits, StageLimits, retryable, run};
pub use script::{Job, RUNNER_GID, RUNNER_UID, WORKDIR, command, ready_command, run_command};
pub use service::{ExecError, Executions, Ran};
pub use usage::{LimitEvents, Usage};
pub use verdict::{Outcome, StageOutcome, Status, judge, verdict};
