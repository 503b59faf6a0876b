//! The body type of every request sent upstream and every response sent downstream.
//!
//! An enum rather than a boxed trait object, so the pass-through path (an `Incoming` body
//! forwarded as is) costs no allocation and no dynamic dispatch. `Full` carries bodies the
//! gateway produced or buffered (problem bodies, the 202, a gated request's buffered body).
//! `Upstream` is a response body from a pooled hyper connection, `H1` one read by the
//! hand-written client (`h1.rs`): once either has been read to its end, its connection goes
//! back to the pool.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::h1::{self, H1Error};
use super::pool::Lease;
use super::timer::{self, Deadline};

/// A streamed (`Incoming`), buffered (`Full`) or empty body.
#[derive(Debug, Default)]
pub enum ProxyBody {
    Incoming(Incoming),
    Full(Full<Bytes>),
    Upstream(UpstreamBody),
    H1(h1::Body),
    /// A request body relayed upstream as it arrives, under the idle timeout.
    Idle(IdleBody),
    #[default]
    Empty,
}

/// A body that failed mid-stream: one hyper read (a client's request body, or a response body
/// on a hyper upstream connection), or one the hand-written client read.
#[derive(Debug, thiserror::Error)]
pub enum BodyFault {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Upstream(#[from] H1Error),
    /// The client sent no request body data for the idle timeout (`IdleBody`).
    #[error("the request body stalled")]
    Idle,
}

impl ProxyBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }

    /// A streamed request body that fails with [`BodyFault::Idle`] when nothing arrives for
    /// `idle` (so the upstream request is aborted); any other body as it is.
    pub(crate) fn idle_after(self, idle: Duration) -> Self {
        match self {
            Self::Incoming(body) => Self::Idle(IdleBody {
                body,
                idle,
                deadline: timer::now().checked_add(idle).map(Deadline::new),
            }),
            other => other,
        }
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        Self::Incoming(body)
    }
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

fn never(e: Infallible) -> BodyFault {
    match e {}
}

type Polled = Poll<Option<Result<Frame<Bytes>, BodyFault>>>;

/// A polled frame with its error widened to [`BodyFault`].
fn widen<E: Into<BodyFault>>(p: Poll<Option<Result<Frame<Bytes>, E>>>) -> Polled {
    p.map(|o| o.map(|r| r.map_err(Into::into)))
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        // Every variant is `Unpin`, so no pin projection is needed.
        match self.get_mut() {
            Self::Incoming(b) => widen(Pin::new(b).poll_frame(cx)),
            Self::Full(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(never))),
            Self::Upstream(b) => widen(b.poll_frame(cx)),
            Self::H1(b) => widen(b.poll_frame(cx)),
            Self::Idle(b) => b.poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(b) => b.is_end_stream(),
            Self::Full(b) => b.is_end_stream(),
            Self::Upstream(b) => b.body.is_end_stream(),
            Self::H1(b) => b.is_end_stream(),
            Self::Idle(b) => b.body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(b) => b.size_hint(),
            Self::Full(b) => b.size_hint(),
            Self::Upstream(b) => b.body.size_hint(),
            Self::H1(b) => b.size_hint(),
            Self::Idle(b) => b.body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A client's request body on its way upstream, failing once nothing arrived for `idle` (a
/// slow-loris upload would otherwise hold an upstream connection for as long as it likes). The
/// deadline moves on with every frame; it lives on the coarse clock (`timer.rs`: a slab slot,
/// up to 100 ms late), and bodiless requests never get one.
#[derive(Debug)]
pub struct IdleBody {
    body: Incoming,
    idle: Duration,
    /// `None`: `idle` is too far away to represent (never).
    deadline: Option<Deadline>,
}

impl IdleBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Polled {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(deadline) = &mut self.deadline {
                    if let Some(at) = timer::now().checked_add(self.idle) {
                        deadline.reset(at);
                    }
                }
            }
            Poll::Pending => {
                if let Some(deadline) = &mut self.deadline {
                    if deadline.poll_passed(cx).is_ready() {
                        return Poll::Ready(Some(Err(BodyFault::Idle)));
                    }
                }
            }
            Poll::Ready(_) => {}
        }
        widen(polled)
    }
}

/// An upstream response body holding its connection until the body has been read to its end.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub(crate) fn new(body: Incoming, lease: Lease) -> Self {
        Self {
            body,
            lease: Some(lease),
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // A broken body leaves the connection unusable: close it.
            Poll::Ready(Some(Err(_))) => drop(self.lease.take()),
            _ => {}
        }
        polled
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Drop for UpstreamBody {
    /// hyper stops polling a body that reports its end, so the hand-back happens here; a body
    /// dropped before its end (the client went away) takes its connection with it.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
