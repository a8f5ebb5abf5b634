//! The per-execution sandbox of a recycled container (a pool with
//! `spec.reuse`): shell text run by root inside the container.
//!
//! Root builds the sandbox before an execution (in the readiness exec, then
//! in the recycle exec after each execution): new mount, ipc, uts and
//! network namespaces, kept by bind mounts of their files under
//! `SANDBOX_DIR`; in them fresh tmpfs mounts on the runner's home, `/tmp`,
//! `/var/tmp` and `/dev/shm` (the sizes of the container's own), and every
//! other mount but `/proc`, `/sys` and device nodes read-only. Each stage
//! enters it (`enter`) and runs in a new pid namespace of its own, whose end
//! kills every process in it. Afterwards root releases the namespaces and
//! checks that nothing is left (`RECYCLE`) before building the next one.

use super::script::{RUNNER_UID, WORKDIR};

/// Where the sandbox's namespace files are bind-mounted.
pub const SANDBOX_DIR: &str = "/run/unsandbox/sbx";
/// The container's mount count without a sandbox, written when the first
/// sandbox is built and compared after each one is released.
pub const MOUNTS_FILE: &str = "/run/unsandbox/mounts";

/// The namespaces a sandbox keeps between the stages of one execution.
const NAMESPACES: [&str; 4] = ["mnt", "ipc", "uts", "net"];

/// The container's writable places, each replaced by a fresh tmpfs in the
/// sandbox; the container's own stay empty.
const FRESH: [&str; 4] = [WORKDIR, "/tmp", "/var/tmp", "/dev/shm"];

/// Empties the container's own writable places (as root, outside any
/// sandbox: what the readiness warm-up left).
pub fn empty_own() -> String {
    format!("find {} -mindepth 1 -delete\n", FRESH.join(" "))
}

/// Builds a sandbox (as root). Exits 90 to 93, with a reason on stderr,
/// when it cannot.
pub fn setup() -> String {
    let files: Vec<String> = NAMESPACES
        .iter()
        .map(|n| format!("--{}={SANDBOX_DIR}/{n}", long(n)))
        .collect();
    format!(
        "S={SANDBOX_DIR}\n\
         mkdir -p \"$S\" || {{ echo 'sandbox: cannot create its folder' >&2; exit 90; }}\n\
         if ! mountpoint -q \"$S\"; then\n\
         mount --bind \"$S\" \"$S\" && mount --make-private \"$S\" || {{ echo 'sandbox: cannot make its folder private' >&2; exit 91; }}\n\
         findmnt -rn | wc -l > {MOUNTS_FILE}\n\
         fi\n\
         for n in {names}; do : > \"$S/$n\" || exit 92; done\n\
         unshare {files} --propagation private /bin/sh -c {inner} || {{ echo 'sandbox: cannot build the namespaces' >&2; exit 93; }}\n",
        names = NAMESPACES.join(" "),
        files = files.join(" "),
        inner = super::script::sh_quote(&inner_setup()),
    )
}

/// Inside the new namespaces: the fresh writable mounts, the rest
/// read-only, a host name of its own.
fn inner_setup() -> String {
    format!(
        "set -e\n\
         for d in {fresh}; do\n\
         size=$(findmnt -no OPTIONS \"$d\" | tr , '\\n' | sed -n 's/^size=//p')\n\
         mount -t tmpfs -o \"nosuid,nodev,size=${{size:-65536k}}\" tmpfs \"$d\"\n\
         done\n\
         chown {RUNNER_UID}:{RUNNER_UID} {WORKDIR}\n\
         chmod 700 {WORKDIR}\n\
         chmod 1777 /tmp /var/tmp /dev/shm\n\
         findmnt -rno TARGET | tac | while read -r m; do\n\
         case \"$m\" in {skip}) continue ;; esac\n\
         mount -o remount,bind,ro \"$m\" 2>/dev/null || true\n\
         done\n\
         hostname sandbox\n",
        fresh = FRESH.join(" "),
        skip = [
            "/home/runner",
            "/tmp",
            "/var/tmp",
            "/dev/shm",
            "/proc",
            "/proc/*",
            "/sys",
            "/sys/*",
            "/dev/pts",
            "/dev/ptmx",
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/dev/console",
        ]
        .join("|"),
    )
}

/// Releases the sandbox of the execution that ended and checks that it
/// left nothing (as root): no process of the runner user (the pid
/// namespace's end killed them; a straggler gets a second), every namespace
/// file released, the mount count back to the container's own. Exits 1
/// with the reason on stderr when something is left.
pub fn teardown() -> String {
    format!(
        "S={SANDBOX_DIR}\n\
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
         for n in {names}; do\n\
         umount \"$S/$n\" 2>/dev/null\n\
         if mountpoint -q \"$S/$n\"; then echo \"recycle: the $n namespace is still held\" >&2; exit 1; fi\n\
         rm -f \"$S/$n\"\n\
         done\n\
         if [ -n \"$(find {fresh} -mindepth 1 -print -quit)\" ]; then echo 'recycle: files left outside the sandbox' >&2; exit 1; fi\n\
         now=$(findmnt -rn | wc -l)\n\
         if [ \"$now\" != \"$(cat {MOUNTS_FILE})\" ]; then echo \"recycle: $now mounts, $(cat {MOUNTS_FILE}) expected\" >&2; exit 1; fi\n",
        names = NAMESPACES.join(" "),
        fresh = FRESH.join(" "),
    )
}

/// The argv (as root) that readies a used container for its next
/// execution: the last sandbox released and checked, a fresh one built.
pub fn recycle_command() -> Vec<String> {
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{}{}", teardown(), setup()),
    ]
}

/// The command prefix that runs a stage in the sandbox: its namespaces
/// entered, in a pid namespace of its own that ends with the stage
/// (`--kill-child`: even when the exec is cut short). Entering the mount
/// namespace leaves the stage at its root: the stage's shell changes to
/// `WORKDIR` itself (`nsenter --wd` would keep a directory of the
/// container's own tree, outside the sandbox).
pub fn enter() -> String {
    let files: Vec<String> = NAMESPACES
        .iter()
        .map(|n| format!("--{}={SANDBOX_DIR}/{n}", long(n)))
        .collect();
    format!(
        "nsenter {} -- unshare --pid --fork --kill-child --",
        files.join(" ")
    )
}

/// The util-linux option of a namespace file's name.
fn long(ns: &str) -> &str {
    match ns {
        "mnt" => "mount",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_enters_all_kept_namespaces_and_a_new_pid_namespace() {
        let e = enter();
        for ns in ["--mount=", "--ipc=", "--uts=", "--net="] {
            assert!(e.contains(&format!("{ns}{SANDBOX_DIR}/")), "{e}");
            assert!(setup().contains(&format!("{ns}{SANDBOX_DIR}/")));
        }
        assert!(e.ends_with("unshare --pid --fork --kill-child --"), "{e}");
        assert!(!e.contains("--wd"), "{e}");
    }

    #[test]
    fn the_writable_mounts_are_fresh_and_the_rest_read_only() {
        let s = inner_setup();
        assert!(s.contains("for d in /home/runner /tmp /var/tmp /dev/shm; do"));
        assert!(s.contains("mount -o remount,bind,ro"));
        // The fresh mounts are skipped by the read-only pass.
        let skip = s.split("case \"$m\" in ").nth(1).unwrap();
        for d in ["/home/runner|", "|/tmp|", "|/var/tmp|", "|/dev/shm|"] {
            assert!(skip.contains(d), "{d}");
        }
    }

    #[test]
    fn recycling_checks_before_it_builds_again() {
        let c = recycle_command().join(" ");
        let (check, build) = (
            c.find("processes left").unwrap(),
            c.find("unshare").unwrap(),
        );
        assert!(check < build);
        assert!(c.contains(MOUNTS_FILE));
        assert!(c.contains("files left outside the sandbox"));
    }
}
