//! Piston answers: stages with Piston's statuses, codes, signals and
//! messages, and the runtime list. Pure.

use serde::Serialize;
use utoipa::ToSchema;

use crate::agent::CatalogEntry;
use crate::crd::NetworkTier;
use crate::execution::{Outcome, StageOutcome, Status};

use super::request::Asked;
use super::version;

/// One entry of `GET /api/v2/runtimes`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = PistonRuntime)]
pub struct Runtime {
    pub language: String,
    pub version: String,
    pub aliases: Vec<String>,
}

/// One stage of a Piston answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq, ToSchema)]
#[schema(as = PistonStage)]
pub struct Stage {
    pub stdout: String,
    pub stderr: String,
    /// stdout followed by stderr.
    pub output: String,
    /// Exit code; null when a signal ended the stage.
    pub code: Option<i32>,
    /// Name of the signal that ended the stage (`SIGKILL`), or null.
    pub signal: Option<String>,
    pub message: Option<String>,
    /// null (success), `RE`, `SG`, `TO`, `OL`, `EL` or `XX`.
    pub status: Option<&'static str>,
    /// CPU time in milliseconds, from the container's cgroup.
    pub cpu_time: Option<u64>,
    /// Wall-clock time in milliseconds.
    pub wall_time: Option<u64>,
    /// Peak memory in bytes, from the container's cgroup.
    pub memory: Option<u64>,
}

/// The answer of `POST /api/v2/execute`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = PistonExecuteResponse)]
pub struct ExecuteResponse {
    pub language: String,
    pub version: String,
    pub run: Stage,
    /// For compiled languages only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<Stage>,
}

/// Linux signal names, as Piston reports them.
pub(super) fn signal_name(sig: i32) -> Option<String> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match sig {
        1..=31 => Some(NAMES[sig as usize - 1].to_string()),
        34..=64 => Some(format!("SIGRTMIN+{}", sig - 34)),
        _ => None,
    }
}

/// A stage in Piston's shape. Codes, signals and messages follow Piston's
/// sandbox (isolate): a signal leaves `code` null; TO, OL and EL report
/// SIGKILL. Piston has no status of its own for a memory or process limit
/// (isolate reports an OOM kill as `SG`, SIGKILL): those are `SG` when a
/// signal ended the stage, else `RE`, and the message names the limit. A
/// stage that used more CPU than `cpu_limit_ms` is `TO`.
pub(super) fn stage(s: &StageOutcome, cpu_limit_ms: Option<u64>) -> Stage {
    let sigkill = || Some("SIGKILL".to_string());
    let (status, code, signal, message): (_, _, _, Option<String>) = match s.status {
        Status::Ok => (None, s.exit_code, None, None),
        Status::RuntimeError => match s.signal {
            Some(sig) => (
                Some("SG"),
                None,
                signal_name(sig),
                Some(format!("Caught fatal signal {sig}")),
            ),
            None => (
                Some("RE"),
                s.exit_code,
                None,
                s.exit_code.map(|c| format!("Exited with error status {c}")),
            ),
        },
        Status::Killed => (
            Some("SG"),
            None,
            sigkill(),
            Some("Caught fatal signal 9".into()),
        ),
        Status::MemoryLimitExceeded | Status::ProcessLimitExceeded => match s.signal {
            Some(sig) => (Some("SG"), None, signal_name(sig), None),
            None => (Some("RE"), s.exit_code, None, None),
        },
        Status::Timeout => (
            Some("TO"),
            None,
            sigkill(),
            Some("Time limit exceeded (wall clock)".into()),
        ),
        Status::OutputLimitExceeded if s.stderr_truncated && !s.stdout_truncated => (
            Some("EL"),
            None,
            sigkill(),
            Some("stderr length exceeded".into()),
        ),
        Status::OutputLimitExceeded => (
            Some("OL"),
            None,
            sigkill(),
            Some("stdout length exceeded".into()),
        ),
        Status::CompileError | Status::InternalError => {
            (Some("XX"), None, None, Some("internal error".into()))
        }
    };
    let mut out = Stage {
        stdout: String::from_utf8_lossy(&s.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&s.stderr).into_owned(),
        output: String::new(),
        code,
        signal,
        message: s.message.clone().or(message),
        status,
        cpu_time: s.cpu_ms,
        wall_time: Some(s.exec_ms),
        memory: s.memory_bytes,
    };
    out.output = format!("{}{}", out.stdout, out.stderr);
    if let (Some(limit), Some(used), None | Some("RE")) = (cpu_limit_ms, s.cpu_ms, out.status)
        && used > limit
    {
        out.status = Some("TO");
        out.message = Some(format!(
            "CPU time limit exceeded: used {used} ms of {limit} ms (measured; the stage was not stopped early)"
        ));
    }
    out
}

/// The answer for an outcome. When compiling failed, Piston answers the
/// compile stage as `run` too (its compatibility with older clients).
pub(super) fn response(
    o: &Outcome,
    language: &str,
    version: &str,
    asked: &Asked,
) -> ExecuteResponse {
    let compile = o.compile.as_ref().map(|c| stage(c, asked.compile_cpu_time));
    let run = match (&o.run, &compile) {
        (Some(r), _) => stage(r, asked.run_cpu_time),
        (None, Some(c)) => c.clone(),
        (None, None) => Stage {
            status: Some("XX"),
            message: Some(o.message.clone().unwrap_or_else(|| "internal error".into())),
            ..Stage::default()
        },
    };
    ExecuteResponse {
        language: language.to_string(),
        version: version.to_string(),
        run,
        compile,
    }
}

/// The runtimes Piston clients see: languages served without network.
pub(super) fn runtime_list(catalog: &[CatalogEntry]) -> Vec<Runtime> {
    catalog
        .iter()
        .filter(|e| e.pools.iter().any(|p| p.1 == NetworkTier::Zerotrust))
        .map(|e| Runtime {
            language: e.name.clone(),
            version: served_version(e),
            aliases: e.aliases.clone(),
        })
        .collect()
}

pub(super) fn served_version(e: &CatalogEntry) -> String {
    e.version
        .clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| version::UNKNOWN.to_string())
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn hit(status: Status, exit_code: Option<i32>, signal: Option<i32>, why: &str) -> Stage {
        let s = StageOutcome {
            status,
            exit_code,
            signal,
            message: Some(why.into()),
            ..StageOutcome::default()
        };
        stage(&s, None)
    }

    #[test]
    fn a_hit_limit_is_sg_or_re_with_the_limit_named() {
        let s = hit(Status::MemoryLimitExceeded, Some(137), Some(9), "memory");
        assert_eq!(
            (s.status, s.code, s.signal.as_deref(), s.message.as_deref()),
            (Some("SG"), None, Some("SIGKILL"), Some("memory"))
        );
        let s = hit(Status::ProcessLimitExceeded, Some(1), None, "processes");
        assert_eq!(
            (s.status, s.code, s.signal, s.message.as_deref()),
            (Some("RE"), Some(1), None, Some("processes"))
        );
        let s = hit(Status::MemoryLimitExceeded, Some(1), None, "memory");
        assert_eq!((s.status, s.code), (Some("RE"), Some(1)));
    }
}
