//! `unsandbox-enter [--mark FILE] [--bind FROM TO]... --hostname NAME
//! --uid UID --gid GID -- PROGRAM [ARG]...`: one stage of an execution.
//!
//! In order: creates FILE (empty); moves into new mount, ipc, uts, network
//! and pid namespaces and forks. The parent waits and ends as the child
//! did. The child (pid 1 of the new pid namespace, so every process of the
//! stage ends with it, and killed when the parent dies) makes its mounts
//! private, binds each FROM over its TO, remounts the root read-only (its
//! other flags kept), sets the host name, checks that each TO is its FROM,
//! drops every capability (bounding, inheritable and ambient sets), clears
//! the supplementary groups, becomes UID and GID, sets no-new-privileges,
//! checks all of that in its own `/proc/self/status` and executes PROGRAM
//! (looked up in `PATH` when it holds no slash) with the argv PROGRAM ARG...
//! Any failure before PROGRAM starts exits 125 with a reason on stderr.

use std::ffi::{c_int, c_ulong};
use std::os::unix::fs::MetadataExt;

use crate::sys::*;

/// The exit status of a failure before the program starts.
pub const FAILED: c_int = 125;

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    mark: Option<String>,
    binds: Vec<(String, String)>,
    hostname: String,
    uid: u32,
    gid: u32,
    program: Vec<String>,
}

/// Reads the command line (without `argv[0]`).
pub fn parse(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let (mut uid, mut gid) = (None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mark" => plan.mark = Some(crate::value(&mut it, arg)?),
            "--bind" => plan.binds.push(crate::pair(&mut it, arg)?),
            "--hostname" => plan.hostname = crate::value(&mut it, arg)?,
            "--uid" => uid = Some(crate::id(&crate::value(&mut it, arg)?)?),
            "--gid" => gid = Some(crate::id(&crate::value(&mut it, arg)?)?),
            "--" => {
                plan.program = it.cloned().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    plan.uid = uid.ok_or("--uid is required")?;
    plan.gid = gid.ok_or("--gid is required")?;
    if plan.hostname.is_empty() {
        return Err("--hostname is required".into());
    }
    if plan.program.is_empty() {
        return Err("no program after --".into());
    }
    Ok(plan)
}

/// The mount flags a read-only remount of `/` has to keep: a remount that
/// leaves out a flag the container's mount was locked with fails.
fn kept_flags(statvfs_flags: c_ulong) -> c_ulong {
    let mut flags = KEPT_FLAGS
        .iter()
        .filter(|(st, _)| statvfs_flags & st != 0)
        .fold(0, |f, (_, ms)| f | ms);
    if statvfs_flags & ST_RELATIME != 0 {
        flags |= MS_RELATIME;
    }
    flags
}

/// The lines of `/proc/self/status` that `dropped` checks: `Uid`, `Gid`,
/// `Groups`, five capability sets and `NoNewPrivs`.
const PRIVILEGE_LINES: usize = 9;

/// Whether `/proc/self/status` says the process is `uid`/`gid` in every
/// slot, with no supplementary group, no capability in any set and
/// no-new-privileges on.
fn dropped(status: &str, uid: u32, gid: u32) -> Result<(), String> {
    let mut seen = 0;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = value.split_whitespace().collect();
        let ok = match key {
            "Uid" => words.len() == 4 && words.iter().all(|w| *w == uid.to_string()),
            "Gid" => words.len() == 4 && words.iter().all(|w| *w == gid.to_string()),
            "Groups" => words.is_empty(),
            "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb" => {
                words.len() == 1 && words[0].bytes().all(|b| b == b'0')
            }
            "NoNewPrivs" => words == ["1"],
            _ => continue,
        };
        if !ok {
            return Err(format!("after dropping privileges: {line}"));
        }
        seen += 1;
    }
    if seen == PRIVILEGE_LINES {
        Ok(())
    } else {
        Err(format!(
            "{seen} of {PRIVILEGE_LINES} privilege lines in /proc/self/status"
        ))
    }
}

/// The child's work, as pid 1 of the new namespaces: never returns but by
/// failing.
fn stage(plan: &Plan, parent_alive: c_int) -> String {
    match prepare(plan, parent_alive) {
        Ok(()) => exec(&plan.program),
        Err(e) => e,
    }
}

fn prepare(plan: &Plan, parent_alive: c_int) -> Result<(), String> {
    // SAFETY: plain system calls on values this function owns.
    unsafe {
        check(
            prctl(PR_SET_PDEATHSIG, SIGKILL as c_ulong, 0, 0, 0),
            "parent-death signal",
        )?;
        // The parent may have died before the signal was asked for: its end
        // of the pipe is then closed.
        let mut p = PollFd {
            fd: parent_alive,
            events: 0,
            revents: 0,
        };
        if poll(&mut p, 1, 0) != 0 && p.revents & POLLHUP != 0 {
            return Err("the parent is gone".into());
        }
        close(parent_alive);
        let root = c("/")?;
        check(
            mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                MS_REC | MS_PRIVATE,
                std::ptr::null(),
            ),
            "making mounts private",
        )?;
        for (from, to) in &plan.binds {
            let (f, t) = (c(from)?, c(to)?);
            check(
                mount(
                    f.as_ptr(),
                    t.as_ptr(),
                    std::ptr::null(),
                    MS_BIND,
                    std::ptr::null(),
                ),
                &format!("binding {from} over {to}"),
            )?;
        }
        let mut st: StatVfs = std::mem::zeroed();
        check(statvfs(root.as_ptr(), &mut st), "reading the root's flags")?;
        check(
            mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                MS_REMOUNT | MS_BIND | MS_RDONLY | kept_flags(st.f_flag),
                std::ptr::null(),
            ),
            "remounting the root read-only",
        )?;
        let name = plan.hostname.as_bytes();
        check(
            sethostname(name.as_ptr().cast(), name.len()),
            "setting the host name",
        )?;
    }
    for (from, to) in &plan.binds {
        let (f, t) = (
            std::fs::metadata(from).map_err(|e| format!("{from}: {e}"))?,
            std::fs::metadata(to).map_err(|e| format!("{to}: {e}"))?,
        );
        if (f.dev(), f.ino()) != (t.dev(), t.ino()) {
            return Err(format!("the box is not in place: {to} is not {from}"));
        }
    }
    drop_privileges(plan.uid, plan.gid)?;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    dropped(&status, plan.uid, plan.gid)
}

fn drop_privileges(uid: u32, gid: u32) -> Result<(), String> {
    // SAFETY: plain system calls on values this function owns.
    unsafe {
        for cap in 0..64 {
            if prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                // EINVAL: past the kernel's last capability.
                break;
            }
        }
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        if syscall(SYS_CAPGET, &mut header as *mut CapHeader, data.as_mut_ptr()) != 0 {
            return Err(os_error("reading capabilities"));
        }
        for d in &mut data {
            d.inheritable = 0;
        }
        if syscall(SYS_CAPSET, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(os_error("clearing the inheritable capabilities"));
        }
        check(
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
            "clearing the ambient capabilities",
        )?;
        check(setgroups(0, std::ptr::null()), "clearing the groups")?;
        check(setresgid(gid, gid, gid), "setting the group")?;
        check(setresuid(uid, uid, uid), "setting the user")?;
        check(
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "setting no-new-privileges",
        )?;
    }
    Ok(())
}

/// Executes `argv` (looked up in `PATH` when it has no slash); returns why
/// it could not.
fn exec(argv: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    format!("{}: {e}", argv[0])
}

/// Waits for the child and ends as it did: with its status, or killed by
/// its signal.
fn wait_for(child: c_int) -> c_int {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waits for this process's own child.
        let rc = unsafe { waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(EINTR) {
            eprintln!("unsandbox-enter: {}", os_error("waiting for the stage"));
            return FAILED;
        }
    }
    let (signal_number, exited) = (status & 0x7f, status & 0x7f == 0);
    if exited {
        return (status >> 8) & 0xff;
    }
    // SAFETY: ends this process with the signal that ended the child.
    unsafe {
        signal(signal_number, SIG_DFL);
        kill(getpid(), signal_number);
    }
    128 + signal_number
}

pub fn run(plan: &Plan) -> Result<c_int, String> {
    if let Some(mark) = &plan.mark {
        std::fs::File::create(mark).map_err(|e| format!("{mark}: {e}"))?;
    }
    let mut fds = [0 as c_int; 2];
    // SAFETY: namespaces, a pipe and a fork; the child only makes system
    // calls and executes (this process has one thread).
    unsafe {
        check(
            unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID),
            "new namespaces",
        )?;
        check(pipe(fds.as_mut_ptr()), "a pipe")?;
        match fork() {
            -1 => Err(os_error("fork")),
            0 => {
                close(fds[1]);
                let why = stage(plan, fds[0]);
                eprintln!("unsandbox-enter: {why}");
                _exit(FAILED)
            }
            child => {
                close(fds[0]);
                let status = wait_for(child);
                close(fds[1]);
                Ok(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words as args;

    #[test]
    fn reads_a_full_command_line() {
        let plan = parse(&args(
            "--mark /run/used --bind /box/tmp /tmp --bind /box/home /home/runner \
             --hostname sandbox --uid 1000 --gid 1000 -- /bin/sh -c x unsandbox --uid",
        ))
        .unwrap();
        assert_eq!(plan.mark.as_deref(), Some("/run/used"));
        assert_eq!(
            plan.binds,
            [
                ("/box/tmp".to_string(), "/tmp".to_string()),
                ("/box/home".to_string(), "/home/runner".to_string())
            ]
        );
        assert_eq!((plan.uid, plan.gid), (1000, 1000));
        assert_eq!(plan.program, args("/bin/sh -c x unsandbox --uid"));
    }

    #[test]
    fn refuses_root_missing_parts_and_unknown_flags() {
        for (line, why) in [
            ("--hostname s --uid 0 --gid 1000 -- sh", "as root"),
            ("--hostname s --uid 1000 --gid 0 -- sh", "as root"),
            ("--hostname s --gid 1000 -- sh", "--uid"),
            ("--hostname s --uid 1000 --gid 1000 --", "no program"),
            ("--uid 1000 --gid 1000 -- sh", "--hostname"),
            ("--hostname s --uid x --gid 1000 -- sh", "not an id"),
            (
                "--hostname s --uid 1000 --gid 1000 --bind /a",
                "needs a value",
            ),
            ("--net --hostname s --uid 1000 --gid 1000 -- sh", "unknown"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn a_read_only_remount_keeps_the_locked_flags() {
        assert_eq!(kept_flags(0), 0);
        assert_eq!(
            kept_flags(2 | 4 | 4096 | 1),
            MS_NOSUID | MS_NODEV | MS_RELATIME
        );
        assert_eq!(kept_flags(8 | 1024), MS_NOEXEC | MS_NOATIME);
    }

    const DROPPED: &str = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n\
        Groups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t1\n";

    #[test]
    fn the_status_check_wants_every_privilege_gone() {
        assert_eq!(dropped(DROPPED, 1000, 1000), Ok(()));
        for (from, to) in [
            ("Uid:\t1000\t1000\t1000\t1000", "Uid:\t1000\t1000\t0\t1000"),
            ("Gid:\t1000\t1000\t1000\t1000", "Gid:\t1000\t1000\t1000\t0"),
            ("Groups:\t", "Groups:\t27"),
            ("CapBnd:\t0000000000000000", "CapBnd:\t0000000000000400"),
            ("CapInh:\t0000000000000000", "CapInh:\t0000000000000001"),
            ("CapAmb:\t0000000000000000", "CapAmb:\t0000000000000001"),
            ("NoNewPrivs:\t1", "NoNewPrivs:\t0"),
        ] {
            let status = DROPPED.replace(from, to);
            assert!(dropped(&status, 1000, 1000).is_err(), "{to}");
        }
        assert!(dropped(&DROPPED.replace("NoNewPrivs:\t1\n", ""), 1000, 1000).is_err());
        assert!(dropped(DROPPED, 1001, 1000).is_err());
    }
}
