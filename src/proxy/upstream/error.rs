//! What can stop [`super::Upstream::send`] from returning the upstream's response. The
//! statuses and problem texts they become are decided in one place above this folder
//! (`proxy/error.rs`, through `ProxyError::Upstream`); the metric label is decided here.

use std::borrow::Cow;

use super::h1::H1Error;
use super::pool::ConnectError;
use crate::metrics::UpstreamErrorKind;

/// A failed upstream leg.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream unreachable")]
    Connect(#[source] ConnectError),
    #[error("upstream did not answer within the request timeout")]
    Timeout,
    /// hyper's client (requests with a body, upgrades) failed.
    #[error("upstream protocol error")]
    Protocol(#[source] hyper::Error),
    /// The hand-written client (`h1.rs`) could not read a valid response.
    #[error("upstream response unreadable")]
    Response(#[source] H1Error),
    /// The client stopped sending its request body (hung up mid-upload): not an upstream fault.
    #[error("client aborted the request body")]
    ClientAborted,
    /// The client's relayed request body stalled for `[listen] body_idle_timeout`: not an
    /// upstream fault.
    #[error("request body timed out")]
    BodyTimeout,
    /// The request cannot be sent upstream as it is (CONNECT, an unusable target).
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
}

impl UpstreamError {
    /// The upstream-error metric label, for errors on the upstream's side.
    pub(crate) fn metric_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            Self::Connect(_) => Some(UpstreamErrorKind::connect),
            Self::Timeout => Some(UpstreamErrorKind::timeout),
            Self::Protocol(_) | Self::Response(_) => Some(UpstreamErrorKind::protocol),
            Self::ClientAborted | Self::BodyTimeout | Self::BadRequest(_) => None,
        }
    }
}
