//! The LXD daemon's CPU weight as this host sees it: its launches compete
//! with running executions by that weight (`images/lxd-host.sh` sets it).
//! The agent logs it when it starts and the benchmark prints it.

/// The daemon's weight in cgroup v2 units (100 is the default), with where
/// it was read; `None` when the daemon or its cgroup cannot be found.
pub fn daemon_cpu_weight() -> Option<(u32, String)> {
    let pid = daemon_pid()?;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (version, path) = cpu_cgroup(&cgroup)?;
    let file = match version {
        2 => format!("/sys/fs/cgroup{path}/cpu.weight"),
        _ => format!("/sys/fs/cgroup/cpu{path}/cpu.shares"),
    };
    let value = std::fs::read_to_string(&file).ok()?.trim().parse().ok()?;
    Some((weight(version, value), file))
}

/// The pid of the daemon: the process that runs the `lxd` program with no
/// helper's first argument (`forkexec`, `forkstart`, `callhook`, ...).
/// liblxc's monitors are named `lxd` too but rewrite their command line
/// (`[lxc monitor] ...`), so the command line decides, not the name.
pub fn daemon_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        is_daemon(&cmdline).then_some(pid)
    })
}

/// Whether a `cmdline` (NUL-separated) is the daemon's rather than a
/// helper's or a liblxc monitor's. Pure.
fn is_daemon(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    let program = args.next().unwrap_or_default();
    let first = args.next().unwrap_or_default();
    program.rsplit(|b| *b == b'/').next() == Some(b"lxd".as_slice())
        && !(first.starts_with(b"fork") || first == b"callhook" || first == b"waitready")
}

/// The cgroup version and path of the `cpu` controller in a
/// `/proc/PID/cgroup` text: a v1 line naming `cpu`, else the v2 line. Pure.
fn cpu_cgroup(text: &str) -> Option<(u8, &str)> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "cpu") {
            return Some((1, path.trim_end_matches('/')));
        }
        if controllers.is_empty() {
            v2 = Some((2, path.trim_end_matches('/')));
        }
    }
    v2
}

/// A weight in v2 units from the value read: v2's `cpu.weight` as it is,
/// v1's `cpu.shares` scaled to the nearest (1024 shares are 100). Pure.
fn weight(version: u8, value: u32) -> u32 {
    if version == 2 {
        value
    } else {
        ((u64::from(value) * 100 + 512) / 1024) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_controller_is_found_in_v1_and_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/x\n1:cpu,cpuacct:/unsandbox-lxd\n0::/\n";
        assert_eq!(cpu_cgroup(v1), Some((1, "/unsandbox-lxd")));
        assert_eq!(
            cpu_cgroup("0::/system.slice/lxd.service\n"),
            Some((2, "/system.slice/lxd.service"))
        );
        assert_eq!(cpu_cgroup("1:cpu:/\n"), Some((1, "")));
        assert_eq!(cpu_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn shares_scale_to_weights_and_helpers_are_not_the_daemon() {
        assert_eq!(weight(1, 512), 50);
        assert_eq!(weight(1, 1024), 100);
        assert_eq!(weight(1, 337), 33);
        assert_eq!(weight(2, 50), 50);
        assert!(is_daemon(b"lxd\0--group\0root\0"));
        assert!(!is_daemon(b"/usr/bin/lxd\0forkexec\0c\0"));
        assert!(!is_daemon(b"lxd\0callhook\0/var/lib/lxd\0"));
        assert!(is_daemon(b"/usr/bin/lxd\0"));
        assert!(!is_daemon(b"[lxc monitor] /var/lib/lxd/containers p_c\0"));
        assert!(!is_daemon(b"/usr/bin/lxdx\0"));
    }

    /// The weight `images/lxd-host.sh` gave the daemon the suite runs
    /// against (`tests/run.sh` runs it first).
    #[test]
    fn the_running_daemon_has_the_weight_lxd_host_gives_it() {
        if daemon_pid().is_none() {
            eprintln!("skipped: no LXD daemon runs on this host");
            return;
        }
        let want: u32 = std::env::var("UNSANDBOX_LXD_CPU_WEIGHT")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(50);
        let (w, file) = daemon_cpu_weight().expect("the daemon's cpu cgroup file");
        assert_eq!(w, want, "the LXD daemon's CPU weight, from {file}");
    }
}
