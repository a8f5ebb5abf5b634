//! The per-execution sandbox of a recycled container (a pool with
//! `spec.reuse`): shell text run by root inside the container.
//!
//! An execution's writable places live in the container's *box*: fresh
//! tmpfs mounts under `BOX_DIR`, one for each of the runner's home, `/tmp`,
//! `/var/tmp` and `/dev/shm` (the sizes of the container's own), built by
//! root before the execution (`setup`: at readiness, then in the recycle
//! after each execution). Each stage runs in new mount, ipc,
//! uts, network and pid namespaces (`enter`): there the box is bound over
//! the four places and the root file system is read-only, so the compile
//! and run stages of one execution share its files and nothing else. The
//! pid namespace ends every process of the stage with it. Afterwards root
//! checks that nothing is left and unmounts the box (`teardown`).
//!
//! The box is not a persistent mount namespace (`unshare --mount=FILE`):
//! binding a mount namespace's file fails with EINVAL at random on recent
//! kernels, measured at 17 of 40 tries on this host's 6.18.

use super::script::{RUNNER_GID, RUNNER_UID, WORKDIR};

/// Where the box's tmpfs mounts live in the container.
pub const BOX_DIR: &str = "/run/unsandbox/box";
/// The container's mount count without a box, written when the first box
/// is built and compared (plus the box's) before each one is unmounted.
pub const MOUNTS_FILE: &str = "/run/unsandbox/mounts";
/// The box's tmpfs mounts, with the sizes of the container's own places:
/// written when the first box is built, mounted for every box with one
/// `mount -a` (one process rather than one per place).
pub const BOX_FSTAB: &str = "/run/unsandbox/box.fstab";
/// The binds of the box's folders over the writable places, made in each
/// stage's mount namespace with one `mount -a`. `mount -a` skips an entry
/// it takes for mounted already, which a bind of one tmpfs over another
/// with the same source name and root would be: each box mount has a
/// source name of its own (`unsandbox-home`, ...), and the stage checks that
/// each place is its box folder (`-ef`: same device and inode) before the
/// code runs.
pub const BIND_FSTAB: &str = "/run/unsandbox/bind.fstab";

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

/// Builds a fresh box (as root). The first time, it records the
/// container's mount count and writes `BOX_FSTAB` and `BIND_FSTAB` (the
/// sizes read once); every box after that is one `mount -a`. The runner's
/// home is the runner's from the start (`uid`, `gid`). Exits 90 or 91,
/// with a reason on stderr, when it cannot.
pub fn setup() -> String {
    let mut first = format!(
        "grep -c -E '^{MOUNT_LINE}' /proc/self/mountinfo > {MOUNTS_FILE} || exit 90\n\
         : > {BOX_FSTAB}.new && : > {BIND_FSTAB}.new || exit 90\n"
    );
    for (place, name, mode) in PLACES {
        let owner = if place == WORKDIR {
            format!(",uid={RUNNER_UID},gid={RUNNER_GID}")
        } else {
            String::new()
        };
        first.push_str(&format!(
            "size=$(findmnt -no OPTIONS {place} | tr , '\\n' | sed -n 's/^size=//p')\n\
             mkdir -p {BOX_DIR}/{name} || exit 90\n\
             echo \"unsandbox-{name} {BOX_DIR}/{name} tmpfs nosuid,nodev,mode={mode},size=${{size:-65536k}}{owner} 0 0\" >> {BOX_FSTAB}.new\n\
             echo '{BOX_DIR}/{name} {place} none bind 0 0' >> {BIND_FSTAB}.new\n"
        ));
    }
    first.push_str(&format!(
        "mv {BIND_FSTAB}.new {BIND_FSTAB} && mv {BOX_FSTAB}.new {BOX_FSTAB} || exit 90\n"
    ));
    format!(
        "if [ ! -e {BOX_FSTAB} ]; then\n{first}fi\n\
         mount -a -T {BOX_FSTAB} || exit 91\n"
    )
}

/// Matches every line of a `mountinfo` file (mount id, parent id,
/// major:minor) and no line of a `status` file (all named).
const MOUNT_LINE: &str = "[0-9]+ [0-9]+ [0-9]+:[0-9]+ ";

/// Checks that the execution that ended left nothing and unmounts its box
/// (as root): no process of the runner user, by the real uid in its `status` (which a
/// process cannot hide by making itself undumpable; the pid namespace's
/// end killed them all, a straggler gets a second), nothing in the
/// container's own writable places (dot files included), no mount but the
/// container's own and the box's (counted in the same `grep` that finds
/// the processes), every box mount released. Exits 1 with the reason on
/// stderr when something is left.
pub fn teardown() -> String {
    let boxes: Vec<String> = PLACES
        .iter()
        .map(|(_, n, _)| format!("{BOX_DIR}/{n}"))
        .collect();
    let globs: Vec<String> = PLACES
        .iter()
        .flat_map(|(p, _, _)| [format!("{p}/*"), format!("{p}/.[!.]*"), format!("{p}/..?*")])
        .collect();
    format!(
        "i=0\n\
         while :; do\n\
         left= n=\n\
         for l in $(grep -cs -E '^(Uid:[[:space:]]*{RUNNER_UID}[[:space:]]|{MOUNT_LINE})' /proc/self/mountinfo /proc/[0-9]*/status); do\n\
         case $l in /proc/self/mountinfo:*) n=${{l##*:}} ;; *:0) ;; *) left=\"$left ${{l%:*}}\" ;; esac\n\
         done\n\
         [ -z \"$left\" ] && break\n\
         i=$((i+1)); if [ $i -gt 50 ]; then echo \"recycle: processes left:$left\" >&2; exit 1; fi\n\
         sleep 0.02\n\
         done\n\
         for f in {globs}; do\n\
         if [ -e \"$f\" ] || [ -L \"$f\" ]; then echo 'recycle: files left outside the sandbox' >&2; exit 1; fi\n\
         done\n\
         read -r was < {MOUNTS_FILE}\n\
         was=$((was + {places}))\n\
         if [ \"$n\" != \"$was\" ]; then echo \"recycle: $n mounts, $was expected\" >&2; exit 1; fi\n\
         umount {boxes} || {{ echo \"recycle: the box is still held\" >&2; exit 1; }}\n",
        globs = globs.join(" "),
        boxes = boxes.join(" "),
        places = PLACES.len(),
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
/// places (checked: a stage never runs on the container's own places) and the root file system is read-only. `then`
/// sees the root
/// script's `$inner` as `$0` and its arguments as `"$@"`.
pub fn enter(then: &str) -> String {
    let bound: Vec<String> = PLACES
        .iter()
        .map(|(place, name, _)| format!("[ {place} -ef {BOX_DIR}/{name} ]"))
        .collect();
    let inside = format!(
        "mount -a -T {BIND_FSTAB} && mount -o remount,bind,ro / && hostname sandbox || exit 125\n\
         {} || {{ echo 'sandbox: the box is not in place' >&2; exit 125; }}\n\
         exec {then}",
        bound.join(" && ")
    );
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
                setup().contains(&format!(
                    "echo '{BOX_DIR}/{name} {place} none bind 0 0' >> {BIND_FSTAB}.new"
                )),
                "{place}"
            );
            assert!(setup().contains(&format!(
                "\"unsandbox-{name} {BOX_DIR}/{name} tmpfs nosuid,nodev,"
            )));
            assert!(
                teardown().contains(&format!(" {place}/.[!.]* ")),
                "dot files of {place}"
            );
            assert!(
                e.contains(&format!("[ {place} -ef {BOX_DIR}/{name} ]")),
                "{e}"
            );
        }
        assert!(setup().contains(&format!(",uid={RUNNER_UID},gid={RUNNER_GID} 0 0")));
        assert!(setup().ends_with(&format!("mount -a -T {BOX_FSTAB} || exit 91\n")));
        assert!(
            e.contains(&format!(
                "mount -a -T {BIND_FSTAB} && mount -o remount,bind,ro / &&"
            )),
            "{e}"
        );
        assert!(e.ends_with("\"$inner\" \"$@\""), "{e}");
    }

    #[test]
    fn recycling_checks_before_it_builds_again() {
        let c = recycle_command().join(" ");
        let (check, build) = (
            c.find("processes left").unwrap(),
            c.find(&format!("mount -a -T {BOX_FSTAB}")).unwrap(),
        );
        assert!(check < build);
        assert!(c.contains(MOUNTS_FILE));
        assert!(c.contains("files left outside the sandbox"));
        assert!(c.contains("the box is still held"));
    }
}
