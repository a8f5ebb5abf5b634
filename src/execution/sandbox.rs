//! The per-execution sandbox of a recycled container (a pool with
//! `spec.reuse`): shell text run by root inside the container.
//!
//! An execution's writable places live in the container's *box*: fresh
//! tmpfs mounts under `BOX_DIR`, one for each of the runner's home, `/tmp`,
//! `/var/tmp` and `/dev/shm` (the sizes of the container's own), built by
//! root before the execution (`setup`: in the readiness exec, then in the
//! recycle exec after each execution). Each stage runs in new mount, ipc,
//! uts, network and pid namespaces (`enter`): there the box is bound over
//! the four places and the root file system is read-only, so the compile
//! and run stages of one execution share its files and nothing else. The
//! pid namespace ends every process of the stage with it. Afterwards root
//! checks that nothing is left and unmounts the box (`teardown`).
//!
//! The box is not a persistent mount namespace (`unshare --mount=FILE`):
//! binding a mount namespace's file fails with EINVAL at random on recent
//! kernels, measured at 17 of 40 tries on this host's 6.18.

use super::script::{RUNNER_UID, WORKDIR};

/// Where the box's tmpfs mounts live in the container.
pub const BOX_DIR: &str = "/run/unsandbox/box";
/// The container's mount count without a box, written when the first box
/// is built and compared after each one is unmounted.
pub const MOUNTS_FILE: &str = "/run/unsandbox/mounts";

/// The container's writable places, the box's folder for each, and its mode.
const PLACES: [(&str, &str, &str); 4] = [
    (WORKDIR, "home", "700"),
    ("/tmp", "tmp", "1777"),
    ("/var/tmp", "vartmp", "1777"),
    ("/dev/shm", "shm", "1777"),
];

fn places() -> String {
    PLACES.map(|(p, _, _)| p).join(" ")
}

/// Empties the container's own writable places (as root: what the
/// readiness warm-up left). Executions never write there.
pub fn empty_own() -> String {
    format!("find {} -mindepth 1 -delete\n", places())
}

/// Builds a fresh box (as root). Exits 90 or 91, with a reason on stderr,
/// when it cannot.
pub fn setup() -> String {
    let mut s = format!(
        "B={BOX_DIR}\n\
         [ -e {MOUNTS_FILE} ] || findmnt -rn | wc -l > {MOUNTS_FILE} || exit 90\n"
    );
    for (place, name, mode) in PLACES {
        s.push_str(&format!(
            "size=$(findmnt -no OPTIONS {place} | tr , '\\n' | sed -n 's/^size=//p')\n\
             mkdir -p \"$B/{name}\" && \
             mount -t tmpfs -o \"nosuid,nodev,mode={mode},size=${{size:-65536k}}\" tmpfs \"$B/{name}\" \
             || {{ echo 'sandbox: cannot mount {place}' >&2; exit 91; }}\n"
        ));
    }
    s.push_str(&format!(
        "chown {RUNNER_UID}:{RUNNER_UID} \"$B/home\" || exit 91\n"
    ));
    s
}

/// Checks that the execution that ended left nothing and unmounts its box
/// (as root): no process of the runner user (the pid namespace's end killed
/// them; a straggler gets a second), nothing in the container's own
/// writable places, every box mount released, the mount count back to the
/// container's own. Exits 1 with the reason on stderr when something is
/// left.
pub fn teardown() -> String {
    let names = PLACES.map(|(_, n, _)| n).join(" ");
    format!(
        "B={BOX_DIR}\n\
         i=0\n\
         while :; do\n\
         left=''\n\
         for p in /proc/[0-9]*; do\n\
         [ \"$(stat -c %u \"$p\" 2>/dev/null)\" = {RUNNER_UID} ] && left=\"$left ${{p#/proc/}}\"\n\
         done\n\
         [ -z \"$left\" ] && break\n\
         i=$((i+1)); if [ $i -gt 50 ]; then echo \"recycle: processes left:$left\" >&2; exit 1; fi\n\
         sleep 0.02\n\
         done\n\
         if [ -n \"$(find {places} -mindepth 1 -print -quit)\" ]; then echo 'recycle: files left outside the sandbox' >&2; exit 1; fi\n\
         for n in {names}; do\n\
         umount \"$B/$n\" || {{ echo \"recycle: the box's $n is still held\" >&2; exit 1; }}\n\
         done\n\
         now=$(findmnt -rn | wc -l)\n\
         if [ \"$now\" != \"$(cat {MOUNTS_FILE})\" ]; then echo \"recycle: $now mounts, $(cat {MOUNTS_FILE}) expected\" >&2; exit 1; fi\n",
        places = places(),
    )
}

/// The argv (as root) that readies a used container for its next
/// execution: the last execution checked and its box unmounted, a fresh
/// box built.
pub fn recycle_command() -> Vec<String> {
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{}{}", teardown(), setup()),
    ]
}

/// The root shell lines that run `then` (a command line, its words already
/// quoted) in a stage's own namespaces: mount, ipc, uts, network and pid,
/// the last ending every process of the stage with it (`--kill-child`: even
/// when the exec is cut short). In them the box is bound over the writable
/// places and the root file system is read-only. `then` sees the root
/// script's `$inner` as `$0` and its arguments as `"$@"`.
pub fn enter(then: &str) -> String {
    let mut inside = String::new();
    for (place, name, _) in PLACES {
        inside.push_str(&format!("mount --bind {BOX_DIR}/{name} {place} && "));
    }
    inside.push_str(&format!(
        "mount -o remount,bind,ro / && hostname sandbox || exit 125\nexec {then}"
    ));
    format!(
        "exec unshare --mount --ipc --uts --net --pid --fork --kill-child --propagation private \
         -- /bin/sh -c {} \"$inner\" \"$@\"",
        super::script::sh_quote(&inside)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_gets_new_namespaces_and_the_box_over_the_writable_places() {
        let e = enter("setpriv -- /bin/sh -c \"$0\" unsandbox \"$@\"");
        assert!(
            e.starts_with(
                "exec unshare --mount --ipc --uts --net --pid --fork --kill-child --propagation private -- /bin/sh -c '"
            ),
            "{e}"
        );
        for (place, name) in [
            (WORKDIR, "home"),
            ("/tmp", "tmp"),
            ("/var/tmp", "vartmp"),
            ("/dev/shm", "shm"),
        ] {
            assert!(
                e.contains(&format!("mount --bind {BOX_DIR}/{name} {place} &&")),
                "{e}"
            );
            assert!(setup().contains(&format!("\"$B/{name}\"")));
        }
        assert!(e.contains("mount -o remount,bind,ro /"));
        assert!(e.ends_with("\"$inner\" \"$@\""), "{e}");
    }

    #[test]
    fn recycling_checks_before_it_builds_again() {
        let c = recycle_command().join(" ");
        let (check, build) = (
            c.find("processes left").unwrap(),
            c.find("mount -t tmpfs").unwrap(),
        );
        assert!(check < build);
        assert!(c.contains(MOUNTS_FILE));
        assert!(c.contains("files left outside the sandbox"));
        assert!(c.contains("the box's $n is still held"));
    }
}
