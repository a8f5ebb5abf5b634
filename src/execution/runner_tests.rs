//! The runner's scripts run by the host's `/bin/sh` exactly as a container
//! runs them as the runner user (the root prologue before `setpriv` aside),
//! for every exit status and the common signals, and judged by `stage` as
//! LXD would report them: the shell's exit code, and a failed operation
//! ("Command not found") when that code is 126 or 127.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::crd::LanguageSpec;
use crate::lxd::{ExecOutcome, Stopped};

use super::script::{Job, KILL_REST, command, run_command};
use super::verdict::{StageOutcome, Status, stage, verdict};

/// Runs the runner's part of `argv` (see `script::as_runner`) in `dir`;
/// without the kill of leftover processes, which in a container ends the
/// runner user's processes and here would end the test user's.
fn exec_on_host(argv: &[String], stdin: &[u8], dir: &std::path::Path) -> ExecOutcome {
    // Every signal at its default action, as in a container's exec: a test
    // run under nohup (or anything else that ignores signals) must not let
    // the programs below ignore them too.
    let mut child = Command::new("/usr/bin/env")
        .args(["--default-signal", "/bin/sh", "-c"])
        .arg(argv[4].replace(KILL_REST, ":"))
        .arg("unsandbox")
        .args(&argv[5..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/bin/sh runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    // LXD's exit code: 128+N for a process ended by signal N.
    let code = out.status.code().or(out.status.signal().map(|s| 128 + s));
    ExecOutcome {
        stopped: Stopped::Exited,
        exit_code: code,
        stdout: out.stdout,
        stderr: out.stderr,
        stdout_truncated: false,
        stderr_truncated: false,
        elapsed: Duration::ZERO,
        lxd_error: match code {
            Some(126) => Some("Command not executable".into()),
            Some(127) => Some("Command not found".into()),
            _ => None,
        },
    }
}

fn language(yaml: &str) -> LanguageSpec {
    serde_yaml::from_str(yaml).unwrap()
}

/// Runs `code` as the language's program, through both stages for a
/// compiled language; the stage that answers.
fn run(lang: &LanguageSpec, code: &str) -> StageOutcome {
    let dir = tempfile::tempdir().unwrap();
    let job = Job {
        language: lang.clone(),
        code: code.into(),
        files: vec![],
        stdin: b"in\n".to_vec(),
        args: vec!["arg".into()],
        subdir: Some("job".into()),
        network: crate::crd::NetworkTier::Zerotrust,
        sandboxed: false,
    };
    let (argv, stdin) = command(&job);
    let first = stage(exec_on_host(&argv, &stdin, dir.path()));
    if !job.compiled() {
        return first;
    }
    assert_eq!((first.status, first.exit_code), (Status::Ok, Some(0)));
    let (argv, stdin) = run_command(&job);
    stage(exec_on_host(&argv, &stdin, dir.path()))
}

#[test]
fn every_exit_status_is_the_programs_with_its_output() {
    let interpreted = language("{name: bash, sourceFile: main.sh, run: bash main.sh}");
    let compiled = language(
        "{name: bashc, sourceFile: main.sh, compile: 'bash -n main.sh', run: 'bash main.sh'}",
    );
    for lang in [&interpreted, &compiled] {
        for n in 0..=255 {
            let code = format!("read x; echo \"out $x $1\"; echo err >&2; exit {n}");
            let s = run(lang, &code);
            let what = format!("{} exit {n}: {s:?}", lang.name);
            assert_eq!((s.status, s.exit_code, s.signal), verdict(n), "{what}");
            assert_ne!(s.status, Status::InternalError, "{what}");
            assert_eq!(s.stdout, b"out in arg\n", "{what}");
            assert_eq!(s.stderr, b"err\n", "{what}");
            assert!(!s.lost_output && s.runner_error.is_none(), "{what}");
        }
    }
    // 126 and 127 are the program's, whoever sets them.
    let s = run(&interpreted, "echo before; no-such-command-here");
    assert_eq!((s.status, s.exit_code), (Status::RuntimeError, Some(127)));
    assert_eq!(s.stdout, b"before\n");
    assert!(
        String::from_utf8_lossy(&s.stderr).contains("not found"),
        "{s:?}"
    );
    let s = run(&interpreted, "echo before; ./main.sh");
    assert_eq!((s.status, s.exit_code), (Status::RuntimeError, Some(126)));
    // A compile command that is not found is a compile error, not ours.
    let broken = language("{name: c, sourceFile: main.c, compile: 'no-such-cc main.c', run: ./a}");
    let dir = tempfile::tempdir().unwrap();
    let job = Job {
        language: broken,
        code: "int main;".into(),
        files: vec![],
        stdin: vec![],
        args: vec![],
        subdir: None,
        network: crate::crd::NetworkTier::Zerotrust,
        sandboxed: false,
    };
    let (argv, stdin) = command(&job);
    let s = stage(exec_on_host(&argv, &stdin, dir.path()));
    assert_eq!((s.status, s.exit_code), (Status::RuntimeError, Some(127)));
    assert!(s.runner_error.is_none());
}

#[test]
fn death_by_each_common_signal_is_reported_with_the_output_before_it() {
    let bash = language("{name: bash, sourceFile: main.sh, run: bash main.sh}");
    // SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE,
    // SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGXCPU,
    // SIGXFSZ, SIGSYS.
    for sig in [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 31,
    ] {
        // bash ignores SIGQUIT whatever the trap says: the program execs sh.
        let code = format!("echo before; echo oops >&2; exec sh -c 'kill -{sig} $$; echo after'");
        let s = run(&bash, &code);
        let what = format!("signal {sig}: {s:?}");
        let status = if sig == 9 {
            Status::Killed
        } else {
            Status::RuntimeError
        };
        assert_eq!(
            (s.status, s.exit_code, s.signal),
            (status, Some(128 + sig), Some(sig)),
            "{what}"
        );
        assert_eq!(
            (s.stdout.as_slice(), s.stderr.as_slice()),
            (b"before\n".as_slice(), b"oops\n".as_slice()),
            "{what}"
        );
    }
}
