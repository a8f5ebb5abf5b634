//! What an execution shows while it runs: each attempt as it starts, and
//! each stage's output as it arrives. Streaming answers and jobs follow it;
//! the final `Outcome` stays the only verdict.

use tokio::sync::mpsc::UnboundedSender;

/// A stage of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Compile,
    Run,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Compile => "compile",
            Stage::Run => "run",
        }
    }
}

/// One of a stage's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Something an execution did while it ran.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Attempt `attempt` (from 1) took `container` and starts; a second
    /// attempt means the first one's output is void (see
    /// `service::Executions::run`).
    Started { attempt: u32, container: String },
    /// Bytes a stage wrote, as they arrived; never past the output cap, and
    /// possibly ending with the runner's end mark, which the final outcome
    /// strips.
    Output {
        stage: Stage,
        stream: Stream,
        bytes: Vec<u8>,
    },
    /// The execution's final outcome (the last attempt's).
    Finished(Box<super::Outcome>),
}

/// Where an execution reports its progress.
pub type Watch = UnboundedSender<Progress>;

/// Where, in the output a stream has produced so far, the runner's end mark
/// (see `script::END_MARK`) may have begun: what a live reader must hold
/// back until more arrives or the stage ends, since the final outcome
/// strips the mark. `None` when no tail of `bytes` can be (part of) one.
pub fn mark_start(bytes: &[u8]) -> Option<usize> {
    use super::script::{END_CLOSE, END_MARK};
    // The longest mark: the opening, three digits, the close.
    let longest = END_MARK.len() + 4;
    let could_be = |tail: &[u8]| {
        if tail.len() <= END_MARK.len() {
            return END_MARK.starts_with(tail);
        }
        let Some(rest) = tail.strip_prefix(END_MARK) else {
            return false;
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        match &rest[digits..] {
            [] => digits <= 3,
            [close] => *close == END_CLOSE && (1..=3).contains(&digits),
            _ => false,
        }
    };
    (bytes.len().saturating_sub(longest)..bytes.len())
        .find(|&p| bytes[p] == END_MARK[0] && could_be(&bytes[p..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_may_be_the_end_mark_is_held_back() {
        assert_eq!(mark_start(b"first\n"), None);
        assert_eq!(mark_start(b""), None);
        assert_eq!(mark_start(b"ab\x1eunsa"), Some(2));
        assert_eq!(mark_start(b"ab\x1eunsandbox:end:12"), Some(2));
        assert_eq!(mark_start(b"ab\x1eunsandbox:end:127\x1e"), Some(2));
        assert_eq!(mark_start(b"ab\x1e"), Some(2));
        assert_eq!(mark_start(b"ab\x1eunsafe"), None, "not the mark");
        assert_eq!(
            mark_start(b"\x1eunsandbox:end:1234"),
            None,
            "too many digits"
        );
        assert_eq!(
            mark_start(b"\x1eunsandbox:end:1\x1ex"),
            None,
            "past the close"
        );
    }
}
