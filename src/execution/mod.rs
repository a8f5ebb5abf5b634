//! Running code in a container: the command that runs submitted code
//! inside it (pure), the verdict on what happened (pure), and running it
//! (effects). The service that takes a warm container for a request lives
//! above the agent, in `service`.

pub mod progress;
mod run;
#[cfg(test)]
mod runner_tests;
mod sandbox;
mod script;
pub mod session;
pub mod usage;
mod verdict;

pub use progress::{Progress, Stage, Stream, Watch, mark_start};
pub use run::{Limits, StageLimits, retryable, run, run_watched};
pub use script::{
    EGRESS_PROXY, ERROR_MARKER, Job, NETWORK_MARKER, READY_MARKER, RUNNER_GID, RUNNER_UID,
    USED_MARKER, WORKDIR, command, proxy_env, ready_command, ready_stdin, run_command,
};
pub use usage::{LimitEvents, Usage};
pub use verdict::{Outcome, StageOutcome, Status, judge, verdict};
