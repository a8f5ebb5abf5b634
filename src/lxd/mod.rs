//! Client of the LXD REST API over its unix socket, and the daemon's CPU
//! weight as the host's cgroups show it. Nothing here knows about pools or
//! executions: it speaks LXD and returns LXD's answers as types.

mod attach;
mod client;
mod error;
mod exec;
mod images;
mod instances;
pub mod logs;
mod types;
mod weight;

pub use attach::{Ask, Attached, Slot};
pub use client::Lxd;
pub use error::LxdError;
pub use exec::{ExecOutcome, ExecSpec, Stopped, Tap};
pub use types::{ImageInfo, InstanceCreate, InstanceInfo, InstanceState, Operation, ServerInfo};
pub use weight::{daemon_cpu_weight, daemon_pid};

/// The first LXD socket that exists among the usual places (Debian's package,
/// the snap, Incus), or Debian's path when none does.
pub fn default_socket() -> std::path::PathBuf {
    const CANDIDATES: [&str; 3] = [
        "/var/lib/lxd/unix.socket",
        "/var/snap/lxd/common/lxd/unix.socket",
        "/var/lib/incus/unix.socket",
    ];
    CANDIDATES
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| CANDIDATES[0].into())
}
