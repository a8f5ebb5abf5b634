//! End to end on the real LXD daemon: the API's answers to bad input, the
//! isolation of the code it runs, `POST /run`, and a program's exit status
//! or signal reported as its own.

mod common;

use common::{Harness, resources};
use serde_json::json;

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 5000, max: 10000}\n    queueTimeoutMs: 60000\n";
const SEMI: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: egress, namespace: t}\nspec:\n  image: small\n  warm: 1\n  network: semitrusted\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_4xx_and_loses_nothing() {
    let mut res = resources(POOL);
    res.pools.push(common::pool(SEMI));
    let h = Harness::start("badinput", res).await;
    h.wait_warm("t/small", 2).await;
    let before = h.running().await;

    let (s, b) = h.execute("cobol", json!({"code": "x"})).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"], "unknown_language");
    assert_eq!(b["available"], json!(["bash", "lua", "python"]));

    let (s, b) = h.call("POST", "/execute/python", Some("{\"code\": ")).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid_json");

    let (s, b) = h
        .call("POST", "/execute/python", Some("{\"stdin\": \"x\"}"))
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("missing field `code`"),
        "{b}"
    );

    let (s, b) = h
        .call(
            "POST",
            "/execute/python",
            Some("{\"code\": \"1\", \"timeout\": 5}"),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `timeout`"),
        "{b}"
    );

    let big = json!({"code": "x".repeat(70 * 1024)}).to_string();
    let (s, b) = h.call("POST", "/execute/python", Some(&big)).await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(b["error"], "payload_too_large");

    let (s, b) = h
        .execute("python", json!({"code": "1", "timeout_ms": 60000}))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"], "limit_exceeds_maximum");
    assert_eq!(b["maximum"], 10000);

    let (s, b) = h
        .execute(
            "python",
            json!({"code": "1", "files": [{"name": "../x", "content": ""}]}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["message"].as_str().unwrap().starts_with("files[0].name"),
        "{b}"
    );

    let long = "a".repeat(300);
    let (s, b) = h
        .execute(
            "python",
            json!({"code": "1", "files": [{"name": long, "content": ""}]}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .ends_with("is 300 bytes long; the limit is 255"),
        "{b}"
    );

    // Standard input is capped on its own, below the body limit.
    let roomy = unsandbox::api::router(unsandbox::api::AppState::local(h.agent.clone()), 4 << 20);
    let body = json!({"code": "1", "stdin": "x".repeat((1 << 20) + 1)}).to_string();
    let (s, b) = common::call(&roomy, "POST", "/execute/python", Some(&body)).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["message"], "stdin may be at most 1048576 bytes", "{b}");

    for asked in [0, 31] {
        let (s, b) = h
            .execute("python", json!({"code": "1", "memory_mib": asked}))
            .await;
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["message"], "memory_mib must be at least 32", "{b}");
    }

    // A semitrusted pool is declared but not served: it says so, and a
    // request for that tier is refused rather than run with other isolation.
    let (s, b) = h
        .execute("python", json!({"code": "1", "network": "semitrusted"}))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"], "network_unavailable");
    let (_, pools) = h.call("GET", "/pools", None).await;
    let egress = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "egress")
        .unwrap();
    let ready = egress["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "NetworkTierUnsupported");
    assert_eq!(egress["status"]["warm"], 0);

    // None of that took a container.
    assert_eq!(h.running().await, before);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_runs_unprivileged_with_no_network_and_kernel_limits() {
    let h = Harness::start("isolation", resources(POOL)).await;
    h.wait_warm("t/small", 2).await;

    let probe = "id -u; id -G; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
                 touch /etc/x 2>/dev/null && echo wrote-etc; \
                 head -c 20000000 /dev/zero > /tmp/big 2>/dev/null || echo tmp-full; \
                 grep -c . /proc/self/status >/dev/null; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status";
    let (s, b) = h.execute("bash", json!({"code": probe})).await;
    assert_eq!(s, 200, "{b}");
    let out = b["stdout"].as_str().unwrap();
    assert_eq!(
        out, "1000\n1000\nlo\ntmp-full\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n",
        "{b}"
    );

    // Memory: the kernel kills a program that goes past the cgroup limit.
    let (s, b) = h
        .execute(
            "python",
            json!({"code": "x = bytearray(400 * 1024 * 1024)\nprint('allocated')"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "memory_limit_exceeded", "{b}");
    assert_ne!(b["stdout"], "allocated\n");

    // Processes: a fork bomb hits the pids limit and the call still returns.
    let (s, b) = h.execute("bash", json!({"code": "for i in $(seq 100); do sleep 5 & done 2>/dev/null; echo started; jobs -p | wc -l", "timeout_ms": 8000})).await;
    assert_eq!(s, 200, "{b}");
    let n: u32 = b["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        n < 32,
        "the process limit (32) capped the children at {n}: {b}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_detects_the_language_and_lists_languages() {
    let h = Harness::start("detect", resources(POOL)).await;
    h.wait_warm("t/small", 2).await;
    let (s, b) = h
        .call(
            "POST",
            "/run",
            Some(&json!({"code": "#!/usr/bin/env lua5.4\nprint(1 + 1)"}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["language"], "lua");
    assert_eq!(b["stdout"], "2\n", "{b}");

    assert_eq!(b["detected"]["method"], "shebang");

    let (s, b) = h
        .call(
            "POST",
            "/run",
            Some(&json!({"code": "def f(x):\n    return x * 2\n\nprint(f(21))\n"}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["language"], "python");
    assert_eq!(b["stdout"], "42\n");
    assert_eq!(b["detected"]["method"], "content");

    // A file name: its extension names the language the content would not.
    let (s, b) = h
        .call(
            "POST",
            "/run",
            Some(&json!({"code": "print(#arg)", "file_name": "count.lua"}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["language"], &b["stdout"]),
        (&json!("lua"), &json!("0\n")),
        "{b}"
    );
    assert_eq!(b["detected"]["method"], "extension");

    let names = h.language_names().await;
    assert_eq!(names, ["bash", "lua", "python"]);
    let (s, _) = h.call("GET", "/readyz", None).await;
    assert_eq!(s, 200);
    let (s, m) = h.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = m.as_str().unwrap();
    assert!(
        text.contains(
            "unsandbox_api_executions_total{language=\"python\",pool=\"t/small\",status=\"ok\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("unsandbox_agent_containers{pool=\"t/small\",state=\"warm\"}"),
        "{text}"
    );

    // Binary output: exact bytes in base64 when asked, replaced in text.
    let code = "import sys\nsys.stdout.buffer.write(bytes([0, 255, 10]))\nsys.stderr.buffer.write(b'\\xfe')";
    let (s2, bin) = h
        .execute("python", json!({"code": code, "output_encoding": "base64"}))
        .await;
    assert_eq!(s2, 200, "{bin}");
    assert_eq!(bin["stdout"], "AP8K", "{bin}");
    assert_eq!(bin["stderr"], "/g==", "{bin}");
    assert_eq!(bin["output_encoding"], "base64", "{bin}");
    let (_, bin) = h.execute("python", json!({"code": code})).await;
    assert_eq!(bin["stdout"], "\u{0}\u{fffd}\n", "{bin}");
    assert!(bin.get("output_encoding").is_none(), "{bin}");
    h.finish().await;
}

/// A pool with enough warm containers for a batch of short executions.
const BATCH: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 4\n  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    queueTimeoutMs: 60000\n";

/// A language whose runner cannot start: `setpriv` is not on its PATH.
fn runnerless() -> unsandbox::crd::LanguageSpec {
    serde_yaml::from_str(
        "{name: runnerless, sourceFile: main.sh, run: bash main.sh, env: {PATH: /nowhere}}",
    )
    .unwrap()
}

/// Programs that end with a status, each with what it prints before:
/// (language, code, exit status). LXD itself fails an exec that exits 126
/// or 127, so those statuses come in several ways.
fn exiting() -> Vec<(&'static str, String, i32)> {
    let mut cases: Vec<_> = [0, 1, 2, 125, 126, 127, 128, 255]
        .into_iter()
        .map(|n| ("bash", format!("echo before; echo oops >&2; exit {n}"), n))
        .collect();
    cases.extend([
        (
            "bash",
            "echo before; echo oops >&2; no-such-command".into(),
            127,
        ),
        ("bash", "echo before; echo oops >&2; ./main.sh".into(), 126),
        (
            "python",
            "import sys\nprint('before')\nsys.stderr.write('oops\\n')\nsys.exit(126)".into(),
            126,
        ),
        (
            "lua",
            "print('before')\nio.stderr:write('oops\\n')\nos.exit(127)".into(),
            127,
        ),
    ]);
    cases
}

/// Python programs that die by a signal after printing: (code, signal).
fn signalled() -> Vec<(String, i32)> {
    let head = "import os, signal, sys\nprint('before', flush=True)\nsys.stderr.write('oops\\n')\nsys.stderr.flush()\n";
    // SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGKILL,
    // SIGSEGV, SIGPIPE, SIGTERM.
    let mut cases: Vec<_> = [1, 2, 3, 4, 6, 7, 8, 9, 11, 13, 15]
        .into_iter()
        .map(|s| {
            let code = format!(
                "{head}if {s} != 9: signal.signal({s}, signal.SIG_DFL)\nos.kill(os.getpid(), {s})\nsignal.pause()"
            );
            (code, s)
        })
        .collect();
    // Faults the program commits itself (faulthandler dereferences NULL).
    cases.push((
        format!("{head}import faulthandler\nfaulthandler._sigsegv()"),
        11,
    ));
    cases.push((format!("{head}os.abort()"), 6));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_status_and_signal_is_the_programs_with_its_output() {
    use futures::StreamExt;
    let mut res = resources(BATCH);
    res.images[0].spec.languages.push(runnerless());
    let h = Harness::start("statuses", res).await;
    h.wait_warm("t/small", 4).await;
    let started = std::time::Instant::now();

    let mut requests: Vec<(String, String, serde_json::Value)> = Vec::new();
    for (lang, code, n) in exiting() {
        let status = if n == 0 { "ok" } else { "runtime_error" };
        let want = json!({"status": status, "exit_code": n, "signal": null, "stdout": "before\n"});
        requests.push((lang.to_string(), code, want));
    }
    for (code, sig) in signalled() {
        let status = if sig == 9 { "killed" } else { "runtime_error" };
        let want =
            json!({"status": status, "exit_code": 128 + sig, "signal": sig, "stdout": "before\n"});
        requests.push(("python".to_string(), code, want));
    }
    let hr = &h;
    let answers: Vec<_> = futures::stream::iter(requests)
        .map(|(lang, code, want)| async move {
            let (s, b) = hr.execute(&lang, json!({"code": code})).await;
            (lang, code, want, s, b)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for (lang, code, want, s, b) in answers {
        assert_eq!(s, 200, "{b}");
        let got = json!({"status": b["status"], "exit_code": b["exit_code"], "signal": b["signal"], "stdout": b["stdout"]});
        assert_eq!(got, want, "{lang}: {code}\n{b}");
        let stderr = b["stderr"].as_str().unwrap();
        assert!(stderr.starts_with("oops\n"), "{lang}: {code}\n{b}");
    }
    // The runner's own command not found is unsandbox's failure, not the code's.
    let (s, b) = h.execute("runnerless", json!({"code": "echo hi"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "internal_error", "{b}");
    eprintln!(
        "{} executions in {:?}",
        exiting().len() + signalled().len() + 1,
        started.elapsed()
    );
    h.finish().await;
}
