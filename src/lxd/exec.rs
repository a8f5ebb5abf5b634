//! Exec over websockets: stdin is streamed in, stdout and stderr are counted
//! live and cut at a cap, and a deadline bounds the whole run. Nothing is
//! recorded on the host's disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::json;
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::client::Lxd;
use super::error::LxdError;
use super::types::Operation;

/// One command to run in an instance.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: u32,
    pub group: u32,
    pub cwd: String,
    /// Bytes written to the command's stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Most bytes kept from stdout and from stderr, each.
    pub output_cap: usize,
    /// Longest the command may run.
    pub deadline: Duration,
}

/// Why the command stopped being watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited on its own.
    Exited,
    /// The deadline passed; it may still be running.
    Timeout,
    /// It wrote more than the cap; it may still be running.
    OutputLimit,
}

/// What an exec produced.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub stopped: Stopped,
    /// Exit code as LXD reports it (128+N when killed by signal N); `None`
    /// when the command did not exit while watched.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub elapsed: Duration,
    /// LXD's error when it failed the operation of a command that did run
    /// and exit: LXD turns exit codes 126 and 127 into "Command not
    /// executable" and "Command not found", whoever exited with them.
    pub lxd_error: Option<String>,
}

pub(super) type Ws = WebSocketStream<UnixStream>;

/// Sees output as it arrives: the file descriptor (1 or 2) and the bytes
/// kept of it (never past the cap), in order.
pub type Tap = dyn Fn(u8, &[u8]) + Send + Sync;

/// Reads one output stream until it closes, keeping at most `cap` bytes in
/// `buf` and showing them to `tap`. Returns `true` as soon as more than
/// `cap` bytes arrived.
async fn drain(mut ws: Ws, cap: usize, buf: &mut Vec<u8>, tap: Option<(&Tap, u8)>) -> bool {
    let show = |bytes: &[u8]| {
        if let (Some((tap, fd)), false) = (tap, bytes.is_empty()) {
            tap(fd, bytes);
        }
    };
    while let Some(msg) = ws.next().await {
        let data = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Text(t)) => t.as_bytes().to_vec().into(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if buf.len() + data.len() > cap {
            let room = cap - buf.len();
            buf.extend_from_slice(&data[..room]);
            show(&data[..room]);
            return true;
        }
        buf.extend_from_slice(&data);
        show(&data);
    }
    false
}

/// Drains stdout and stderr together; ends when both close (`None`) or when
/// one of them exceeds the cap (`Some(fd)`).
async fn drain_both(
    out: Ws,
    err: Ws,
    cap: usize,
    out_buf: &mut Vec<u8>,
    err_buf: &mut Vec<u8>,
    tap: Option<&Tap>,
) -> Option<u8> {
    let a = drain(out, cap, out_buf, tap.map(|t| (t, 1)));
    let b = drain(err, cap, err_buf, tap.map(|t| (t, 2)));
    tokio::pin!(a, b);
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        tokio::select! {
            over = &mut a, if !a_done => { a_done = true; if over { return Some(1) } }
            over = &mut b, if !b_done => { b_done = true; if over { return Some(2) } }
        }
    }
    None
}

async fn feed(mut ws: Ws, stdin: Vec<u8>) {
    for chunk in stdin.chunks(64 * 1024) {
        if ws
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = ws.close(None).await;
}

fn secret<'a>(fds: &'a serde_json::Value, key: &str) -> Result<&'a str, LxdError> {
    fds.get(key).and_then(|v| v.as_str()).ok_or_else(|| {
        LxdError::Decode(format!(
            "exec operation has no websocket secret for fd {key}"
        ))
    })
}

impl Lxd {
    /// Runs a command in a running instance and watches it until it exits,
    /// its deadline passes or its output exceeds the cap. In the last two
    /// cases the command may still be running: the caller stops the instance.
    pub async fn exec(&self, instance: &str, spec: ExecSpec) -> Result<ExecOutcome, LxdError> {
        self.exec_tapped(instance, spec, None).await
    }

    /// `exec`, showing the output to `tap` as it arrives.
    pub async fn exec_tapped(
        &self,
        instance: &str,
        spec: ExecSpec,
        tap: Option<&Tap>,
    ) -> Result<ExecOutcome, LxdError> {
        let start = Instant::now();
        let (op, [control, stdin, stdout, stderr]) = self.open_exec(instance, &spec).await?;
        let connected = start.elapsed();
        let feeder = tokio::spawn(feed(stdin, spec.stdin));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let watched = tokio::time::timeout(
            spec.deadline,
            drain_both(stdout, stderr, spec.output_cap, &mut out, &mut err, tap),
        )
        .await;
        feeder.abort();
        let mut outcome = ExecOutcome {
            stopped: Stopped::Exited,
            exit_code: None,
            stdout: out,
            stderr: err,
            stdout_truncated: false,
            stderr_truncated: false,
            elapsed: Duration::ZERO,
            lxd_error: None,
        };
        match watched {
            Err(_) => outcome.stopped = Stopped::Timeout,
            Ok(Some(fd)) => {
                outcome.stopped = Stopped::OutputLimit;
                outcome.stdout_truncated = fd == 1;
                outcome.stderr_truncated = fd == 2;
            }
            Ok(None) => {
                let left = spec
                    .deadline
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_secs(1));
                match self.exit_code(&op.id, left).await {
                    Ok((code, error)) => {
                        outcome.exit_code = code;
                        outcome.lxd_error = error;
                    }
                    // Output closed but the command lives on past its deadline.
                    Err(LxdError::Timeout(_)) => outcome.stopped = Stopped::Timeout,
                    Err(e) => return Err(e),
                }
            }
        }
        drop(control);
        outcome.elapsed = start.elapsed();
        tracing::debug!(instance, ?connected, elapsed = ?outcome.elapsed, stopped = ?outcome.stopped, "exec finished");
        Ok(outcome)
    }

    /// Starts `spec`'s command (its argv, environment, user, group and
    /// folder; not its stdin) and connects the operation's websockets:
    /// control, stdin, stdout and stderr.
    pub(super) async fn open_exec(
        &self,
        instance: &str,
        spec: &ExecSpec,
    ) -> Result<(Operation, [Ws; 4]), LxdError> {
        let body = json!({
            "command": spec.command,
            "environment": spec.env,
            "wait-for-websocket": true,
            "interactive": false,
            "record-output": false,
            "user": spec.user,
            "group": spec.group,
            "cwd": spec.cwd,
        });
        let op = self
            .start_operation(
                Method::POST,
                &format!("/1.0/instances/{instance}/exec"),
                Some(body),
            )
            .await?;
        let fds = op
            .metadata
            .as_ref()
            .and_then(|m| m.get("fds"))
            .ok_or_else(|| LxdError::Decode("exec operation has no fds".into()))?;
        let (control, stdin, stdout, stderr) = futures::try_join!(
            self.websocket(&op.id, secret(fds, "control")?),
            self.websocket(&op.id, secret(fds, "0")?),
            self.websocket(&op.id, secret(fds, "1")?),
            self.websocket(&op.id, secret(fds, "2")?),
        )?;
        Ok((op, [control, stdin, stdout, stderr]))
    }

    /// Waits up to `timeout` for an exec operation to end; its exit code,
    /// with LXD's error when LXD failed the operation although the command
    /// exited (126 and 127). A failure without an exit code is an error.
    pub(super) async fn exit_code(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<(Option<i32>, Option<String>), LxdError> {
        let path = format!(
            "/1.0/operations/{id}/wait?timeout={}",
            timeout.as_secs().max(1)
        );
        let op: Operation = tokio::time::timeout(
            timeout + Duration::from_secs(5),
            self.sync(Method::GET, &path, None),
        )
        .await
        .map_err(|_| LxdError::Timeout(timeout))??;
        if op.running() {
            return Err(LxdError::Timeout(timeout));
        }
        let code = op
            .metadata
            .as_ref()
            .and_then(|m| m.get("return"))
            .and_then(|r| r.as_i64())
            .map(|c| c as i32);
        match (op.failed(), code) {
            (false, code) => Ok((code, None)),
            (true, Some(code)) => Ok((Some(code), Some(op.err))),
            (true, None) => Err(LxdError::Operation { message: op.err }),
        }
    }
}
