//! Proves each language of a pool on this host before the host serves it:
//! every smoke test of every language runs in one fresh container of the
//! pool (same image, same limits as executions get), and only languages
//! whose tests all print what they must are served. Judging is pure; the
//! suite is the effect.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use crate::crd::{ExecutorPoolSpec, LanguageSpec, SmokeTest};
use crate::execution::{self, Job, Limits, Outcome, StageLimits, Status};
use crate::lxd::Lxd;

/// Languages tested at the same time in the smoke container.
const PARALLEL: usize = 2;
/// Output kept from a smoke test.
const OUTPUT_CAP: usize = 64 * 1024;

/// How one language fared on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanguageCheck {
    pub language: String,
    pub passed: bool,
    /// The first failed test and what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Slowest compile stage over the tests, for compiled languages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<u64>,
    /// Slowest run stage over the tests.
    pub run_ms: u64,
}

/// A stable key of what the results depend on: the container shape and the
/// languages' commands and tests. Results for another key are stale.
pub fn key(hash: &str, languages: &[LanguageSpec]) -> String {
    let text = serde_json::json!({ "hash": hash, "languages": languages }).to_string();
    format!("{:016x}", super::keys::stable_hash(text.as_bytes()))
}

/// Whether a test's outcome is a pass; the reason when it is not. Pure.
pub fn judge(test: &SmokeTest, outcome: &Outcome) -> Result<(), String> {
    let shorten = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let s = s.trim();
        let cut: String = s.chars().take(300).collect();
        if cut.len() < s.len() {
            format!("{cut}…")
        } else {
            cut
        }
    };
    if outcome.status == Status::CompileError {
        let c = outcome.compile.as_ref();
        let out = c.map(|c| shorten(&c.stderr)).unwrap_or_default();
        let status = c.map(|c| c.status.as_str()).unwrap_or("?");
        return Err(format!("{}: compile failed ({status}): {out}", test.name));
    }
    if outcome.status != Status::Ok {
        let detail = outcome
            .last_stage()
            .map(|s| {
                s.message
                    .clone()
                    .unwrap_or_else(|| format!("exit {:?}: {}", s.exit_code, shorten(&s.stderr)))
            })
            .or_else(|| outcome.message.clone())
            .unwrap_or_default();
        return Err(format!(
            "{}: {}: {detail}",
            test.name,
            outcome.status.as_str()
        ));
    }
    let stdout = outcome
        .run
        .as_ref()
        .map(|r| r.stdout.as_slice())
        .unwrap_or_default();
    if stdout != test.expected_stdout.as_bytes() {
        return Err(format!(
            "{}: printed {:?}, expected {:?}",
            test.name,
            shorten_exact(stdout),
            test.expected_stdout
        ));
    }
    Ok(())
}

fn shorten_exact(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(200).collect()
}

/// The stage limits smoke tests run with: the pool's defaults.
pub fn limits(spec: &ExecutorPoolSpec) -> Limits {
    let l = &spec.limits;
    Limits {
        compile: StageLimits {
            wall: Duration::from_millis(spec.execution.compile_time_ms.default),
            output_cap: OUTPUT_CAP,
            memory_mib: l.compile_memory_mib.unwrap_or(l.memory_mib),
        },
        run: StageLimits {
            wall: Duration::from_millis(spec.execution.wall_time_ms.default),
            output_cap: OUTPUT_CAP,
            memory_mib: l.memory_mib,
        },
        launched_memory_mib: l.memory_mib,
    }
}

/// Runs every language's tests in `container` (running, ready) and returns
/// one check per language, in the order given. Languages without tests pass.
/// A recycling pool's languages are proven in the container's sandbox
/// (`sandboxed`), where its executions run.
pub async fn run_suite(
    lxd: &Lxd,
    container: &str,
    languages: &[LanguageSpec],
    limits: &Limits,
    sandboxed: bool,
) -> Vec<LanguageCheck> {
    let tests = languages.iter().cloned().enumerate().map(|(i, lang)| {
        let (lxd, container, limits) = (lxd.clone(), container.to_string(), *limits);
        async move {
            let check = check_language(&lxd, &container, &lang, &limits, sandboxed).await;
            (i, check)
        }
    });
    let checks: BTreeMap<usize, LanguageCheck> = futures::stream::iter(tests)
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    checks.into_values().collect()
}

async fn check_language(
    lxd: &Lxd,
    container: &str,
    lang: &LanguageSpec,
    limits: &Limits,
    sandboxed: bool,
) -> LanguageCheck {
    let mut check = LanguageCheck {
        language: lang.name.clone(),
        passed: true,
        error: None,
        compile_ms: None,
        run_ms: 0,
    };
    for test in &lang.smoke_tests {
        let job = Job {
            language: lang.clone(),
            code: test.code.clone(),
            files: vec![],
            stdin: test.stdin.as_bytes().to_vec(),
            args: test.args.clone(),
            subdir: Some(format!("smoke-{}", lang.name)),
            // Smoke tests prove the toolchain and never use the network.
            network: crate::crd::NetworkTier::Zerotrust,
            sandboxed,
        };
        // The memory limit stays at the launch value: stages of parallel
        // tests share the container.
        let limits = Limits {
            compile: StageLimits {
                memory_mib: limits.launched_memory_mib,
                ..limits.compile
            },
            ..*limits
        };
        let mut result = execution::run(lxd, container, &job, &limits).await;
        if matches!(result, Err(crate::lxd::LxdError::OutputLost)) {
            // LXD before 5.14 can drop output on a busy host: once more.
            result = execution::run(lxd, container, &job, &limits).await;
        }
        let verdict = match result {
            Ok(outcome) => {
                if let Some(c) = &outcome.compile {
                    check.compile_ms = Some(check.compile_ms.unwrap_or(0).max(c.exec_ms));
                }
                if let Some(r) = &outcome.run {
                    check.run_ms = check.run_ms.max(r.exec_ms);
                }
                judge(test, &outcome)
            }
            Err(e) => Err(format!("{}: could not run: {e}", test.name)),
        };
        if let Err(e) = verdict {
            check.passed = false;
            check.error = Some(e);
            break;
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::StageOutcome;

    fn test() -> SmokeTest {
        serde_yaml::from_str("{name: stdin, code: x, stdin: ping, expectedStdout: \"ping\\n\"}")
            .unwrap()
    }

    fn ran(status: Status, stdout: &str) -> Outcome {
        let stage = StageOutcome {
            status,
            exit_code: Some(if status == Status::Ok { 0 } else { 1 }),
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"boom".to_vec(),
            ..StageOutcome::default()
        };
        Outcome {
            status,
            compile: None,
            run: Some(stage),
            message: None,
        }
    }

    #[test]
    fn a_test_passes_only_on_exact_output_and_success() {
        assert_eq!(judge(&test(), &ran(Status::Ok, "ping\n")), Ok(()));
        let e = judge(&test(), &ran(Status::Ok, "ping")).unwrap_err();
        assert!(e.starts_with("stdin: printed \"ping\""), "{e}");
        let e = judge(&test(), &ran(Status::RuntimeError, "ping\n")).unwrap_err();
        assert!(e.contains("runtime_error") && e.contains("boom"), "{e}");
    }

    #[test]
    fn a_compile_error_names_the_compiler_output() {
        let compile = StageOutcome {
            status: Status::RuntimeError,
            stderr: b"main.c:1: error: expected ';'".to_vec(),
            ..StageOutcome::default()
        };
        let o = Outcome {
            status: Status::CompileError,
            compile: Some(compile),
            run: None,
            message: None,
        };
        let e = judge(&test(), &o).unwrap_err();
        assert!(
            e.contains("compile failed (runtime_error): main.c:1: error"),
            "{e}"
        );
    }

    #[test]
    fn the_key_changes_with_the_languages_and_the_shape() {
        let py: LanguageSpec =
            serde_yaml::from_str("{name: python, sourceFile: main.py, run: python3 main.py}")
                .unwrap();
        let mut py2 = py.clone();
        py2.run = "python3 -S main.py".into();
        assert_eq!(
            key("h", std::slice::from_ref(&py)),
            key("h", std::slice::from_ref(&py))
        );
        assert_ne!(key("h", std::slice::from_ref(&py)), key("h", &[py2]));
        assert_ne!(key("h", std::slice::from_ref(&py)), key("g", &[py]));
    }
}
