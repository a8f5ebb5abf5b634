//! The verdict on an execution, from what the exec reported. Pure.

use serde::{Deserialize, Serialize};

use crate::lxd::{ExecOutcome, Stopped};

use super::usage::Usage;

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
    /// Ended by SIGKILL, and no limit of the container was hit meanwhile.
    Killed,
    /// The kernel's OOM killer ended a process of the stage (its memory
    /// limit was hit), and the stage did not succeed.
    MemoryLimitExceeded,
    /// A fork or thread was refused at the process limit, and the stage did
    /// not succeed.
    ProcessLimitExceeded,
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
            Status::MemoryLimitExceeded => "memory_limit_exceeded",
            Status::ProcessLimitExceeded => "process_limit_exceeded",
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
    /// The runner exited 0 but a stream lacks its end mark (see
    /// `script::END_MARK`): LXD lost the end of the output.
    pub lost_output: bool,
    /// The runner itself failed before the command ended (it could not be
    /// started, or could not write the files): why. The stage tells nothing
    /// about the submitted code.
    pub runner_error: Option<String>,
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
    /// Whether every stage ended by itself, with or without an error of the
    /// program's own: no timeout, kill, limit hit, cut output or internal
    /// error. Only such an execution's container may be recycled.
    pub fn clean(&self) -> bool {
        let fine = |s: &StageOutcome| {
            matches!(
                s.status,
                Status::Ok | Status::RuntimeError | Status::CompileError
            )
        };
        self.status != Status::InternalError
            && self.compile.iter().chain(self.run.iter()).all(fine)
            && (self.compile.is_some() || self.run.is_some())
    }

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

/// A stage's outcome from its exec. The command's status is the one in the
/// runner's end marks (see `script::END_MARK`), never LXD's verdict on the
/// exec, which is the runner's.
pub fn stage(out: ExecOutcome) -> StageOutcome {
    let (mut stdout, mut stderr) = (out.stdout, out.stderr);
    let mut lost_output = false;
    let mut runner_error = None;
    let (status, exit_code, signal) = match (out.stopped, out.exit_code) {
        (Stopped::Timeout, _) => (Status::Timeout, None, Some(9)),
        (Stopped::OutputLimit, _) => (Status::OutputLimitExceeded, None, Some(9)),
        // The runner exits 0 only after marking both streams.
        (Stopped::Exited, Some(0)) => match (strip_mark(&mut stdout), strip_mark(&mut stderr)) {
            (Some(code), Some(_)) => verdict(code),
            _ => {
                lost_output = true;
                (Status::InternalError, None, None)
            }
        },
        // The runner's shell was killed by a signal (the kernel's OOM
        // killer): it could not mark the streams, and its end is the stage's.
        (Stopped::Exited, Some(code)) if signal_of(code).is_some() => verdict(code),
        (Stopped::Exited, code) => {
            let why = match (&out.lxd_error, code) {
                (Some(e), _) => e.clone(),
                (None, Some(c)) => format!("exit code {c}"),
                (None, None) => "no exit code".to_string(),
            };
            runner_error = Some(format!(
                "the runner failed before the command ended ({why}): {}",
                String::from_utf8_lossy(&stderr).trim()
            ));
            (Status::InternalError, code, None)
        }
    };
    StageOutcome {
        lost_output,
        runner_error,
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

/// The stage's status once the container's limit events are known. Pure.
///
/// A stage that failed (an exit code, a signal, SIGKILL) or ran into its
/// wall time while the OOM killer ended one of its processes hit its memory
/// limit; while forks were refused at the process limit, it hit that: a
/// thread or fork bomb whose threads wait forever is named for the limit
/// it hit, not for the wall time it then ran into (the message says both).
/// Memory comes first: an OOM kill is what ends a program, a refused fork
/// is what it may or may not handle. A stage that exited 0 coped with the
/// event and is `Ok`. An output flood stays what it is (unsandbox cut it;
/// the events go in the message).
///
/// A stage that ran into its wall time without an OOM kill or a refused
/// fork, but reached its memory limit holding at least seven eighths of it
/// in anonymous memory, stalled at that limit: the kernel kept reclaiming
/// file pages (code it then reads back) instead of ending it. That is the
/// memory limit too (a refused fork is an event the kernel counted; a stall
/// is inferred, so the fork comes first).
pub fn judge(status: Status, usage: &Usage, memory_mib: u32) -> (Status, Option<String>) {
    let events = usage.events;
    let oom = events.oom_kills.unwrap_or(0);
    let limit = u64::from(memory_mib) << 20;
    let stalled = status == Status::Timeout
        && events.memory_max.unwrap_or(0) > 0
        && usage.anon_peak_bytes.is_some_and(|a| a >= limit / 8 * 7);
    let pids = events.pids_max.unwrap_or(0);
    let memory = format!(
        "the memory limit ({memory_mib} MiB) was hit: the kernel's OOM killer ended {oom} process{}",
        if oom == 1 { "" } else { "es" }
    );
    let processes = format!(
        "the process limit was hit: {pids} fork{} refused",
        if pids == 1 { " was" } else { "s were" }
    );
    let then = |m: String| match status {
        Status::Timeout => format!("{m}; then the wall time ran out"),
        _ => m,
    };
    match status {
        Status::Ok | Status::CompileError | Status::InternalError => (status, None),
        Status::OutputLimitExceeded => {
            let why: Vec<String> = [(oom > 0, memory), (pids > 0, processes)]
                .into_iter()
                .filter_map(|(hit, m)| hit.then_some(m))
                .collect();
            (
                status,
                (!why.is_empty()).then(|| format!("also, {}", why.join("; "))),
            )
        }
        _ if oom > 0 => (Status::MemoryLimitExceeded, Some(then(memory))),
        _ if pids > 0 => (Status::ProcessLimitExceeded, Some(then(processes))),
        _ if stalled => (
            Status::MemoryLimitExceeded,
            Some(format!(
                "the memory limit ({memory_mib} MiB) was reached and the program stalled there, \
                 the kernel reclaiming memory rather than ending it; then the wall time ran out"
            )),
        ),
        _ => (status, None),
    }
}

/// Removes the runner's end mark from the end of a stream; the status it
/// carries, or `None` when the stream does not end with a mark.
fn strip_mark(stream: &mut Vec<u8>) -> Option<i32> {
    let (mark, close) = (super::script::END_MARK, super::script::END_CLOSE);
    let body = stream.strip_suffix(&[close])?;
    // A status is one to three digits.
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let start = body.len().checked_sub(digits + mark.len())?;
    if !(1..=3).contains(&digits) || &body[start..start + mark.len()] != mark {
        return None;
    }
    let code = std::str::from_utf8(&body[body.len() - digits..])
        .ok()?
        .parse()
        .ok()?;
    stream.truncate(start);
    Some(code)
}

/// The signal that 128+N reports, as shells and LXD report a process ended
/// by signal N.
fn signal_of(code: i32) -> Option<i32> {
    (129..=128 + 64).contains(&code).then(|| code - 128)
}

/// Status, exit code and signal from a command's exit status as a shell
/// reports it: 128+N for a command ended by signal N (SIGKILL: the kernel
/// enforcing a limit). A command that exits 129..=192 by itself reads the
/// same: a shell cannot tell them apart.
pub fn verdict(code: i32) -> (Status, Option<i32>, Option<i32>) {
    match (code, signal_of(code)) {
        (0, _) => (Status::Ok, Some(0), None),
        (_, Some(9)) => (Status::Killed, Some(code), Some(9)),
        (_, Some(sig)) => (Status::RuntimeError, Some(code), Some(sig)),
        (_, None) => (Status::RuntimeError, Some(code), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::usage::LimitEvents;
    use std::time::Duration;

    /// An exec that exited with `code` and printed `stdout` and `stderr`.
    fn exec(code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> ExecOutcome {
        ExecOutcome {
            stopped: Stopped::Exited,
            exit_code: code,
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            stdout_truncated: false,
            stderr_truncated: false,
            elapsed: Duration::ZERO,
            lxd_error: None,
        }
    }

    fn marked(text: &str, code: i32) -> Vec<u8> {
        format!("{text}\x1eunsandbox:end:{code}\x1e").into_bytes()
    }

    /// The runner marked both streams with `code` and exited 0.
    fn ran(code: i32) -> StageOutcome {
        stage(exec(Some(0), &marked("out", code), &marked("err", code)))
    }

    #[test]
    fn verdicts_from_shell_statuses() {
        assert_eq!(verdict(0), (Status::Ok, Some(0), None));
        assert_eq!(verdict(3), (Status::RuntimeError, Some(3), None));
        assert_eq!(verdict(128), (Status::RuntimeError, Some(128), None));
        assert_eq!(verdict(137), (Status::Killed, Some(137), Some(9)));
        assert_eq!(verdict(139), (Status::RuntimeError, Some(139), Some(11)));
        assert_eq!(verdict(192), (Status::RuntimeError, Some(192), Some(64)));
        assert_eq!(verdict(193), (Status::RuntimeError, Some(193), None));
        assert_eq!(verdict(255), (Status::RuntimeError, Some(255), None));
    }

    #[test]
    fn the_status_is_the_marked_one_and_the_marks_are_stripped() {
        for code in [0, 1, 125, 126, 127, 139, 255] {
            let s = ran(code);
            assert_eq!((s.status, s.exit_code), (verdict(code).0, Some(code)));
            assert_eq!(
                (s.stdout.as_slice(), s.stderr.as_slice()),
                (b"out".as_slice(), b"err".as_slice())
            );
            assert!(!s.lost_output && s.runner_error.is_none());
        }
    }

    #[test]
    fn a_stream_without_its_mark_lost_output() {
        // LXD dropped the last chunk of stdout.
        let s = stage(exec(Some(0), b"2", &marked("", 0)));
        assert!(s.lost_output);
        assert_eq!(s.stdout, b"2");
        let s = stage(exec(Some(0), &marked("", 0), b""));
        assert!(s.lost_output);
        // Something that only looks like a mark.
        for tail in [
            "\x1eunsandbox:end:\x1e",
            "\x1eunsandbox:end:1234\x1e",
            "unsandbox:end:1\x1e",
        ] {
            assert!(
                stage(exec(Some(0), tail.as_bytes(), &marked("", 0))).lost_output,
                "{tail:?}"
            );
        }
    }

    #[test]
    fn a_runner_killed_by_a_signal_ends_the_stage_and_marks_nothing() {
        let s = stage(exec(Some(137), b"partial", b""));
        assert_eq!((s.status, s.signal), (Status::Killed, Some(9)));
        assert!(!s.lost_output && s.runner_error.is_none());
        // Marks it did not write are the program's output.
        let s = stage(exec(Some(139), &marked("", 0), b""));
        assert_eq!((s.status, s.signal), (Status::RuntimeError, Some(11)));
        assert_eq!(s.stdout, marked("", 0));
        let mut out = exec(None, b"", b"");
        out.stopped = Stopped::Timeout;
        assert_eq!(stage(out.clone()).status, Status::Timeout);
        out.stopped = Stopped::OutputLimit;
        assert_eq!(stage(out).status, Status::OutputLimitExceeded);
    }

    #[test]
    fn a_runner_that_did_not_start_is_its_own_failure_not_the_programs() {
        // LXD fails the exec when the runner's shell is missing: 127.
        let mut out = exec(Some(127), b"", b"");
        out.lxd_error = Some("Command not found".into());
        let s = stage(out);
        assert_eq!(s.status, Status::InternalError);
        assert!(s.runner_error.unwrap().contains("Command not found"));
        // Writing the files failed: 125, with the shell's complaint.
        let s = stage(exec(Some(125), b"", b"head: No space left on device"));
        assert!(s.runner_error.unwrap().contains("exit code 125"));
        assert!(stage(exec(None, b"", b"")).runner_error.is_some());
    }

    fn events(oom: u64, pids: u64) -> Usage {
        Usage {
            events: LimitEvents {
                oom_kills: Some(oom),
                pids_max: Some(pids),
                memory_max: Some(0),
            },
            ..Usage::default()
        }
    }

    /// Reached the memory limit `times`, with `anon_mib` at most in use.
    fn at_limit(times: u64, anon_mib: u64) -> Usage {
        Usage {
            anon_peak_bytes: Some(anon_mib << 20),
            events: LimitEvents {
                oom_kills: Some(0),
                pids_max: Some(0),
                memory_max: Some(times),
            },
            ..Usage::default()
        }
    }

    #[test]
    fn limit_events_name_the_limit_a_failed_stage_hit() {
        use Status::*;
        let none = events(0, 0);
        // No event: the stage's own status, SIGKILL included.
        for s in [Ok, RuntimeError, Killed, Timeout, OutputLimitExceeded] {
            assert_eq!(judge(s, &none, 64), (s, None));
            assert_eq!(judge(s, &Usage::default(), 64), (s, None));
        }
        // An OOM kill: whatever the failure looked like, memory it is.
        for s in [Killed, RuntimeError] {
            let (status, message) = judge(s, &events(1, 0), 64);
            assert_eq!(status, MemoryLimitExceeded);
            assert!(message.unwrap().contains("(64 MiB)"));
            assert_eq!(judge(s, &events(2, 7), 64).0, MemoryLimitExceeded);
            let (status, message) = judge(s, &events(0, 7), 64);
            assert_eq!(status, ProcessLimitExceeded);
            assert!(message.unwrap().contains("7 forks were refused"));
        }
        // A program that coped with the limit succeeded.
        assert_eq!(judge(Ok, &events(1, 3), 64), (Ok, None));
        // A bomb that then waited for its wall time is named for the limit.
        let (status, message) = judge(Timeout, &events(0, 3), 64);
        assert_eq!(status, ProcessLimitExceeded);
        assert!(
            message
                .unwrap()
                .ends_with("refused; then the wall time ran out")
        );
        assert_eq!(judge(Timeout, &events(1, 3), 64).0, MemoryLimitExceeded);
        // Stalled at the memory limit, reclaiming, until the wall time: the
        // memory limit. Page cache at the limit, or a limit reached by a
        // program that then ended, is not.
        let (status, message) = judge(Timeout, &at_limit(40, 120), 128);
        assert_eq!(status, MemoryLimitExceeded);
        assert!(
            message
                .unwrap()
                .contains("(128 MiB) was reached and the program stalled")
        );
        assert_eq!(judge(Timeout, &at_limit(40, 100), 128).0, Timeout);
        assert_eq!(judge(Timeout, &at_limit(0, 128), 128).0, Timeout);
        assert_eq!(judge(Ok, &at_limit(40, 120), 128).0, Ok);
        assert_eq!(judge(RuntimeError, &at_limit(40, 120), 128).0, RuntimeError);
        // A fork bomb that also filled its memory: the refused forks name it.
        let mut bomb = at_limit(40, 120);
        bomb.events.pids_max = Some(9);
        assert_eq!(judge(Timeout, &bomb, 128).0, ProcessLimitExceeded);
        // An output flood unsandbox cut stays that, the events are told.
        let (status, message) = judge(OutputLimitExceeded, &events(1, 0), 64);
        assert_eq!(status, OutputLimitExceeded);
        assert!(message.unwrap().contains("memory limit"));
        assert_eq!(
            judge(InternalError, &events(1, 1), 64),
            (InternalError, None)
        );
    }

    #[test]
    fn a_failed_compile_stage_is_a_compile_error_whatever_ended_it() {
        let ok = ran(0);
        let failed = ran(1);
        let mut out = exec(None, b"", b"");
        out.stopped = Stopped::Timeout;
        let timed_out = stage(out);
        assert_eq!(overall(Some(&failed), None), Status::CompileError);
        assert_eq!(overall(Some(&timed_out), None), Status::CompileError);
        assert_eq!(overall(Some(&ok), Some(&failed)), Status::RuntimeError);
        assert_eq!(overall(None, Some(&ok)), Status::Ok);
        assert_eq!(overall(None, None), Status::InternalError);
    }

    #[test]
    fn only_stages_that_ended_by_themselves_are_clean() {
        let with = |compile: Option<StageOutcome>, run: Option<StageOutcome>| Outcome {
            status: overall(compile.as_ref(), run.as_ref()),
            compile,
            run,
            message: None,
        };
        let (ok, failed) = (ran(0), ran(1));
        let mut out = exec(None, b"", b"");
        out.stopped = Stopped::Timeout;
        let timed_out = stage(out);
        let killed = stage(exec(Some(137), b"", b""));
        assert!(with(None, Some(ok.clone())).clean());
        assert!(with(None, Some(failed.clone())).clean());
        assert!(with(Some(failed.clone()), None).clean(), "a compile error");
        assert!(with(Some(ok.clone()), Some(failed)).clean());
        assert!(!with(None, Some(timed_out.clone())).clean());
        assert!(
            !with(Some(timed_out), None).clean(),
            "a compile stage that timed out"
        );
        assert!(!with(Some(ok), Some(killed)).clean());
        assert!(!Outcome::internal("lost").clean());
        let mut oom = ran(0);
        oom.status = Status::MemoryLimitExceeded;
        assert!(!with(None, Some(oom)).clean());
    }
}
