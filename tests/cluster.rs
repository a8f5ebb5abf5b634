//! Against a real Kubernetes API server (etcd and kube-apiserver started by
//! `support/control_plane.rs`, envtest style): the CRDs, the chart and the
//! kustomize base install; the controller and the agent run as the chart's
//! ServiceAccounts, so a missing RBAC rule fails a test; a pool reaches
//! Ready with a real agent on the local LXD; two controller replicas hand
//! over the lease. Each test skips with one line when there is no
//! kube-apiserver binary (README, "Real-cluster tests").

#[path = "support/control_plane.rs"]
mod control_plane;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control_plane::ControlPlane;
use serde_json::Value;

/// Release name and namespace the chart is installed under in these tests.
const RELEASE: &str = "ut";
const NAMESPACE: &str = "unsandbox-system";
const CONTROLLER_SA: &str = "ut-unsandbox-controller";
const AGENT_SA: &str = "ut-unsandbox-agent";
const LEASE: &str = "ut-unsandbox-controller";
const AGENT_LABEL: &str = "unsandbox.com/lxd";
/// The client token of the agent's tokens file (the chart turns auth on).
const TOKEN: &str = "cluster-test-token";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command, stdin: Option<&str>) -> std::process::Output {
    cmd.current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// Runs `kubectl` as the admin and returns its stdout; panics with stderr on failure.
fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> String {
    let out = output(&mut cp.kubectl(args), stdin);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `kubectl`, expecting it to fail; returns stderr.
fn kubectl_fails(cp: &ControlPlane, args: &[&str], stdin: &str) -> String {
    let out = output(&mut cp.kubectl(args), Some(stdin));
    assert!(
        !out.status.success(),
        "kubectl {} accepted:\n{stdin}",
        args.join(" ")
    );
    String::from_utf8(out.stderr).unwrap()
}

fn json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(cp, &all, None)).unwrap()
}

fn try_json(cp: &ControlPlane, args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = output(&mut cp.kubectl(&all), None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The upstream helm that `tests/k8s-static.sh` caches.
fn helm() -> PathBuf {
    let p = root().join("target/tools/helm");
    assert!(
        p.is_file(),
        "{} is missing: run tests/k8s-static.sh first (it fetches helm)",
        p.display()
    );
    p
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Installs the CRDs, then the chart (rendered by `helm template`) with
/// server-side apply, as a GitOps tool would.
fn install_chart(cp: &ControlPlane) {
    kubectl(
        cp,
        &["apply", "--server-side", "-f", "crds/unsandbox.com.yaml"],
        None,
    );
    kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/languageimages.unsandbox.com",
            "crd/executorpools.unsandbox.com",
        ],
        None,
    );
    let _ = output(&mut cp.kubectl(&["create", "namespace", NAMESPACE]), None);
    let rendered = Command::new(helm())
        .current_dir(root())
        .args([
            "template",
            RELEASE,
            "charts/unsandbox",
            "--namespace",
            NAMESPACE,
        ])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "helm template failed");
    let yaml = String::from_utf8(rendered.stdout).unwrap();
    kubectl(cp, &["apply", "--server-side", "-f", "-"], Some(&yaml));
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status)
}

/// A process of the `unsandbox` binary, logging to a file; killed on drop.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unsandbox"));
        cmd.current_dir(root())
            .args(args)
            .env("UNSANDBOX_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: Some(cmd.spawn().expect("start unsandbox")),
            log,
        }
    }

    fn signal(&mut self, sig: &str) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, then wait for the process to end (SIGKILL after `grace`).
    fn terminate(&mut self, grace: Duration) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of {}:\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A controller replica as the chart's Deployment runs it, authenticated
/// as the chart's controller ServiceAccount.
/// The plain `value` environment variables of a container of the installed
/// chart (`valueFrom` ones are the kubelet's to fill: the caller sets them).
fn chart_env(cp: &ControlPlane, kind: &str, name: &str) -> Vec<(String, String)> {
    let obj = json(cp, &["get", kind, name, "-n", NAMESPACE]);
    obj["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the container has an environment")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// `base` with `overrides` replacing or adding variables.
fn with_env(
    mut base: Vec<(String, String)>,
    overrides: &[(&str, String)],
) -> Vec<(String, String)> {
    for (k, v) in overrides {
        base.retain(|(name, _)| name != k);
        base.push((k.to_string(), v.clone()));
    }
    base
}

/// A controller replica with the chart Deployment's environment,
/// authenticated as the chart's controller ServiceAccount.
fn controller(
    cp: &ControlPlane,
    kubeconfig: &Path,
    identity: &str,
    extra: &[(&str, String)],
) -> Proc {
    let mut env = vec![
        ("KUBECONFIG", kubeconfig.display().to_string()),
        // What the kubelet fills from the pod (fieldRef).
        ("POD_NAME", identity.to_string()),
        ("POD_NAMESPACE", NAMESPACE.to_string()),
        ("UNSANDBOX_LOG_FORMAT", "text".to_string()),
        (
            "UNSANDBOX_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
    ];
    env.extend(extra.iter().cloned());
    let env = with_env(chart_env(cp, "deployment", CONTROLLER_SA), &env);
    assert!(
        env.iter()
            .any(|(k, v)| k == "UNSANDBOX_AGENT_NODE_SELECTOR"
                && v == &format!("{AGENT_LABEL}=true")),
        "the chart tells the controller which nodes run the agent: {env:?}"
    );
    Proc::start(cp.dir.path(), identity, &["controller"], &env)
}

/// A hand-made Node object standing in for a kubelet's node.
fn make_node(cp: &ControlPlane, name: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    {AGENT_LABEL}: \"true\"\n    no-shard: \"true\"\n"
    );
    kubectl(cp, &["apply", "-f", "-"], Some(&yaml));
}

fn no_forbidden(p: &Proc, who: &str) {
    let log = p.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || l.contains(" 403"))
        .collect();
    assert!(
        bad.is_empty(),
        "{who} was refused by RBAC:\n{}",
        bad.join("\n")
    );
}

const IMAGE_NAME_BAD: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {name: bad}\nspec:\n  source: {recipe: small}\n  languages: [{name: 'Python 3', sourceFile: main.py, run: python3 main.py}]\n";

#[test]
fn crds_chart_and_base_install_explain_and_invalid_objects_are_rejected() {
    let Some(cp) = ControlPlane::start() else {
        return;
    };
    install_chart(&cp);
    kubectl(
        &cp,
        &["apply", "--server-side", "-k", "manifests/base"],
        None,
    );
    // Every sample, including the 78-language image, fits the schema's bounds.
    for dir in ["manifests/samples", "manifests/polyglot"] {
        kubectl(&cp, &["apply", "--server-side", "-f", dir], None);
    }
    let crds = kubectl(&cp, &["get", "crd", "-o", "name"], None);
    assert!(
        crds.contains("languageimages.unsandbox.com")
            && crds.contains("executorpools.unsandbox.com")
    );

    let explain = kubectl(&cp, &["explain", "languageimages.spec.languages"], None);
    assert!(
        explain.contains("The languages this image provides"),
        "{explain}"
    );
    assert!(explain.contains("smokeTests"), "{explain}");
    let explain = kubectl(&cp, &["explain", "executorpools.spec.network"], None);
    assert!(explain.contains("Network isolation tier"), "{explain}");

    let table = kubectl(&cp, &["get", "executorpools", "-n", "default"], None);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "IMAGE", "NETWORK", "DESIRED", "WARM", "BUSY", "NODES", "READY", "AGE",
    ] {
        assert!(header.contains(column), "no {column} column in {header:?}");
    }

    let image = |spec: &str| {
        format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: LanguageImage\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    let lang = "[{name: python, sourceFile: main.py, run: python3 main.py}]";
    let pool = |spec: &str| {
        format!(
            "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: bad, namespace: default}}\nspec:\n  image: small\n{spec}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            IMAGE_NAME_BAD.to_string(),
            "spec.languages[0].name in body should match",
        ),
        (
            image("  source: {recipe: small}\n  languages: []\n"),
            "spec.languages in body should have at least 1 items",
        ),
        (
            image(&format!("  source: {{}}\n  languages: {lang}\n")),
            "set alias, fingerprint or recipe",
        ),
        (
            image(&format!(
                "  source: {{fingerprint: XYZ}}\n  languages: {lang}\n"
            )),
            "spec.source.fingerprint in body should match",
        ),
        (
            image(
                "  source: {recipe: small}\n  languages: [{name: python, sourceFile: ../etc/passwd, run: python3 main.py}]\n",
            ),
            "spec.languages[0].sourceFile in body should match",
        ),
        (
            image(
                "  source: {recipe: Small_One}\n  languages: [{name: python, sourceFile: main.py, run: x}]\n",
            ),
            "spec.source.recipe in body should match",
        ),
        (
            pool("  execution: {wallTimeMs: {default: 10, max: 1}}\n"),
            "default must not exceed max",
        ),
        (
            pool("  warm: 5000\n"),
            "spec.warm in body should be less than or equal to 1000",
        ),
        (pool("  network: open\n"), "Unsupported value: \"open\""),
        (
            pool("  maxConcurrent: 0\n"),
            "spec.maxConcurrent in body should be greater than or equal to 1",
        ),
        (
            pool("  limits: {memoryMib: 8}\n"),
            "spec.limits.memoryMib in body should be greater than or equal to 32",
        ),
        (
            pool("  egress: {allow: [{host: pypi.org}]}\n"),
            "egress applies only to network: semitrusted",
        ),
        (
            pool("  network: semitrusted\n  egress: {allow: [{host: 10.0.0.1}]}\n"),
            "spec.egress.allow[0].host in body should match",
        ),
        (
            pool("  network: semitrusted\n  egress: {allow: [{host: a.org, ports: [0]}]}\n"),
            "spec.egress.allow[0].ports[0] in body should be greater than or equal to 1",
        ),
        (
            pool("  network: semitrusted\n  reuse: {executions: 5}\n"),
            "reuse with more than one execution is available only with network: zerotrust",
        ),
        (
            pool("  reuse: {executions: 0}\n"),
            "spec.reuse.executions in body should be greater than or equal to 1",
        ),
        (
            pool("  rollout: {maxUnavailable: 2}\n"),
            "maxUnavailable applies only to strategy: Rolling",
        ),
        (
            pool("  rollout: {strategy: Rolling, maxUnavailable: 0}\n"),
            "spec.rollout.maxUnavailable in body should be greater than or equal to 1",
        ),
        (
            pool("  rollout: {strategy: rolling}\n"),
            "Unsupported value: \"rolling\"",
        ),
    ];
    for (yaml, message) in cases {
        let err = kubectl_fails(&cp, &["apply", "--server-side", "-f", "-"], &yaml);
        assert!(
            err.contains(message),
            "expected {message:?} for\n{yaml}\ngot: {err}"
        );
    }
}

fn lease_holder(cp: &ControlPlane) -> Option<String> {
    let lease = try_json(cp, &["get", "lease", LEASE, "-n", NAMESPACE])?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(String::from)
}

/// How long until `to` holds the lease.
fn takeover(cp: &ControlPlane, to: &str) -> Duration {
    let start = Instant::now();
    wait_for(
        &format!("{to} to take the lease"),
        Duration::from_secs(60),
        || lease_holder(cp).as_deref() == Some(to),
    );
    start.elapsed()
}

#[test]
fn controllers_as_the_charts_service_account_reconcile_and_hand_over_the_lease() {
    let Some(cp) = ControlPlane::start() else {
        return;
    };
    install_chart(&cp);
    let kc = cp.service_account_kubeconfig(NAMESPACE, CONTROLLER_SA);
    make_node(&cp, "ut-node-a");
    let mut a = controller(&cp, &kc, "ctl-a", &[]);
    wait_for("ctl-a to lead", Duration::from_secs(30), || {
        lease_holder(&cp).as_deref() == Some("ctl-a")
    });
    let mut b = controller(&cp, &kc, "ctl-b", &[]);

    // The leader reconciles: finalizers under its own field manager, status, events.
    kubectl(
        &cp,
        &["apply", "--server-side", "-f", "manifests/samples"],
        None,
    );
    wait_for(
        "the pool's finalizer and status",
        Duration::from_secs(30),
        || {
            let p = json(&cp, &["get", "xp", "small", "-n", "default"]);
            p["metadata"]["finalizers"]
                .to_string()
                .contains("unsandbox.com/containers")
                && p["status"]["nodesReady"] == "0/1"
                && condition(&p, "Ready").is_some()
        },
    );
    let p = json(
        &cp,
        &[
            "get",
            "xp",
            "small",
            "-n",
            "default",
            "--show-managed-fields",
        ],
    );
    let managers: Vec<&str> = p["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        !managers.contains(&"unknown"),
        "a write without a field manager: {managers:?}"
    );
    assert!(managers.contains(&"unsandbox-controller"), "{managers:?}");
    assert_eq!(p["status"]["desired"], 4, "{}", p["status"]);
    // kstatus: a pool waiting for its node is still reconciling, not stalled.
    assert!(condition_is(&p, "Reconciling", "True"), "{}", p["status"]);
    assert!(condition_is(&p, "Stalled", "False"), "{}", p["status"]);
    wait_for(
        "the image's in-use finalizer",
        Duration::from_secs(30),
        || {
            json(&cp, &["get", "languageimage", "small"])["metadata"]["finalizers"]
                .to_string()
                .contains("unsandbox.com/in-use")
        },
    );

    // A pool with a wrong spec is stalled, with a Warning event.
    let bad = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: ghost, namespace: default}\nspec: {image: nowhere}\n";
    kubectl(&cp, &["apply", "-f", "-"], Some(bad));
    wait_for(
        "the ghost pool to be stalled",
        Duration::from_secs(30),
        || {
            let p = json(&cp, &["get", "xp", "ghost", "-n", "default"]);
            condition_is(&p, "Stalled", "True")
                && condition(&p, "Ready").is_some_and(|c| c["reason"] == "ImageNotFound")
        },
    );
    wait_for("a Warning event", Duration::from_secs(30), || {
        kubectl(&cp, &["get", "events", "-n", "default", "-o", "json"], None)
            .contains("ImageNotFound")
    });

    // An image in use is kept until its pools are gone.
    kubectl(
        &cp,
        &["delete", "languageimage", "small", "--wait=false"],
        None,
    );
    wait_for(
        "the image to say it is in use",
        Duration::from_secs(30),
        || {
            let i = json(&cp, &["get", "languageimage", "small"]);
            condition(&i, "Ready").is_some_and(|c| c["reason"] == "InUse")
        },
    );

    // Deleting the pools: no node holds containers, the finalizer goes, and
    // then the image goes too.
    kubectl(
        &cp,
        &[
            "delete",
            "xp",
            "small",
            "registries",
            "ghost",
            "-n",
            "default",
            "--timeout=60s",
        ],
        None,
    );
    wait_for("the image to be deleted", Duration::from_secs(60), || {
        try_json(&cp, &["get", "languageimage", "small"]).is_none()
    });

    // Handover: SIGTERM releases the lease; SIGKILL waits for it to expire.
    let after_term = {
        a.terminate(Duration::from_secs(15));
        takeover(&cp, "ctl-b")
    };
    let mut a = controller(&cp, &kc, "ctl-a", &[]);
    std::thread::sleep(Duration::from_secs(2));
    let after_kill = {
        b.kill();
        takeover(&cp, "ctl-a")
    };
    eprintln!(
        "lease takeover: {:.1} s after SIGTERM, {:.1} s after SIGKILL",
        after_term.as_secs_f64(),
        after_kill.as_secs_f64()
    );
    assert!(
        after_term < Duration::from_secs(6),
        "takeover after SIGTERM took {after_term:?}"
    );
    assert!(
        after_kill < Duration::from_secs(30),
        "takeover after SIGKILL took {after_kill:?}"
    );
    let b_log = b.log();
    assert!(
        b_log.contains("standing by"),
        "the standby says so:\n{b_log}"
    );
    no_forbidden(&a, "controller ctl-a");
    no_forbidden(&b, "controller ctl-b");
    a.terminate(Duration::from_secs(15));
}

/// Running containers of an LXD project, by name, and the stopped template(s).
fn lxd_containers(project: &str) -> (Vec<String>, Vec<String>) {
    let out = Command::new("lxc")
        .args(["list", "--project", project, "-c", "ns", "-f", "csv"])
        .output()
        .expect("lxc list");
    let mut running = Vec::new();
    let mut stopped = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (name, state) = line.split_once(',').unwrap_or((line, ""));
        if state == "RUNNING" {
            running.push(name.to_string());
        } else {
            stopped.push(name.to_string());
        }
    }
    running.sort();
    stopped.sort();
    (running, stopped)
}

fn lxd_available() -> bool {
    let ok = Command::new("lxc")
        .args(["image", "info", "unsandbox-small"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: no LXD with the image unsandbox-small (tests/run.sh starts LXD and builds it)"
        );
    }
    ok
}

fn pool_yaml(warm: u32) -> String {
    format!(
        "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {{name: small, namespace: default}}\nspec:\n  image: small\n  warm: {warm}\n  limits: {{cpus: 1, memoryMib: 256, processes: 64, tmpfsMib: 64}}\n"
    )
}

fn pool_ready(cp: &ControlPlane, warm: u64) -> bool {
    let p = json(cp, &["get", "xp", "small", "-n", "default"]);
    condition_is(&p, "Ready", "True")
        && p["status"]["warm"] == warm
        && p["status"]["observedGeneration"] == p["metadata"]["generation"]
}

fn execute(port: u16, code: &str) -> Value {
    let body = serde_json::json!({"code": code}).to_string();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "60",
            "-H",
            "content-type: application/json",
            "-H",
            &format!("authorization: Bearer {TOKEN}"),
            "-d",
            &body,
            &format!("http://127.0.0.1:{port}/execute/python"),
        ])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_pool_on_a_real_agent_serves_scales_survives_restarts_and_cleans_up() {
    let Some(cp) = ControlPlane::start() else {
        return;
    };
    if !lxd_available() {
        return;
    }
    install_chart(&cp);
    let node = format!("ut-node-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let project = format!("ut-cluster-{:06x}", rand::random::<u32>() & 0xff_ffff);
    make_node(&cp, &node);
    let ctl_kc = cp.service_account_kubeconfig(NAMESPACE, CONTROLLER_SA);
    let agent_kc = cp.service_account_kubeconfig(NAMESPACE, AGENT_SA);
    let mut ctl = controller(
        &cp,
        &ctl_kc,
        "ctl-a",
        &[("UNSANDBOX_NODE_STALE_SECONDS", "6".to_string())],
    );
    let port = free_port();
    // The DaemonSet's environment, with the node and the LXD project of this test.
    // The DaemonSet's environment, with what the kubelet would fill in, and
    // this test's node, LXD project and port.
    // What the chart mounts from its auth Secret.
    let tokens_file = cp.dir.path().join("tokens.yaml");
    let secret_file = cp.dir.path().join("agent-secret");
    std::fs::write(
        &tokens_file,
        format!("test: {}\n", unsandbox::auth::hash_token(TOKEN)),
    )
    .unwrap();
    std::fs::write(&secret_file, "cluster-test-agent-secret").unwrap();
    let agent_env = with_env(
        chart_env(&cp, "daemonset", AGENT_SA),
        &[
            ("UNSANDBOX_TOKENS_FILE", tokens_file.display().to_string()),
            (
                "UNSANDBOX_AGENT_SECRET_FILE",
                secret_file.display().to_string(),
            ),
            ("KUBECONFIG", agent_kc.display().to_string()),
            ("UNSANDBOX_NODE_NAME", node.clone()),
            ("UNSANDBOX_LXD_PROJECT", project.clone()),
            ("UNSANDBOX_LISTEN", format!("127.0.0.1:{port}")),
            (
                "UNSANDBOX_ADVERTISE_URL",
                format!("http://127.0.0.1:{port}"),
            ),
            ("UNSANDBOX_LOG_FORMAT", "text".to_string()),
            ("UNSANDBOX_REPORT_MS", "500".to_string()),
            ("UNSANDBOX_HEARTBEAT_MS", "1000".to_string()),
        ],
    );
    assert!(
        agent_env.contains(&("UNSANDBOX_IMAGES_DIR".to_string(), "none".to_string())),
        "{agent_env:?}"
    );
    let start_agent = || Proc::start(cp.dir.path(), "agent", &["agent"], &agent_env);
    let mut agent = start_agent();
    let cleanup = scopeguard(project.clone());

    kubectl(
        &cp,
        &[
            "apply",
            "--server-side",
            "-f",
            "manifests/samples/languageimage-small.yaml",
        ],
        None,
    );
    kubectl(&cp, &["apply", "-f", "-"], Some(&pool_yaml(1)));
    wait_for(
        "the pool to be Ready with 1 warm",
        Duration::from_secs(120),
        || pool_ready(&cp, 1),
    );
    let p = json(&cp, &["get", "xp", "small", "-n", "default"]);
    assert_eq!(p["status"]["nodesReady"], "1/1");
    let entry = &p["status"]["nodes"][0];
    assert_eq!(entry["node"], node.as_str());
    assert!(entry["heartbeatTime"].is_string(), "{entry}");
    assert!(entry["languages"].to_string().contains("python"), "{entry}");

    let r = execute(port, "print(6*7)");
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["stdout"], "42\n", "{r}");
    assert_eq!(r["host"], node.as_str(), "{r}");
    // The chart's agent requires a token.
    let anonymous = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            "{\"code\": \"1\"}",
        ])
        .arg(format!("http://127.0.0.1:{port}/execute/python"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    // Scaling follows the spec.
    kubectl(&cp, &["apply", "-f", "-"], Some(&pool_yaml(2)));
    wait_for(
        "the pool to be Ready with 2 warm",
        Duration::from_secs(120),
        || pool_ready(&cp, 2),
    );
    wait_for(
        "2 running containers on LXD",
        Duration::from_secs(60),
        || lxd_containers(&project).0.len() == 2,
    );

    // A restart adopts the warm containers and the template: nothing is destroyed.
    let before = lxd_containers(&project);
    agent.terminate(Duration::from_secs(40));
    // The log file is appended to: what the restarted agent says follows.
    let earlier = agent.log().len();
    agent = start_agent();
    wait_for(
        "the restarted agent to serve python",
        Duration::from_secs(120),
        || execute_ok_without_taking(&cp, &node),
    );
    let after = lxd_containers(&project);
    assert_eq!(
        before, after,
        "a restart replaced containers (before, after)"
    );
    let restarted = agent.log().get(earlier..).unwrap_or_default().to_string();
    assert!(
        !restarted.contains("does not use"),
        "the restarted agent removed containers:\n{restarted}"
    );

    // A silent agent: its entry goes stale, the pool stops counting it.
    agent.kill();
    wait_for(
        "the pool to notice the silent node",
        Duration::from_secs(60),
        || {
            let p = json(&cp, &["get", "xp", "small", "-n", "default"]);
            condition_is(&p, "Ready", "False")
                && p["status"]["warm"] == 0
                && p["status"]["nodesReady"] == "0/1"
        },
    );
    let p = json(&cp, &["get", "xp", "small", "-n", "default"]);
    let message = condition(&p, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains(&node) && message.contains("heartbeat"),
        "{message}"
    );
    agent = start_agent();
    wait_for(
        "the pool to be Ready again",
        Duration::from_secs(120),
        || pool_ready(&cp, 2),
    );

    // Deletion: the agent removes the containers, the finalizer goes.
    kubectl(
        &cp,
        &["delete", "xp", "small", "-n", "default", "--timeout=120s"],
        None,
    );
    wait_for(
        "the pool's containers to be gone",
        Duration::from_secs(120),
        || {
            let (running, stopped) = lxd_containers(&project);
            running.is_empty() && stopped.is_empty()
        },
    );
    no_forbidden(&agent, "the agent");
    no_forbidden(&ctl, "the controller");
    let ctl_log = ctl.log();
    assert!(
        !ctl_log.contains("WARN"),
        "the controller warned during normal operation:\n{ctl_log}"
    );
    agent.terminate(Duration::from_secs(40));
    ctl.terminate(Duration::from_secs(15));
    drop(cleanup);
}

/// Whether the node's entry says python is served and ready (the agent has
/// finished proving its languages after a start).
fn execute_ok_without_taking(cp: &ControlPlane, node: &str) -> bool {
    let p = json(cp, &["get", "xp", "small", "-n", "default"]);
    p["status"]["nodes"].as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            e["node"] == node
                && e["ready"] == true
                && e["warm"] == 2
                && e["languages"].to_string().contains("python")
                && e.get("unavailableLanguages")
                    .is_none_or(|u| u.as_array().is_none_or(|a| a.is_empty()))
        })
    })
}

/// Deletes the test's LXD project (and anything left in it) when dropped.
struct ProjectCleanup(String);

fn scopeguard(project: String) -> ProjectCleanup {
    ProjectCleanup(project)
}

impl Drop for ProjectCleanup {
    fn drop(&mut self) {
        let (running, stopped) = lxd_containers(&self.0);
        for c in running.iter().chain(&stopped) {
            let _ = Command::new("lxc")
                .args(["delete", "--force", "--project", &self.0, c])
                .status();
        }
        let _ = Command::new("lxc")
            .args(["project", "delete", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
