//! End to end with the `unsandbox` binary on the real LXD daemon: SIGTERM
//! while an execution runs. Readiness turns false and new executions are
//! refused with 503 `draining` at once; the running execution finishes with
//! its whole answer; the process exits cleanly, leaving its warm containers;
//! the next start adopts exactly those.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 5000, max: 10000}\n";

/// One HTTP/1.1 exchange on loopback: status and JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = common::raw_http(addr, method, path, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A standalone `unsandbox` on `addr`, in LXD project `project`.
fn start(dir: &std::path::Path, project: &str, addr: SocketAddr, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("log-{}", addr.port()))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_unsandbox"))
        .args(["standalone", "--config"])
        .arg(dir.join("config"))
        .args(["--lxd-project", project, "--node-name", "node-drain"])
        .args(["--storage-pool", &common::storage_pool()])
        .args(["--listen", &addr.to_string(), "--images-dir", "none"])
        .args(["--resync-ms", "1000", "--drain-delay-ms", "1500"])
        .args(["--drain-grace-seconds", "20"])
        .args(extra)
        .env("UNSANDBOX_LXD_SOCKET", common::socket())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start unsandbox")
}

async fn wait_ready(addr: SocketAddr) {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (s, b) = http(addr, "GET", "/pools", None).await;
            let warm = b[0]["status"]["nodes"][0]["warm"].as_u64();
            if s == 200 && http(addr, "GET", "/readyz", None).await.0 == 200 && warm == Some(2) {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(180), "not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits for the process to end; its exit status.
async fn exited(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn running(lxd: &unsandbox::lxd::Lxd) -> Vec<String> {
    let mut v: Vec<String> = lxd
        .instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.is_running())
        .map(|i| i.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_executions_refuses_new_ones_and_leaves_warm_containers() {
    let lxd = common::project("drain").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::copy(
        common::root().join(common::SMALL_IMAGE),
        dir.path().join("config/image.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("config/pool.yaml"), POOL).unwrap();

    let addr = common::free_addr();
    let mut first = start(dir.path(), lxd.project(), addr, &[]);
    wait_ready(addr).await;

    // A slow execution runs when SIGTERM comes.
    let slow = tokio::spawn(http(
        addr,
        "POST",
        "/execute/bash",
        Some(json!({"code": "sleep 3; echo done", "timeout_ms": 10000})),
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let term_at = Instant::now();
    sigterm(&first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b) = http(addr, "GET", "/readyz", None).await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["message"].as_str().unwrap().starts_with("draining"),
        "{b}"
    );
    let (s, b) = http(
        addr,
        "POST",
        "/execute/python",
        Some(json!({"code": "print(1)"})),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (503, Some("draining")), "{b}");

    let (s, b) = slow.await.unwrap();
    assert_eq!(
        (s, &b["status"], &b["stdout"]),
        (200, &json!("ok"), &json!("done\n")),
        "the running execution finished: {b}"
    );
    let status = exited(&mut first, Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    eprintln!(
        "exited {:.1} s after SIGTERM",
        term_at.elapsed().as_secs_f64()
    );
    let left = running(&lxd).await;
    assert!(!left.is_empty(), "warm containers stay for the next start");

    // The next start adopts exactly those, and this one cleans up on exit.
    let addr = common::free_addr();
    let mut second = start(dir.path(), lxd.project(), addr, &["--cleanup-on-exit"]);
    wait_ready(addr).await;
    let now = running(&lxd).await;
    for c in &left {
        assert!(now.contains(c), "{c} adopted: {left:?} then {now:?}");
    }
    sigterm(&second);
    assert!(exited(&mut second, Duration::from_secs(30)).await.success());
    common::assert_project_empty(&lxd).await;
}
