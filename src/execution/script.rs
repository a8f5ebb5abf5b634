//! Builds the LXD execs that run a job. The first exec starts as root only
//! to mark the container as used, then drops to the unprivileged runner user
//! with no capabilities and no way to gain privileges; as that user it writes
//! the files (their bytes come first on stdin) and then runs either the run
//! command (interpreted languages: one exec does everything) or the compile
//! command (compiled languages: the compile stage), and reports its status
//! in the end marks (see `END_MARK`). The run stage of a compiled language
//! is a second exec, again as the runner.

use crate::crd::{LanguageSpec, NetworkTier};

/// Written inside a container (by root, before the code runs) when it is
/// handed to an execution: a container with it is never adopted as warm.
pub const USED_MARKER: &str = "/run/unsandbox/used";
/// Written by the image's init once the container is ready for executions.
pub const READY_MARKER: &str = "/run/unsandbox/ready";
/// Written by the image's init when it could not prepare the container.
pub const ERROR_MARKER: &str = "/run/unsandbox/error";
/// Written (by root) once a `semitrusted` container's loopback is up, at
/// the end of its readiness exec: a container without it (its readiness
/// was cut short) is never adopted as warm.
pub const NETWORK_MARKER: &str = "/run/unsandbox/network";

/// Unprivileged user and group that submitted code runs as.
pub const RUNNER_UID: u32 = 1000;
pub const RUNNER_GID: u32 = 1000;
/// Working directory (a size-capped tmpfs owned by the runner).
pub const WORKDIR: &str = "/home/runner";

/// Everything one execution needs, already validated.
#[derive(Debug, Clone)]
pub struct Job {
    pub language: LanguageSpec,
    /// Source code, written to the language's source file.
    pub code: String,
    /// Extra files (plain names, validated), written beside the source.
    pub files: Vec<(String, Vec<u8>)>,
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    /// A folder under `WORKDIR` to work in, emptied first (smoke tests run
    /// one after another in one container); `None` works in `WORKDIR`.
    pub subdir: Option<String>,
    /// The container's network tier: a `semitrusted` job's environment
    /// points its tools at the egress proxy (see `proxy_env`).
    pub network: NetworkTier,
    /// Whether the container is recycled: every stage then runs in the
    /// container's current sandbox (see `super::sandbox`).
    pub sandboxed: bool,
}

impl Job {
    /// Whether the job has a compile stage.
    pub fn compiled(&self) -> bool {
        self.language.compile.is_some()
    }
}

/// Written by the runner's shell at the end of stdout and of stderr once the
/// stage's command has exited, followed by the command's exit status and
/// `END_CLOSE` (`\x1eunsandbox:end:127\x1e`); the shell then exits 0.
///
/// The status travels in the marks because LXD cannot carry all of them: it
/// fails an exec whose command exits 126 or 127 ("Command not executable",
/// "Command not found"), whoever exited. So an exec that exits 0 with both
/// marks ran the command, which ended with the marked status; any other exit
/// is the runner's own (the shell killed by a signal, or not started).
///
/// The marks also catch lost output: LXD 5.0 can drop the last bytes of an
/// exec's output when the process exits while the host is busy (fixed in
/// LXD 5.14); a stream without its mark lost output, and the verdict says so
/// instead of reporting a shortened stream as complete.
pub const END_MARK: &[u8] = b"\x1eunsandbox:end:";
/// Closes an end mark, after the status.
pub const END_CLOSE: u8 = 0x1e;

/// Open files a process of a stage may hold (`ulimit -n`, soft and hard: the
/// program cannot raise it again).
pub const MAX_OPEN_FILES: u32 = 1024;

/// Ends every process the runner user has left, except the runner's shell:
/// `kill -1` as an unprivileged user signals all of that user's processes
/// but the caller, whatever process group or session they moved to (a
/// setsid daemon included). Twice, for a process forked while the first
/// pass ran.
pub(super) const KILL_REST: &str = "kill -KILL -1; kill -KILL -1";

/// Shell lines that run a stage's command and end the stage: the command
/// runs in a subshell with the stage's stderr while the runner's own stderr
/// is /dev/null (a shell reports a command killed by a signal, "Hangup", on
/// its own stderr: not the program's output). When the command exits,
/// whatever it left running (a background child holding stdout open would
/// keep the exec, and the answer, waiting until the wall limit) is killed;
/// then both streams are marked with the command's status (128+N for a
/// command ended by signal N, as shells report it) and the runner exits 0,
/// so that LXD never judges the command's status. Only a job alone in its
/// container kills what is left: smoke tests (a job with a `subdir`) run in
/// parallel in one container, and their code is the image's own. The kill is guarded by
/// the uid, so the script never does it as anyone else; the uid is read
/// (by builtins, from the shell's own `status`) before the command runs,
/// because a fork bomb leaves no process slot afterwards (`kill` is a
/// builtin and needs none).
fn stage_lines(command: &str, alone: bool) -> String {
    let kill = if alone {
        format!("if [ \"$runner_uid\" = {RUNNER_UID} ]; then {KILL_REST}; fi")
    } else {
        ":".to_string()
    };
    format!(
        "exec 3>&2 2>/dev/null\n\
         ulimit -n {MAX_OPEN_FILES}\n\
         while read -r k v _; do case $k in Uid:) runner_uid=$v; break;; esac; done < /proc/self/status\n\
         ( exec 3>&-\n{command}\n) 2>&3\n\
         rc=$?\n\
         {kill}\n\
         exec 2>&3 3>&-\n\
         printf '\\036unsandbox:end:%s\\036' \"$rc\"\n\
         printf '\\036unsandbox:end:%s\\036' \"$rc\" >&2\n\
         exit 0\n"
    )
}

/// Quotes a string for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The first exec's argv (run as root in `WORKDIR`) and the bytes for its
/// stdin: mark used, write the files, then compile (compiled languages, with
/// stdin closed) or run (interpreted languages, with the job's stdin).
pub fn command(job: &Job) -> (Vec<String>, Vec<u8>) {
    let mut files: Vec<(&str, &[u8])> =
        vec![(job.language.source_file.as_str(), job.code.as_bytes())];
    files.extend(job.files.iter().map(|(n, c)| (n.as_str(), c.as_slice())));
    let mut inner = String::from("umask 077\n");
    if let Some(dir) = &job.subdir {
        let d = sh_quote(dir);
        inner.push_str(&format!(
            "rm -rf -- {d} && mkdir {d} && cd {d} || exit 125\n"
        ));
    }
    let mut stdin = Vec::new();
    for (name, content) in &files {
        inner.push_str(&format!(
            "head -c {} > {} || exit 125\n",
            content.len(),
            sh_quote(name)
        ));
        stdin.extend_from_slice(content);
    }
    let argv = match &job.language.compile {
        Some(compile) => {
            inner.push_str(&stage_lines(
                &format!("/bin/sh -c {} </dev/null", sh_quote(compile)),
                job.subdir.is_none(),
            ));
            as_runner(true, inner, job.sandboxed)
        }
        None => {
            inner.push_str(&stage_lines(
                &format!("{} \"$@\"", job.language.run),
                job.subdir.is_none(),
            ));
            stdin.extend_from_slice(&job.stdin);
            let mut argv = as_runner(true, inner, job.sandboxed);
            argv.extend(job.args.iter().cloned());
            argv
        }
    };
    (argv, stdin)
}

/// The run stage of a compiled language: a second exec, as the runner, in
/// the folder the first one compiled in, with the job's stdin and arguments.
pub fn run_command(job: &Job) -> (Vec<String>, Vec<u8>) {
    let mut inner = String::new();
    if let Some(dir) = &job.subdir {
        inner.push_str(&format!("cd {} || exit 125\n", sh_quote(dir)));
    }
    inner.push_str(&stage_lines(
        &format!("{} \"$@\"", job.language.run),
        job.subdir.is_none(),
    ));
    let mut argv = as_runner(false, inner, job.sandboxed);
    argv.extend(job.args.iter().cloned());
    (argv, job.stdin.clone())
}

/// An argv that marks the container as used (`mark`), then runs `inner` as
/// the runner user with no capabilities and no way to gain privileges (in
/// the container's sandbox when `sandboxed`). Arguments appended to the
/// argv reach `inner` as `"$@"`.
fn as_runner(mark: bool, inner: String, sandboxed: bool) -> Vec<String> {
    if sandboxed {
        let mut argv = super::sandbox::enter(mark);
        argv.extend([
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("cd {WORKDIR} || exit 125\n{inner}"),
            "unsandbox".to_string(),
        ]);
        return argv;
    }
    let first = if mark {
        format!(": > {USED_MARKER} || exit 125")
    } else {
        ":".to_string()
    };
    root_then_runner(&first, inner)
}

/// An argv that runs the root shell lines `first`, then `inner` as the
/// runner user (see `as_runner`).
fn root_then_runner(first: &str, inner: String) -> Vec<String> {
    let outer = format!(
        "{first}\n\
         inner=$1; shift\n\
         exec {} /bin/sh -c \"$inner\" unsandbox \"$@\"",
        drop_to_runner()
    );
    with_inner(outer, inner)
}

/// The command that drops from root to the runner user: no capabilities,
/// no way to gain privileges, no supplementary groups.
fn drop_to_runner() -> String {
    format!(
        "setpriv --reuid={RUNNER_UID} --regid={RUNNER_GID} --clear-groups --no-new-privs \
         --inh-caps=-all --bounding-set=-all --"
    )
}

/// The argv that runs the root script `outer` with `inner` as `$1`.
fn with_inner(outer: String, inner: String) -> Vec<String> {
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        outer,
        "unsandbox-init".to_string(),
        inner,
    ]
}

/// Where a `semitrusted` container reaches the agent's egress proxy: a port
/// on its own loopback that LXD relays to the agent (see `agent::launcher`).
pub const EGRESS_PROXY: &str = "127.0.0.1:3128";

/// Brings up the loopback interface of a `semitrusted` container (its only
/// interface; the egress proxy listens on it), as root: with `ip` where the
/// image has it, else with python3's ioctl (SIOCGIFFLAGS, SIOCSIFFLAGS),
/// else the container fails readiness with a reason (exit 5).
const LOOPBACK_UP: &str = r#"if command -v ip >/dev/null 2>&1; then ip link set lo up || exit 5
elif command -v python3 >/dev/null 2>&1; then python3 -c "
import fcntl, socket, struct
s = socket.socket()
flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', flags | 1))" || exit 5
else echo 'the semitrusted tier needs ip (iproute2) or python3 in the image to bring up loopback' >&2; exit 5
fi"#;

/// The environment that points a `semitrusted` execution's tools at the
/// egress proxy: the variables curl, Python, Go, Ruby, git and most HTTP
/// libraries read (both spellings), plus npm's and pip's own.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = format!("http://{EGRESS_PROXY}");
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
        "PIP_PROXY",
    ]
    .iter()
    .map(|k| (k.to_string(), url.clone()))
    .collect();
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.to_string(), "localhost,127.0.0.1,::1".to_string()));
    }
    env
}

/// The exec that readies a fresh container: as root it waits for the
/// image's init to report ready (exit 3 with the init's error, or 4 after
/// 30 s) and, in a `semitrusted` container, brings up loopback (exit 5 when
/// it cannot); then as the runner it starts the same programs an execution
/// starts (shell, setpriv, head) and each language's warm-up command, so
/// the first execution finds them in memory. It does not mark the
/// container as used.
///
/// A recycled container (`recycles`) also gets the sandbox helper, from
/// the exec's stdin (`ready_stdin`), and its first sandbox, and the
/// warm-up's processes are ended so that none outlives readiness.
pub fn ready_command(languages: &[LanguageSpec], tier: NetworkTier, recycles: bool) -> Vec<String> {
    let wait = format!(
        "i=0\n\
         while [ ! -e {READY_MARKER} ]; do\n\
         if [ -e {ERROR_MARKER} ]; then cat {ERROR_MARKER} >&2; exit 3; fi\n\
         i=$((i+1)); if [ $i -gt 1500 ]; then echo 'init not ready after 30s' >&2; exit 4; fi\n\
         sleep 0.02\n\
         done"
    );
    let wait = match tier {
        NetworkTier::Zerotrust => wait,
        NetworkTier::Semitrusted => {
            format!("{wait}\n{LOOPBACK_UP}\n: > {NETWORK_MARKER} || exit 5")
        }
    };
    let mut inner = String::from("cd /tmp && head -c 0 </dev/null >/dev/null\n");
    for c in languages.iter().filter_map(|l| l.warmup.as_deref()) {
        inner.push_str(&format!("( {c}\n) </dev/null >/dev/null 2>&1\n"));
    }
    if !recycles {
        inner.push_str("exit 0\n");
        return root_then_runner(&wait, inner);
    }
    // A recycled container: the helper installed, the warm-up as the
    // runner (what it started ended with it), then as root its leftovers
    // removed and the first sandbox built.
    inner.push_str(&format!("{KILL_REST}\nexit 0\n"));
    let outer = format!(
        "{wait}\n\
         {}\
         inner=$1; shift\n\
         {} /bin/sh -c \"$inner\" unsandbox </dev/null || exit 6\n\
         {}{}",
        super::sandbox::install_helper(),
        drop_to_runner(),
        super::sandbox::empty_own(),
        super::sandbox::setup()
    );
    with_inner(outer, inner)
}

/// The stdin of `ready_command`'s exec: the sandbox helper for a recycled
/// container, else nothing.
pub fn ready_stdin(recycles: bool) -> Vec<u8> {
    if recycles {
        super::sandbox::HELPER.to_vec()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> LanguageSpec {
        serde_yaml::from_str("{name: python, sourceFile: main.py, run: python3 main.py}").unwrap()
    }

    #[test]
    fn files_come_first_on_stdin_then_user_stdin() {
        let job = Job {
            language: python(),
            code: "print(1)\n".into(),
            files: vec![("data.txt".into(), b"xyz".to_vec())],
            stdin: b"input".to_vec(),
            args: vec!["a b".into(), "$(rm -rf /)".into()],
            subdir: None,
            network: NetworkTier::Zerotrust,
            sandboxed: false,
        };
        let (argv, stdin) = command(&job);
        assert_eq!(stdin, b"print(1)\nxyzinput");
        assert_eq!(argv[0], "/bin/sh");
        assert!(argv[2].contains("--no-new-privs"));
        assert!(argv[4].contains("head -c 9 > 'main.py'"));
        assert!(argv[4].contains("head -c 3 > 'data.txt'"));
        assert!(argv[4].ends_with(&stage_lines("python3 main.py \"$@\"", true)));
        assert!(argv[4].contains(KILL_REST));
        // Arguments travel as argv entries, never through the shell text.
        assert_eq!(&argv[5..], ["a b", "$(rm -rf /)"]);
    }

    #[test]
    fn ready_command_waits_for_init_and_warms_up_without_marking_used() {
        let mut py = python();
        let plain = ready_command(std::slice::from_ref(&py), NetworkTier::Zerotrust, false);
        assert!(plain[2].contains(READY_MARKER) && plain[2].contains(ERROR_MARKER));
        assert!(!plain[4].contains("python3"));
        py.warmup = Some("python3 -c pass".into());
        let argv = ready_command(&[py], NetworkTier::Zerotrust, false);
        assert!(!argv.concat().contains(USED_MARKER));
        assert!(argv[2].contains("--no-new-privs"));
        assert!(argv[4].contains("( python3 -c pass\n) </dev/null"));
    }

    #[test]
    fn a_semitrusted_container_brings_up_loopback_as_root_before_dropping() {
        let zero = ready_command(&[], NetworkTier::Zerotrust, false);
        assert!(!zero[2].contains("ip link set lo up"));
        let semi = ready_command(&[], NetworkTier::Semitrusted, false);
        let root = &semi[2];
        let up = root.find("ip link set lo up").expect("loopback comes up");
        assert!(root.find(READY_MARKER).unwrap() < up, "after init is ready");
        assert!(
            up < root.find("setpriv").unwrap(),
            "as root, before the drop"
        );
        assert!(root.contains("0x8914"), "python3 when the image has no ip");
        assert!(
            root.find(NETWORK_MARKER).unwrap() > root.rfind("0x8914").unwrap(),
            "marked once loopback is up"
        );
    }

    #[test]
    fn proxy_environment_points_every_common_tool_at_the_egress_port() {
        let env: std::collections::BTreeMap<_, _> = proxy_env().into_iter().collect();
        for k in [
            "HTTP_PROXY",
            "https_proxy",
            "npm_config_https_proxy",
            "PIP_PROXY",
        ] {
            assert_eq!(env[k], "http://127.0.0.1:3128", "{k}");
        }
        assert!(env["NO_PROXY"].contains("127.0.0.1"));
    }

    #[test]
    fn compiled_languages_compile_in_the_first_exec_and_run_in_a_second() {
        let c: LanguageSpec = serde_yaml::from_str(
            "{name: c, sourceFile: main.c, compile: 'gcc -o main main.c', run: ./main}",
        )
        .unwrap();
        let job = Job {
            language: c,
            code: "int main(){}".into(),
            files: vec![],
            stdin: b"in".to_vec(),
            args: vec!["x".into()],
            subdir: Some("smoke-1".into()),
            network: NetworkTier::Zerotrust,
            sandboxed: false,
        };
        let (argv, stdin) = command(&job);
        // The compile stage never sees the program's stdin or arguments.
        assert_eq!(stdin, b"int main(){}");
        assert_eq!(argv.len(), 5);
        assert!(argv[2].contains(USED_MARKER));
        assert!(argv[4].contains("rm -rf -- 'smoke-1' && mkdir 'smoke-1' && cd 'smoke-1'"));
        assert!(argv[4].ends_with(&stage_lines(
            "/bin/sh -c 'gcc -o main main.c' </dev/null",
            false
        )));
        // Smoke tests share their container: nothing of a neighbour is killed.
        assert!(!argv[4].contains(KILL_REST));
        let (argv, stdin) = run_command(&job);
        assert_eq!(stdin, b"in");
        assert!(!argv[2].contains(USED_MARKER));
        assert!(argv[2].contains("--no-new-privs"));
        assert!(argv[4].starts_with(
            "cd 'smoke-1' || exit 125\nexec 3>&2 2>/dev/null\nulimit -n 1024\nwhile read -r k v _; do case $k in Uid:) runner_uid=$v; break;; esac; done < /proc/self/status\n( exec 3>&-\n./main \"$@\"\n)"
        ));
        assert_eq!(&argv[5..], ["x"]);
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
