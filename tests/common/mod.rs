//! Harness for end-to-end tests against the real LXD daemon: every test gets
//! its own LXD project and node name, and must leave the project empty.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

use unsandbox::agent::{Agent, AgentConfig, Resources};
use unsandbox::crd::ExecutorPool;
use unsandbox::lxd::Lxd;
use unsandbox::metrics::Metrics;

pub const SMALL_IMAGE: &str = "manifests/samples/languageimage-small.yaml";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn socket() -> PathBuf {
    std::env::var_os("UNSANDBOX_LXD_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(unsandbox::lxd::default_socket)
}

pub fn storage_pool() -> String {
    std::env::var("UNSANDBOX_STORAGE_POOL").unwrap_or_else(|_| "unsandbox".into())
}

/// A fresh LXD project named `ut-<test>-<random>`.
pub async fn project(test: &str) -> Lxd {
    let name = format!(
        "ut-{}-{:06x}",
        test.replace('_', "-"),
        rand::random::<u32>() & 0xff_ffff
    );
    let lxd = Lxd::new(socket(), &name);
    lxd.server().await.unwrap_or_else(|e| {
        panic!("the end-to-end tests need a running LXD ({e}); run tests/run.sh, which starts it")
    });
    lxd.ensure_project().await.expect("create LXD project");
    lxd
}

/// The small image's LanguageImage plus one pool from YAML.
pub fn resources(pool_yaml: &str) -> Resources {
    let (mut res, _) =
        unsandbox::standalone::files::load(&[root().join(SMALL_IMAGE)]).expect("load image sample");
    if !pool_yaml.is_empty() {
        res.pools.push(pool(pool_yaml));
    }
    res
}

pub fn pool(yaml: &str) -> ExecutorPool {
    serde_yaml::from_str(yaml).expect("pool YAML")
}

/// One agent on its own project, with its API router.
pub struct Harness {
    pub lxd: Lxd,
    pub agent: Agent,
    pub node: String,
    pub tx: watch::Sender<Resources>,
    pub router: axum::Router,
    stop: Option<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(test: &str, res: Resources) -> Self {
        let lxd = project(test).await;
        let node = format!("node-{test}");
        Self::start_on(lxd, node, res).await
    }

    /// An agent serving the polyglot manifests (manifests/polyglot), or
    /// `None`, with one line saying why `test` skips, when this host has no
    /// unsandbox-polyglot image (`images/build.sh polyglot`).
    pub async fn polyglot(test: &str, project: &str) -> Option<Self> {
        let default = Lxd::new(socket(), "default");
        let image = default.image_by_alias("unsandbox-polyglot").await;
        if image.ok().flatten().is_none() {
            eprintln!("skipping {test}: no unsandbox-polyglot image (images/build.sh polyglot)");
            return None;
        }
        let (res, _) = unsandbox::standalone::files::load(&[
            root().join("manifests/polyglot/languageimage.yaml"),
            root().join("manifests/polyglot/executorpool.yaml"),
        ])
        .expect("the polyglot manifests load");
        Some(Self::start(project, res).await)
    }

    /// An agent on an existing project and node name (to model a restart).
    pub async fn start_on(lxd: Lxd, node: String, res: Resources) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
        let (tx, rx) = watch::channel(res);
        let cfg = AgentConfig {
            node: node.clone(),
            storage_pool: storage_pool(),
            images_dir: None,
            launch_parallelism: 2,
            resync_interval: Duration::from_secs(1),
            // As in production: containers are copies of a template, unless
            // UNSANDBOX_TEST_TEMPLATES=0 asks for launches from the image.
            templates: std::env::var("UNSANDBOX_TEST_TEMPLATES").map_or(true, |v| v != "0"),
            executions_first: true,
        };
        let agent = Agent::new(lxd.clone(), cfg, rx, Arc::new(Metrics::new()), None);
        let router =
            unsandbox::api::router(unsandbox::api::AppState::local(agent.clone()), 64 * 1024);
        let (stop, mut stop_rx) = watch::channel(false);
        let runner = agent.clone();
        let task = tokio::spawn(async move {
            runner
                .run(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Self {
            lxd,
            agent,
            node,
            tx,
            router,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the reconcile loop without cleaning anything (a crash, as far
    /// as LXD can tell).
    pub async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the agent, destroys what it owns and asserts that the project
    /// is empty, then deletes the project.
    pub async fn finish(mut self) {
        self.halt().await;
        self.agent.settle(Duration::from_secs(180)).await;
        let mut result = self.agent.destroy_all().await;
        for _ in 0..2 {
            if result.is_ok() {
                break;
            }
            result = self.agent.destroy_all().await;
        }
        result.expect("destroy all");
        assert_project_empty(&self.lxd).await;
    }

    pub fn set_pools(&self, pools: &[&str]) {
        let mut res = resources("");
        res.pools = pools.iter().map(|y| pool(y)).collect();
        self.tx.send(res).expect("agent listens");
    }

    /// Warm containers of a pool, as the agent reports them.
    pub fn warm(&self, pool: &str) -> u32 {
        self.agent
            .reports()
            .iter()
            .filter(|r| format!("{}/{}", r.namespace, r.name) == pool)
            .map(|r| r.node.warm)
            .sum()
    }

    /// Running pool containers (not templates) that LXD has in the project.
    pub async fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lxd
            .instances()
            .await
            .expect("list")
            .into_iter()
            .filter(|i| i.is_running() && !i.name.starts_with("us-tpl-"))
            .map(|i| i.name)
            .collect();
        v.sort();
        v
    }

    /// Names of the languages `GET /languages` lists.
    pub async fn language_names(&self) -> Vec<String> {
        let (s, langs) = self.call("GET", "/languages", None).await;
        assert_eq!(s, 200, "{langs}");
        langs
            .as_array()
            .expect("a list")
            .iter()
            .map(|l| l["name"].as_str().expect("a name").to_string())
            .collect()
    }

    /// Waits until the pool's smoke tests have run on this host.
    pub async fn wait_proven(&self, pool: &str) {
        let agent = self.agent.clone();
        let pool = pool.to_string();
        wait_for(
            &format!("{pool}'s languages to be proven"),
            // The polyglot image proves 78 languages: 90 s to over 120 s on
            // a 2-core host.
            Duration::from_secs(600),
            || {
                let (a, p) = (agent.clone(), pool.clone());
                async move {
                    a.reports()
                        .iter()
                        .filter(|r| format!("{}/{}", r.namespace, r.name) == p)
                        .any(|r| {
                            !r.node.languages.is_empty()
                                && r.node
                                    .unavailable_languages
                                    .iter()
                                    .all(|u| !u.message.contains("not finished"))
                        })
                }
            },
        )
        .await;
    }

    pub async fn wait_warm(&self, pool: &str, n: u32) {
        let agent = self.agent.clone();
        let pool = pool.to_string();
        wait_for(
            &format!("{pool} to have {n} warm"),
            Duration::from_secs(120),
            || {
                let (a, p) = (agent.clone(), pool.clone());
                async move {
                    let reports: Vec<_> = a
                        .reports()
                        .into_iter()
                        .filter(|r| format!("{}/{}", r.namespace, r.name) == p)
                        .collect();
                    // Languages are served once their smoke tests ran here.
                    let proven = n == 0
                        || reports.iter().all(|r| {
                            r.node
                                .unavailable_languages
                                .iter()
                                .all(|u| !u.message.contains("not finished"))
                        });
                    reports.iter().map(|r| r.node.warm).sum::<u32>() == n && proven
                }
            },
        )
        .await;
    }

    /// Waits until LXD no longer has the container `name`.
    pub async fn wait_gone(&self, name: &str) {
        let (lxd, name) = (self.lxd.clone(), name.to_string());
        wait_for(
            &format!("{name} to be destroyed"),
            Duration::from_secs(60),
            || {
                let (lxd, name) = (lxd.clone(), name.clone());
                async move { lxd.instance(&name).await.unwrap().is_none() }
            },
        )
        .await;
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        call(&self.router, method, path, body).await
    }

    pub async fn execute(&self, language: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/execute/{language}"),
            Some(&body.to_string()),
        )
        .await
    }
}

pub async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or_default().to_string()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Polls `cond` every 100 ms until it holds; panics after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the project holds no instance at all, then deletes it.
pub async fn assert_project_empty(lxd: &Lxd) {
    let left: Vec<String> = lxd
        .instances()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(
        left.is_empty(),
        "containers left behind in project {}: {left:?}",
        lxd.project()
    );
    lxd.delete_project().await.expect("delete project");
}

/// One HTTP/1.1 exchange over a fresh TCP connection to a server the test
/// started: the status and the body as text.
pub async fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let text = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, text.to_string())
}

/// A loopback address with a port free right now.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
