//! End to end on the real LXD daemon: compiled languages run as two stages
//! with their own limits and verdicts, per-stage memory limits are enforced
//! by the kernel, and a language whose smoke tests fail on this host is not
//! served there.

mod common;

use common::{Harness, resources};
use serde_json::json;
use unsandbox::crd::LanguageSpec;

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n  limits: {memoryMib: 128, compileMemoryMib: 192, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 5000, max: 10000}\n    compileTimeMs: {default: 5000, max: 8000}\n    queueTimeoutMs: 60000\n";

/// `bashc`: a "compiled" shell (the compile stage checks the syntax and
/// produces an executable), and `broken`: a language whose smoke test
/// cannot pass.
fn extra_languages() -> Vec<LanguageSpec> {
    serde_yaml::from_str(
        r##"
- name: bashc
  sourceFile: main.sh
  compile: bash -n main.sh && cp main.sh main && chmod 700 main && echo compiled
  run: ./main
  smokeTests:
    - name: args
      code: "#!/bin/bash\necho \"$@\""
      args: [a, b]
      expectedStdout: "a b\n"
- name: broken
  sourceFile: main.sh
  run: bash main.sh
  smokeTests:
    - name: hello
      code: echo nope
      expectedStdout: "hello\n"
"##,
    )
    .unwrap()
}

async fn harness(test: &str) -> Harness {
    let mut res = resources(POOL);
    res.images[0].spec.languages.extend(extra_languages());
    let h = Harness::start(test, res).await;
    h.wait_proven("t/small").await;
    h.wait_warm("t/small", 2).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_languages_run_in_two_stages_with_their_own_verdicts() {
    let h = harness("stages").await;

    let code = "#!/bin/bash\nread -r line\necho \"got $line and $*\"\n";
    let (s, b) = h
        .execute(
            "bashc",
            json!({"code": code, "stdin": "x\n", "args": ["1", "2"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "ok", "{b}");
    assert_eq!(b["stdout"], "got x and 1 2\n", "{b}");
    assert_eq!(b["compile"]["status"], "ok", "{b}");
    assert_eq!(b["compile"]["stdout"], "compiled\n", "{b}");
    assert!(
        b["timings"]["compile_ms"].is_u64() && b["timings"]["run_ms"].is_u64(),
        "{b}"
    );

    // A compile error: the compiler's output, and no run stage.
    let (s, b) = h
        .execute("bashc", json!({"code": "if then fi\necho ran\n"}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "compile_error", "{b}");
    assert_eq!(b["compile"]["status"], "runtime_error", "{b}");
    assert_ne!(b["exit_code"], 0, "{b}");
    assert!(
        b["stderr"].as_str().unwrap().contains("syntax error"),
        "{b}"
    );
    assert!(!b["stdout"].as_str().unwrap().contains("ran"), "{b}");
    assert!(b["timings"]["run_ms"].is_null(), "{b}");

    // Each stage has its own bounds.
    let (s, b) = h
        .execute(
            "bashc",
            json!({"code": "echo hi", "compile_timeout_ms": 9000}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "compile_timeout_ms", "{b}");
    let (s, b) = h
        .execute("python", json!({"code": "print(1)", "memory_mib": 129}))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["maximum"], 128, "{b}");

    // The run stage's memory limit is the kernel's: 80 MB fits in the
    // pool's 128 MiB, not in a requested 48 MiB.
    let hog = "x = bytearray(80 * 1024 * 1024)\nprint('allocated')";
    let (s, b) = h.execute("python", json!({"code": hog})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["stdout"], "allocated\n", "{b}");
    let (s, b) = h
        .execute("python", json!({"code": hog, "memory_mib": 48}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "memory_limit_exceeded", "{b}");
    assert_ne!(b["stdout"], "allocated\n", "{b}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_that_fails_its_smoke_tests_is_not_served() {
    let h = harness("smoke").await;
    let report = h
        .agent
        .reports()
        .into_iter()
        .find(|r| r.name == "small")
        .unwrap();
    assert_eq!(report.node.languages, ["python", "bash", "lua", "bashc"]);
    assert_eq!(report.node.unavailable_languages.len(), 1);
    let u = &report.node.unavailable_languages[0];
    assert_eq!(u.name, "broken");
    assert!(
        u.message.contains("hello: printed \"nope\\n\""),
        "{}",
        u.message
    );

    let names = h.language_names().await;
    assert_eq!(names, ["bash", "bashc", "lua", "python"]);

    // Waiting will not help: a 4xx that names the cause, not the tier.
    let (s, b) = h.execute("broken", json!({"code": "echo hello"})).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"], "language_unavailable", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("smoke")
            || b["message"].as_str().unwrap().contains("printed"),
        "{b}"
    );
    let piston =
        json!({"language": "broken", "version": "*", "files": [{"content": "echo hello"}]});
    let (s, b) = h
        .call("POST", "/api/v2/execute", Some(&piston.to_string()))
        .await;
    assert_eq!(s, 400, "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(message.starts_with("broken-* runtime is unknown: "), "{b}");
    assert!(message.contains("failed its smoke tests"), "{b}");
    h.finish().await;
}
