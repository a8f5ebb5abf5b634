//! The egress proxy of `semitrusted` pools.
//!
//! A `semitrusted` container has no network interface. LXD's `proxy`
//! device relays each connection to `127.0.0.1:3128` inside it to a unix
//! socket of this proxy, one socket per container, so the socket says
//! which container (and so which execution) is asking. Programs send
//! `CONNECT host:port` (HTTPS) or plain HTTP requests with absolute URIs
//! (`HTTP_PROXY`). For each, in order:
//!
//! 1. the pool's allowlist (`spec.egress`) must admit the host and port
//!    (a name; an IP literal never passes);
//! 2. every address the name resolves to must be public ([`guard`]), so a
//!    name that also answers with a private address (DNS rebinding) is
//!    refused;
//! 3. the execution's connection and byte budgets must allow it;
//! 4. the proxy connects to the addresses it checked, never resolving
//!    again.
//!
//! A refusal answers 403 with the reason in the status line itself
//! (`HTTP/1.1 403 unsandbox egress: denied.test:443 is not in this pool's
//! allowlist`), in a text body and in `x-unsandbox-egress-denied`. Each
//! container's record ([`NetworkRecord`]) lists what it reached and what
//! was refused.

mod account;
mod body;
mod cidr;
mod forward;
mod guard;
mod manager;
mod metrics;
mod proxy;
mod record;
mod refusal;
mod resolve;
mod target;
mod tunnel;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use cidr::CidrError;
pub use manager::EgressProxy;
pub use record::{BudgetKind, Denied, NetworkRecord, Reached};
pub use refusal::{DENIED_HEADER, ERROR_HEADER};

/// Where the proxy listens and how it bounds what programs can do to it.
#[derive(Clone, Debug)]
pub struct EgressConfig {
    /// Holds one socket per container (`<container>.sock`).
    pub dir: PathBuf,
    /// An `/etc/hosts`-format file whose names resolve from it alone
    /// (other names use the system resolver).
    pub hosts_file: Option<PathBuf>,
    /// Address ranges denied besides the built-in ones (`10.0.0.0/8`,
    /// `fd00::/8`, a bare address).
    pub deny_cidrs: Vec<String>,
    /// For resolving a name and connecting to it.
    pub connect_timeout: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// A program must send a request's headers within this time.
    pub header_read_timeout: Duration,
    /// Connections one container may have open at once; more are closed
    /// as they arrive.
    pub max_connections_per_container: usize,
}

impl EgressConfig {
    /// The defaults, with sockets in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            hosts_file: None,
            deny_cidrs: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_container: 64,
        }
    }
}

/// What can go wrong setting the proxy up.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("egress hosts file {path}: {why}")]
    HostsFile { path: PathBuf, why: String },
    #[error("egress deny range: {0}")]
    DenyCidr(#[from] CidrError),
    #[error("{0:?} is not an LXD container name (lowercase letters, digits, dashes)")]
    ContainerName(String),
    #[error("egress socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl EgressError {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Dir { .. } => "dir",
            Self::HostsFile { .. } => "hosts_file",
            Self::DenyCidr(_) => "deny_cidr",
            Self::ContainerName(_) => "container_name",
            Self::Bind { .. } => "bind",
        }
    }
}
