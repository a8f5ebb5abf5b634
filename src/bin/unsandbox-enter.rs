//! `unsandbox-enter`: starts one stage of an execution in a recycled
//! container's sandbox, as root inside the container, in one process start
//! rather than the eight of `unshare`, `sh`, `mount`, `hostname` and
//! `setpriv`.
//!
//! ```text
//! unsandbox-enter [--mark FILE] [--bind FROM TO]... --hostname NAME
//!                 --uid UID --gid GID -- PROGRAM [ARG]...
//! ```
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
//!
//! It uses nothing but the C library, so that the agent can build it as a
//! static executable that runs in any container of the host's architecture
//! (the agent carries it and installs it in each recycled container). Any
//! failure before PROGRAM starts exits 125 with a reason on stderr.

use std::ffi::{CString, c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

const CLONE_NEWNS: c_int = 0x0002_0000;
const CLONE_NEWUTS: c_int = 0x0400_0000;
const CLONE_NEWIPC: c_int = 0x0800_0000;
const CLONE_NEWPID: c_int = 0x2000_0000;
const CLONE_NEWNET: c_int = 0x4000_0000;

const MS_RDONLY: c_ulong = 1;
const MS_NOSUID: c_ulong = 2;
const MS_NODEV: c_ulong = 4;
const MS_NOEXEC: c_ulong = 8;
const MS_REMOUNT: c_ulong = 32;
const MS_NOATIME: c_ulong = 1024;
const MS_NODIRATIME: c_ulong = 2048;
const MS_BIND: c_ulong = 4096;
const MS_REC: c_ulong = 16384;
const MS_PRIVATE: c_ulong = 1 << 18;
const MS_RELATIME: c_ulong = 1 << 21;

/// `statvfs` flags, and the mount flag each one is.
const KEPT_FLAGS: [(c_ulong, c_ulong); 5] = [
    (2, MS_NOSUID),
    (4, MS_NODEV),
    (8, MS_NOEXEC),
    (1024, MS_NOATIME),
    (2048, MS_NODIRATIME),
];
const ST_RELATIME: c_ulong = 4096;

const PR_SET_PDEATHSIG: c_int = 1;
const PR_CAPBSET_DROP: c_int = 24;
const PR_SET_NO_NEW_PRIVS: c_int = 38;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

const SIGKILL: c_int = 9;
const SIG_DFL: usize = 0;
const POLLHUP: i16 = 0x010;
const EINTR: c_int = 4;

#[cfg(target_arch = "x86_64")]
const SYS_CAPGET: c_long = 125;
#[cfg(target_arch = "x86_64")]
const SYS_CAPSET: c_long = 126;
#[cfg(target_arch = "aarch64")]
const SYS_CAPGET: c_long = 90;
#[cfg(target_arch = "aarch64")]
const SYS_CAPSET: c_long = 91;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The exit status of a failure before the program starts.
const FAILED: c_int = 125;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct StatVfs {
    f_bsize: c_ulong,
    f_frsize: c_ulong,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    f_files: u64,
    f_ffree: u64,
    f_favail: u64,
    f_fsid: c_ulong,
    f_flag: c_ulong,
    f_namemax: c_ulong,
    f_spare: [c_int; 6],
}

unsafe extern "C" {
    fn unshare(flags: c_int) -> c_int;
    fn fork() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn getpid() -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
    fn pipe(fds: *mut c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn poll(fds: *mut PollFd, n: c_ulong, timeout: c_int) -> c_int;
    fn prctl(option: c_int, a: c_ulong, b: c_ulong, c: c_ulong, d: c_ulong) -> c_int;
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn statvfs(path: *const c_char, buf: *mut StatVfs) -> c_int;
    fn sethostname(name: *const c_char, len: usize) -> c_int;
    fn setgroups(size: usize, list: *const c_uint) -> c_int;
    fn setresgid(r: c_uint, e: c_uint, s: c_uint) -> c_int;
    fn setresuid(r: c_uint, e: c_uint, s: c_uint) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn _exit(status: c_int) -> !;
}

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    mark: Option<String>,
    binds: Vec<(String, String)>,
    hostname: String,
    uid: u32,
    gid: u32,
    program: Vec<String>,
}

/// Reads the command line (without `argv[0]`).
fn parse(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let (mut uid, mut gid) = (None, None);
    let mut it = args.iter();
    let value = |it: &mut std::slice::Iter<String>, flag: &str| {
        it.next()
            .cloned()
            .ok_or_else(|| format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mark" => plan.mark = Some(value(&mut it, arg)?),
            "--bind" => {
                let from = value(&mut it, arg)?;
                plan.binds.push((from, value(&mut it, arg)?));
            }
            "--hostname" => plan.hostname = value(&mut it, arg)?,
            "--uid" => uid = Some(id(&value(&mut it, arg)?)?),
            "--gid" => gid = Some(id(&value(&mut it, arg)?)?),
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

/// A user or group id that is not root's: the stage never runs as root.
fn id(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("the stage cannot run as root".into()),
        Ok(n) if n != u32::MAX => Ok(n),
        _ => Err(format!("{text:?} is not an id")),
    }
}

fn c(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{text:?} holds a NUL byte"))
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn check(rc: c_int, what: &str) -> Result<(), String> {
    if rc == 0 { Ok(()) } else { Err(os_error(what)) }
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

fn run(plan: &Plan) -> Result<c_int, String> {
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

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
        .collect();
    let status = match parse(&args).and_then(|plan| run(&plan)) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("unsandbox-enter: {e}");
            FAILED
        }
    };
    std::process::exit(status);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

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
