//! Typed LXD errors that carry LXD's own message.

/// An error talking to LXD.
#[derive(Debug, thiserror::Error)]
pub enum LxdError {
    /// LXD answered with an error; `message` is LXD's text.
    #[error("LXD {status}: {message}")]
    Api { status: u16, message: String },
    /// A background operation ended in failure; `message` is LXD's text.
    #[error("LXD operation failed: {message}")]
    Operation { message: String },
    /// The socket could not be reached or the connection broke.
    #[error("LXD socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    /// An HTTP-level failure on an open connection.
    #[error("LXD transport: {0}")]
    Transport(String),
    /// LXD's answer did not have the expected shape.
    #[error("unexpected LXD answer: {0}")]
    Decode(String),
    /// An exec websocket failed.
    #[error("LXD exec stream: {0}")]
    Stream(String),
    /// LXD did not finish in time.
    #[error("LXD did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// LXD lost the end of an exec's output (a race in LXD before 5.14 when
    /// the process exits on a busy host).
    #[error("LXD lost the end of the command's output")]
    OutputLost,
}

impl LxdError {
    /// Whether LXD said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            LxdError::Api { status, .. } => *status == 404,
            LxdError::Operation { message } => {
                message.contains("not found") || message.contains("Not Found")
            }
            _ => false,
        }
    }

    /// Whether LXD said the object already exists.
    pub fn is_conflict(&self) -> bool {
        matches!(self, LxdError::Api { status: 409, .. })
            || matches!(self, LxdError::Api { message, .. } | LxdError::Operation { message } if message.contains("already exists"))
    }

    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LxdError::Api { .. } => "api",
            LxdError::Operation { .. } => "operation",
            LxdError::Connect { .. } => "connect",
            LxdError::Transport(_) => "transport",
            LxdError::Decode(_) => "decode",
            LxdError::Stream(_) => "stream",
            LxdError::Timeout(_) => "timeout",
            LxdError::OutputLost => "output_lost",
        }
    }
}
