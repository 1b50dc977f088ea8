//! The bodies the proxy sends: to a node, either a small buffered body (replayable on a
//! retry) or the client's body streamed as it arrives; to the client, either a short JSON
//! error or the node's body streamed under the request's total deadline.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// A boxed body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request to a node.
pub type UpstreamBody = Either<Full<Bytes>, Incoming>;

/// The total deadline passed while the body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("the proxy's total timeout passed while the body was streaming")]
pub struct DeadlinePassed;

/// A response body to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// A complete body (an error answer).
    Full(Option<Bytes>),
    /// A node's body, streamed; ends with an error at the deadline.
    Stream {
        /// The node's body.
        inner: Incoming,
        /// The request's total deadline.
        deadline: Pin<Box<Sleep>>,
    },
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }

    /// `inner`, cut off at `deadline`.
    pub fn stream(inner: Incoming, deadline: Instant) -> Self {
        ProxyBody::Stream {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream { inner, deadline } => {
                if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
                    return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(DeadlinePassed)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}
