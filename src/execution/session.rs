//! A recycled container's session: one root shell (the *supervisor*)
//! attached to the container for its whole life, which runs each stage and
//! each recycle that LXD would otherwise start as an exec of its own. An
//! LXD exec costs the daemon a fork of its own binary, four websockets and
//! an operation; a stage in the session costs a few bytes on websockets
//! already open.
//!
//! A request is a header line (`nonce`, the length of the command text, the
//! length of stdin), the command text and stdin. The supervisor reads the
//! text, runs it in a subshell with exactly the stdin bytes on a pipe
//! (never the session's own stdin, where later requests arrive), and ends
//! both output streams with
//! `\x1eunsandbox:done:<nonce>:<status>\x1e`. The nonce is 128 random bits
//! per request, read by the supervisor's `read` builtin: it is in no argv
//! and no file the runner user can read, so code in the stage cannot end
//! its stage's output early or forge what follows. The command text is the
//! exec's own (`ExecSpec`): its folder, its environment and its argv, each
//! word quoted, so the stage runs what the exec would.
//!
//! An answer that is not complete (a timeout, too much output, the session
//! gone) leaves the session dead: it is dropped, and the container, whose
//! execution had an anomaly, is destroyed by its lease.

use std::fmt::Write as _;

use crate::lxd::{Ask, ExecOutcome, ExecSpec, Lxd, LxdError, Tap};

use super::script::{END_CLOSE, sh_quote};

/// Opens every terminator; the nonce, `:`, the status and `END_CLOSE` follow.
const DONE: &str = "\x1eunsandbox:done:";

/// The PATH LXD gives an exec that sets none.
const LXD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest the supervisor may take to start.
const ATTACH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest a recycle may take.
const RECYCLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The exec that readies a used container for its next execution
/// (`sandbox::recycle_command`), as root.
fn recycle_spec() -> ExecSpec {
    ExecSpec {
        command: super::sandbox::recycle_command(),
        env: Default::default(),
        user: 0,
        group: 0,
        cwd: "/".into(),
        stdin: Vec::new(),
        output_cap: 4096,
        deadline: RECYCLE_DEADLINE,
    }
}

/// A request's command text: sent with it, or one the supervisor was
/// started with, named (nothing to send, and no process to read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text<'a> {
    Sent(&'a str),
    Known(&'static str),
}

/// The name the recycle's text is known by.
const RECYCLE: &str = "recycle";

/// The command texts the supervisor is started with, by name.
fn known() -> Vec<(&'static str, String)> {
    let recycle = command_text(&recycle_spec()).expect("the recycle is an exec a session can run");
    vec![(RECYCLE, recycle)]
}

/// The supervisor: reads requests until its stdin closes. A command text
/// sent with the request is read into the shell (nothing is written to the
/// container's disk); a known one is taken from the variable it was started
/// with. Stdin reaches the stage through `head`, which reads exactly the
/// request's bytes, and whatever the stage leaves unread is drained after
/// it so that the next request starts where it should. A stage's stdin is
/// always a pipe, as an exec's is; a known text without stdin (the
/// recycle, the supervisor's own) runs on `/dev/null`. Exits 91 when a
/// request cannot be read.
fn supervisor() -> String {
    let mut s = String::new();
    let mut names = String::new();
    for (name, text) in known() {
        let _ = writeln!(s, "u_{name}={}", sh_quote(&format!("{text}.")));
        let _ = writeln!(names, "{name}) cmd=$u_{name} ;;");
    }
    let _ = write!(
        s,
        "while IFS=' ' read -r nonce clen slen name; do\n\
         case $name in\n\
         -) cmd=$(head -c \"$clen\"; echo .) || exit 91 ;;\n\
         {names}\
         *) exit 91 ;;\n\
         esac\n\
         if [ \"$name\" != - ] && [ \"$slen\" = 0 ]; then ( eval \"${{cmd%.}}\" ) </dev/null\n\
         else head -c \"$slen\" | {{ ( eval \"${{cmd%.}}\" ); rc=$?; cat >/dev/null; exit \"$rc\"; }}\n\
         fi\n\
         rc=$?\n\
         printf '\\036unsandbox:done:%s:%s\\036' \"$nonce\" \"$rc\"\n\
         printf '\\036unsandbox:done:%s:%s\\036' \"$nonce\" \"$rc\" >&2\n\
         done\n"
    );
    s
}

/// The exec that starts the supervisor, as root.
fn supervisor_spec() -> ExecSpec {
    ExecSpec {
        command: vec!["/bin/sh".into(), "-c".into(), supervisor()],
        env: [("PATH".to_string(), LXD_PATH.to_string())].into(),
        user: 0,
        group: 0,
        cwd: "/".into(),
        stdin: Vec::new(),
        output_cap: 0,
        deadline: ATTACH_DEADLINE,
    }
}

/// The command text that runs `spec` as its exec would: in its folder,
/// with its environment over the one LXD gave the supervisor (which is
/// what LXD does for an exec: its defaults, the instance's `environment.*`,
/// then the exec's own), and its argv. The supervisor's own variables are
/// not exported. Fails on what an exec cannot carry either: a NUL byte, a
/// user other than root (the supervisor is root; the stage drops
/// privileges itself), an environment name a shell cannot export.
fn command_text(spec: &ExecSpec) -> Result<String, LxdError> {
    let refuse = |why: &str| {
        Err(LxdError::Decode(format!(
            "a session cannot run this: {why}"
        )))
    };
    if spec.user != 0 || spec.group != 0 {
        return refuse("a stage as another user than root");
    }
    let words = spec
        .command
        .iter()
        .chain(spec.env.iter().flat_map(|(k, v)| [k, v]))
        .chain([&spec.cwd]);
    if words.into_iter().any(|w| w.contains('\0')) {
        return refuse("a NUL byte");
    }
    if spec.command.is_empty() {
        return refuse("an empty argv");
    }
    if spec.env.keys().any(|k| !crate::crd::validate::env_name(k)) {
        return refuse("an environment name that is not one");
    }
    let mut text = format!("cd {} || exit 125\n", sh_quote(&spec.cwd));
    if !spec.env.is_empty() {
        text.push_str("export");
        for (k, v) in &spec.env {
            let _ = write!(text, " {}", sh_quote(&format!("{k}={v}")));
        }
        text.push('\n');
    }
    text.push_str("exec");
    for word in &spec.command {
        let _ = write!(text, " {}", sh_quote(word));
    }
    text.push('\n');
    Ok(text)
}

/// The bytes of one request: the header line (`-` for a text sent with
/// it, else the known text's name), the text when sent, and stdin.
fn request(nonce: &str, text: Text, stdin: &[u8]) -> Vec<u8> {
    let (sent, name) = match text {
        Text::Sent(t) => (t, "-"),
        Text::Known(name) => ("", name),
    };
    let mut r = format!("{nonce} {} {} {name}\n", sent.len(), stdin.len()).into_bytes();
    r.extend_from_slice(sent.as_bytes());
    r.extend_from_slice(stdin);
    r
}

/// The terminator of the answer to the request with `nonce`, without its
/// status and `END_CLOSE`.
fn terminator(nonce: &str) -> Vec<u8> {
    format!("{DONE}{nonce}:").into_bytes()
}

/// Runs `spec` in `container`'s session when `in_session` (see `exec`),
/// else as an LXD exec of its own: the two give the same outcome.
pub async fn exec_or_session(
    lxd: &Lxd,
    container: &str,
    spec: ExecSpec,
    tap: Option<&Tap>,
    in_session: bool,
) -> Result<ExecOutcome, LxdError> {
    if in_session {
        exec(lxd, container, spec, tap).await
    } else {
        lxd.exec_tapped(container, spec, tap).await
    }
}

/// Runs `spec` in `container`'s session, opening the session first when
/// it has none; the outcome is what `Lxd::exec_tapped` would give. A session
/// that did not answer in full is closed.
pub async fn exec(
    lxd: &Lxd,
    container: &str,
    spec: ExecSpec,
    tap: Option<&Tap>,
) -> Result<ExecOutcome, LxdError> {
    let text = command_text(&spec)?;
    ask(lxd, container, Text::Sent(&text), &spec, tap).await
}

/// Readies a used container for its next execution in its session: the
/// last execution checked and its box unmounted, a fresh box built
/// (`sandbox::recycle_command`, a text the supervisor knows).
pub async fn recycle(lxd: &Lxd, container: &str) -> Result<ExecOutcome, LxdError> {
    ask(lxd, container, Text::Known(RECYCLE), &recycle_spec(), None).await
}

/// Sends one request to `container`'s supervisor (started first when it
/// has none) and reads its answer; a session that did not answer in full is
/// closed.
async fn ask(
    lxd: &Lxd,
    container: &str,
    text: Text<'_>,
    spec: &ExecSpec,
    tap: Option<&Tap>,
) -> Result<ExecOutcome, LxdError> {
    let slot = lxd.attachment(container);
    let mut held = slot.lock().await;
    let attached = match &mut *held {
        Some(a) if a.alive() => a,
        _ => held.insert(lxd.attach(container, &supervisor_spec()).await?),
    };
    let nonce = format!("{:032x}", rand::random::<u128>());
    let (bytes, end) = (request(&nonce, text, &spec.stdin), terminator(&nonce));
    let ask = Ask {
        request: &bytes,
        end: &end,
        close: END_CLOSE,
        cap: spec.output_cap,
        deadline: spec.deadline,
    };
    let result = lxd.ask(attached, ask, tap).await;
    // Only a full answer (which `ask` marks) keeps the session.
    if !attached.alive() {
        *held = None;
        drop(held);
        lxd.detach(container);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str]) -> ExecSpec {
        ExecSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: [("HOME".to_string(), "/home/runner".to_string())].into(),
            user: 0,
            group: 0,
            cwd: "/home/runner".into(),
            stdin: b"in".to_vec(),
            output_cap: 10,
            deadline: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn a_stage_runs_its_argv_in_its_folder_with_its_environment() {
        let t = command_text(&spec(&[
            "/bin/sh",
            "-c",
            "echo \"$1\"",
            "x",
            "it's $(rm -rf /)",
        ]))
        .unwrap();
        assert_eq!(
            t,
            "cd '/home/runner' || exit 125\nexport 'HOME=/home/runner'\nexec '/bin/sh' '-c' 'echo \"$1\"' 'x' 'it'\\''s $(rm -rf /)'\n"
        );
    }

    #[test]
    fn what_an_exec_cannot_carry_is_refused() {
        let mut s = spec(&["/bin/sh", "-c", "a\0b"]);
        assert!(command_text(&s).is_err());
        s = spec(&["true"]);
        s.user = 1000;
        assert!(command_text(&s).is_err());
        s = spec(&["true"]);
        s.env.insert("A=B".into(), "x".into());
        assert!(command_text(&s).is_err());
        assert!(command_text(&spec(&[])).is_err());
    }

    #[test]
    fn a_request_is_a_header_line_the_text_and_stdin() {
        assert_eq!(
            request("n1", Text::Sent("abc\n"), b"xy"),
            b"n1 4 2 -\nabc\nxy"
        );
        assert_eq!(
            request("n2", Text::Known("recycle"), b""),
            b"n2 0 0 recycle\n"
        );
        assert_eq!(terminator("n1"), b"\x1eunsandbox:done:n1:");
    }

    #[test]
    fn the_supervisor_never_gives_a_stage_its_own_stdin_and_ends_both_streams() {
        let s = supervisor();
        assert!(s.contains(
            "head -c \"$slen\" | { ( eval \"${cmd%.}\" ); rc=$?; cat >/dev/null; exit \"$rc\"; }"
        ));
        assert!(s.contains(
            "if [ \"$name\" != - ] && [ \"$slen\" = 0 ]; then ( eval \"${cmd%.}\" ) </dev/null\n"
        ));
        assert_eq!(s.matches("unsandbox:done:%s:%s").count(), 2);
        assert!(DONE.as_bytes().starts_with(&[END_CLOSE]));
    }

    #[test]
    fn the_supervisor_knows_the_recycle_and_nothing_else_by_name() {
        let s = supervisor();
        let recycle = command_text(&recycle_spec()).unwrap();
        assert!(s.starts_with(&format!("u_recycle={}\n", sh_quote(&format!("{recycle}.")))));
        assert!(s.contains("-) cmd=$(head -c \"$clen\"; echo .) || exit 91 ;;\nrecycle) cmd=$u_recycle ;;\n*) exit 91 ;;\n"));
        assert!(recycle.contains("' 'recycle' '--uid'"), "{recycle}");
    }
}
