//! End to end on the real LXD daemon: warm pools, execution, replacement,
//! shrink, delete, restart and out-of-band changes.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, resources, wait_for};
use serde_json::json;
use unsandbox::agent::Resources;

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n";

fn pool_with(warm: u32) -> String {
    POOL.replace("warm: 2", &format!("warm: {warm}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_fills_runs_python_and_bash_and_replaces_taken_containers() {
    let h = Harness::start("fill", resources(POOL)).await;
    h.wait_warm("t/small", 2).await;
    let before = h.running().await;
    assert_eq!(
        before.len(),
        2,
        "LXD runs exactly the warm count: {before:?}"
    );

    let (status, body) = h
        .execute(
            "python",
            json!({"code": "import sys\nprint('out', sys.argv[1:])\nprint(input(), file=sys.stderr)\nsys.exit(3)\n", "stdin": "from stdin\n", "args": ["a b", "c"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "runtime_error");
    assert_eq!(body["stdout"], "out ['a b', 'c']\n");
    assert_eq!(body["stderr"], "from stdin\n");
    assert_eq!(body["exit_code"], 3);
    assert_eq!(body["language"], "python");
    assert_eq!(body["pool"], "t/small");
    assert_eq!(body["host"], "node-fill");
    let used = body["container"].as_str().unwrap().to_string();
    assert!(before.contains(&used), "{used} came from the warm pool");
    for key in ["queue_ms", "exec_ms", "total_ms"] {
        assert!(body["timings"][key].is_u64(), "{body}");
    }

    let (status, body) = h
        .execute("bash", json!({"code": "id -u; echo \"$HOME\"; pwd; echo err >&2; cat data.txt; exit 0", "files": [{"name": "data.txt", "content": "file content"}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(
        body["stdout"],
        "1000\n/home/runner\n/home/runner\nfile content"
    );
    assert_eq!(body["stderr"], "err\n");
    assert_eq!(body["exit_code"], 0);

    // Each container served one execution and is gone; replacements refill the pool.
    h.wait_gone(&used).await;
    // LXD 5.0 leaves a deleted instance's log folder on the host; the
    // agent removes it, so executions do not fill the host's /var/log.
    if let Some(dir) = unsandbox::lxd::logs::dir_for_socket(h.lxd.socket()) {
        let folder = unsandbox::lxd::logs::instance_dir(&dir, h.lxd.project(), &used).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while folder.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!folder.exists(), "{} left behind", folder.display());
    }
    h.wait_warm("t/small", 2).await;
    let after = h.running().await;
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|c| !before.contains(c) || c != &used));
    assert!(!after.contains(&used));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_launches_the_moment_a_container_is_taken() {
    let h = Harness::start("replace", resources(&pool_with(1))).await;
    h.wait_warm("t/small", 1).await;
    let lease = h
        .agent
        .acquire("t/small", Instant::now() + Duration::from_secs(5))
        .await
        .expect("a warm container");
    // Without any execution finishing, a new warm container appears.
    h.wait_warm("t/small", 1).await;
    let running = h.running().await;
    assert_eq!(
        running.len(),
        2,
        "the taken one and its replacement: {running:?}"
    );
    let taken = lease.container.clone();
    drop(lease);
    h.wait_gone(&taken).await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_the_run_and_destroys_the_container() {
    let h = Harness::start("timeout", resources(&pool_with(1))).await;
    h.wait_warm("t/small", 1).await;
    let started = Instant::now();
    let (status, body) = h
        .execute(
            "python",
            json!({"code": "while True: pass", "timeout_ms": 1500}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    let c = body["container"].as_str().unwrap().to_string();
    h.wait_gone(&c).await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_is_cut_at_the_cap() {
    let h = Harness::start("flood", resources(&pool_with(1))).await;
    h.wait_warm("t/small", 1).await;
    let (status, body) =
        h.execute("python", json!({"code": "import sys\nwhile True: sys.stdout.write('x' * 65536)", "max_output_bytes": 10000})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "output_limit_exceeded");
    assert_eq!(body["stdout"].as_str().unwrap().len(), 10000);
    assert_eq!(body["stdout_truncated"], true);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_and_deleting_a_pool_removes_its_containers() {
    let h = Harness::start("shrink", resources(&pool_with(3))).await;
    h.wait_warm("t/small", 3).await;
    h.set_pools(&[&pool_with(1)]);
    h.wait_warm("t/small", 1).await;
    let lxd = h.lxd.clone();
    wait_for(
        "LXD to run one pool container",
        Duration::from_secs(60),
        || {
            let lxd = lxd.clone();
            async move {
                lxd.instances()
                    .await
                    .unwrap()
                    .iter()
                    .filter(|i| !i.name.starts_with("us-tpl-"))
                    .count()
                    == 1
            }
        },
    )
    .await;
    h.set_pools(&[]);
    wait_for(
        "every container and the template to be gone",
        Duration::from_secs(60),
        || {
            let lxd = lxd.clone();
            async move { lxd.instances().await.unwrap().is_empty() }
        },
    )
    .await;
    assert!(h.agent.reports().is_empty());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_unused_containers_and_removes_used_ones() {
    let mut first = Harness::start("restart", resources(POOL)).await;
    first.wait_warm("t/small", 2).await;
    // Take a container and run code in it, then "crash" before it is destroyed.
    let lease = first
        .agent
        .acquire("t/small", Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    let used = lease.container.clone();
    let language = first
        .agent
        .choose("python", Default::default())
        .unwrap()
        .language;
    let job = unsandbox::execution::Job {
        language,
        code: "print(1)".into(),
        files: vec![],
        stdin: vec![],
        args: vec![],
        subdir: None,
        network: unsandbox::crd::NetworkTier::Zerotrust,
        sandboxed: false,
    };
    let stage = unsandbox::execution::StageLimits {
        wall: Duration::from_secs(10),
        output_cap: 1024,
        memory_mib: 256,
    };
    let limits = unsandbox::execution::Limits {
        compile: stage,
        run: stage,
        launched_memory_mib: 256,
    };
    let out = unsandbox::execution::run(&first.lxd, &used, &job, &limits)
        .await
        .unwrap();
    assert_eq!(out.run.unwrap().stdout, b"1\n");
    std::mem::forget(lease);
    // The replacement launched at acquire gets warm; then the agent "crashes":
    // LXD holds two unused warm containers and the used one.
    first.wait_warm("t/small", 2).await;
    first.halt().await;
    assert_eq!(first.running().await.len(), 3);
    let unused: Vec<String> = first
        .running()
        .await
        .into_iter()
        .filter(|c| c != &used)
        .collect();

    let second = Harness::start_on(first.lxd.clone(), first.node.clone(), resources(POOL)).await;
    second.wait_warm("t/small", 2).await;
    second.wait_gone(&used).await;
    let tracked = second.agent.tracked();
    for c in &unused {
        assert!(
            tracked.contains(c),
            "unused container {c} adopted: {tracked:?}"
        );
    }
    assert!(!tracked.contains(&used));
    second.finish().await;
}

/// Every instance in the project, by name, with whether it is running.
async fn instances(lxd: &unsandbox::lxd::Lxd) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = lxd
        .instances()
        .await
        .expect("list")
        .into_iter()
        .map(|i| (i.name.clone(), i.is_running()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_waits_for_a_complete_listing_then_adopts_warm_containers_and_the_template() {
    let mut first = Harness::start("adopt", resources(POOL)).await;
    first.wait_warm("t/small", 2).await;
    first.halt().await;
    let before = instances(&first.lxd).await;
    let warm = first.running().await;
    assert_eq!(warm.len(), 2, "{before:?}");
    let templates: Vec<String> = before
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n.starts_with("us-tpl-"))
        .collect();
    if std::env::var("UNSANDBOX_TEST_TEMPLATES").map_or(true, |v| v != "0") {
        assert_eq!(templates.len(), 1, "{before:?}");
    }
    // Its name is fixed by shape and node: a mark shows a rebuilt one.
    for t in &templates {
        first
            .lxd
            .set_config(t, &[("user.test-mark", "first-run".to_string())])
            .await
            .unwrap();
    }

    // The second agent's watches have not listed yet: it sees no pool at
    // all, and must take that for "not known" rather than "deleted".
    let second =
        Harness::start_on(first.lxd.clone(), first.node.clone(), Resources::default()).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // three resync intervals
    assert_eq!(instances(&second.lxd).await, before, "nothing touched");
    assert!(second.agent.tracked().is_empty());
    let probe = json!({"code": "print(1)", "timeout_ms": 0});
    let (s, b) = second.execute("python", probe.clone()).await;
    assert_eq!(
        (s.as_u16(), b["error"].as_str()),
        (503, Some("agent_starting")),
        "{b}"
    );
    let (s, b) = second.call("GET", "/readyz", None).await;
    assert_eq!(s, 503, "{b}");

    // The complete listing: while the host gets ready it says so with a
    // 503 (never a 4xx); then the request reaches the pool, whose limits
    // refuse `timeout_ms: 0` (so no container is used).
    second.tx.send(resources(POOL)).unwrap();
    let (router, seen) = (
        second.router.clone(),
        std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let log = seen.clone();
    wait_for("the pool to serve python", Duration::from_secs(120), || {
        let (router, log, probe) = (router.clone(), log.clone(), probe.clone());
        async move {
            let (s, b) =
                common::call(&router, "POST", "/execute/python", Some(&probe.to_string())).await;
            log.lock()
                .unwrap()
                .push(format!("{} {}", s.as_u16(), b["error"]));
            s == 422 && b["error"] == "invalid_request"
        }
    })
    .await;
    for answer in seen
        .lock()
        .unwrap()
        .iter()
        .filter(|a| !a.starts_with("422"))
    {
        assert!(
            [
                "503 \"agent_starting\"",
                "503 \"image_pending\"",
                "503 \"languages_not_ready\""
            ]
            .contains(&answer.as_str()),
            "a host getting ready answered {answer}"
        );
    }
    second.wait_warm("t/small", 2).await;
    assert_eq!(
        second.running().await,
        warm,
        "the same warm containers, adopted"
    );
    let tracked = second.agent.tracked();
    assert!(warm.iter().all(|c| tracked.contains(c)), "{tracked:?}");
    for t in &templates {
        let tpl = second
            .lxd
            .instance(t)
            .await
            .unwrap()
            .expect("template kept");
        assert_eq!(
            tpl.config.get("user.test-mark").map(String::as_str),
            Some("first-run"),
            "the template was kept, not rebuilt"
        );
    }
    let (s, b) = second.call("GET", "/readyz", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["serving"][0]["languages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "python"),
        "{b}"
    );
    second.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_lost_out_of_band_are_replaced() {
    let h = Harness::start("oob", resources(POOL)).await;
    h.wait_warm("t/small", 2).await;
    let before = h.running().await;
    h.lxd.destroy(&before[0]).await.unwrap();
    h.lxd.force_stop(&before[1]).await.unwrap();
    let lxd = h.lxd.clone();
    let old = before.clone();
    wait_for("two new warm containers", Duration::from_secs(90), || {
        let (lxd, old) = (lxd.clone(), old.clone());
        async move {
            let now: Vec<String> = lxd
                .instances()
                .await
                .unwrap()
                .into_iter()
                .filter(|i| i.is_running() && !i.name.starts_with("us-tpl-"))
                .map(|i| i.name)
                .collect();
            now.len() == 2 && now.iter().all(|c| !old.contains(c))
        }
    })
    .await;
    h.wait_warm("t/small", 2).await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_keeps_nothing_warm_answers_503_at_once() {
    let h = Harness::start("nowarm", resources(&pool_with(0))).await;
    h.wait_proven("t/small").await;
    let start = Instant::now();
    let (status, body) = h.execute("python", json!({"code": "print(1)"})).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "no wait for a container that cannot come: {:?}",
        start.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_capacity");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("keeps no container warm"),
        "{body}"
    );
    h.finish().await;
}

/// The last `status` of pool `t/small` that `GET /pools` answers.
async fn pool_status(h: &Harness) -> serde_json::Value {
    let (status, pools) = h.call("GET", "/pools", None).await;
    assert_eq!(status, 200, "{pools}");
    pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "small")
        .map(|p| p["status"].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_of_the_files_is_rejected_and_the_warm_containers_stay() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::root().join(common::SMALL_IMAGE),
        dir.path().join("image.yaml"),
    )
    .unwrap();
    let file = dir.path().join("pool.yaml");
    std::fs::write(&file, POOL).unwrap();
    let (mut rx, rejections) =
        unsandbox::standalone::watch_files(vec![dir.path().into()], Duration::from_secs(1))
            .await
            .unwrap();
    let mut h = Harness::start("reject", rx.borrow().clone()).await;
    // The API answers with this file watcher's rejections, as standalone's does.
    h.router = unsandbox::api::router(
        unsandbox::api::AppState {
            rejections,
            ..unsandbox::api::AppState::local(h.agent.clone())
        },
        64 * 1024,
    );
    let tx = h.tx.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let res = rx.borrow_and_update().clone();
            if tx.send(res).is_err() {
                return;
            }
        }
    });
    h.wait_warm("t/small", 2).await;
    let before = h.running().await;
    let ready_since = pool_status(&h).await["conditions"][0]["lastTransitionTime"].clone();
    assert!(ready_since.is_string(), "{ready_since}");

    for bad in [
        "  execution: {wallTimeMs: {default: 50000, max: 30000}}\n",
        "  wram: 5\n",
        "",
    ] {
        let text = format!("{POOL}{bad}");
        let text = if bad.is_empty() {
            text.replace("image: small", "image: nosuch")
        } else {
            text
        };
        std::fs::write(&file, &text).unwrap();
        let h2 = &h;
        wait_for(
            "the rejection in /pools",
            Duration::from_secs(5),
            || async move {
                pool_status(h2).await["rejected"][0]["message"]
                    .as_str()
                    .is_some_and(|m| {
                        m.contains(if bad.is_empty() {
                            "nosuch"
                        } else {
                            bad.trim().split(':').next().unwrap()
                        })
                    })
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            h.running().await,
            before,
            "{text}: the warm containers stay"
        );
        let status = pool_status(&h).await;
        assert_eq!(status["warm"], 2, "{status}");
        assert_eq!(status["rejected"][0]["kept"], true, "{status}");
        assert_eq!(status["rejected"][0]["document"], 0, "{status}");
        assert!(
            status["rejected"][0]["file"]
                .as_str()
                .unwrap()
                .ends_with("pool.yaml"),
            "{status}"
        );
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"], ready_since,
            "Ready has held since the pool filled: {status}"
        );
    }

    // A valid edit applies and clears the rejection.
    std::fs::write(&file, pool_with(1)).unwrap();
    h.wait_warm("t/small", 1).await;
    assert!(pool_status(&h).await.get("rejected").is_none());
    h.finish().await;
}
