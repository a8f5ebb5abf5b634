//! One container's connections: HTTP/1.1 from the program, each request
//! checked (policy, name, addresses, budget) before the proxy connects to
//! the addresses it checked, then a tunnel or a forwarded request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use crate::crd::Egress;

use super::account::{Account, Meter};
use super::body::ProxyBody;
use super::forward::forward;
use super::guard::Guard;
use super::metrics::{EgressMetrics, Outcome};
use super::refusal::Refusal;
use super::resolve::Resolver;
use super::target::{self, Mode, Target};
use super::tunnel;

/// Request headers beyond this size get 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What every container's proxy shares.
#[derive(Debug)]
pub struct Shared {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
    pub guard: Guard,
    pub resolver: Resolver,
    pub policies: RwLock<HashMap<String, Arc<Egress>>>,
    pub metrics: EgressMetrics,
}

impl Shared {
    fn policy(&self, pool: &str) -> Option<Arc<Egress>> {
        let policies = self.policies.read().unwrap_or_else(PoisonError::into_inner);
        policies.get(pool).cloned()
    }
}

/// One container's proxy: whose connections these are and their account.
#[derive(Debug)]
pub struct Container {
    pub pool: String,
    /// Cancelled by `close`: ends the accept loop and every connection.
    pub closed: CancellationToken,
    account: Mutex<Arc<Account>>,
}

impl Container {
    pub fn new(pool: &str) -> Self {
        let closed = CancellationToken::new();
        let account = Mutex::new(Arc::new(Account::new(&closed)));
        Self {
            pool: pool.to_string(),
            closed,
            account,
        }
    }

    /// The account of the current execution.
    pub fn account(&self) -> Arc<Account> {
        self.account
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts a new account; connections already open keep theirs.
    pub fn reset(&self) {
        let fresh = Arc::new(Account::new(&self.closed));
        *self.account.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

/// One accepted connection; its permit frees a place under the cap when
/// the connection and any tunnel it became are gone.
struct Conn {
    shared: Arc<Shared>,
    container: Arc<Container>,
    _permit: OwnedSemaphorePermit,
}

/// Serves HTTP/1.1 on `stream` until the program hangs up or the
/// container's proxy closes.
pub async fn serve(
    stream: UnixStream,
    shared: Arc<Shared>,
    container: Arc<Container>,
    permit: OwnedSemaphorePermit,
) {
    let closed = container.closed.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let conn = Arc::new(Conn {
        shared,
        container,
        _permit: permit,
    });
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(conn, req).await) }
    });
    let serving = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        r = serving => if let Err(e) = r { debug!(error = %e, "proxy connection ended") },
        () = closed.cancelled() => {}
    }
}

async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let pool = conn.container.pool.as_str();
    let (mode, target) = match target::parse(req.method(), req.uri()) {
        Ok(parsed) => parsed,
        Err((why, target)) => {
            debug!(why, "bad proxy request");
            conn.shared.metrics.outcome(pool, Outcome::BadRequest);
            return Refusal::BadRequest(why).response(target.as_ref());
        }
    };
    let span = tracing::info_span!("egress", host = %target.host, port = target.port);
    async {
        let account = conn.container.account();
        let (stream, meter) = match open(&conn, &account, &target).await {
            Ok(opened) => opened,
            Err(refusal) => return refuse(&conn, &account, &target, refusal),
        };
        conn.shared.metrics.outcome(pool, Outcome::Allowed);
        match mode {
            Mode::Tunnel => {
                let upgrade = hyper::upgrade::on(&mut req);
                let idle = conn.shared.idle_timeout;
                let holder = conn.clone();
                let tunnel = async move {
                    let _conn = holder;
                    match upgrade.await {
                        Ok(upgraded) => {
                            let end =
                                tunnel::relay(TokioIo::new(upgraded), stream, &meter, idle).await;
                            debug!(?end, "tunnel ended");
                        }
                        Err(e) => debug!(error = %e, "no tunnel: the upgrade failed"),
                    }
                };
                tokio::spawn(tunnel.in_current_span());
                Response::new(Empty::new().map_err(|never| match never {}).boxed())
            }
            Mode::Forward => match forward(req, &target, stream, meter).await {
                Ok(res) => res,
                Err(refusal) => {
                    // Counted as allowed already: the connection was made.
                    account.deny(&target, refusal.reason());
                    refusal.response(Some(&target))
                }
            },
        }
    }
    .instrument(span)
    .await
}

fn refuse(
    conn: &Conn,
    account: &Account,
    target: &Target,
    refusal: Refusal,
) -> Response<ProxyBody> {
    debug!(reason = %refusal.reason(), "refused");
    account.deny(target, refusal.reason());
    conn.shared
        .metrics
        .outcome(&conn.container.pool, refusal.outcome());
    refusal.response(Some(target))
}

/// The checks, in order, then a connection to a checked address. Every
/// address the name has must be public: one private answer among public
/// ones is how DNS rebinding reaches inside.
async fn open(
    conn: &Conn,
    account: &Arc<Account>,
    target: &Target,
) -> Result<(TcpStream, Meter), Refusal> {
    let shared = &conn.shared;
    let policy = shared
        .policy(&conn.container.pool)
        .filter(|p| p.admits(&target.host, target.port))
        .ok_or(Refusal::NotAllowed)?;
    if target.ip_literal().is_some() {
        return Err(Refusal::IpLiteral);
    }
    let addrs = shared
        .resolver
        .resolve(&target.host, target.port, shared.connect_timeout)
        .await
        .map_err(Refusal::Unresolved)?;
    for addr in &addrs {
        shared
            .guard
            .check(addr.ip())
            .map_err(|why| Refusal::ForbiddenAddress {
                addr: addr.ip(),
                why,
            })?;
    }
    account.admit(policy.budget).map_err(Refusal::Budget)?;
    let stream = connect(&addrs, shared.connect_timeout)
        .await
        .map_err(Refusal::UpstreamFailed)?;
    let slot = account.reached(target);
    let meter = Meter {
        account: account.clone(),
        slot,
        budget: policy.budget,
        metrics: shared.metrics.clone(),
        pool: conn.container.pool.clone(),
    };
    Ok((stream, meter))
}

/// Connects to the first of `addrs` that answers, within `timeout` for
/// all of them. Never resolves again.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let attempts = async {
        let mut last = String::from("no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .unwrap_or_else(|_| Err(format!("no connection within {} ms", timeout.as_millis())))
}
