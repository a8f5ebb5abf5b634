//! A long-lived exec: a command started once in an instance that then
//! answers requests one after another over the same stdin, stdout and
//! stderr. The caller writes a request to stdin; the command answers on both
//! output streams, each answer ending with a terminator the caller chose for
//! that request, a decimal status and a closing byte. A request thus costs
//! no LXD operation, only bytes on websockets that are already open.
//!
//! The instance's attachment lives in the client (`Lxd::attachment`) and is
//! dropped when the instance is stopped or destroyed through it.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::client::Lxd;
use super::error::LxdError;
use super::exec::{ExecOutcome, ExecSpec, Stopped, Tap, Ws};

/// One instance's attachment slot: empty until a command is attached, and
/// emptied again by whoever finds it broken.
pub type Slot = std::sync::Arc<tokio::sync::Mutex<Option<Attached>>>;

/// A command attached to an instance, between requests.
pub struct Attached {
    op: String,
    _control: Ws,
    stdin: Ws,
    out: Stream,
    err: Stream,
    /// Whether it answered every request so far in full: an attachment
    /// that timed out, overflowed or lost its command is not asked again.
    alive: bool,
}

impl Attached {
    /// Whether it may take another request.
    pub fn alive(&self) -> bool {
        self.alive
    }
}

/// One request to an attached command and how its answer ends.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The bytes written to the command's stdin.
    pub request: &'a [u8],
    /// Opens the terminator of the answer on each stream.
    pub end: &'a [u8],
    /// Closes the terminator, after the status.
    pub close: u8,
    /// Most bytes kept of each stream's answer.
    pub cap: usize,
    /// Longest the answer may take.
    pub deadline: Duration,
}

/// One output stream and what arrived on it after the last answer.
struct Stream {
    ws: Ws,
    carry: Vec<u8>,
}

/// How far one answer on one stream has come: what was scanned of `buf`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scan {
    /// The terminator is complete: the answer is `buf[..content]` with
    /// `status`; `buf[after..]` belongs to what follows.
    Done {
        content: usize,
        status: i32,
        after: usize,
    },
    /// No complete terminator yet; `buf[..sure]` is certainly answer.
    Partial { sure: usize },
    /// The terminator is followed by something other than a status.
    Malformed,
}

/// Scans `buf` for `end`, a status of at most 3 digits and `close`, from
/// `from` on (nothing before it can start a terminator). Pure.
fn scan(buf: &[u8], end: &[u8], close: u8, from: usize) -> Scan {
    let at = buf[from.min(buf.len())..]
        .windows(end.len())
        .position(|w| w == end)
        .map(|i| i + from);
    let Some(at) = at else {
        // The longest tail of `buf` that could begin a terminator.
        let held = (1..end.len().min(buf.len() + 1))
            .rev()
            .find(|&n| buf.ends_with(&end[..n]))
            .unwrap_or(0);
        return Scan::Partial {
            sure: buf.len() - held,
        };
    };
    let rest = &buf[at + end.len()..];
    match rest.iter().position(|&b| b == close) {
        None if rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit) => {
            Scan::Partial { sure: at }
        }
        Some(n @ 1..=3) if rest[..n].iter().all(u8::is_ascii_digit) => Scan::Done {
            content: at,
            status: std::str::from_utf8(&rest[..n])
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(-1),
            after: at + end.len() + n + 1,
        },
        _ => Scan::Malformed,
    }
}

/// One stream's answer as it was read.
#[derive(Debug, Default)]
struct Answer {
    kept: Vec<u8>,
    status: Option<i32>,
    /// More than the cap arrived before the terminator.
    over: bool,
}

/// Reads one stream's answer: until its terminator, until more than `cap`
/// bytes of answer arrived, or until the stream closes (`status` `None`).
async fn read_answer(
    stream: &mut Stream,
    end: &[u8],
    close: u8,
    cap: usize,
    tap: Option<(&Tap, u8)>,
) -> Result<Answer, LxdError> {
    let mut buf = std::mem::take(&mut stream.carry);
    let (mut from, mut shown) = (0, 0);
    loop {
        let (sure, done) = match scan(&buf, end, close, from) {
            Scan::Done {
                content,
                status,
                after,
            } => (content, Some((status, after))),
            Scan::Partial { sure } => (sure, None),
            Scan::Malformed => {
                return Err(LxdError::Decode(
                    "an attached command's answer ended with a malformed terminator".into(),
                ));
            }
        };
        from = sure;
        let over = sure > cap;
        let visible = sure.min(cap);
        if let (Some((tap, fd)), true) = (tap, visible > shown) {
            tap(fd, &buf[shown..visible]);
        }
        shown = visible;
        if over {
            buf.truncate(cap);
            return Ok(Answer {
                kept: buf,
                status: None,
                over: true,
            });
        }
        if let Some((status, after)) = done {
            stream.carry = buf.split_off(after);
            buf.truncate(sure);
            return Ok(Answer {
                kept: buf,
                status: Some(status),
                over: false,
            });
        }
        match stream.ws.next().await {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                // No terminator can come: every byte is answer.
                let over = buf.len() > cap;
                buf.truncate(cap);
                if let (Some((tap, fd)), true) = (tap, buf.len() > shown) {
                    tap(fd, &buf[shown..]);
                }
                return Ok(Answer {
                    kept: buf,
                    status: None,
                    over,
                });
            }
            Some(Ok(_)) => {}
        }
    }
}

impl Lxd {
    /// Starts `spec`'s command in `instance` for requests (`ask`); its
    /// stdin, output cap and deadline are not used.
    pub async fn attach(&self, instance: &str, spec: &ExecSpec) -> Result<Attached, LxdError> {
        let (op, [control, stdin, stdout, stderr]) = self.open_exec(instance, spec).await?;
        Ok(Attached {
            op: op.id,
            _control: control,
            stdin,
            out: Stream {
                ws: stdout,
                carry: Vec::new(),
            },
            err: Stream {
                ws: stderr,
                carry: Vec::new(),
            },
            alive: true,
        })
    }

    /// Writes `ask.request` to an attached command and reads its answer
    /// from stdout and stderr, each ending with `ask.end`, the status and
    /// `ask.close`, and both with the same status, which is the outcome's
    /// exit code. Up to `ask.cap` bytes of each are kept and shown to `tap`;
    /// more stops the watch (`OutputLimit`), as does `ask.deadline`
    /// (`Timeout`). When the command ends instead, the exit code is its own
    /// and the streams hold what arrived. Anything but a full answer leaves
    /// the attachment dead (`Attached::alive`).
    pub async fn ask(
        &self,
        attached: &mut Attached,
        ask: Ask<'_>,
        tap: Option<&Tap>,
    ) -> Result<ExecOutcome, LxdError> {
        let Ask {
            request,
            end,
            close,
            cap,
            deadline,
        } = ask;
        let start = Instant::now();
        attached.alive = false;
        let asked = async {
            for chunk in request.chunks(64 * 1024) {
                attached
                    .stdin
                    .send(Message::Binary(chunk.to_vec().into()))
                    .await
                    .map_err(|e| LxdError::Stream(e.to_string()))?;
            }
            let (out, err) = futures::try_join!(
                read_answer(&mut attached.out, end, close, cap, tap.map(|t| (t, 1))),
                read_answer(&mut attached.err, end, close, cap, tap.map(|t| (t, 2))),
            )?;
            Ok::<_, LxdError>((out, err))
        };
        let mut outcome = ExecOutcome {
            stopped: Stopped::Exited,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            elapsed: Duration::ZERO,
            lxd_error: None,
        };
        match tokio::time::timeout(deadline, asked).await {
            Err(_) => outcome.stopped = Stopped::Timeout,
            Ok(Err(e)) => return Err(e),
            Ok(Ok((out, err))) => {
                outcome.stdout_truncated = out.over;
                outcome.stderr_truncated = err.over;
                match (out.status, err.status) {
                    _ if out.over || err.over => outcome.stopped = Stopped::OutputLimit,
                    (Some(a), Some(b)) if a == b => {
                        outcome.exit_code = Some(a);
                        attached.alive = true;
                    }
                    (Some(_), Some(_)) => {
                        return Err(LxdError::Decode(
                            "an attached command answered with two statuses".into(),
                        ));
                    }
                    // The command ended (or LXD let it go): its own exit.
                    _ => {
                        let left = deadline.saturating_sub(start.elapsed());
                        match self
                            .exit_code(&attached.op, left.max(Duration::from_secs(1)))
                            .await
                        {
                            Ok((code, error)) => {
                                outcome.exit_code = code;
                                outcome.lxd_error = error;
                            }
                            Err(LxdError::Timeout(_)) => outcome.stopped = Stopped::Timeout,
                            Err(e) => return Err(e),
                        }
                    }
                }
                outcome.stdout = out.kept;
                outcome.stderr = err.kept;
            }
        }
        outcome.elapsed = start.elapsed();
        Ok(outcome)
    }

    /// The attachment slot of `instance`, created empty on first use.
    pub fn attachment(&self, instance: &str) -> Slot {
        self.attached
            .lock()
            .expect("the attachment map is never poisoned")
            .entry(instance.to_string())
            .or_default()
            .clone()
    }

    /// Forgets the attachment of `instance` (its websockets close once
    /// nobody holds it).
    pub fn detach(&self, instance: &str) {
        self.attached
            .lock()
            .expect("the attachment map is never poisoned")
            .remove(instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: &[u8] = b"\x1edone:abc:";

    #[test]
    fn an_answer_ends_at_its_terminator_and_keeps_what_follows() {
        let buf = b"hello\x1edone:abc:0\x1erest";
        assert_eq!(
            scan(buf, END, 0x1e, 0),
            Scan::Done {
                content: 5,
                status: 0,
                after: 5 + END.len() + 2
            }
        );
        assert_eq!(
            scan(b"\x1edone:abc:137\x1e", END, 0x1e, 0),
            Scan::Done {
                content: 0,
                status: 137,
                after: END.len() + 4
            }
        );
    }

    #[test]
    fn a_tail_that_may_begin_the_terminator_is_held_back() {
        assert_eq!(scan(b"hello", END, 0x1e, 0), Scan::Partial { sure: 5 });
        assert_eq!(
            scan(b"hello\x1edo", END, 0x1e, 0),
            Scan::Partial { sure: 5 }
        );
        assert_eq!(
            scan(b"hello\x1edone:abc:12", END, 0x1e, 0),
            Scan::Partial { sure: 5 }
        );
        // A terminator with another nonce is answer like any other bytes.
        assert_eq!(
            scan(b"\x1edone:xyz:0\x1e", END, 0x1e, 0),
            Scan::Partial { sure: 11 }
        );
    }

    #[test]
    fn an_instance_has_one_slot_until_it_is_detached() {
        let lxd = Lxd::new("/nonexistent", "p");
        let a = lxd.attachment("c1");
        assert!(std::sync::Arc::ptr_eq(&a, &lxd.attachment("c1")));
        assert!(!std::sync::Arc::ptr_eq(&a, &lxd.attachment("c2")));
        lxd.detach("c1");
        assert!(!std::sync::Arc::ptr_eq(&a, &lxd.attachment("c1")));
    }

    #[test]
    fn a_terminator_without_a_status_is_malformed() {
        assert_eq!(scan(b"\x1edone:abc:x\x1e", END, 0x1e, 0), Scan::Malformed);
        assert_eq!(scan(b"\x1edone:abc:1234", END, 0x1e, 0), Scan::Malformed);
        assert_eq!(scan(b"\x1edone:abc:\x1e", END, 0x1e, 0), Scan::Malformed);
    }

    #[test]
    fn scanning_from_where_the_last_scan_was_sure_finds_the_same() {
        let buf = b"aaaa\x1edone:abc:7\x1e";
        for from in 0..=4 {
            assert!(matches!(
                scan(buf, END, 0x1e, from),
                Scan::Done {
                    content: 4,
                    status: 7,
                    ..
                }
            ));
        }
    }
}
