//! The verdict on an execution, from what the exec reported. Pure.

use serde::{Deserialize, Serialize};

use crate::lxd::{ExecOutcome, Stopped};

/// How an execution ended.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord,
)]
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
    /// The compile stage failed (non-zero exit, or a limit); the run stage
    /// was skipped. The compiler's output is reported.
    CompileError,
    /// unsandbox could not run it.
    #[default]
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
            Status::CompileError => "compile_error",
            Status::InternalError => "internal_error",
        }
    }
}

/// The result of one stage (compile or run), before it is shaped for an API.
#[derive(Debug, Clone, Default)]
pub struct StageOutcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub exec_ms: u64,
    /// Why the stage ended the way it did, when the exit code does not say.
    pub message: Option<String>,
    /// CPU time the container used during the stage, in milliseconds, from
    /// its cgroup; `None` when the cgroup could not be read.
    pub cpu_ms: Option<u64>,
    /// Peak memory of the container during the stage, in bytes, from its
    /// cgroup; `None` when the cgroup could not be read.
    pub memory_bytes: Option<u64>,
    /// The command exited on its own but a stream lacks the end mark (see
    /// `script::END_MARK`): LXD lost the end of the output.
    pub lost_output: bool,
}

/// An execution's result: its stages and the overall status.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `CompileError` when the compile stage failed, else the run stage's status.
    pub status: Status,
    /// The compile stage, for compiled languages.
    pub compile: Option<StageOutcome>,
    /// The run stage; `None` when compiling failed.
    pub run: Option<StageOutcome>,
    /// Set for internal errors.
    pub message: Option<String>,
}

impl Outcome {
    /// An execution that unsandbox could not carry out.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: Status::InternalError,
            compile: None,
            run: None,
            message: Some(message.into()),
        }
    }

    /// The stage whose output answers the request: the run stage, or the
    /// compile stage when compiling failed.
    pub fn last_stage(&self) -> Option<&StageOutcome> {
        self.run.as_ref().or(self.compile.as_ref())
    }

    /// Milliseconds spent in execs, all stages together.
    pub fn exec_ms(&self) -> u64 {
        self.compile
            .iter()
            .chain(&self.run)
            .map(|s| s.exec_ms)
            .sum()
    }
}

/// The overall status from the stages. Pure.
pub fn overall(compile: Option<&StageOutcome>, run: Option<&StageOutcome>) -> Status {
    match (compile, run) {
        (Some(c), _) if c.status != Status::Ok => Status::CompileError,
        (_, Some(r)) => r.status,
        _ => Status::InternalError,
    }
}

/// A stage's outcome from its exec.
pub fn stage(out: crate::lxd::ExecOutcome) -> StageOutcome {
    let (status, exit_code, signal) = verdict(&out);
    let (mut stdout, mut stderr) = (out.stdout, out.stderr);
    let marked = strip_mark(&mut stdout) & strip_mark(&mut stderr);
    // The runner's shell marks both streams whenever it exits on its own; a
    // shell killed by a signal (the kernel's OOM killer) cannot.
    let exited_on_its_own = out.stopped == Stopped::Exited && signal.is_none();
    StageOutcome {
        lost_output: exited_on_its_own && !marked,
        status,
        exit_code,
        signal,
        stdout,
        stderr,
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        exec_ms: out.elapsed.as_millis() as u64,
        message: None,
        cpu_ms: None,
        memory_bytes: None,
    }
}

/// Removes the end mark from the end of a stream; whether it was there.
fn strip_mark(stream: &mut Vec<u8>) -> bool {
    let mark = super::script::END_MARK;
    if stream.ends_with(mark) {
        stream.truncate(stream.len() - mark.len());
        true
    } else {
        false
    }
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

    #[test]
    fn end_marks_are_stripped_and_their_absence_is_lost_output() {
        let mark = crate::execution::script::END_MARK;
        let mut out = exited(Some(0), Stopped::Exited);
        out.stdout = [b"2\n".as_slice(), mark].concat();
        out.stderr = mark.to_vec();
        let s = stage(out.clone());
        assert_eq!(
            (s.stdout.as_slice(), s.stderr.as_slice()),
            (b"2\n".as_slice(), b"".as_slice())
        );
        assert!(!s.lost_output);
        // LXD dropped the last chunk of stdout.
        out.stdout = b"2".to_vec();
        let s = stage(out.clone());
        assert!(s.lost_output);
        assert_eq!(s.stdout, b"2");
        // A shell killed by a signal, a timeout or an output flood: no marks expected.
        out.exit_code = Some(137);
        assert!(!stage(out.clone()).lost_output);
        out.stopped = Stopped::Timeout;
        assert!(!stage(out).lost_output);
    }

    #[test]
    fn a_failed_compile_stage_is_a_compile_error_whatever_ended_it() {
        let ok = stage(exited(Some(0), Stopped::Exited));
        let failed = stage(exited(Some(1), Stopped::Exited));
        let timed_out = stage(exited(None, Stopped::Timeout));
        assert_eq!(overall(Some(&failed), None), Status::CompileError);
        assert_eq!(overall(Some(&timed_out), None), Status::CompileError);
        assert_eq!(overall(Some(&ok), Some(&failed)), Status::RuntimeError);
        assert_eq!(overall(None, Some(&ok)), Status::Ok);
        assert_eq!(overall(None, None), Status::InternalError);
    }
}
