//! The host as `images/lxd-host.sh` leaves it.

use std::path::Path;
use std::process::{Command, Stdio};

const HOOK: &str = "/usr/share/lxcfs/lxc.reboot.hook";
const ORIGINAL: &str = "/usr/share/lxcfs/lxc.reboot.hook.distrib";

/// Runs the lxcfs post-stop hook as liblxc would after a stop or a reboot,
/// with no `sleep` to be found: lxcfs's own hook (`sleep 0.5s`) then fails,
/// which shows whether it ran. Whether the hook succeeded.
fn hook_succeeds(target: Option<&str>) -> bool {
    let mut c = Command::new(HOOK);
    c.env_clear()
        .env("PATH", "/nonexistent")
        .stderr(Stdio::null());
    if let Some(t) = target {
        c.env("LXC_TARGET", t);
    }
    c.status().expect("the hook runs").success()
}

#[test]
fn lxcfs_pauses_after_a_reboot_but_not_after_every_stop() {
    if !Path::new(HOOK).exists() && !Path::new(ORIGINAL).exists() {
        eprintln!("skipped: no lxcfs post-stop hook on this host");
        return;
    }
    if std::env::var("UNSANDBOX_LXCFS_STOP_HOOK").as_deref() == Ok("keep") {
        eprintln!("skipped: UNSANDBOX_LXCFS_STOP_HOOK=keep leaves lxcfs's hook as it is");
        return;
    }
    assert!(
        Path::new(ORIGINAL).exists(),
        "lxcfs's hook is not diverted: run images/lxd-host.sh"
    );
    assert!(hook_succeeds(Some("stop")), "a stop ran lxcfs's pause");
    assert!(hook_succeeds(None), "a stop ran lxcfs's pause");
    assert!(
        !hook_succeeds(Some("reboot")),
        "a reboot did not run lxcfs's own hook"
    );
}
