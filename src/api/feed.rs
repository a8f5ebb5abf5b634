//! An execution's events as a client sees them live: a log that streamed
//! answers and job watchers read from any point and follow until it ends
//! (`Feed`), and the translation of the execution's raw progress into those
//! events (`Translator`, pure).
//!
//! Events, each with a JSON `data`:
//! - `started` `{attempt, container}`: a container was taken and the code
//!   starts;
//! - `restart` `{attempt, reason}`: the previous attempt's answer was lost
//!   and the code runs again in a fresh container; output streamed before
//!   it is void;
//! - `stdout` / `stderr` `{stage, data}`: output as it was produced, in the
//!   request's `output_encoding`; the pieces of a stage's stream add up to
//!   exactly the stream of the final result;
//! - `result`: the final answer (`ExecuteResponse`), the same as the
//!   synchronous API's;
//! - `error` `{status, error, message, …}`: the execution could not run.
//!
//! A feed holds at most what the final answer holds twice over (the output
//! pieces and the result), so the caps on output bound it.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::execution::{Outcome, Progress, Stage, Stream, mark_start};

use super::error::ApiError;
use super::types::{ExecuteResponse, OutputEncoding};

/// An event's name, as the contract lists them.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Describes the stream; events are written from `Event`.
pub enum EventName {
    Started,
    Restart,
    Stdout,
    Stderr,
    Result,
    Error,
}

/// One server-sent event of an execution (see `feed`): `event` names it,
/// and `data` is its JSON as text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the stream; events are written from `Event`.
pub struct StreamEvent {
    pub event: EventName,
    /// `started`: `{attempt, container}`; `restart`: `{attempt, reason}`;
    /// `stdout`/`stderr`: `{stage, data}`; `result`: an `ExecuteResponse`;
    /// `error`: `{status, error, message, …}`.
    pub data: String,
}

/// One event of an execution's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `started`, `restart`, `stdout`, `stderr`, `result` or `error`.
    pub name: &'static str,
    /// The event's JSON.
    pub data: String,
}

impl Event {
    fn new(name: &'static str, data: &impl Serialize) -> Self {
        Self {
            name,
            data: serde_json::to_string(data).expect("event data serializes"),
        }
    }

    /// The final answer.
    pub fn result(resp: &ExecuteResponse) -> Self {
        Self::new("result", resp)
    }

    /// An execution that could not run.
    pub fn error(e: &ApiError) -> Self {
        let mut body = serde_json::to_value(e.body()).expect("an error body serializes");
        body["status"] = json!(e.status.as_u16());
        Self::new("error", &body)
    }

    /// Whether this event ends its feed.
    pub fn last(&self) -> bool {
        matches!(self.name, "result" | "error")
    }
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Event>,
    ended: bool,
}

/// The events of one execution so far. Cheap to clone; every clone sees
/// the same log.
#[derive(Debug, Clone)]
pub struct Feed {
    log: watch::Sender<Log>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        Self {
            log: watch::Sender::new(Log::default()),
        }
    }

    /// Adds events; a `result` or `error` ends the feed, and nothing is
    /// added after the end.
    pub fn push(&self, events: impl IntoIterator<Item = Event>) {
        let events: Vec<Event> = events.into_iter().collect();
        if events.is_empty() {
            return;
        }
        self.log.send_modify(|log| {
            for e in events {
                if log.ended {
                    break;
                }
                log.ended = e.last();
                log.events.push(e);
            }
        });
    }

    /// Whether nothing has happened yet.
    pub fn is_empty(&self) -> bool {
        self.log.borrow().events.is_empty()
    }

    /// Whether the feed has ended.
    #[cfg(test)]
    pub fn ended(&self) -> bool {
        self.log.borrow().ended
    }

    /// Event number `index` (from 0), waiting for it; `None` once the feed
    /// ended before it.
    pub async fn get(&self, index: usize) -> Option<Event> {
        let mut rx = self.log.subscribe();
        let log = rx
            .wait_for(|log| log.ended || log.events.len() > index)
            .await
            .ok()?;
        log.events.get(index).cloned()
    }

    /// Every event from the first, following the feed until it ends.
    pub fn events(&self) -> impl futures::Stream<Item = Event> + Send + 'static {
        let feed = self.clone();
        futures::stream::unfold(0usize, move |index| {
            let feed = feed.clone();
            async move { feed.get(index).await.map(|e| (e, index + 1)) }
        })
    }
}

#[derive(Debug, Default)]
struct Part {
    /// Received and not yet sent.
    pending: Vec<u8>,
    /// Bytes sent so far.
    sent: usize,
}

/// Turns an execution's progress into feed events. Pure.
#[derive(Debug)]
pub struct Translator {
    encoding: OutputEncoding,
    parts: HashMap<(Stage, Stream), Part>,
}

impl Translator {
    pub fn new(encoding: OutputEncoding) -> Self {
        Self {
            encoding,
            parts: HashMap::new(),
        }
    }

    /// The events `p` makes: output is sent at once, but for a tail that
    /// may be the start of the runner's end mark (which must never reach a
    /// client; the final result strips it), and, as text, never cut inside
    /// a UTF-8 sequence.
    pub fn progress(&mut self, p: Progress) -> Vec<Event> {
        match p {
            Progress::Started { attempt, container } if attempt == 1 => {
                vec![Event::new(
                    "started",
                    &json!({"attempt": attempt, "container": container}),
                )]
            }
            Progress::Started { attempt, .. } => {
                self.parts.clear();
                vec![Event::new(
                    "restart",
                    &json!({
                        "attempt": attempt,
                        "reason": "the previous attempt's answer was lost; it runs again in a fresh container, and the output streamed so far is void",
                    }),
                )]
            }
            Progress::Finished(outcome) => self.finish(&outcome),
            Progress::Output {
                stage,
                stream,
                bytes,
            } => {
                let part = self.parts.entry((stage, stream)).or_default();
                part.pending.extend_from_slice(&bytes);
                let mut cut = mark_start(&part.pending).unwrap_or(part.pending.len());
                if self.encoding == OutputEncoding::Utf8 {
                    cut = char_boundary(&part.pending, cut);
                }
                if cut == 0 {
                    return vec![];
                }
                let sent: Vec<u8> = part.pending.drain(..cut).collect();
                part.sent += sent.len();
                vec![self.output(stage, stream, &sent)]
            }
        }
    }

    /// The output not sent yet, from the final outcome: what each stream
    /// holds past what was sent (without the end mark).
    fn finish(&mut self, outcome: &Outcome) -> Vec<Event> {
        let stages = [
            (Stage::Compile, &outcome.compile),
            (Stage::Run, &outcome.run),
        ];
        let mut events = vec![];
        for (stage, out) in stages {
            let Some(out) = out else { continue };
            for (stream, bytes) in [(Stream::Stdout, &out.stdout), (Stream::Stderr, &out.stderr)] {
                let sent = self.parts.get(&(stage, stream)).map_or(0, |p| p.sent);
                if let Some(rest) = bytes.get(sent..).filter(|r| !r.is_empty()) {
                    events.push(self.output(stage, stream, rest));
                }
            }
        }
        events
    }

    fn output(&self, stage: Stage, stream: Stream, bytes: &[u8]) -> Event {
        Event::new(
            stream.as_str(),
            &json!({"stage": stage.as_str(), "data": self.encoding.encode(bytes)}),
        )
    }
}

/// The largest cut at or below `at` that does not split a UTF-8 sequence:
/// before the last sequence when it starts before `at` and ends after it.
fn char_boundary(bytes: &[u8], at: usize) -> usize {
    let floor = at.saturating_sub(4);
    for start in (floor..at).rev() {
        let b = bytes[start];
        // A continuation byte (10xxxxxx): keep looking for the lead.
        if b & 0xC0 == 0x80 {
            continue;
        }
        let len = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if start + len > at { start } else { at };
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::StageOutcome;

    fn output(stage: Stage, stream: Stream, bytes: &[u8]) -> Progress {
        Progress::Output {
            stage,
            stream,
            bytes: bytes.to_vec(),
        }
    }

    fn data(events: &[Event]) -> String {
        events
            .iter()
            .filter(|e| e.name == "stdout")
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                v["data"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn outcome(stdout: &[u8]) -> Outcome {
        Outcome {
            status: crate::execution::Status::Ok,
            compile: None,
            run: Some(StageOutcome {
                stdout: stdout.to_vec(),
                ..StageOutcome::default()
            }),
            message: None,
        }
    }

    #[test]
    fn the_pieces_add_up_to_the_final_stream_and_the_end_mark_never_shows() {
        let text = "line one\nline two é\n".as_bytes();
        let mark = b"\x1eunsandbox:end:0\x1e";
        let raw: Vec<u8> = [text, mark].concat();
        // Every way of cutting the raw stream into two pieces.
        for at in 0..=raw.len() {
            let mut t = Translator::new(OutputEncoding::Utf8);
            let mut events = t.progress(output(Stage::Run, Stream::Stdout, &raw[..at]));
            events.extend(t.progress(output(Stage::Run, Stream::Stdout, &raw[at..])));
            assert!(!data(&events).contains('\u{1e}'), "cut at {at}");
            events.extend(t.finish(&outcome(text)));
            assert_eq!(data(&events), "line one\nline two é\n", "cut at {at}");
            assert!(!data(&events).contains('\u{fffd}'), "cut at {at}");
        }
    }

    #[test]
    fn output_is_sent_before_the_stage_ends() {
        let mut t = Translator::new(OutputEncoding::Utf8);
        let first = t.progress(output(Stage::Run, Stream::Stdout, b"first\n"));
        assert_eq!(data(&first), "first\n");
        let held = t.progress(output(
            Stage::Run,
            Stream::Stdout,
            b"second\n\x1eunsandbox:e",
        ));
        assert_eq!(data(&held), "second\n", "what may be the mark waits");
        let e = t.progress(output(Stage::Compile, Stream::Stderr, b"warning: x\n"));
        assert_eq!(e[0].name, "stderr");
    }

    #[test]
    fn a_restart_voids_what_was_sent_and_starts_counting_again() {
        let mut t = Translator::new(OutputEncoding::Base64);
        let started = t.progress(Progress::Started {
            attempt: 1,
            container: "c1".into(),
        });
        assert_eq!(started[0].name, "started");
        t.progress(output(Stage::Run, Stream::Stdout, &[b'x'; 50]));
        let restart = t.progress(Progress::Started {
            attempt: 2,
            container: "c2".into(),
        });
        assert_eq!(restart[0].name, "restart");
        let rest = t.finish(&outcome(b"hello"));
        assert_eq!(rest.len(), 1);
        assert!(rest[0].data.contains("aGVsbG8="), "{:?}", rest[0]);
    }

    #[test]
    fn a_cut_never_splits_a_utf8_sequence() {
        let s = "aé€😀".as_bytes();
        for at in 0..=s.len() {
            // What has arrived so far: the cut may not look past it.
            let cut = char_boundary(&s[..at], at);
            assert!(std::str::from_utf8(&s[..cut]).is_ok(), "at {at}: {cut}");
            assert!(at - cut < 4);
        }
        assert_eq!(
            char_boundary(b"ab\x80\x80\x80\x80", 6),
            6,
            "invalid bytes go as they are"
        );
    }

    #[tokio::test]
    async fn a_feed_is_read_from_the_start_and_followed_to_its_end() {
        use futures::StreamExt;
        let feed = Feed::new();
        feed.push([Event::new("started", &json!({}))]);
        let reader = tokio::spawn({
            let feed = feed.clone();
            async move { feed.events().map(|e| e.name).collect::<Vec<_>>().await }
        });
        tokio::task::yield_now().await;
        let done = ApiError::invalid("x");
        feed.push([Event::error(&done), Event::new("stdout", &json!({}))]);
        assert_eq!(reader.await.unwrap(), ["started", "error"]);
        assert!(feed.ended());
    }
}
