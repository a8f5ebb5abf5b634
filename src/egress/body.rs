//! Message bodies that pass through the proxy, counted against the
//! execution's byte budget as they stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::account::Meter;
use super::record::Direction;

/// An error of a body that passed through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The byte budget ran out while a body streamed.
#[derive(Debug, thiserror::Error)]
#[error("unsandbox egress: byte budget exceeded")]
pub struct Cut;

/// A body whose data frames are counted; it fails (and the connection
/// carrying it is aborted) when the execution's byte budget runs out, by
/// this body or any other connection of the execution.
pub struct Counted<B> {
    inner: B,
    meter: Meter,
    direction: Direction,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, meter: Meter, direction: Direction) -> Self {
        let cut = Box::pin(meter.account.cut.clone().cancelled_owned());
        Self {
            inner,
            meter,
            direction,
            cut,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Cut.into())));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref()
            && !this.meter.spend(this.direction, data.len())
        {
            return Poll::Ready(Some(Err(Cut.into())));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
