//! The verdict on an execution, from what the exec reported. Pure.

use serde::{Deserialize, Serialize};

use crate::lxd::{ExecOutcome, Stopped};

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exited with code 0.
    Ok,
    /// Exited with another code, or was ended by a signal other than SIGKILL.
    RuntimeError,
    /// Ran past its wall time; the container was destroyed.
    Timeout,
    /// Ended by SIGKILL: the kernel enforcing a limit (memory, processes).
    Killed,
    /// Wrote more than the output cap; it was stopped and the output cut.
    OutputLimitExceeded,
    /// unsandbox could not run it.
    InternalError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::RuntimeError => "runtime_error",
            Status::Timeout => "timeout",
            Status::Killed => "killed",
            Status::OutputLimitExceeded => "output_limit_exceeded",
            Status::InternalError => "internal_error",
        }
    }
}

/// An execution's result, before it is shaped for an API.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub exec_ms: u64,
    /// Set for internal errors.
    pub message: Option<String>,
}

/// Status, exit code and signal from an exec. LXD reports a process ended by
/// signal N as exit code 128+N.
pub fn verdict(out: &ExecOutcome) -> (Status, Option<i32>, Option<i32>) {
    match out.stopped {
        Stopped::Timeout => (Status::Timeout, None, Some(9)),
        Stopped::OutputLimit => (Status::OutputLimitExceeded, None, Some(9)),
        Stopped::Exited => match out.exit_code {
            Some(0) => (Status::Ok, Some(0), None),
            Some(c) if (129..=128 + 64).contains(&c) => {
                let sig = c - 128;
                let status = if sig == 9 {
                    Status::Killed
                } else {
                    Status::RuntimeError
                };
                (status, Some(c), Some(sig))
            }
            Some(c) => (Status::RuntimeError, Some(c), None),
            None => (Status::InternalError, None, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn exited(code: Option<i32>, stopped: Stopped) -> ExecOutcome {
        ExecOutcome {
            stopped,
            exit_code: code,
            stdout: vec![],
            stderr: vec![],
            stdout_truncated: false,
            stderr_truncated: false,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&exited(Some(0), Stopped::Exited)),
            (Status::Ok, Some(0), None)
        );
        assert_eq!(
            verdict(&exited(Some(3), Stopped::Exited)),
            (Status::RuntimeError, Some(3), None)
        );
        assert_eq!(
            verdict(&exited(Some(137), Stopped::Exited)),
            (Status::Killed, Some(137), Some(9))
        );
        assert_eq!(
            verdict(&exited(Some(139), Stopped::Exited)),
            (Status::RuntimeError, Some(139), Some(11))
        );
        assert_eq!(verdict(&exited(None, Stopped::Timeout)).0, Status::Timeout);
        assert_eq!(
            verdict(&exited(None, Stopped::OutputLimit)).0,
            Status::OutputLimitExceeded
        );
    }
}
