//! Request validation and the shape of answers, without LXD.

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use super::request::{Asked, Request};
use super::response::{Stage, signal_name, stage};
use super::*;
use crate::agent::CatalogEntry;
use crate::crd::{ExecutorPoolSpec, LanguageSpec};
use crate::execution::{Outcome, StageOutcome, Status};
use crate::service::{ExecError, MIB, Plan};

fn pool() -> ExecutorPoolSpec {
    serde_yaml::from_str(
        "{image: small, limits: {memoryMib: 128, compileMemoryMib: 256}, \
         execution: {wallTimeMs: {default: 3000, max: 10000}, compileTimeMs: {default: 10000, max: 20000}}}",
    )
    .unwrap()
}

fn language() -> LanguageSpec {
    serde_yaml::from_str("{name: python, sourceFile: main.py, run: python3 main.py}").unwrap()
}

/// A request as the execution service checks it against `pool()`.
fn planned(v: Value) -> Result<Plan, PistonError> {
    let sub = submission(&req(v)?, Default::default())?;
    Ok(crate::service::request::plan(sub, &language(), &pool()).map_err(ExecError::from)?)
}

fn req(v: Value) -> Result<Request, PistonError> {
    parse(&v)
}

fn message(r: Result<impl std::fmt::Debug, PistonError>) -> String {
    let e = r.unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    e.message
}

/// What piston-client sends for `execute('python', code)`.
fn client_body() -> Value {
    json!({"language": "python", "version": "3.11.2", "files": [{"content": "print(1)"}],
           "stdin": "", "args": ["1", "2", "3"], "compile_timeout": 10000, "run_timeout": 3000,
           "compile_memory_limit": -1, "run_memory_limit": -1})
}

#[test]
fn required_fields_get_pistons_messages_in_pistons_order() {
    assert_eq!(message(req(json!({}))), "language is required as a string");
    assert_eq!(message(req(json!([1]))), "language is required as a string");
    assert_eq!(
        message(req(json!({"language": "py", "version": 3}))),
        "version is required as a string"
    );
    assert_eq!(
        message(req(json!({"language": "py", "files": "x"}))),
        "files is required as an array"
    );
    assert_eq!(
        message(req(
            json!({"language": "py", "files": [{"content": "a"}, {}]})
        )),
        "files[1].content is required as a string"
    );
    assert_eq!(
        message(req(
            json!({"language": "py", "files": [], "run_timeout": "5"})
        )),
        "If specified, run_timeout must be a number"
    );
    assert_eq!(
        message(req(
            json!({"language": "py", "files": [], "run_timeout": -5})
        )),
        "run_timeout must be non-negative"
    );
    assert_eq!(
        message(req(
            json!({"language": "py", "files": [], "run_memory_limit": -2})
        )),
        "run_memory_limit must be non-negative"
    );
}

#[test]
fn what_piston_client_sends_is_accepted_with_its_defaults() {
    let r = req(client_body()).unwrap();
    assert_eq!(r.version, "3.11.2");
    assert_eq!(r.args, ["1", "2", "3"]);
    assert_eq!(
        r.asked,
        Asked {
            compile_timeout: Some(10000),
            run_timeout: Some(3000),
            ..Asked::default()
        }
    );
    let sub = submission(&r, Default::default()).unwrap();
    assert_eq!(sub.code, "print(1)");
    assert!(sub.files.is_empty());
    assert_eq!(sub.stdin, b"\n", "Piston ends stdin with a newline");
    assert_eq!(sub.asked.run_memory, None);
    assert_eq!(sub.asked.compile_memory, None);
    assert_eq!(sub.asked.run_timeout_ms, Some(3000));
    assert_eq!(sub.asked.compile_timeout_ms, Some(10000));
    assert!(planned(client_body()).is_ok());
    // No version (an alias in piston-client) is any version.
    let mut body = client_body();
    body.as_object_mut().unwrap().remove("version");
    assert_eq!(req(body).unwrap().version, "*");
}

#[test]
fn limits_are_checked_against_the_pool() {
    let with = |k: &str, v: Value| {
        let mut b = client_body();
        b[k] = v;
        planned(b)
    };
    assert_eq!(
        message(with("run_timeout", json!(10001))),
        "run_timeout cannot exceed the configured limit of 10000"
    );
    assert_eq!(
        message(with("compile_timeout", json!(20001))),
        "compile_timeout cannot exceed the configured limit of 20000"
    );
    assert_eq!(
        message(with("compile_cpu_time", json!(20001))),
        "compile_cpu_time cannot exceed the configured limit of 20000"
    );
    assert_eq!(
        message(with("run_memory_limit", json!(129 * MIB))),
        format!(
            "run_memory_limit cannot exceed the configured limit of {}",
            128 * MIB
        )
    );
    assert_eq!(
        message(with("run_memory_limit", json!(128 * MIB + 1))),
        format!(
            "run_memory_limit cannot exceed the configured limit of {}",
            128 * MIB
        ),
        "one byte above is above"
    );
    assert_eq!(
        message(with("compile_memory_limit", json!(MIB))),
        "compile_memory_limit must be at least 33554432 bytes (32 MiB)"
    );
    // Bytes become MiB, rounded down; compile memory has its own maximum.
    assert_eq!(
        with("run_memory_limit", json!(100_000_000))
            .unwrap()
            .limits
            .run
            .memory_mib,
        95
    );
    assert_eq!(
        with("compile_memory_limit", json!(200 * MIB))
            .unwrap()
            .limits
            .compile
            .memory_mib,
        200
    );
    let run_wall = |b: Value| planned(b).unwrap().limits.run.wall.as_millis();
    let mut b = client_body();
    b["run_cpu_time"] = json!(2500);
    b["run_timeout"] = json!(4000);
    assert_eq!(run_wall(b), 4000, "CPU time does not shorten the timeout");
    // Falsy values are skipped, as Piston does: the pool's default applies.
    let mut b = client_body();
    b["run_timeout"] = json!(0);
    assert_eq!(
        submission(&req(b.clone()).unwrap(), Default::default())
            .unwrap()
            .asked
            .run_timeout_ms,
        None
    );
    assert_eq!(run_wall(b), 3000);
}

#[test]
fn arguments_and_stdin_have_the_native_apis_rules() {
    let mut b = client_body();
    b["args"] = json!(["a\u{0}b"]);
    assert_eq!(message(planned(b)), "args must not contain NUL bytes");
    let mut b = client_body();
    b["args"] = json!(vec!["a"; 257]);
    assert_eq!(message(planned(b)), "at most 256 args may be sent");
    let mut b = client_body();
    b["stdin"] = json!("x".repeat(1 << 20));
    assert_eq!(
        message(planned(b)),
        "stdin may be at most 1048576 bytes",
        "with Piston's newline it is one byte too long"
    );
}

#[test]
fn the_first_utf8_file_is_the_source_and_the_rest_sit_beside_it() {
    let b = json!({"language": "python", "files": [
        {"name": "data.bin", "content": "aGk=", "encoding": "base64"},
        {"name": "prog.py", "content": "import helper"},
        {"name": "helper.py", "content": "X = 1"},
        {"content": "6869", "encoding": "hex"},
        {"content": "aGk", "encoding": "base64"},
    ]});
    let sub = planned(b).unwrap().job;
    assert_eq!(sub.code, "import helper");
    let names: Vec<(&str, &[u8])> = sub
        .files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("data.bin", &b"hi"[..]),
            ("helper.py", b"X = 1"),
            ("file3.code", b"hi"),
            ("file4.code", b"hi")
        ]
    );
    let only_binary =
        json!({"language": "python", "files": [{"content": "aGk=", "encoding": "base64"}]});
    assert_eq!(
        message(planned(only_binary)),
        "files must include at least one utf8 encoded file"
    );
    let bad = |f: Value| {
        let b = json!({"language": "python", "files": [{"content": "x"}, f]});
        message(planned(b))
    };
    assert!(bad(json!({"name": "../x", "content": ""})).starts_with("files[1].name"));
    assert_eq!(
        bad(json!({"content": "zz", "encoding": "hex"})),
        "files[1].content: not valid hex"
    );
    assert!(
        bad(json!({"content": "!!", "encoding": "base64"}))
            .starts_with("files[1].content: not valid base64: ")
    );
    assert_eq!(
        bad(json!({"name": "main.py", "content": ""})),
        "a file may not be named \"main.py\": the source goes there"
    );
    let twice = json!({"language": "python", "files": [
        {"content": "x"}, {"name": "a", "content": ""}, {"name": "a", "content": ""}]});
    assert_eq!(message(planned(twice)), "files[2].name \"a\" is used twice");
    // Piston sends the source as a file too: 64 others are allowed.
    let many = |n: usize| {
        let mut files = vec![json!({"content": "x"})];
        files.extend((0..n).map(|i| json!({"name": format!("f{i}"), "content": ""})));
        planned(json!({"language": "python", "files": files}))
    };
    assert!(many(64).is_ok());
    assert_eq!(message(many(65)), "at most 64 files may be sent");
}

fn ran(status: Status, code: Option<i32>, signal: Option<i32>) -> StageOutcome {
    StageOutcome {
        status,
        exit_code: code,
        signal,
        stdout: b"out\n".to_vec(),
        stderr: b"err\n".to_vec(),
        exec_ms: 12,
        cpu_ms: Some(7),
        memory_bytes: Some(4096),
        ..StageOutcome::default()
    }
}

#[test]
fn statuses_codes_and_signals_as_piston_reports_them() {
    let s = stage(&ran(Status::Ok, Some(0), None), None);
    assert_eq!(
        s,
        Stage {
            stdout: "out\n".into(),
            stderr: "err\n".into(),
            output: "out\nerr\n".into(),
            code: Some(0),
            signal: None,
            message: None,
            status: None,
            cpu_time: Some(7),
            wall_time: Some(12),
            memory: Some(4096),
        }
    );
    let s = stage(&ran(Status::RuntimeError, Some(1), None), None);
    assert_eq!((s.status, s.code, s.signal), (Some("RE"), Some(1), None));
    assert_eq!(s.message.as_deref(), Some("Exited with error status 1"));
    let s = stage(&ran(Status::RuntimeError, Some(139), Some(11)), None);
    assert_eq!((s.status, s.code), (Some("SG"), None));
    assert_eq!(s.signal.as_deref(), Some("SIGSEGV"));
    let s = stage(&ran(Status::Killed, Some(137), Some(9)), None);
    assert_eq!(
        (s.status, s.signal.as_deref()),
        (Some("SG"), Some("SIGKILL"))
    );
    let s = stage(&ran(Status::Timeout, None, Some(9)), None);
    assert_eq!(
        (s.status, s.code, s.signal.as_deref()),
        (Some("TO"), None, Some("SIGKILL"))
    );
    let mut o = ran(Status::OutputLimitExceeded, None, Some(9));
    o.stdout_truncated = true;
    assert_eq!(stage(&o, None).status, Some("OL"));
    o.stdout_truncated = false;
    o.stderr_truncated = true;
    let s = stage(&o, None);
    assert_eq!(
        (s.status, s.signal.as_deref()),
        (Some("EL"), Some("SIGKILL"))
    );
    let mut o = ran(Status::InternalError, None, None);
    o.message = Some("the container could not run".into());
    let s = stage(&o, None);
    assert_eq!(s.status, Some("XX"));
    assert_eq!(s.message.as_deref(), Some("the container could not run"));
    // More CPU than asked is a time-out, reported after the fact.
    let s = stage(&ran(Status::Ok, Some(0), None), Some(5));
    assert_eq!((s.status, s.code), (Some("TO"), Some(0)));
    assert!(s.message.unwrap().contains("used 7 ms of 5 ms"));
    assert_eq!(stage(&ran(Status::Ok, Some(0), None), Some(7)).status, None);
    assert_eq!(signal_name(34).as_deref(), Some("SIGRTMIN+0"));
}

#[test]
fn a_failed_compile_is_also_the_run_stage_and_internal_errors_are_xx() {
    let failed = Outcome {
        status: Status::CompileError,
        compile: Some(ran(Status::RuntimeError, Some(2), None)),
        run: None,
        message: None,
    };
    let r = response(&failed, "c", "12.2.0", &Asked::default());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["compile"], v["run"]);
    assert_eq!(v["run"]["code"], 2);
    assert_eq!(v["run"]["status"], "RE");
    assert_eq!(v["language"], "c");
    assert_eq!(v["version"], "12.2.0");

    let interpreted = Outcome {
        status: Status::Ok,
        compile: None,
        run: Some(ran(Status::Ok, Some(0), None)),
        message: None,
    };
    let v = serde_json::to_value(response(
        &interpreted,
        "python",
        "3.11.2",
        &Asked::default(),
    ))
    .unwrap();
    assert!(v.get("compile").is_none());
    let mut keys: Vec<&str> = v["run"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    let mut want = [
        "stdout",
        "stderr",
        "output",
        "code",
        "signal",
        "message",
        "status",
        "cpu_time",
        "wall_time",
        "memory",
    ];
    want.sort();
    assert_eq!(keys, want, "every stage field, null or not");
    assert_eq!(v["run"]["status"], Value::Null);

    let internal = Outcome::internal("the container could not run the code");
    let v =
        serde_json::to_value(response(&internal, "python", "3.11.2", &Asked::default())).unwrap();
    assert_eq!(v["run"]["status"], "XX");
    assert_eq!(v["run"]["message"], "the container could not run the code");
    assert_eq!(v["run"]["code"], Value::Null);
}

#[test]
fn runtimes_list_languages_served_without_network() {
    let entry = |name: &str, version: Option<&str>, tier| CatalogEntry {
        name: name.into(),
        aliases: vec![format!("{name}3")],
        version: version.map(Into::into),
        extensions: vec![],
        pools: vec![("t/p".into(), tier, 1)],
    };
    let list = runtime_list(&[
        entry("bashc", None, NetworkTier::Zerotrust),
        entry("python", Some("3.11.2"), NetworkTier::Zerotrust),
        entry("net", Some("1.0.0"), NetworkTier::Semitrusted),
    ]);
    assert_eq!(
        serde_json::to_value(list).unwrap(),
        json!([
            {"language": "bashc", "version": "0.0.0", "aliases": ["bashc3"]},
            {"language": "python", "version": "3.11.2", "aliases": ["python3"]},
        ])
    );
}

#[test]
fn errors_are_a_message_and_native_422s_become_400() {
    let e: PistonError = ApiError::invalid("args must not contain NUL bytes").into();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    let mut busy = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", "busy");
    busy.retry_after = Some(1);
    let resp = PistonError::from(busy).into_response();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
}

#[test]
fn a_host_still_getting_ready_is_503_and_what_it_will_not_serve_is_400() {
    use crate::agent::Blocker;
    let blocked = |blocker| ChoiceError::Blocked {
        language: "python".into(),
        tier: NetworkTier::Zerotrust,
        blocker,
    };
    let unknown = "python-* runtime is unknown";
    let e = choice_error(blocked(Blocker::Proving { pool: "t/p".into() }), unknown);
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(e.message.contains("smoke tests still running"), "{e:?}");
    assert_eq!(e.retry_after, Some(2));
    let e = choice_error(
        blocked(Blocker::LanguageFailed {
            pool: "t/p".into(),
            message: "hello: printed \"\"".into(),
        }),
        unknown,
    );
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.starts_with(unknown), "{e:?}");
    assert!(e.message.contains("failed its smoke tests"), "{e:?}");
    let e = choice_error(
        ChoiceError::UnknownLanguage {
            language: "cobol".into(),
            available: vec![],
        },
        "cobol-* runtime is unknown",
    );
    assert_eq!(
        (e.status, e.message.as_str()),
        (StatusCode::BAD_REQUEST, "cobol-* runtime is unknown")
    );
}

#[test]
fn execution_errors_become_pistons_answers() {
    use crate::agent::{AcquireError, Blocker};
    use crate::service::{Invalid, Limit, Unit};
    let cases: Vec<(ExecError, StatusCode, &str)> = vec![
        (
            Invalid::AboveMaximum {
                limit: Limit::CompileCpuTime,
                asked: 9,
                maximum: 8,
                unit: Unit::Ms,
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "compile_cpu_time cannot exceed the configured limit of 8",
        ),
        (
            Invalid::BelowFloor {
                limit: Limit::RunMemory,
                floor: 32 * MIB,
                unit: Unit::Bytes,
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "run_memory_limit must be at least 33554432 bytes (32 MiB)",
        ),
        (
            Invalid::FileIsSource {
                index: 1,
                name: "main.py".into(),
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "a file may not be named \"main.py\": the source goes there",
        ),
        (
            Invalid::TooManyFiles.into(),
            StatusCode::BAD_REQUEST,
            "at most 64 files may be sent",
        ),
        (
            AcquireError::PoolGone("t/p".into()).into(),
            StatusCode::SERVICE_UNAVAILABLE,
            "pool t/p is not served on this host",
        ),
        (
            ChoiceError::Blocked {
                language: "python".into(),
                tier: NetworkTier::Zerotrust,
                blocker: Blocker::TierUnavailable { offered: vec![] },
            }
            .into(),
            StatusCode::BAD_REQUEST,
            "python with network tier zerotrust: no pool serves it with this network tier",
        ),
    ];
    for (e, status, message) in cases {
        let what = format!("{e:?}");
        let p = PistonError::from(e);
        assert_eq!((p.status, p.message.as_str()), (status, message), "{what}");
    }
    let e = PistonError::from(ExecError::Unavailable(ChoiceError::Blocked {
        language: "python".into(),
        tier: NetworkTier::Zerotrust,
        blocker: Blocker::Starting,
    }));
    assert_eq!(
        (e.status, e.retry_after),
        (StatusCode::SERVICE_UNAVAILABLE, Some(2))
    );
}

#[test]
fn bodies_valid_by_the_contract_are_those_parse_takes() {
    let file = json!([{"content": "print(1)"}]);
    let with = |field: &str, value: Value| {
        let mut body = json!({"language": "python", "files": file});
        body[field] = value;
        body
    };
    let mut cases = vec![
        json!({"language": "python", "files": file}),
        json!({"language": "python", "files": file, "stray": [1]}),
        json!({"files": file}),
        json!({"language": "", "files": file}),
        json!({"language": 3, "files": file}),
        json!({"language": "python"}),
        json!({"language": "python", "files": {}}),
        json!([]),
        json!("python"),
        with("version", json!("3.x")),
        with("version", json!(null)),
        with("version", json!(3)),
        with("files", json!([5])),
        with("files", json!([{"name": "a.py"}])),
        with(
            "files",
            json!([{"content": "x", "name": null, "encoding": 4}]),
        ),
        with("files", json!([{"content": "x", "name": 4}])),
        with("stdin", json!("in")),
        with("stdin", json!(null)),
        with("stdin", json!(["in"])),
        with("args", json!(["a", 1, 2.5])),
        with("args", json!(null)),
        with("args", json!("a")),
        with("args", json!([true])),
        with("args", json!([null])),
    ];
    for limit in ["run_timeout", "compile_cpu_time", "run_memory_limit"] {
        for value in [
            json!(100),
            json!(0),
            json!(0.5),
            json!(null),
            json!(false),
            json!(""),
            json!(-1),
            json!(-2),
            json!(-0.5),
            json!(true),
            json!("100"),
            json!([1]),
        ] {
            cases.push(with(limit, value));
        }
    }
    let v = crate::api::openapi::conformance::validator("PistonExecuteRequest");
    for body in cases {
        let parsed = parse(&body);
        assert_eq!(
            v.is_valid(&body),
            parsed.is_ok(),
            "{body}: parse says {:?}",
            parsed.err()
        );
    }
}

#[test]
fn answers_conform_to_the_contract() {
    use crate::api::openapi::conformance::assert_conforms;
    let compiled = Outcome {
        status: Status::Ok,
        compile: Some(ran(Status::Ok, Some(0), None)),
        run: Some(ran(Status::Timeout, None, Some(9))),
        message: None,
    };
    for outcome in [compiled, Outcome::internal("lost")] {
        let answer = response(&outcome, "c", "12.2.0", &Asked::default());
        assert_conforms(
            "PistonExecuteResponse",
            &serde_json::to_value(answer).unwrap(),
        );
    }
    let body = PistonErrorBody {
        message: "x".into(),
    };
    assert_conforms("PistonErrorBody", &serde_json::to_value(body).unwrap());
}
