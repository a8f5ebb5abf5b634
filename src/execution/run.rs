//! Runs a job in a container taken from a pool: the compile stage (compiled
//! languages), then the run stage, each with its own limits.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lxd::{ExecSpec, Lxd, LxdError, Tap};

use super::progress::{Progress, Stage, Stream, Watch};

use super::script::{Job, WORKDIR, command, run_command};
use super::usage::Meter;
use super::verdict::{Outcome, StageOutcome, Status, judge, overall, stage};

/// How often a stage's memory is sampled while it runs (see [`Meter::sample`]).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Limits of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLimits {
    /// Wall-clock time the stage may take.
    pub wall: Duration,
    /// Bytes kept of stdout and of stderr; the stage is stopped past them.
    pub output_cap: usize,
    /// Memory limit of the container during the stage, in MiB.
    pub memory_mib: u32,
}

/// Limits of both stages, and the memory limit the container was launched with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub compile: StageLimits,
    pub run: StageLimits,
    pub launched_memory_mib: u32,
}

/// Runs `job` in the running container `container`. The container must be
/// destroyed afterwards whatever the result: the code may still be running
/// after a timeout or an output flood. `LxdError::OutputLost` means LXD
/// dropped output: the code ran, but its answer is unknown.
pub async fn run(
    lxd: &Lxd,
    container: &str,
    job: &Job,
    limits: &Limits,
) -> Result<Outcome, LxdError> {
    run_watched(lxd, container, job, limits, None).await
}

/// `run`, reporting each stage's output to `watch` as it arrives.
pub async fn run_watched(
    lxd: &Lxd,
    container: &str,
    job: &Job,
    limits: &Limits,
    watch: Option<&Watch>,
) -> Result<Outcome, LxdError> {
    let stage_of = |stage| Watched { watch, stage };
    let mut memory = limits.launched_memory_mib;
    let (argv, stdin) = command(job);
    if !job.compiled() {
        set_memory(lxd, container, &mut memory, limits.run.memory_mib).await?;
        let run = measured(
            lxd,
            container,
            job,
            argv,
            stdin,
            &limits.run,
            stage_of(Stage::Run),
        )
        .await?;
        return Ok(finish(None, Some(run)));
    }
    set_memory(lxd, container, &mut memory, limits.compile.memory_mib).await?;
    let compiled = measured(
        lxd,
        container,
        job,
        argv,
        stdin,
        &limits.compile,
        stage_of(Stage::Compile),
    )
    .await?;
    if compiled.status != Status::Ok {
        return Ok(finish(Some(compiled), None));
    }
    if let Err(e) = set_memory(lxd, container, &mut memory, limits.run.memory_mib).await {
        // The kernel refuses a limit below what the compile stage left in use.
        let run = StageOutcome {
            status: Status::Killed,
            message: Some(format!(
                "the run stage's memory limit ({} MiB) could not be applied: {e}",
                limits.run.memory_mib
            )),
            ..StageOutcome::default()
        };
        return Ok(finish(Some(compiled), Some(run)));
    }
    let (argv, stdin) = run_command(job);
    let run = measured(
        lxd,
        container,
        job,
        argv,
        stdin,
        &limits.run,
        stage_of(Stage::Run),
    )
    .await?;
    Ok(finish(Some(compiled), Some(run)))
}

/// Whether a failed execution may run again in a fresh container: LXD lost
/// the end of the output, or the container was not running (stopped out of
/// band, and taken before the agent's resync noticed). Either way the code's
/// answer is unknown, and a second run in a fresh container changes nothing
/// but the answer.
pub fn retryable(e: &LxdError) -> bool {
    match e {
        LxdError::OutputLost => true,
        // LXD 5.0's words for an exec in a stopped instance.
        LxdError::Api { message, .. } | LxdError::Operation { message } => {
            message.contains("is not running")
        }
        _ => false,
    }
}

/// Runs one stage's exec, with the CPU time, peak memory and limit events of
/// its container meanwhile, which name the limit a failed stage hit. Output
/// that LXD lost is an error, never a short answer: the caller runs the job
/// again in a fresh container. A runner that failed before the command
/// ended is an error too: it says nothing about the code.
async fn measured(
    lxd: &Lxd,
    container: &str,
    job: &Job,
    argv: Vec<String>,
    stdin: Vec<u8>,
    limits: &StageLimits,
    watched: Watched<'_>,
) -> Result<StageOutcome, LxdError> {
    let mut meter = Meter::start(lxd.project(), container);
    let tap = watched.tap();
    let spec = spec(job, argv, stdin, limits);
    // A recycled container's execution runs in its session; smoke tests
    // (a job with a folder of its own) run side by side, each its own exec.
    let in_session = job.sandboxed && job.subdir.is_none();
    let exec = super::session::exec_or_session(lxd, container, spec, tap.as_deref(), in_session);
    tokio::pin!(exec);
    let mut sampling = tokio::time::interval(SAMPLE_EVERY);
    sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let done = loop {
        tokio::select! {
            done = &mut exec => break done,
            _ = sampling.tick() => meter.sample(),
        }
    };
    let mut out = stage(done?);
    if out.lost_output {
        return Err(LxdError::OutputLost);
    }
    if let Some(message) = out.runner_error.take() {
        return Err(LxdError::Operation { message });
    }
    let usage = meter.finish();
    out.cpu_ms = usage.cpu_ms;
    out.memory_bytes = usage.memory_bytes;
    let (status, message) = judge(out.status, &usage, limits.memory_mib);
    out.status = status;
    out.message = out.message.or(message);
    Ok(out)
}

/// A stage and where its output goes while it runs.
#[derive(Clone, Copy)]
struct Watched<'a> {
    watch: Option<&'a Watch>,
    stage: Stage,
}

impl Watched<'_> {
    /// The exec's tap: each piece of output as a `Progress::Output`.
    fn tap(self) -> Option<Box<Tap>> {
        let watch = self.watch?.clone();
        let stage = self.stage;
        Some(Box::new(move |fd: u8, bytes: &[u8]| {
            let stream = if fd == 2 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            // A watcher that went away stops watching; the run goes on.
            let _ = watch.send(Progress::Output {
                stage,
                stream,
                bytes: bytes.to_vec(),
            });
        }))
    }
}

fn finish(compile: Option<StageOutcome>, run: Option<StageOutcome>) -> Outcome {
    Outcome {
        status: overall(compile.as_ref(), run.as_ref()),
        compile,
        run,
        message: None,
    }
}

/// Sets the container's memory limit when the stage needs another one.
async fn set_memory(
    lxd: &Lxd,
    container: &str,
    current: &mut u32,
    wanted: u32,
) -> Result<(), LxdError> {
    if *current != wanted {
        lxd.set_config(container, &[("limits.memory", format!("{wanted}MiB"))])
            .await?;
        *current = wanted;
    }
    Ok(())
}

fn spec(job: &Job, command: Vec<String>, stdin: Vec<u8>, limits: &StageLimits) -> ExecSpec {
    let mut env = BTreeMap::from([
        ("HOME".to_string(), WORKDIR.to_string()),
        ("USER".to_string(), "runner".to_string()),
        ("LOGNAME".to_string(), "runner".to_string()),
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("TMPDIR".to_string(), "/tmp".to_string()),
    ]);
    env.extend(job.language.env.clone());
    if job.network == crate::crd::NetworkTier::Semitrusted {
        env.extend(super::script::proxy_env());
    }
    ExecSpec {
        command,
        env,
        user: 0,
        group: 0,
        cwd: WORKDIR.to_string(),
        stdin,
        output_cap: limits.output_cap,
        deadline: limits.wall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_output_and_a_stopped_container_may_run_again_nothing_else() {
        assert!(retryable(&LxdError::OutputLost));
        assert!(retryable(&LxdError::Api {
            status: 400,
            message: "Instance is not running".into()
        }));
        assert!(!retryable(&LxdError::Api {
            status: 500,
            message: "Failed to retrieve PID of executing child process".into()
        }));
        assert!(!retryable(&LxdError::Operation {
            message: "the runner failed before the command ended".into()
        }));
    }
}
