//! Settings more than one command takes: where LXD is and which host this
//! is. Both the serving commands (`cli`) and the tooling (`tools`) flatten
//! them, so they live below both.

use std::path::PathBuf;

use clap::Args;

/// Where LXD is and which part of it is ours.
#[derive(Debug, Clone, Args)]
pub struct LxdArgs {
    /// LXD unix socket (default: the first of Debian's, the snap's and Incus' that exists).
    #[arg(long, env = "UNSANDBOX_LXD_SOCKET")]
    pub lxd_socket: Option<PathBuf>,
    /// LXD project the containers live in (created when missing).
    #[arg(long, env = "UNSANDBOX_LXD_PROJECT", default_value = "unsandbox")]
    pub lxd_project: String,
    /// This host's name; containers are marked with it (default: the hostname).
    #[arg(long, env = "UNSANDBOX_NODE_NAME")]
    pub node_name: Option<String>,
    /// The daemon's folder of instance log folders: LXD 5.0 leaves an
    /// instance's behind when it deletes the instance, and unsandbox
    /// removes it (default: the one that goes with the socket:
    /// /var/log/lxd, the snap's logs/ or /var/log/incus; `none` leaves them).
    #[arg(long, env = "UNSANDBOX_LXD_LOG_DIR")]
    pub lxd_log_dir: Option<String>,
}

impl LxdArgs {
    pub fn socket(&self) -> PathBuf {
        self.lxd_socket
            .clone()
            .unwrap_or_else(crate::lxd::default_socket)
    }

    /// A client of the daemon working in `project`.
    pub fn client(&self, project: &str) -> crate::lxd::Lxd {
        let lxd = crate::lxd::Lxd::new(self.socket(), project);
        match self.lxd_log_dir.as_deref() {
            None => lxd,
            Some("none") => lxd.with_log_dir(None),
            Some(dir) => lxd.with_log_dir(Some(dir.into())),
        }
    }

    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(hostname)
    }
}

/// The host's name, from the kernel.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
