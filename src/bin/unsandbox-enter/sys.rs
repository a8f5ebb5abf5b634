//! The C library's calls and the kernel's constants the helper uses
//! (Linux, x86_64 and aarch64), declared here rather than taken from a
//! crate: `build.rs` builds the helper with `rustc` alone.

use std::ffi::{CString, c_char, c_int, c_long, c_uint, c_ulong, c_void};

pub const CLONE_NEWNS: c_int = 0x0002_0000;
pub const CLONE_NEWUTS: c_int = 0x0400_0000;
pub const CLONE_NEWIPC: c_int = 0x0800_0000;
pub const CLONE_NEWPID: c_int = 0x2000_0000;
pub const CLONE_NEWNET: c_int = 0x4000_0000;

pub const MS_RDONLY: c_ulong = 1;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
pub const MS_REMOUNT: c_ulong = 32;
pub const MS_NOATIME: c_ulong = 1024;
pub const MS_NODIRATIME: c_ulong = 2048;
pub const MS_BIND: c_ulong = 4096;
pub const MS_REC: c_ulong = 16384;
pub const MS_PRIVATE: c_ulong = 1 << 18;
pub const MS_RELATIME: c_ulong = 1 << 21;

/// `statvfs` flags, and the mount flag each one is.
pub const KEPT_FLAGS: [(c_ulong, c_ulong); 5] = [
    (2, MS_NOSUID),
    (4, MS_NODEV),
    (8, MS_NOEXEC),
    (1024, MS_NOATIME),
    (2048, MS_NODIRATIME),
];
pub const ST_RELATIME: c_ulong = 4096;

pub const PR_SET_PDEATHSIG: c_int = 1;
pub const PR_CAPBSET_DROP: c_int = 24;
pub const PR_SET_NO_NEW_PRIVS: c_int = 38;
pub const PR_CAP_AMBIENT: c_int = 47;
pub const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

pub const SIGKILL: c_int = 9;
pub const SIG_DFL: usize = 0;
pub const POLLHUP: i16 = 0x010;
pub const EINTR: c_int = 4;

#[cfg(target_arch = "x86_64")]
pub const SYS_CAPGET: c_long = 125;
#[cfg(target_arch = "x86_64")]
pub const SYS_CAPSET: c_long = 126;
#[cfg(target_arch = "aarch64")]
pub const SYS_CAPGET: c_long = 90;
#[cfg(target_arch = "aarch64")]
pub const SYS_CAPSET: c_long = 91;
pub const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
pub struct CapHeader {
    pub version: u32,
    pub pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

#[repr(C)]
pub struct PollFd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
pub struct StatVfs {
    pub f_bsize: c_ulong,
    pub f_frsize: c_ulong,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_favail: u64,
    pub f_fsid: c_ulong,
    pub f_flag: c_ulong,
    pub f_namemax: c_ulong,
    pub f_spare: [c_int; 6],
}

unsafe extern "C" {
    pub fn unshare(flags: c_int) -> c_int;
    pub fn fork() -> c_int;
    pub fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    pub fn getpid() -> c_int;
    pub fn kill(pid: c_int, sig: c_int) -> c_int;
    pub fn signal(sig: c_int, handler: usize) -> usize;
    pub fn pipe(fds: *mut c_int) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn poll(fds: *mut PollFd, n: c_ulong, timeout: c_int) -> c_int;
    pub fn prctl(option: c_int, a: c_ulong, b: c_ulong, c: c_ulong, d: c_ulong) -> c_int;
    pub fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    pub fn statvfs(path: *const c_char, buf: *mut StatVfs) -> c_int;
    pub fn sethostname(name: *const c_char, len: usize) -> c_int;
    pub fn setgroups(size: usize, list: *const c_uint) -> c_int;
    pub fn setresgid(r: c_uint, e: c_uint, s: c_uint) -> c_int;
    pub fn setresuid(r: c_uint, e: c_uint, s: c_uint) -> c_int;
    pub fn syscall(number: c_long, ...) -> c_long;
    pub fn _exit(status: c_int) -> !;
    pub fn umount2(target: *const c_char, flags: c_int) -> c_int;
}

/// `text` as a C string.
pub fn c(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{text:?} holds a NUL byte"))
}

/// `what` and the last system call's error.
pub fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A system call's return value as a result.
pub fn check(rc: c_int, what: &str) -> Result<(), String> {
    if rc == 0 { Ok(()) } else { Err(os_error(what)) }
}
