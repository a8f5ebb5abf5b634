//! End to end on the real LXD daemon: hostile programs, each in its own
//! execution, cannot leave the container's limits and get an exact verdict
//! for the limit they hit; what they leave running does not hold the answer.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, resources};
use serde_json::{Value, json};
use unsandbox::execution::{self, Job, Limits, StageLimits};

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 3\n  limits: {cpus: 1, memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 5000, max: 10000}\n    queueTimeoutMs: 60000\n";

/// The same pool recycling its containers: every execution in a fresh
/// sandbox inside a used container.
fn recycling() -> String {
    POOL.replace("  warm: 3\n", "  warm: 3\n  reuse: {executions: 100}\n")
}

async fn harness(test: &str, pool: &str) -> Harness {
    let h = Harness::start(test, resources(pool)).await;
    h.wait_warm("t/small", 3).await;
    h
}

async fn bash(h: &Harness, code: &str) -> Value {
    let (s, b) = h.execute("bash", json!({"code": code})).await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_cannot_nest_user_namespaces_reach_devlxd_or_outgrow_its_share() {
    cannot_escape(harness("hostile-escape", POOL).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_recycled_container_code_cannot_escape_either() {
    assert!(recycling().contains("reuse:"));
    cannot_escape(harness("hostile-escape-reuse", &recycling()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_programs_get_the_verdict_of_the_limit_they_hit() {
    limits_named(harness("hostile-limits", POOL).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_recycled_container_hostile_programs_get_the_same_verdicts() {
    limits_named(harness("hostile-limits-reuse", &recycling()).await).await;
}

async fn cannot_escape(h: Harness) {
    // No nested user namespace, so no fake root and no mount namespace of
    // its own; no LXD socket; a bounded number of open files.
    let b = bash(
        &h,
        "unshare -r id; echo \"userns $?\"\n\
         unshare -m -r true; echo \"mountns $?\"\n\
         cat /proc/sys/user/max_user_namespaces\n\
         test -e /dev/lxd && echo devlxd || echo no-devlxd\n\
         echo \"files $(ulimit -n) $(ulimit -Hn)\"",
    )
    .await;
    assert_eq!(b["status"], "ok", "{b}");
    assert_eq!(
        b["stdout"], "userns 1\nmountns 1\n0\nno-devlxd\nfiles 1024 1024\n",
        "{b}"
    );
    assert!(!b["stdout"].as_str().unwrap().contains("uid=0"), "{b}");

    // The container's own limits in /proc, where LXD runs with lxcfs.
    let b = bash(
        &h,
        "grep -c lxcfs /proc/mounts; grep MemTotal /proc/meminfo",
    )
    .await;
    let out = b["stdout"].as_str().unwrap().to_string();
    if out.starts_with("0\n") {
        eprintln!("skipped: LXD runs without lxcfs here, /proc/meminfo is the host's");
    } else {
        assert!(out.contains(&format!("{} kB", 128 * 1024)), "{b}");
    }

    // A CPU quota besides the pinned core: four processes that each want
    // half a second of CPU get one CPU between them.
    let names = h.running().await;
    let cgroup = format!(
        "/sys/fs/cgroup/cpu/{}/cpu.cfs_quota_us",
        execution::usage::cgroup_name(h.lxd.project(), &names[0])
    );
    if let Ok(quota) = std::fs::read_to_string(&cgroup) {
        assert_eq!(quota.trim(), "100000", "{cgroup}");
    }
    let spin = "import os, time\n\
                kids = []\n\
                for _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n        \
                while time.process_time() < 0.5: pass\n        os._exit(0)\n    kids.append(pid)\n\
                for k in kids: os.waitpid(k, 0)\n\
                print('spun')";
    let (s, b) = h.execute("python", json!({"code": spin})).await;
    assert_eq!((s.as_u16(), &b["stdout"]), (200, &json!("spun\n")), "{b}");
    let (cpu, wall) = (
        b["timings"]["cpu_ms"].as_u64(),
        b["timings"]["run_ms"].as_u64().unwrap(),
    );
    if let Some(cpu) = cpu {
        // One CPU: CPU time can only trail wall time (a little slack for
        // the accounting period's edges).
        assert!(cpu <= wall + 100, "cpu {cpu} ms in {wall} ms wall: {b}");
        assert!(cpu >= 1900, "four spinners of 0.5 s: {b}");
    }
    h.finish().await;
}

async fn limits_named(h: Harness) {
    // A memory hog: the OOM killer ends it, and the answer says so.
    let hog = "a = []\nwhile True:\n    a.append(b'x' * 1000000)";
    let (s, b) = h.execute("python", json!({"code": hog})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "memory_limit_exceeded", "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("memory limit (128 MiB)"),
        "{b}"
    );
    assert!(
        b["timings"]["memory_bytes"].as_u64().unwrap() > 32 << 20,
        "{b}"
    );
    // Held at the limit without an OOM kill: nearly all of it anonymous,
    // the rest page cache the kernel keeps reclaiming (files read again and
    // again) until the wall time. The sampled memory names the limit.
    // Reading the same files without holding memory is only a timeout.
    let reader = |held_mib: u32| {
        format!(
            "import glob\n\
             held = b'x' * ({held_mib} << 20)\n\
             files = [f for f in glob.glob('/usr/**/*', recursive=True)][:4000]\n\
             while True:\n    for f in files:\n        try:\n            open(f, 'rb').read(1 << 20)\n        except OSError:\n            pass"
        )
    };
    for (held, status) in [(110, "memory_limit_exceeded"), (0, "timeout")] {
        let code = reader(held);
        let (s, b) = h
            .execute("python", json!({"code": code, "timeout_ms": 3000}))
            .await;
        assert_eq!((s.as_u16(), &b["status"]), (200, &json!(status)), "{b}");
    }

    // Piston has no status for it: SG with SIGKILL, and the message.
    let piston = json!({"language": "python", "version": "*", "files": [{"content": hog}]});
    let (s, p) = h
        .call("POST", "/api/v2/execute", Some(&piston.to_string()))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (&p["run"]["status"], &p["run"]["signal"]),
        (&json!("SG"), &json!("SIGKILL")),
        "{p}"
    );
    assert!(
        p["run"]["message"]
            .as_str()
            .unwrap()
            .contains("memory limit"),
        "{p}"
    );

    // A fork bomb hits the process limit; a neighbour running meanwhile is
    // not disturbed.
    let bomb = "import os\nwhile True:\n    os.fork()";
    let ((s, b), (ns, nb)) = tokio::join!(
        h.execute("python", json!({"code": bomb})),
        h.execute("python", json!({"code": "print(sum(range(10)))"})),
    );
    assert_eq!((s.as_u16(), ns.as_u16()), (200, 200), "{b}\n{nb}");
    assert_eq!(b["status"], "process_limit_exceeded", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("process limit"),
        "{b}"
    );
    assert_eq!(
        (&nb["status"], &nb["stdout"]),
        (&json!("ok"), &json!("45\n"))
    );

    // A program that leaves children running (one in a session of its own)
    // ends when it exits, with its own status, long before the wall limit.
    let started = Instant::now();
    let (s, b) = h
        .execute(
            "bash",
            json!({"code": "sleep 100 &\nsetsid sleep 100 &\necho bye\nexit 3", "timeout_ms": 10000}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["status"], &b["exit_code"], &b["stdout"]),
        (&json!("runtime_error"), &json!(3), &json!("bye\n")),
        "{b}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{b}");

    // An ordinary SIGKILL that no limit caused stays `killed`.
    let b = bash(&h, "kill -9 $$").await;
    assert_eq!(
        (&b["status"], &b["signal"]),
        (&json!("killed"), &json!(9)),
        "{b}"
    );

    // A warm container stopped out of band: the execution may run again
    // elsewhere (the API's retry), it is not the code's failure.
    h.wait_warm("t/small", 3).await;
    let names = h.running().await;
    h.lxd.force_stop(&names[0]).await.unwrap();
    let limits = StageLimits {
        wall: Duration::from_secs(5),
        output_cap: 1024,
        memory_mib: 128,
    };
    let job = Job {
        language: serde_yaml::from_str("{name: bash, sourceFile: main.sh, run: bash main.sh}")
            .unwrap(),
        code: "echo hi".into(),
        files: vec![],
        stdin: vec![],
        args: vec![],
        subdir: None,
        network: unsandbox::crd::NetworkTier::Zerotrust,
        sandboxed: false,
    };
    let limits = Limits {
        compile: limits,
        run: limits,
        launched_memory_mib: 128,
    };
    let e = execution::run(&h.lxd, &names[0], &job, &limits)
        .await
        .unwrap_err();
    assert!(execution::retryable(&e), "{e}");
    h.finish().await;
}
