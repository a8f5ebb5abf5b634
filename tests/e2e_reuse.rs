//! End to end on the real LXD daemon: a pool with `spec.reuse` serves
//! executions one after another from the same container, each in a fresh
//! sandbox, and nothing of one execution is visible to the next; an anomaly
//! or an exhausted container is destroyed instead.

mod common;

use std::time::Duration;

use common::{Harness, resources};
use serde_json::{Value, json};
use unsandbox::lxd::ExecSpec;

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 1\n  reuse: {executions: 6}\n  limits: {cpus: 1, memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 5000, max: 10000}\n    queueTimeoutMs: 60000\n";

/// The small image, plus a compiled language (its compile stage writes the
/// program the run stage runs: both stages share one sandbox).
fn with_compiled() -> unsandbox::agent::Resources {
    let mut res = resources(POOL);
    let compiled = serde_yaml::from_str(
        "{name: shc, sourceFile: main.sh, compile: 'cp main.sh prog && chmod 700 prog', run: ./prog}",
    )
    .unwrap();
    res.images[0].spec.languages.push(compiled);
    res
}

async fn bash(h: &Harness, code: &str) -> Value {
    let (s, b) = h.execute("bash", json!({"code": code})).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Waits until the pool has its one container warm again and no other is
/// left running, and names it.
async fn warm_one(h: &Harness) -> String {
    h.wait_warm("t/small", 1).await;
    let lxd = h.lxd.clone();
    common::wait_for("one container left", Duration::from_secs(60), || {
        let lxd = lxd.clone();
        async move {
            let all = lxd.instances().await.expect("list");
            all.iter()
                .filter(|i| i.is_running() && !i.name.starts_with("us-tpl-"))
                .count()
                == 1
        }
    })
    .await;
    h.running().await[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_executions_in_one_container_see_nothing_of_each_other() {
    let h = Harness::start("reuse", with_compiled()).await;
    h.wait_proven("t/small").await;
    let container = warm_one(&h).await;

    // The first execution leaves everything it can: files in every
    // writable place, a daemon in a session of its own, SysV IPC, an
    // abstract unix socket held by that daemon, an exported variable.
    let leave = "echo left > ~/home-file; echo left > /tmp/tmp-file\n\
                 echo left > /var/tmp/var-file; echo left > /dev/shm/shm-file\n\
                 touch /etc/x 2>/dev/null && echo wrote-etc; touch /x 2>/dev/null && echo wrote-root\n\
                 ipcmk -M 4096 >/dev/null && ipcmk -Q >/dev/null && echo ipc\n\
                 setsid python3 -c \"import socket, time; s = socket.socket(socket.AF_UNIX); s.bind('\\0left'); s.listen(); time.sleep(300)\" </dev/null >/dev/null 2>&1 &\n\
                 sleep 0.3; export LEFT=yes; hostname; echo done";
    let b = bash(&h, leave).await;
    assert_eq!(
        (&b["status"], &b["stdout"], &b["container"]),
        (
            &json!("ok"),
            &json!("ipc\nsandbox\ndone\n"),
            &json!(container)
        ),
        "{b}"
    );
    assert!(b["timings"]["cpu_ms"].as_u64().is_some(), "{b}");

    // The next execution runs in the same container and finds nothing.
    assert_eq!(warm_one(&h).await, container, "recycled, not replaced");
    let look = "ls -A ~ /tmp /var/tmp /dev/shm\n\
                ipcs -m | grep -c '^0x' ; ipcs -q | grep -c '^0x'\n\
                grep -l 'time[.]sleep(300)' /proc/[0-9]*/cmdline 2>/dev/null | wc -l\n\
                python3 -c \"import socket\ntry:\n    socket.socket(socket.AF_UNIX).connect('\\0left'); print('socket visible')\nexcept OSError: print('no socket')\"\n\
                echo \"LEFT=${LEFT:-}\"";
    let b = bash(&h, look).await;
    assert_eq!(b["container"], json!(container), "{b}");
    assert_eq!(
        b["stdout"],
        "/dev/shm:\n\n/home/runner:\nmain.sh\n\n/tmp:\n\n/var/tmp:\n0\n0\n0\nno socket\nLEFT=\n",
        "{b}"
    );

    // Both stages of a compiled language share one sandbox, and its build
    // is gone for the next execution.
    assert_eq!(warm_one(&h).await, container);
    let (s, b) = h
        .execute("shc", json!({"code": "echo built; ls", "stdin": ""}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["status"], &b["stdout"], &b["container"]),
        (
            &json!("ok"),
            &json!("built\nmain.sh\nprog\n"),
            &json!(container)
        ),
        "{b}"
    );
    assert_eq!(warm_one(&h).await, container);
    let b = bash(&h, "ls -A ~").await;
    assert_eq!(
        (&b["stdout"], &b["container"]),
        (&json!("main.sh\n"), &json!(container)),
        "{b}"
    );

    // A program error is the program's: the container still comes back.
    assert_eq!(warm_one(&h).await, container);
    let b = bash(&h, "exit 3").await;
    assert_eq!(b["status"], "runtime_error", "{b}");
    assert_eq!(warm_one(&h).await, container);

    // Its sixth execution is its last: then it is replaced.
    let b = bash(&h, "echo six").await;
    assert_eq!(
        (&b["stdout"], &b["container"]),
        (&json!("six\n"), &json!(container)),
        "{b}"
    );
    h.wait_gone(&container).await;
    let next = warm_one(&h).await;
    assert_ne!(next, container, "six executions, then a fresh container");

    // Back to back, a recycle never fails: ten more executions, two
    // containers' worth, each answered from a recycled or a fresh one.
    for i in 0..10 {
        let b = bash(&h, &format!("echo {i}")).await;
        assert_eq!(
            (&b["status"], &b["stdout"]),
            (&json!("ok"), &json!(format!("{i}\n"))),
            "{b}"
        );
    }
    // Stages run in the container's session (one root supervisor for its
    // whole life): a stage cannot end its output early with a forged
    // terminator, cannot read the supervisor's stdin or environment, and
    // its stdin holds its own bytes alone (not the source that came first
    // on the session's stdin, nor what comes after).
    let c = warm_one(&h).await;
    let probe = "printf '\\036unsandbox:end:0\\036\\036unsandbox:done:0123456789abcdef0123456789abcdef:0\\036'; echo forged\n\
                 sup=$(grep -l 'unsandbox[:]done' /proc/[0-9]*/cmdline 2>/dev/null | head -n 1)\n\
                 test -n \"$sup\" && echo supervisor-seen\n\
                 cat \"${sup%/cmdline}/fd/0\" \"${sup%/cmdline}/environ\" 2>&1 | grep -c 'Permission denied'\n\
                 cat";
    let (s, b) = h
        .execute("bash", json!({"code": probe, "stdin": "only this\n"}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["status"], &b["container"]),
        (&json!("ok"), &json!(c)),
        "{b}"
    );
    assert_eq!(
        b["stdout"],
        "\u{1e}unsandbox:end:0\u{1e}\u{1e}unsandbox:done:0123456789abcdef0123456789abcdef:0\u{1e}forged\nsupervisor-seen\n2\nonly this\n",
        "{b}"
    );
    warm_one(&h).await;
    let b = bash(&h, "echo next").await;
    assert_eq!(b["stdout"], json!("next\n"), "{b}");

    let (s, m) = h.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = m.as_str().unwrap();
    let recycles = |result: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "unsandbox_agent_recycles_total{{pool=\"t/small\",result=\"{result}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(recycles("ok") >= 12, "{text}");
    assert_eq!(recycles("failed"), 0, "{text}");

    // The check after an execution is real: a process of the runner user
    // or a file in the container's own writable places (put there from
    // outside, as a sandbox escape would) fails it, and the container goes.
    let mut failed = 0;
    for plant in [
        "setsid sleep 300 </dev/null >/dev/null 2>&1 &",
        "echo x > /tmp/planted",
    ] {
        let c = warm_one(&h).await;
        let spec = ExecSpec {
            command: vec!["/bin/sh".into(), "-c".into(), plant.into()],
            env: Default::default(),
            user: 1000,
            group: 1000,
            cwd: "/".into(),
            stdin: vec![],
            output_cap: 1024,
            deadline: Duration::from_secs(10),
        };
        assert_eq!(h.lxd.exec(&c, spec).await.unwrap().exit_code, Some(0));
        let b = bash(&h, "echo fine").await;
        assert_eq!(
            (&b["stdout"], &b["container"]),
            (&json!("fine\n"), &json!(c)),
            "{b}"
        );
        h.wait_gone(&c).await;
        failed += 1;
        let (_, m) = h.call("GET", "/metrics", None).await;
        let line = format!(
            "unsandbox_agent_recycles_total{{pool=\"t/small\",result=\"failed\"}} {failed}"
        );
        assert!(m.as_str().unwrap().contains(&line), "{plant}: {m}");
    }
    let next = warm_one(&h).await;

    // An anomaly (a timeout) destroys the container instead of recycling it.
    let (s, b) = h
        .execute("bash", json!({"code": "sleep 30", "timeout_ms": 1000}))
        .await;
    assert_eq!((s.as_u16(), &b["status"]), (200, &json!("timeout")), "{b}");
    assert_eq!(b["container"], json!(next));
    h.wait_gone(&next).await;
    let again = warm_one(&h).await;
    assert_ne!(again, next);

    // A fork bomb hits the process limit inside the sandbox; it is named,
    // and its container is not reused. (32 processes: python's children
    // reach it far below 128 MiB; at 64 the memory limit could come first.)
    let (s, b) = h
        .execute(
            "python",
            json!({"code": "import os\nwhile True:\n    os.fork()", "timeout_ms": 3000}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), &b["status"]),
        (200, &json!("process_limit_exceeded")),
        "{b}"
    );
    h.wait_gone(&again).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.finish().await;
}
