//! End to end with the `unsandbox` binary on the real LXD daemon: the
//! `semitrusted` tier. "The internet" is an HTTP and HTTPS server that the
//! test starts in a network namespace of its own, behind a veth from the
//! host (203.0.113.0/30, a documentation range, routed only to that veth);
//! the agent's proxy learns from a hosts file that `allowed.test` and
//! `denied.test` are that server, and that other names are private,
//! loopback or the metadata address. No packet leaves the machine.
//!
//! It shows: allowed traffic goes through (HTTP, and HTTPS through
//! `CONNECT` with the certificate verified); everything else is refused
//! with a reason the program can read; raw network access fails; the byte
//! budget cuts; a zerotrust execution beside it still has only `lo`; a
//! killed agent's successor serves the same warm containers; and nothing is
//! left behind: no container, socket, veth or namespace.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HOST_SIDE: &str = "203.0.113.1";
const UPSTREAM: &str = "203.0.113.2";

const POOLS: &str = "apiVersion: unsandbox.com/v1alpha1
kind: ExecutorPool
metadata: {name: semi, namespace: t}
spec:
  image: small
  warm: 2
  network: semitrusted
  egress:
    allow:
    - {host: allowed.test, ports: [80, 443]}
    - {host: '*.wild.test', ports: [80]}
    - {host: private.test}
    - {host: loopback.test}
    - {host: meta.test}
    - {host: mixed.test}
    budget: {bytes: 200000, connections: 20}
  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}
---
apiVersion: unsandbox.com/v1alpha1
kind: ExecutorPool
metadata: {name: zero, namespace: t}
spec:
  image: small
  warm: 1
  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}
";

/// What the proxy resolves names to (the test-only resolver override).
fn hosts_file() -> String {
    format!(
        "{UPSTREAM} allowed.test denied.test a.wild.test mixed.test\n\
         10.1.2.3 private.test mixed.test\n\
         127.0.0.1 loopback.test\n\
         169.254.169.254 meta.test\n"
    )
}

/// Python helpers every program in the container starts with: plain HTTP
/// through the proxy, a `CONNECT` tunnel, and TLS over it verified against
/// the test's CA (sent along as `ca.pem`).
const CLIENT: &str = r#"
import socket, ssl, sys
PROXY = ('127.0.0.1', 3128)
def read_all(s):
    data = b''
    while True:
        try:
            d = s.recv(65536)
        except OSError as e:
            return data + ('<%s>' % e).encode()
        if not d:
            return data
        data += d
def get(host, path='/hello'):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(('GET http://%s%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % (host, path, host)).encode())
    return read_all(s)
def connect(host, port):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(('CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n' % (host, port, host, port)).encode())
    head = b''
    while b'\r\n\r\n' not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    return s, head.split(b'\r\n')[0].decode()
def https_get(host, path='/hello'):
    s, status = connect(host, 443)
    if ' 200' not in status:
        return status
    ctx = ssl.create_default_context(cafile='ca.pem')
    t = ctx.wrap_socket(s, server_hostname=host)
    t.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % (path, host)).encode())
    return read_all(t).decode(errors='replace')
def status_line(raw):
    return raw.split(b'\r\n')[0].decode()
"#;

/// The network namespace with the upstream server, and its veth.
struct Internet {
    ns: String,
    veth: String,
    dir: PathBuf,
    server: Child,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Internet {
    fn start(dir: &Path) -> Self {
        let id = std::process::id() % 100_000;
        let ns = format!("ut-net-{id}");
        let (veth, peer) = (format!("utn{id}h"), format!("utn{id}n"));
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        sh(&["ip", "link", "set", &peer, "netns", &ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{HOST_SIDE}/30"),
            "dev",
            &veth,
        ]);
        sh(&["ip", "link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            sh(&all);
        };
        inside(&["ip", "addr", "add", &format!("{UPSTREAM}/30"), "dev", &peer]);
        inside(&["ip", "link", "set", &peer, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        // A CA, and a certificate for allowed.test that it signed.
        let ssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}");
        };
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=allowed.test",
            "-keyout",
            "key.pem",
            "-out",
            "req.pem",
        ]);
        std::fs::write(dir.join("ext"), "subjectAltName=DNS:allowed.test\n").unwrap();
        ssl(&[
            "x509",
            "-req",
            "-in",
            "req.pem",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "cert.pem",
        ]);
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3"])
            .arg(common::root().join("tests/network/upstream.py"))
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("upstream.log")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !dir.join("ready").exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "upstream not up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Internet {
            ns,
            veth,
            dir: dir.to_path_buf(),
            server,
        }
    }

    /// `(port, peer)` of every connection the upstream accepted.
    fn connections(&self) -> Vec<(u16, String)> {
        std::fs::read_to_string(self.dir.join("connections"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (p, a) = l.split_once(' ').unwrap();
                (p.parse().unwrap(), a.to_string())
            })
            .collect()
    }

    fn stop(mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        sh(&["ip", "link", "del", &self.veth]);
        sh(&["ip", "netns", "del", &self.ns]);
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.contains(&self.veth), "veth left: {links}");
        let spaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&spaces.stdout).contains(&self.ns),
            "namespace left"
        );
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.server.kill();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth])
                .status();
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }
}

/// Runs python `code` (after `CLIENT`) with `ca.pem` beside it.
async fn python(addr: SocketAddr, ca: &str, network: &str, code: &str) -> Value {
    let body = json!({
        "code": format!("{CLIENT}\n{code}"),
        "network": network,
        "files": [{"name": "ca.pem", "content": ca}],
        "timeout_ms": 20000,
    });
    let (s, b) = common::raw_http(addr, "POST", "/execute/python", Some(body)).await;
    let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        v["status"],
        "ok",
        "{}: {v:#}",
        code.lines().next().unwrap_or("")
    );
    v
}

/// The agent process; killed if the test fails, so it never outlives it.
struct Running(Child);

impl Running {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(dir: &Path, project: &str, addr: SocketAddr, extra: &[&str]) -> Running {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_unsandbox"))
        .args(["standalone", "--config"])
        .arg(dir.join("config"))
        .args(["--lxd-project", project, "--node-name", "node-net"])
        .args(["--storage-pool", &common::storage_pool()])
        .args(["--listen", &addr.to_string(), "--images-dir", "none"])
        .args(["--resync-ms", "1000"])
        .arg("--egress-dir")
        .arg(dir.join("egress"))
        .arg("--egress-hosts-file")
        .arg(dir.join("hosts"))
        .args(extra)
        .env("UNSANDBOX_LXD_SOCKET", common::socket())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .expect("start unsandbox")
}

async fn wait_ready(addr: SocketAddr, dir: &Path) {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (s, b) = common::raw_http(addr, "GET", "/pools", None).await;
            let pools: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            // Both pools warm, their languages proven.
            let serving = |i: usize| {
                let node = &pools[i]["status"]["nodes"][0];
                node["warm"].as_u64().unwrap_or(0) >= 1
                    && node["languages"].as_array().is_some_and(|l| !l.is_empty())
            };
            if s == 200 && serving(0) && serving(1) {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "not ready: {}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sockets(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("egress"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn reached(v: &Value) -> Vec<(String, u64)> {
    v["network"]["reached"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap().to_string(),
                r["port"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semitrusted_reaches_only_allowed_hosts_through_the_proxy_and_leaves_nothing() {
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: the network tests need `ip` (iproute2) and root");
        return;
    }
    let lxd = common::project("net").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let net = Internet::start(d);
    let ca = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    std::fs::create_dir(d.join("config")).unwrap();
    std::fs::copy(
        common::root().join(common::SMALL_IMAGE),
        d.join("config/image.yaml"),
    )
    .unwrap();
    std::fs::write(d.join("config/pools.yaml"), POOLS).unwrap();
    std::fs::write(d.join("hosts"), hosts_file()).unwrap();

    let addr = common::free_addr();
    let mut agent = start(d, lxd.project(), addr, &[]);
    wait_ready(addr, d).await;

    // Allowed traffic goes through: HTTP, a wildcard name, and HTTPS over
    // CONNECT with the server's certificate verified.
    let v = python(
        addr,
        &ca,
        "semitrusted",
        "print(get('allowed.test').split(b'\\r\\n\\r\\n')[1].decode(), end='')\n\
         print(status_line(get('a.wild.test')))\n\
         print(https_get('allowed.test').split('\\r\\n\\r\\n')[1], end='')\n",
    )
    .await;
    assert_eq!(
        v["stdout"], "hello from upstream\nHTTP/1.1 200 OK\nhello from upstream\n",
        "{v:#}"
    );
    assert_eq!(v["network"]["tier"], "semitrusted");
    let got = reached(&v);
    for want in [
        ("allowed.test", 80),
        ("a.wild.test", 80),
        ("allowed.test", 443),
    ] {
        assert!(
            got.contains(&(want.0.to_string(), want.1)),
            "{want:?} in {got:?}"
        );
    }
    let https = v["network"]["reached"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == 443)
        .unwrap();
    assert!(
        https["bytes_received"].as_u64().unwrap() > 1000,
        "a TLS handshake came back: {https}"
    );

    // Blocked names are refused, each with a reason the program reads.
    let v = python(
        addr,
        &ca,
        "semitrusted",
        "for h in ['denied.test', 'private.test', 'loopback.test', 'meta.test', 'mixed.test', '203.0.113.2']:\n    print(h, '|', status_line(get(h)))\n\
         print('port |', connect('allowed.test', 8080)[1])\n\
         print('tunnel |', connect('denied.test', 443)[1])\n",
    )
    .await;
    let out = v["stdout"].as_str().unwrap();
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} |")))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    for (name, reason) in [
        ("denied.test", "not in this pool's allowlist"),
        ("private.test", "private"),
        ("loopback.test", "loopback"),
        ("meta.test", "metadata"),
        ("mixed.test", "private"),
        ("203.0.113.2", "allowlist"),
        ("port", "allowlist"),
        ("tunnel", "not in this pool's allowlist"),
    ] {
        let l = line(name);
        assert!(l.contains(" 403 ") && l.contains(reason), "{l}");
    }
    let denied = v["network"]["denied"].as_array().unwrap();
    assert!(denied.len() >= 7, "{v:#}");
    assert!(reached(&v).is_empty(), "{v:#}");

    // Raw access fails: the upstream's address, DNS, UDP, the host's side
    // of the veth and the agent's own port. The container has no interface
    // but loopback and no route at all.
    let api_port = addr.port();
    let v = python(
        addr,
        &ca,
        "semitrusted",
        &format!(
            "import socket\n\
             def tcp(a, p):\n    try:\n        socket.create_connection((a, p), timeout=3); return 'connected'\n    except OSError as e:\n        return type(e).__name__\n\
             print('upstream', tcp('{UPSTREAM}', 80))\n\
             print('host', tcp('{HOST_SIDE}', {api_port}))\n\
             print('agent', tcp('127.0.0.1', {api_port}))\n\
             try:\n    socket.getaddrinfo('allowed.test', 80); print('dns resolved')\nexcept OSError as e:\n    print('dns', type(e).__name__)\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             try:\n    u.sendto(b'x', ('{UPSTREAM}', 53)); print('udp sent')\nexcept OSError as e:\n    print('udp', type(e).__name__)\n\
             print('interfaces', sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n\
             print('routes', len(open('/proc/net/route').readlines()) - 1)\n"
        ),
    )
    .await;
    let out = v["stdout"].as_str().unwrap();
    for want in [
        "upstream OSError",
        "host OSError",
        "agent ConnectionRefusedError",
        "dns gaierror",
        "udp OSError",
        "interfaces ['lo']",
        "routes 0",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }

    // The byte budget cuts a download and says so.
    let v = python(
        addr,
        &ca,
        "semitrusted",
        "print(len(get('allowed.test', '/big')))\n",
    )
    .await;
    let got: usize = v["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(got < 1_000_000, "cut at the budget: {got}");
    assert_eq!(v["network"]["budget_exceeded"], "bytes", "{v:#}");

    // A zerotrust execution in the same run still has only `lo`, down, and
    // no proxy.
    let v = python(
        addr,
        &ca,
        "zerotrust",
        "import socket\n\
         print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n\
         try:\n    socket.create_connection(('127.0.0.1', 3128), timeout=3); print('proxy reachable')\nexcept OSError as e:\n    print(type(e).__name__)\n",
    )
    .await;
    assert_eq!(v["stdout"], "['lo']\nOSError\n", "{v:#}");
    assert_eq!(v["network"]["tier"], "zerotrust");

    // Only the proxy ever reached the upstream.
    let seen = net.connections();
    assert!(!seen.is_empty());
    for (port, peer) in &seen {
        assert_eq!(
            peer, HOST_SIDE,
            "port {port}: only the agent's proxy connects"
        );
    }

    // A killed agent's successor re-opens the warm containers' sockets and
    // serves through them; stopping with cleanup leaves nothing.
    assert!(!sockets(d).is_empty());
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let addr = common::free_addr();
    let mut agent = start(d, lxd.project(), addr, &["--cleanup-on-exit"]);
    wait_ready(addr, d).await;
    let v = python(
        addr,
        &ca,
        "semitrusted",
        "print(get('allowed.test').split(b'\\r\\n\\r\\n')[1].decode(), end='')\n",
    )
    .await;
    assert_eq!(v["stdout"], "hello from upstream\n", "{v:#}");
    let (_, metrics) = common::raw_http(addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("unsandbox_egress_connections_total{"),
        "{metrics}"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let start_wait = Instant::now();
    while agent.0.try_wait().unwrap().is_none() {
        assert!(
            start_wait.elapsed() < Duration::from_secs(60),
            "still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::assert_project_empty(&lxd).await;
    assert_eq!(sockets(d), Vec::<String>::new(), "egress sockets left");
    net.stop();
}
