//! End to end on the real LXD daemon: the API's answers to bad input, the
//! isolation of the code it runs, and `POST /run`.

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
    assert!(
        b["status"] == "killed" || b["status"] == "runtime_error",
        "{b}"
    );
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
    h.finish().await;
}
