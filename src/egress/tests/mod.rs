//! The proxy driven through its real unix sockets by real HTTP clients,
//! against upstreams on 127.0.0.1 (the only network these tests touch).

mod forward;
mod lifecycle;
mod policy;
mod tunnel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

use super::{EgressConfig, EgressProxy};
use crate::crd::{Egress, EgressBudget, EgressRule};

const POOL: &str = "default/semi";
const CONTAINER: &str = "us-semi-1";

/// Names the tests resolve. `allowed.test` and the wildcard family are
/// the upstreams on loopback; the others must never be connected to.
const HOSTS: &str = "\
127.0.0.1 allowed.test other.allowed.test a.wild.test wild.test loopback.test
10.0.0.5 private.test
169.254.169.254 metadata.test
203.0.113.2 mixed.test
10.1.2.3 mixed.test
::ffff:192.168.1.1 mapped.test
";

struct Harness {
    proxy: EgressProxy,
    registry: Registry,
    dir: tempfile::TempDir,
    sock: PathBuf,
    /// A TCP echo server.
    echo: SocketAddr,
    /// An HTTP server that describes each request it gets.
    http: SocketAddr,
}

impl Harness {
    /// A proxy that lets loopback through (the upstreams are on it), with
    /// `CONTAINER` open for `POOL`.
    async fn new() -> Self {
        Self::with(|_| {}, true).await
    }

    async fn with(tune: impl FnOnce(&mut EgressConfig), allow_loopback: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, HOSTS).unwrap();
        let mut cfg = EgressConfig::new(dir.path().join("egress"));
        cfg.hosts_file = Some(hosts);
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.header_read_timeout = Duration::from_secs(5);
        tune(&mut cfg);
        let mut registry = Registry::with_prefix("unsandbox");
        let proxy = if allow_loopback {
            EgressProxy::new_allowing_loopback(cfg, &mut registry).unwrap()
        } else {
            EgressProxy::new(cfg, &mut registry).unwrap()
        };
        let sock = proxy.open(CONTAINER, POOL).await.unwrap();
        Self {
            proxy,
            registry,
            dir,
            sock,
            echo: echo_server().await,
            http: http_server().await,
        }
    }

    /// Allows `hosts` on `ports` for `POOL`, with `budget`.
    fn allow(&self, hosts: &[&str], ports: &[u16], budget: Option<EgressBudget>) {
        let allow = hosts
            .iter()
            .map(|h| EgressRule {
                host: h.to_string(),
                ports: ports.to_vec(),
            })
            .collect();
        self.proxy.set_policy(POOL, Some(Egress { allow, budget }));
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Answers `METHOD URI`, then the headers the tests look at, a blank line
/// and the request body; `/big?N` answers N bytes instead.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() == "/big" {
                    let n: usize = req.uri().query().unwrap().parse().unwrap();
                    let body = Full::new(Bytes::from(vec![b'x'; n]));
                    return Ok::<_, hyper::Error>(Response::new(body));
                }
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
                };
                let head = format!(
                    "{} {}\nhost: {}\nproxy-authorization: {}\nconnection: {}\n\n",
                    req.method(),
                    req.uri(),
                    header("host"),
                    header("proxy-authorization"),
                    header("connection"),
                );
                let body = req.into_body().collect().await?.to_bytes();
                let mut out = head.into_bytes();
                out.extend_from_slice(&body);
                Ok(Response::new(Full::new(Bytes::from(out))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// What came back for a `CONNECT`: the head as sent, and the stream
/// positioned at the first tunnel byte.
struct Connected {
    head: String,
    stream: UnixStream,
}

impl Connected {
    fn status_line(&self) -> &str {
        self.head.lines().next().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    async fn body(mut self) -> String {
        let len: usize = self.header("content-length").unwrap().parse().unwrap();
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await.unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// Sends `data` and reads as many bytes back.
    async fn echo(&mut self, data: &[u8]) -> Vec<u8> {
        self.stream.write_all(data).await.unwrap();
        let mut back = vec![0; data.len()];
        self.stream.read_exact(&mut back).await.unwrap();
        back
    }

    /// Whether the tunnel ends (EOF or reset) within two seconds.
    async fn ends(&mut self) -> bool {
        self.ends_within(Duration::from_secs(2)).await
    }

    async fn ends_within(&mut self, wait: Duration) -> bool {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("unexpected tunnel bytes"),
            Err(_) => false,
        }
    }
}

/// `CONNECT authority` in raw bytes on a new connection to `sock`.
async fn connect(sock: &Path, authority: &str) -> Connected {
    let mut stream = UnixStream::connect(sock).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    // Byte by byte, so no tunnel byte is read with the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(Duration::from_secs(5), stream.read_u8())
            .await
            .expect("a response head")
            .expect("a response head");
        head.push(b);
    }
    Connected {
        head: String::from_utf8(head).unwrap(),
        stream,
    }
}

/// A response read whole, with its reason phrase.
struct Answer {
    status: u16,
    reason: Option<String>,
    headers: hyper::HeaderMap,
    body: String,
}

/// An HTTP/1.1 client connection to the proxy.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn new(sock: &Path) -> Self {
        let stream = UnixStream::connect(sock).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let res = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let reason = res
            .extensions()
            .get::<ReasonPhrase>()
            .map(|r| String::from_utf8(r.as_bytes().to_vec()).unwrap());
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            reason,
            headers,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    }

    async fn get(&mut self, uri: &str) -> Result<Answer, String> {
        let req = Request::get(uri).body(Full::default()).unwrap();
        self.send(req).await
    }
}
