//! A `CONNECT` tunnel: bytes both ways between the program and the host,
//! counted, until both sides finish, the tunnel idles too long, the byte
//! budget runs out or the container's proxy closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::account::Meter;
use super::record::Direction;

const CHUNK: usize = 16 * 1024;

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides closed.
    Done,
    /// A side failed (or reset).
    Failed(String),
    /// Nothing passed for the idle timeout.
    Idle,
    /// The byte budget ran out, or the proxy closed.
    Cut,
}

/// Relays between `client` and `upstream` until the tunnel ends.
pub async fn relay<C, U>(client: C, upstream: U, meter: &Meter, idle: Duration) -> End
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (up_r, up_w) = tokio::io::split(upstream);
    let start = Instant::now();
    // Milliseconds since `start` of the last byte either way.
    let last = Arc::new(AtomicU64::new(0));
    let both = async {
        tokio::try_join!(
            pump(client_r, up_w, meter, Direction::Sent, &last, start),
            pump(up_r, client_w, meter, Direction::Received, &last, start),
        )
    };
    let idle_watch = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        r = both => match r {
            Ok(_) => End::Done,
            Err(Stop::Cut) => End::Cut,
            Err(Stop::Io(e)) => End::Failed(e.to_string()),
        },
        () = idle_watch => End::Idle,
        () = meter.account.cut.cancelled() => End::Cut,
    }
}

enum Stop {
    Io(std::io::Error),
    Cut,
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// One direction: each chunk is paid for before it is written, so no
/// byte over the budget passes.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    meter: &Meter,
    direction: Direction,
    last: &AtomicU64,
    start: Instant,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Half-close: the other direction may still be talking.
            to.shutdown().await?;
            return Ok(());
        }
        if !meter.spend(direction, n) {
            return Err(Stop::Cut);
        }
        to.write_all(&buf[..n]).await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
