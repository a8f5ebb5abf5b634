//! `unsandbox-enter`: the sandbox helper of a recycled container, run as
//! root inside it. It does in one process start what would otherwise take
//! a shell and several programs each time:
//!
//! - `unsandbox-enter [--mark FILE] ... -- PROGRAM [ARG]...` starts one
//!   stage of an execution in its sandbox (`enter`);
//! - `unsandbox-enter recycle ...` checks that the execution left nothing
//!   and builds the next sandbox's box (`recycle`).
//!
//! It uses nothing but the C library, so that `build.rs` can build it as a
//! static executable that runs in any container of the host's architecture,
//! whatever C library its image has; the agent carries it and installs it
//! in each recycled container.

mod enter;
mod recycle;
mod sys;

/// A user or group id that is not root's: the sandbox never runs code as
/// root.
pub(crate) fn id(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("the sandbox never runs code as root".into()),
        Ok(n) if n != u32::MAX => Ok(n),
        _ => Err(format!("{text:?} is not an id")),
    }
}

/// The value after `flag` on the command line.
pub(crate) fn value(it: &mut std::slice::Iter<String>, flag: &str) -> Result<String, String> {
    it.next()
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}

/// The two values after `flag` (`--bind FROM TO`).
pub(crate) fn pair(
    it: &mut std::slice::Iter<String>,
    flag: &str,
) -> Result<(String, String), String> {
    Ok((value(it, flag)?, value(it, flag)?))
}

/// A command line written as one string of words.
#[cfg(test)]
pub(crate) fn words(line: &str) -> Vec<String> {
    line.split(' ').map(String::from).collect()
}

fn main() {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
        .collect();
    let (status, why) = if args.first().is_some_and(|a| a == "recycle") {
        match recycle::parse(&args[1..]) {
            Ok(plan) => recycle::run(&plan),
            Err(e) => (enter::FAILED, Some(e)),
        }
    } else {
        match enter::parse(&args).and_then(|plan| enter::run(&plan)) {
            Ok(status) => (status, None),
            Err(e) => (enter::FAILED, Some(e)),
        }
    };
    if let Some(why) = why {
        eprintln!("unsandbox-enter: {why}");
    }
    std::process::exit(status);
}
