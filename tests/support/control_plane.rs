//! A real Kubernetes control plane for tests, in the style of
//! controller-runtime's envtest: etcd and kube-apiserver on loopback, with
//! generated certificates, RBAC on, and an admin kubeconfig. Everything it
//! starts is stopped by PID when the value is dropped.
//!
//! The `kube-apiserver` binary comes from `UNSANDBOX_KUBE_APISERVER`, else
//! `PATH`, else `/usr/local/bin`; etcd from `UNSANDBOX_ETCD` or `PATH`
//! (Debian's `etcd-server`). Without them, [`ControlPlane::start`] returns
//! `None` and says in one line why the test is skipped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd and kube-apiserver.
pub struct ControlPlane {
    /// Working directory: certificates, etcd data, logs, kubeconfigs.
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub admin_kubeconfig: PathBuf,
    etcd: Child,
    apiserver: Child,
}

/// Where a binary is: the environment variable, then `PATH`, then `/usr/local/bin`.
fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The kube-apiserver binary the harness would use, if there is one.
pub fn apiserver_binary() -> Option<PathBuf> {
    find("UNSANDBOX_KUBE_APISERVER", "kube-apiserver")
}

/// Whether the binary's `--help` lists `flag`.
fn takes_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA, the API server's serving certificate, an admin client certificate
/// and the service-account signing key, all made with `openssl`.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=unsandbox-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subject, ext) in [
        ("server", "/CN=kube-apiserver", "server.ext"),
        (
            "admin",
            "/O=system:masters/CN=unsandbox-test-admin",
            "client.ext",
        ),
    ] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out",
                &csr,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &crt,
            ],
        );
    }
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"]);
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("log file"))
}

fn stop(child: &mut Child) {
    // SIGTERM first, so etcd and the API server shut down cleanly.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, or says in one line why it cannot
    /// and returns `None` (the caller skips).
    pub fn start() -> Option<Self> {
        let Some(apiserver) = apiserver_binary() else {
            eprintln!(
                "skipped: no kube-apiserver (set UNSANDBOX_KUBE_APISERVER or put it on PATH; README, \"Real-cluster tests\")"
            );
            return None;
        };
        let Some(etcd) = find("UNSANDBOX_ETCD", "etcd") else {
            eprintln!("skipped: no etcd (install Debian's etcd-server or set UNSANDBOX_ETCD)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("unsandbox-control-plane-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        make_certificates(d);
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(etcd)
            .args([
                "--name=test",
                &format!("--data-dir={}", d.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=test={peer_url}"),
                "--unsafe-no-fsync",
            ])
            .stdout(log_file(d, "etcd.log"))
            .stderr(log_file(d, "etcd.err"))
            .spawn()
            .expect("start etcd");
        let path = |f: &str| d.join(f).display().to_string();
        let mut cmd = Command::new(&apiserver);
        if takes_flag(&apiserver, "--initial-storage-shards") {
            // Some source trees (the one README's build uses among them) shard
            // storage and must be told that the one etcd holds every shard.
            cmd.arg(format!("--initial-storage-shards={etcd_url}"));
        }
        let apiserver = cmd
            .args([
                &format!("--etcd-servers={etcd_url}"),
                "--endpoint-reconciler-type=none",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--tls-cert-file={}", path("server.crt")),
                &format!("--tls-private-key-file={}", path("server.key")),
                &format!("--client-ca-file={}", path("ca.crt")),
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                &format!("--service-account-key-file={}", path("sa.pub")),
                &format!("--service-account-signing-key-file={}", path("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/24",
                "--allow-privileged=false",
                "--profiling=false",
            ])
            .stdout(log_file(d, "apiserver.log"))
            .stderr(log_file(d, "apiserver.err"))
            .spawn();
        let apiserver = match apiserver {
            Ok(c) => c,
            Err(e) => {
                stop(&mut etcd);
                panic!("start kube-apiserver: {e}");
            }
        };
        let server = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = d.join("admin.kubeconfig");
        let mut plane = Self {
            server,
            admin_kubeconfig,
            etcd,
            apiserver,
            dir,
        };
        plane.write_kubeconfig(
            &plane.admin_kubeconfig.clone(),
            &format!(
                "    client-certificate: {}\n    client-key: {}\n",
                path("admin.crt"),
                path("admin.key")
            ),
        );
        plane.wait_ready();
        Some(plane)
    }

    fn write_kubeconfig(&self, file: &Path, user: &str) {
        let ca = self.dir.path().join("ca.crt");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n    namespace: default\ncurrent-context: test\nusers:\n- name: user\n  user:\n{user}",
            self.server,
            ca.display()
        );
        std::fs::write(file, yaml).expect("write kubeconfig");
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .kubectl(&["get", "--raw", "/readyz"])
                .output()
                .expect("kubectl");
            if out.status.success() {
                return;
            }
            if let Ok(Some(status)) = self.apiserver.try_wait() {
                panic!(
                    "kube-apiserver exited ({status}): {}",
                    self.log_tail("apiserver.err")
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within 60 s: {}",
                self.log_tail("apiserver.err")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of one of the harness's logs.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", &self.admin_kubeconfig).args(args);
        c
    }

    /// A kubeconfig that authenticates with a ServiceAccount's token
    /// (`kubectl create token`), so the holder has exactly that account's
    /// RBAC rights.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> PathBuf {
        let out = self
            .kubectl(&["create", "token", account, "-n", namespace, "--duration=2h"])
            .output()
            .expect("kubectl create token");
        assert!(
            out.status.success(),
            "kubectl create token {account}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let file = self
            .dir
            .path()
            .join(format!("{namespace}-{account}.kubeconfig"));
        self.write_kubeconfig(&file, &format!("    token: {}\n", token.trim()));
        file
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        stop(&mut self.apiserver);
        stop(&mut self.etcd);
    }
}
