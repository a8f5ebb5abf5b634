//! One execution: the command that runs submitted code inside a container
//! (pure), the verdict on what happened (pure), and running it (effects).

mod run;
#[cfg(test)]
mod runner_tests;
mod script;
pub mod usage;
mod verdict;

pub use run::{Limits, StageLimits, retryable, run};
pub use script::{Job, RUNNER_GID, RUNNER_UID, WORKDIR, command, ready_command, run_command};
pub use usage::{LimitEvents, Usage};
pub use verdict::{Outcome, StageOutcome, Status, judge, verdict};
