//! Runs a job in a container taken from a pool.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lxd::{ExecSpec, Lxd, LxdError};

use super::script::{Job, WORKDIR, command};
use super::verdict::{Outcome, verdict};

/// Runs `job` in the running container `container`, watching it for at most
/// `wall` and keeping at most `output_cap` bytes of stdout and of stderr.
/// The container must be destroyed afterwards whatever the result: the code
/// may still be running after a timeout or an output flood.
pub async fn run(
    lxd: &Lxd,
    container: &str,
    job: &Job,
    wall: Duration,
    output_cap: usize,
) -> Result<Outcome, LxdError> {
    let (argv, stdin) = command(job);
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
    let spec = ExecSpec {
        command: argv,
        env,
        user: 0,
        group: 0,
        cwd: WORKDIR.to_string(),
        stdin,
        output_cap,
        deadline: wall,
    };
    let out = lxd.exec(container, spec).await?;
    let (status, exit_code, signal) = verdict(&out);
    Ok(Outcome {
        status,
        exit_code,
        signal,
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        stdout: out.stdout,
        stderr: out.stderr,
        exec_ms: out.elapsed.as_millis() as u64,
        message: None,
    })
}
