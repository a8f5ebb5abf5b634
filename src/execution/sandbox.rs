//! The per-execution sandbox of a recycled container (a pool with
//! `spec.reuse`): shell text run by root inside the container, and the
//! helper that starts each stage in it.
//!
//! An execution's writable places live in the container's *box*: fresh
//! tmpfs mounts under `BOX_DIR`, one for each of the runner's home, `/tmp`,
//! `/var/tmp` and `/dev/shm` (the sizes of the container's own), built by
//! root before the execution (`setup`: at readiness, then in the recycle
//! after each execution). Each stage runs in new mount, ipc,
//! uts, network and pid namespaces, entered by one start of a small static
//! helper (`enter`, `HELPER`) rather than by `unshare`, `sh`, `mount`,
//! `hostname` and `setpriv` (about 8 ms less CPU per stage on this host):
//! there the box is bound over
//! the four places and the root file system is read-only, so the compile
//! and run stages of one execution share its files and nothing else. The
//! pid namespace ends every process of the stage with it. Afterwards root
//! checks that nothing is left, unmounts the box and builds the next one
//! (`recycle_command`, again one start of the helper).
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
/// container's mount count and writes `BOX_FSTAB` (the
/// sizes read once); every box after that is one `mount -a`. The runner's
/// home is the runner's from the start (`uid`, `gid`). Exits 90 or 91,
/// with a reason on stderr, when it cannot.
pub fn setup() -> String {
    let mut first = format!(
        "grep -c -E '^{MOUNT_LINE}' /proc/self/mountinfo > {MOUNTS_FILE} || exit 90\n\
         : > {BOX_FSTAB}.new || exit 90\n"
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
             echo \"unsandbox-{name} {BOX_DIR}/{name} tmpfs nosuid,nodev,mode={mode},size=${{size:-65536k}}{owner} 0 0\" >> {BOX_FSTAB}.new\n"
        ));
    }
    first.push_str(&format!("mv {BOX_FSTAB}.new {BOX_FSTAB} || exit 90\n"));
    format!(
        "if [ ! -e {BOX_FSTAB} ]; then\n{first}fi\n\
         mount -a -T {BOX_FSTAB} || exit 91\n"
    )
}

/// Matches every line of a `mountinfo` file (mount id, parent id,
/// major:minor) and no line of a `status` file (all named).
const MOUNT_LINE: &str = "[0-9]+ [0-9]+ [0-9]+:[0-9]+ ";

/// The argv (as root) that readies a used container for its next
/// execution, one start of the helper (`unsandbox-enter recycle`): it checks
/// that the execution that ended left nothing and unmounts its box, then
/// builds a fresh one from `BOX_FSTAB`. Nothing left means no process of the
/// runner user, by the real uid in its `status` (which a process cannot hide
/// by making itself undumpable; the pid namespace's end killed them all, a
/// straggler gets a second), nothing in the container's own writable places
/// (dot files included), no mount but the container's own (`MOUNTS_FILE`)
/// and the box's, every box mount released. Exits 1 with the reason on
/// stderr when something is left, 91 when no box can be built.
pub fn recycle_command() -> Vec<String> {
    let mut argv = vec![
        HELPER_PATH.to_string(),
        "recycle".to_string(),
        "--uid".to_string(),
        RUNNER_UID.to_string(),
        "--mounts".to_string(),
        MOUNTS_FILE.to_string(),
        "--fstab".to_string(),
        BOX_FSTAB.to_string(),
    ];
    argv.extend(binds());
    argv
}

/// The helper's `--bind BOX PLACE` arguments: each box folder and the
/// writable place it stands for.
fn binds() -> Vec<String> {
    PLACES
        .iter()
        .flat_map(|(place, name, _)| {
            [
                "--bind".to_string(),
                format!("{BOX_DIR}/{name}"),
                place.to_string(),
            ]
        })
        .collect()
}

/// The helper that enters a stage's sandbox and recycles the container
/// (`src/bin/unsandbox-enter`, built static by `build.rs`): installed in
/// each recycled container by its readiness (`install_helper`), then run
/// for every stage and every recycle.
pub const HELPER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/unsandbox-enter"));
/// Where the helper is installed in a container: named by its build's id, so
/// that a container (or a template) with another build installs this one
/// rather than run that.
pub const HELPER_PATH: &str = concat!(
    "/usr/local/lib/unsandbox/enter-",
    env!("UNSANDBOX_ENTER_ID")
);

/// Root shell lines that install the helper from the next `HELPER.len()`
/// bytes of stdin, unless the container has it already (a copy of a
/// template that installed it); those bytes are read either way. Only root
/// can read or run it. Exits 8 when it cannot.
pub fn install_helper() -> String {
    let dir = HELPER_PATH.rsplit_once('/').map_or("/", |(d, _)| d);
    format!(
        "if [ -x {HELPER_PATH} ]; then head -c {n} >/dev/null
         else mkdir -p {dir} && head -c {n} > {HELPER_PATH}.new && chmod 700 {HELPER_PATH}.new          && mv {HELPER_PATH}.new {HELPER_PATH} || exit 8
         fi
",
        n = HELPER.len(),
    )
}

/// The argv, as root, that runs the rest of an argv (its program and
/// arguments) as one stage in the sandbox: one process start of the helper,
/// which (with `mark`) writes `USED_MARKER` first, then moves into new mount,
/// ipc, uts, network and pid namespaces (the last ending every process of
/// the stage with it, and with the helper when the exec is cut short), binds
/// the box over the writable places, checks that each place is its box
/// folder (a stage never runs on the container's own places), makes the
/// root file system read-only, names the host `sandbox` and drops to the
/// runner user with no capability and no way to gain privileges.
pub fn enter(mark: bool) -> Vec<String> {
    let mut argv = vec![HELPER_PATH.to_string()];
    if mark {
        argv.extend(["--mark".to_string(), super::script::USED_MARKER.to_string()]);
    }
    for (place, name, _) in PLACES {
        argv.extend([
            "--bind".to_string(),
            format!("{BOX_DIR}/{name}"),
            place.to_string(),
        ]);
    }
    argv.extend(
        [
            "--hostname",
            "sandbox",
            "--uid",
            &RUNNER_UID.to_string(),
            "--gid",
            &RUNNER_GID.to_string(),
            "--",
        ]
        .map(String::from),
    );
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_gets_new_namespaces_and_the_box_over_the_writable_places() {
        let e = enter(true).join(" ");
        assert!(
            e.starts_with(&format!(
                "{HELPER_PATH} --mark /run/unsandbox/used --bind {BOX_DIR}/home {WORKDIR} "
            )),
            "{e}"
        );
        assert!(
            e.ends_with(" --hostname sandbox --uid 1000 --gid 1000 --"),
            "{e}"
        );
        assert!(!enter(false).join(" ").contains("--mark"));
        for (place, name) in [
            (WORKDIR, "home"),
            ("/tmp", "tmp"),
            ("/var/tmp", "vartmp"),
            ("/dev/shm", "shm"),
        ] {
            assert!(setup().contains(&format!(
                "\"unsandbox-{name} {BOX_DIR}/{name} tmpfs nosuid,nodev,"
            )));
            assert!(
                recycle_command()
                    .join(" ")
                    .contains(&format!("--bind {BOX_DIR}/{name} {place}")),
                "{place}"
            );
            assert!(
                e.contains(&format!("--bind {BOX_DIR}/{name} {place} ")),
                "{e}"
            );
        }
        assert!(setup().contains(&format!(",uid={RUNNER_UID},gid={RUNNER_GID} 0 0")));
        assert!(setup().ends_with(&format!("mount -a -T {BOX_FSTAB} || exit 91\n")));
    }

    #[test]
    fn the_helper_is_static_and_installed_once_under_its_build_id() {
        // An ELF executable without a program interpreter (`PT_INTERP`):
        // no dynamic loader, no shared library.
        assert_eq!(&HELPER[..5], b"\x7fELF\x02");
        let at = |o: usize, n: usize| {
            HELPER[o..o + n]
                .iter()
                .rev()
                .fold(0usize, |v, b| v << 8 | usize::from(*b))
        };
        let (phoff, phentsize, phnum) = (at(0x20, 8), at(0x36, 2), at(0x38, 2));
        assert!(phnum > 0);
        for i in 0..phnum {
            assert_ne!(at(phoff + i * phentsize, 4), 3, "a program interpreter");
        }
        assert!(HELPER_PATH.len() > "/usr/local/lib/unsandbox/enter-".len());
        let i = install_helper();
        assert!(
            i.starts_with(&format!(
                "if [ -x {HELPER_PATH} ]; then head -c {} >/dev/null\n",
                HELPER.len()
            )),
            "{i}"
        );
        assert!(
            i.contains(&format!("head -c {} > {HELPER_PATH}.new", HELPER.len())),
            "{i}"
        );
        assert!(i.contains("|| exit 8\n"));
    }

    #[test]
    fn recycling_is_one_start_of_the_helper_with_the_box_and_its_records() {
        let c = recycle_command();
        assert_eq!(c[..2], [HELPER_PATH, "recycle"]);
        let c = c.join(" ");
        assert!(
            c.contains(&format!(
                " --uid {RUNNER_UID} --mounts {MOUNTS_FILE} --fstab {BOX_FSTAB} --bind "
            )),
            "{c}"
        );
    }
}
