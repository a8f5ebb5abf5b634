//! `unsandbox-enter recycle --uid UID --mounts FILE --fstab FILE
//! [--bind BOX PLACE]...`: readies a used container for its next execution.
//!
//! Checks that the execution that ended left nothing, then builds a fresh
//! box: no process whose real uid is UID (the stage's pid namespace ended
//! them all; a straggler is waited for, up to 50 times 20 ms), nothing in any
//! PLACE (the container's own writable places, dot files included), no mount
//! but the container's own (their count is in FILE `--mounts`) and the
//! box's, and every BOX unmounted. Then each tmpfs of FILE `--fstab` (lines
//! `SOURCE TARGET tmpfs OPTIONS 0 0`) is mounted afresh. Exits 1 with the
//! reason on stderr when something was left, 91 when the box cannot be
//! built.

use std::ffi::{c_int, c_ulong};
use std::time::Duration;

use crate::sys::*;

/// The exit status when the execution left something.
const LEFT: c_int = 1;
/// The exit status when the next box cannot be built.
const NO_BOX: c_int = 91;
/// How often, and how long apart, the processes are looked for.
const TRIES: u32 = 50;
const PAUSE: Duration = Duration::from_millis(20);

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    uid: u32,
    mounts: String,
    fstab: String,
    /// Each box folder and the place it stood for.
    boxes: Vec<(String, String)>,
}

/// Reads the command line after `recycle`.
pub fn parse(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let mut uid = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--uid" => uid = Some(crate::id(&crate::value(&mut it, arg)?)?),
            "--mounts" => plan.mounts = crate::value(&mut it, arg)?,
            "--fstab" => plan.fstab = crate::value(&mut it, arg)?,
            "--bind" => plan.boxes.push(crate::pair(&mut it, arg)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    plan.uid = uid.ok_or("--uid is required")?;
    if plan.mounts.is_empty() || plan.fstab.is_empty() {
        return Err("--mounts and --fstab are required".into());
    }
    Ok(plan)
}

/// Whether a `/proc/PID/status` text is a process whose real uid is `uid`.
fn runs_as(status: &str, uid: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .is_some_and(|real| real == uid.to_string())
}

/// One tmpfs of the box.
#[derive(Debug, PartialEq)]
struct Tmpfs {
    source: String,
    target: String,
    flags: c_ulong,
    data: String,
}

/// The tmpfs lines of an fstab: their options split into mount flags
/// (`nosuid`, `nodev`, `noexec`) and the file system's own (`mode`,
/// `size`, `uid`, ...).
fn tmpfs_lines(fstab: &str) -> Result<Vec<Tmpfs>, String> {
    let mut out = Vec::new();
    for line in fstab.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [source, target, "tmpfs", options, ..] = words[..] else {
            return Err(format!("not a tmpfs line: {line:?}"));
        };
        let mut flags = 0;
        let mut data = Vec::new();
        for o in options.split(',') {
            match o {
                "nosuid" => flags |= MS_NOSUID,
                "nodev" => flags |= MS_NODEV,
                "noexec" => flags |= MS_NOEXEC,
                "defaults" | "rw" => {}
                other => data.push(other),
            }
        }
        out.push(Tmpfs {
            source: source.to_string(),
            target: target.to_string(),
            flags,
            data: data.join(","),
        });
    }
    Ok(out)
}

/// The processes (pids) of `uid`, from `/proc`.
fn processes_of(uid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec!["(cannot read /proc)".to_string()];
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            // A process that ended meanwhile has no status: it is gone.
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| runs_as(&s, uid))
        })
        .collect()
}

/// Checks what the execution left and unmounts the box.
fn teardown(plan: &Plan) -> Result<(), String> {
    let mut tries = 0;
    loop {
        let left = processes_of(plan.uid);
        if left.is_empty() {
            break;
        }
        tries += 1;
        if tries > TRIES {
            return Err(format!("recycle: processes left: {}", left.join(" ")));
        }
        std::thread::sleep(PAUSE);
    }
    for (_, place) in &plan.boxes {
        let mut entries = std::fs::read_dir(place).map_err(|e| format!("recycle: {place}: {e}"))?;
        if entries.next().is_some() {
            return Err("recycle: files left outside the sandbox".into());
        }
    }
    let own: usize = std::fs::read_to_string(&plan.mounts)
        .map_err(|e| format!("recycle: {}: {e}", plan.mounts))?
        .trim()
        .parse()
        .map_err(|_| format!("recycle: {} holds no count", plan.mounts))?;
    let was = own + plan.boxes.len();
    let now = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("recycle: mountinfo: {e}"))?
        .lines()
        .count();
    if now != was {
        return Err(format!("recycle: {now} mounts, {was} expected"));
    }
    let mut held = false;
    for (folder, _) in &plan.boxes {
        let f = c(folder)?;
        // SAFETY: unmounts a path this function owns as a C string.
        held |= unsafe { umount2(f.as_ptr(), 0) } != 0;
    }
    if held {
        return Err("recycle: the box is still held".into());
    }
    Ok(())
}

/// Mounts each tmpfs of the box's fstab.
fn build(plan: &Plan) -> Result<(), String> {
    let fstab = std::fs::read_to_string(&plan.fstab).map_err(|e| format!("{}: {e}", plan.fstab))?;
    let tmpfs = c("tmpfs")?;
    for m in tmpfs_lines(&fstab)? {
        let (source, target, data) = (c(&m.source)?, c(&m.target)?, c(&m.data)?);
        // SAFETY: a mount with C strings this function owns.
        check(
            unsafe {
                mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    tmpfs.as_ptr(),
                    m.flags,
                    data.as_ptr().cast(),
                )
            },
            &format!("mounting {}", m.target),
        )?;
    }
    Ok(())
}

/// Recycles: the exit status and, when it is not 0, why.
pub fn run(plan: &Plan) -> (c_int, Option<String>) {
    if let Err(e) = teardown(plan) {
        return (LEFT, Some(e));
    }
    match build(plan) {
        Ok(()) => (0, None),
        Err(e) => (NO_BOX, Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words as args;

    #[test]
    fn reads_its_command_line() {
        let plan = parse(&args(
            "--uid 1000 --mounts /run/m --fstab /run/f --bind /box/tmp /tmp --bind /box/home /home/runner",
        ))
        .unwrap();
        assert_eq!(plan.uid, 1000);
        assert_eq!(
            (plan.mounts.as_str(), plan.fstab.as_str()),
            ("/run/m", "/run/f")
        );
        assert_eq!(plan.boxes.len(), 2);
        assert_eq!(plan.boxes[1], ("/box/home".into(), "/home/runner".into()));
        for (line, why) in [
            ("--mounts /m --fstab /f", "--uid"),
            ("--uid 0 --mounts /m --fstab /f", "root"),
            ("--uid 1000 --fstab /f", "required"),
            (
                "--uid 1000 --mounts /m --fstab /f --bind /a",
                "needs a value",
            ),
            ("--uid 1000 --mounts /m --fstab /f --hostname x", "unknown"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn a_process_is_the_runners_by_its_real_uid() {
        let status = |ids: &str| format!("Name:\tsh\nPid:\t7\nUid:\t{ids}\nGid:\t0\t0\t0\t0\n");
        assert!(runs_as(&status("1000\t1000\t1000\t1000"), 1000));
        // Setuid to root keeps the real uid: still the runner's.
        assert!(runs_as(&status("1000\t0\t0\t0"), 1000));
        assert!(!runs_as(&status("0\t1000\t1000\t1000"), 1000));
        assert!(!runs_as(&status("10000\t10000\t10000\t10000"), 1000));
        assert!(!runs_as("Name:\tx\n", 1000));
    }

    #[test]
    fn the_box_fstab_splits_flags_from_tmpfs_options() {
        let lines = tmpfs_lines(
            "unsandbox-home /run/unsandbox/box/home tmpfs nosuid,nodev,mode=700,size=65536k,uid=1000,gid=1000 0 0\n\
             \n\
             unsandbox-tmp /run/unsandbox/box/tmp tmpfs nosuid,nodev,mode=1777,size=65536k 0 0\n",
        )
        .unwrap();
        assert_eq!(
            lines,
            [
                Tmpfs {
                    source: "unsandbox-home".into(),
                    target: "/run/unsandbox/box/home".into(),
                    flags: MS_NOSUID | MS_NODEV,
                    data: "mode=700,size=65536k,uid=1000,gid=1000".into(),
                },
                Tmpfs {
                    source: "unsandbox-tmp".into(),
                    target: "/run/unsandbox/box/tmp".into(),
                    flags: MS_NOSUID | MS_NODEV,
                    data: "mode=1777,size=65536k".into(),
                },
            ]
        );
        assert!(tmpfs_lines("/dev/sda1 / ext4 defaults 0 0\n").is_err());
    }
}
