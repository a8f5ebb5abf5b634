//! An execution request as either API hands it over, and the one set of
//! rules it must meet before it runs: its files, arguments and standard
//! input, and the limits it asks for against the chosen pool's. Both APIs
//! answer the same request the same way; only the words they use for a
//! field differ, so errors name the limit (`Limit`) and leave the field's
//! name to the API. Pure.

use std::fmt;
use std::time::Duration;

use crate::auth::Quota;
use crate::crd::validate::file_name_problem;
use crate::crd::{Bounded, ExecutorPoolSpec, LanguageSpec, NetworkTier};

use crate::execution::{Job, Limits, StageLimits};

/// Extra files one execution may be sent, beside its source.
pub const MAX_FILES: usize = 64;
/// Arguments one execution may be given.
pub const MAX_ARGS: usize = 256;
/// The most standard input one execution may be given, in bytes.
pub const MAX_STDIN_BYTES: usize = 1 << 20;
/// The least memory, in MiB, a stage may be given (the CRD's floor for
/// `limits.memoryMib`): below it a runtime cannot even start.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Bytes in a MiB.
pub const MIB: u64 = 1024 * 1024;

/// One execution, as asked for, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Language name or alias.
    pub language: String,
    pub tier: NetworkTier,
    /// Source code, written to the language's source file.
    pub code: String,
    /// Extra files, written beside the source.
    pub files: Vec<File>,
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    /// Limits the request names; the pool's apply to the others.
    pub asked: Asked,
    /// The caller's quota: limits left to the pool are capped at its maxima.
    pub caps: Quota,
}

/// An extra file as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Its position in the request's `files`, which messages name.
    pub index: usize,
    pub name: String,
    /// Its bytes, or what is wrong with its content or encoding in the
    /// API's words (`content is not valid base64: ...`). A file that cannot
    /// be decoded is reported in its turn among the other files' problems,
    /// after the pool is chosen, like every other rule here.
    pub content: Result<Vec<u8>, String>,
}

/// Limits a request names; `None` where the pool decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub run_timeout_ms: Option<u64>,
    pub compile_timeout_ms: Option<u64>,
    /// CPU time of the run stage: not enforced while the stage runs, but it
    /// cannot exceed the stage's wall-clock maximum on one CPU.
    pub run_cpu_ms: Option<u64>,
    pub compile_cpu_ms: Option<u64>,
    /// Bytes kept of stdout and of stderr.
    pub output_bytes: Option<u64>,
    pub run_memory: Option<Memory>,
    pub compile_memory: Option<Memory>,
}

/// A memory limit in the unit the caller used. Stages get whole MiB (bytes
/// are rounded down), but the checks compare in the caller's unit so that
/// 1 byte above a maximum is above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Mib(u64),
    Bytes(u64),
}

impl Memory {
    /// The amount in its own unit.
    fn amount(self) -> u64 {
        match self {
            Memory::Mib(v) | Memory::Bytes(v) => v,
        }
    }

    /// `mib` MiB in this limit's unit.
    fn scale(self, mib: u64) -> u64 {
        match self {
            Memory::Mib(_) => mib,
            Memory::Bytes(_) => mib.saturating_mul(MIB),
        }
    }

    /// Whole MiB.
    fn mib(self) -> u64 {
        match self {
            Memory::Mib(v) => v,
            Memory::Bytes(v) => v / MIB,
        }
    }

    fn unit(self) -> Unit {
        match self {
            Memory::Mib(_) => Unit::Mib,
            Memory::Bytes(_) => Unit::Bytes,
        }
    }
}

/// A limit a request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    OutputBytes,
    RunTimeout,
    CompileTimeout,
    RunCpuTime,
    CompileCpuTime,
    RunMemory,
    CompileMemory,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::OutputBytes => "output cap",
            Limit::RunTimeout => "run timeout",
            Limit::CompileTimeout => "compile timeout",
            Limit::RunCpuTime => "run CPU time",
            Limit::CompileCpuTime => "compile CPU time",
            Limit::RunMemory => "run memory limit",
            Limit::CompileMemory => "compile memory limit",
        })
    }
}

/// The unit of a limit's amounts in an error, as the request gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    Bytes,
    Mib,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Ms => "ms",
            Unit::Bytes => "bytes",
            Unit::Mib => "MiB",
        })
    }
}

/// Why a request cannot run as asked. The request's fault, never the host's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("at most {MAX_FILES} files may be sent")]
    TooManyFiles,
    /// `name` is shown cut to 64 characters: it may be very long.
    #[error("files[{index}].name {:?}: {problem}", shown(name))]
    FileName {
        index: usize,
        name: String,
        problem: String,
    },
    #[error("files[{index}].name {name:?} is used twice")]
    FileTwice { index: usize, name: String },
    /// The file would overwrite the source.
    #[error("a file may not be named {name:?}: the source goes there")]
    FileIsSource { index: usize, name: String },
    /// `problem` is in the API's words and starts with the field.
    #[error("files[{index}].{problem}")]
    FileContent { index: usize, problem: String },
    #[error("the {limit} must be at least {floor} {unit}")]
    BelowFloor {
        limit: Limit,
        floor: u64,
        unit: Unit,
    },
    #[error("the {limit} {asked} {unit} is above this pool's maximum of {maximum} {unit}")]
    AboveMaximum {
        limit: Limit,
        asked: u64,
        maximum: u64,
        unit: Unit,
    },
    #[error("at most {MAX_ARGS} args may be sent")]
    TooManyArgs,
    #[error("stdin may be at most {MAX_STDIN_BYTES} bytes")]
    StdinTooLong,
    #[error("args must not contain NUL bytes")]
    NulInArgs,
}

fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

/// A request that passed every check: the job and the limits of its stages.
#[derive(Debug, Clone)]
pub struct Plan {
    pub job: Job,
    pub limits: Limits,
}

/// Checks `req` for `language` on `pool`, in a fixed order: files, limits,
/// arguments, standard input. The first problem is the answer.
pub fn plan(
    req: Request,
    language: &LanguageSpec,
    pool: &ExecutorPoolSpec,
) -> Result<Plan, Invalid> {
    let files = files(req.files, &language.source_file)?;
    let mut limits = limits(&req.asked, pool)?;
    crate::auth::cap_limits(&mut limits, &req.caps);
    if req.args.len() > MAX_ARGS {
        return Err(Invalid::TooManyArgs);
    }
    if req.stdin.len() > MAX_STDIN_BYTES {
        return Err(Invalid::StdinTooLong);
    }
    if req.args.iter().any(|a| a.contains('\0')) {
        return Err(Invalid::NulInArgs);
    }
    Ok(Plan {
        job: Job {
            language: language.clone(),
            code: req.code,
            files,
            stdin: req.stdin,
            args: req.args,
            subdir: None,
            network: pool.network,
            sandboxed: pool.recycles(),
        },
        limits,
    })
}

/// The extra files, named and decoded: plain names, each once, none where
/// the source goes.
fn files(files: Vec<File>, source_file: &str) -> Result<Vec<(String, Vec<u8>)>, Invalid> {
    if files.len() > MAX_FILES {
        return Err(Invalid::TooManyFiles);
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(files.len());
    for File {
        index,
        name,
        content,
    } in files
    {
        if let Some(problem) = file_name_problem(&name) {
            return Err(Invalid::FileName {
                index,
                name,
                problem,
            });
        }
        if name == source_file {
            return Err(Invalid::FileIsSource { index, name });
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Invalid::FileTwice { index, name });
        }
        let bytes = content.map_err(|problem| Invalid::FileContent { index, problem })?;
        out.push((name, bytes));
    }
    Ok(out)
}

/// The limits of both stages: what the request asked for where the pool
/// allows it, the pool's defaults elsewhere.
/// Whether `pool` can honour the limits asked (within its maxima), so a
/// pool that can is chosen over one that cannot.
pub fn fits(a: &Asked, pool: &ExecutorPoolSpec) -> bool {
    limits(a, pool).is_ok()
}

fn limits(a: &Asked, pool: &ExecutorPoolSpec) -> Result<Limits, Invalid> {
    let ex = &pool.execution;
    let l = &pool.limits;
    let output = bounded(
        Limit::OutputBytes,
        Unit::Bytes,
        a.output_bytes,
        &ex.output_bytes,
    )?;
    let run_wall = bounded(
        Limit::RunTimeout,
        Unit::Ms,
        a.run_timeout_ms,
        &ex.wall_time_ms,
    )?;
    let compile_wall = bounded(
        Limit::CompileTimeout,
        Unit::Ms,
        a.compile_timeout_ms,
        &ex.compile_time_ms,
    )?;
    // CPU time cannot exceed wall time on one CPU: the wall-time maxima bound it.
    within(
        Limit::RunCpuTime,
        Unit::Ms,
        a.run_cpu_ms,
        1,
        ex.wall_time_ms.max,
    )?;
    within(
        Limit::CompileCpuTime,
        Unit::Ms,
        a.compile_cpu_ms,
        1,
        ex.compile_time_ms.max,
    )?;
    let run_memory = memory(Limit::RunMemory, a.run_memory, u64::from(l.memory_mib))?;
    let compile_memory = memory(
        Limit::CompileMemory,
        a.compile_memory,
        u64::from(l.compile_memory_mib.unwrap_or(l.memory_mib)),
    )?;
    // A pool's own memory below the floor (`compileMemoryMib` of a pool
    // from a file is not checked when it is read) cannot run anything either.
    for (limit, mib) in [
        (Limit::RunMemory, run_memory),
        (Limit::CompileMemory, compile_memory),
    ] {
        if mib < MIN_MEMORY_MIB {
            return Err(Invalid::BelowFloor {
                limit,
                floor: MIN_MEMORY_MIB,
                unit: Unit::Mib,
            });
        }
    }
    let stage = |wall: u64, memory_mib: u64| StageLimits {
        wall: Duration::from_millis(wall),
        output_cap: usize::try_from(output).unwrap_or(usize::MAX),
        memory_mib: u32::try_from(memory_mib).unwrap_or(u32::MAX),
    };
    Ok(Limits {
        compile: stage(compile_wall, compile_memory),
        run: stage(run_wall, run_memory),
        launched_memory_mib: l.memory_mib,
    })
}

/// `asked`, refused below `floor` or above `maximum`.
fn within(
    limit: Limit,
    unit: Unit,
    asked: Option<u64>,
    floor: u64,
    maximum: u64,
) -> Result<Option<u64>, Invalid> {
    match asked {
        Some(v) if v < floor => Err(Invalid::BelowFloor { limit, floor, unit }),
        Some(v) if v > maximum => Err(Invalid::AboveMaximum {
            limit,
            asked: v,
            maximum,
            unit,
        }),
        _ => Ok(asked),
    }
}

/// A limit with a pool default: the request's value if allowed (at least 1).
fn bounded(limit: Limit, unit: Unit, asked: Option<u64>, pool: &Bounded) -> Result<u64, Invalid> {
    Ok(within(limit, unit, asked, 1, pool.max)?.unwrap_or(pool.default))
}

/// A stage's memory in MiB: the request's if allowed, else the pool's (its
/// maximum is its default).
fn memory(limit: Limit, asked: Option<Memory>, pool_mib: u64) -> Result<u64, Invalid> {
    let Some(m) = asked else {
        return Ok(pool_mib);
    };
    within(
        limit,
        m.unit(),
        Some(m.amount()),
        m.scale(MIN_MEMORY_MIB),
        m.scale(pool_mib),
    )?;
    Ok(m.mib())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> ExecutorPoolSpec {
        serde_yaml::from_str(
            "{image: small, limits: {memoryMib: 128, compileMemoryMib: 256}, \
             execution: {wallTimeMs: {default: 3000, max: 10000}, compileTimeMs: {default: 10000, max: 20000}, \
             outputBytes: {default: 1000, max: 5000}}}",
        )
        .unwrap()
    }

    fn language() -> LanguageSpec {
        serde_yaml::from_str("{name: python, sourceFile: main.py, run: python3 main.py}").unwrap()
    }

    fn request() -> Request {
        Request {
            language: "python".into(),
            tier: NetworkTier::Zerotrust,
            code: "print(1)".into(),
            files: vec![],
            stdin: vec![],
            args: vec![],
            asked: Asked::default(),
            caps: Quota::default(),
        }
    }

    fn file(index: usize, name: &str) -> File {
        File {
            index,
            name: name.into(),
            content: Ok(b"x".to_vec()),
        }
    }

    fn check(req: Request) -> Result<Plan, Invalid> {
        plan(req, &language(), &pool())
    }

    #[test]
    fn defaults_are_the_pools() {
        let p = check(request()).unwrap();
        assert_eq!(
            p.limits,
            Limits {
                compile: StageLimits {
                    wall: Duration::from_millis(10000),
                    output_cap: 1000,
                    memory_mib: 256,
                },
                run: StageLimits {
                    wall: Duration::from_millis(3000),
                    output_cap: 1000,
                    memory_mib: 128,
                },
                launched_memory_mib: 128,
            }
        );
        assert_eq!(p.job.code, "print(1)");
        assert_eq!(p.job.language.name, "python");
    }

    #[test]
    fn each_bad_input_gets_its_exact_error() {
        type Case = (&'static str, Box<dyn Fn(&mut Request)>, Invalid);
        let long = "a".repeat(300);
        let cases: Vec<Case> = vec![
            (
                "65 files",
                Box::new(|r| r.files = (0..65).map(|i| file(i, &format!("f{i}"))).collect()),
                Invalid::TooManyFiles,
            ),
            (
                "a path",
                Box::new(|r| r.files = vec![file(0, "../x")]),
                Invalid::FileName {
                    index: 0,
                    name: "../x".into(),
                    problem: file_name_problem("../x").unwrap(),
                },
            ),
            (
                "a long name",
                Box::new(move |r| r.files = vec![file(0, "ok"), file(1, &long)]),
                Invalid::FileName {
                    index: 1,
                    name: "a".repeat(300),
                    problem: "is 300 bytes long; the limit is 255".into(),
                },
            ),
            (
                "the source's name",
                Box::new(|r| r.files = vec![file(3, "main.py")]),
                Invalid::FileIsSource {
                    index: 3,
                    name: "main.py".into(),
                },
            ),
            (
                "a name twice",
                Box::new(|r| r.files = vec![file(0, "a"), file(1, "a")]),
                Invalid::FileTwice {
                    index: 1,
                    name: "a".into(),
                },
            ),
            (
                "undecodable content",
                Box::new(|r| {
                    r.files = vec![File {
                        content: Err("content: not valid hex".into()),
                        ..file(2, "a")
                    }]
                }),
                Invalid::FileContent {
                    index: 2,
                    problem: "content: not valid hex".into(),
                },
            ),
            (
                "a zero timeout",
                Box::new(|r| r.asked.run_timeout_ms = Some(0)),
                Invalid::BelowFloor {
                    limit: Limit::RunTimeout,
                    floor: 1,
                    unit: Unit::Ms,
                },
            ),
            (
                "a long timeout",
                Box::new(|r| r.asked.run_timeout_ms = Some(10001)),
                Invalid::AboveMaximum {
                    limit: Limit::RunTimeout,
                    asked: 10001,
                    maximum: 10000,
                    unit: Unit::Ms,
                },
            ),
            (
                "a long compile timeout",
                Box::new(|r| r.asked.compile_timeout_ms = Some(20001)),
                Invalid::AboveMaximum {
                    limit: Limit::CompileTimeout,
                    asked: 20001,
                    maximum: 20000,
                    unit: Unit::Ms,
                },
            ),
            (
                "more CPU than wall time",
                Box::new(|r| r.asked.run_cpu_ms = Some(10001)),
                Invalid::AboveMaximum {
                    limit: Limit::RunCpuTime,
                    asked: 10001,
                    maximum: 10000,
                    unit: Unit::Ms,
                },
            ),
            (
                "a large output cap",
                Box::new(|r| r.asked.output_bytes = Some(5001)),
                Invalid::AboveMaximum {
                    limit: Limit::OutputBytes,
                    asked: 5001,
                    maximum: 5000,
                    unit: Unit::Bytes,
                },
            ),
            (
                "memory under the floor, in MiB",
                Box::new(|r| r.asked.run_memory = Some(Memory::Mib(31))),
                Invalid::BelowFloor {
                    limit: Limit::RunMemory,
                    floor: 32,
                    unit: Unit::Mib,
                },
            ),
            (
                "memory under the floor, in bytes",
                Box::new(|r| r.asked.compile_memory = Some(Memory::Bytes(MIB))),
                Invalid::BelowFloor {
                    limit: Limit::CompileMemory,
                    floor: 32 * MIB,
                    unit: Unit::Bytes,
                },
            ),
            (
                "memory a byte above the pool's",
                Box::new(|r| r.asked.run_memory = Some(Memory::Bytes(128 * MIB + 1))),
                Invalid::AboveMaximum {
                    limit: Limit::RunMemory,
                    asked: 128 * MIB + 1,
                    maximum: 128 * MIB,
                    unit: Unit::Bytes,
                },
            ),
            (
                "compile memory above its own maximum",
                Box::new(|r| r.asked.compile_memory = Some(Memory::Mib(257))),
                Invalid::AboveMaximum {
                    limit: Limit::CompileMemory,
                    asked: 257,
                    maximum: 256,
                    unit: Unit::Mib,
                },
            ),
            (
                "257 args",
                Box::new(|r| r.args = vec!["a".into(); 257]),
                Invalid::TooManyArgs,
            ),
            (
                "too much stdin",
                Box::new(|r| r.stdin = vec![b'x'; MAX_STDIN_BYTES + 1]),
                Invalid::StdinTooLong,
            ),
            (
                "a NUL in an arg",
                Box::new(|r| r.args = vec!["a\0b".into()]),
                Invalid::NulInArgs,
            ),
            (
                "files before limits",
                Box::new(|r| {
                    r.files = vec![file(0, "a"), file(1, "a")];
                    r.asked.run_timeout_ms = Some(0);
                }),
                Invalid::FileTwice {
                    index: 1,
                    name: "a".into(),
                },
            ),
        ];
        for (what, edit, want) in cases {
            let mut r = request();
            edit(&mut r);
            assert_eq!(check(r).map(|_| ()), Err(want), "{what}");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        let e = Invalid::FileName {
            index: 0,
            name: "a".repeat(300),
            problem: "is 300 bytes long; the limit is 255".into(),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "files[0].name {:?}: is 300 bytes long; the limit is 255",
                "a".repeat(64)
            )
        );
        assert_eq!(
            Invalid::StdinTooLong.to_string(),
            "stdin may be at most 1048576 bytes"
        );
        assert_eq!(
            Invalid::AboveMaximum {
                limit: Limit::RunMemory,
                asked: 129,
                maximum: 128,
                unit: Unit::Mib
            }
            .to_string(),
            "the run memory limit 129 MiB is above this pool's maximum of 128 MiB"
        );
    }

    #[test]
    fn what_is_allowed_is_used() {
        let mut r = request();
        r.asked = Asked {
            run_timeout_ms: Some(10000),
            compile_timeout_ms: Some(1),
            run_cpu_ms: Some(10000),
            compile_cpu_ms: None,
            output_bytes: Some(5000),
            run_memory: Some(Memory::Bytes(100_000_000)),
            compile_memory: Some(Memory::Mib(32)),
        };
        r.files = vec![file(0, "data.txt"), file(1, "helper.py")];
        let p = check(r).unwrap();
        assert_eq!(p.limits.run.wall, Duration::from_millis(10000));
        assert_eq!(p.limits.compile.wall, Duration::from_millis(1));
        assert_eq!(p.limits.run.output_cap, 5000);
        assert_eq!(p.limits.run.memory_mib, 95, "bytes round down to MiB");
        assert_eq!(p.limits.compile.memory_mib, 32);
        assert_eq!(p.job.files.len(), 2);
    }

    #[test]
    fn a_pool_below_the_memory_floor_runs_nothing() {
        let mut pool = pool();
        pool.limits.compile_memory_mib = Some(16);
        assert_eq!(
            plan(request(), &language(), &pool).map(|_| ()),
            Err(Invalid::BelowFloor {
                limit: Limit::CompileMemory,
                floor: 32,
                unit: Unit::Mib,
            })
        );
    }

    #[test]
    fn the_callers_quota_caps_what_the_pool_would_give() {
        let mut r = request();
        r.caps = Quota {
            max_timeout_ms: Some(500),
            max_memory_mib: Some(64),
            ..Quota::default()
        };
        let p = check(r).unwrap();
        assert_eq!(p.limits.run.wall, Duration::from_millis(500));
        assert_eq!(p.limits.compile.memory_mib, 64);
    }
}
