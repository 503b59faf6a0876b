//! The send path on hyper's HTTP/1.1 client: requests with a body (relayed as it arrives, under
//! the idle timeout) and protocol upgrades (WebSocket), whose connection becomes a tunnel.
//!
//! hyper reads the upstream's answer while the body is still going out, which an early 413
//! needs; the hand-written client (`h1.rs`) does not. Input: a prepared request (see
//! `headers::prepare_request`). Output: the response, its body leasing the connection until read
//! to its end, or an [`UpstreamError`].

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::body::{BodyFault, ProxyBody, UpstreamBody};
use super::h1::Resend;
use super::headers::{strip_hop_by_hop, UPGRADE_TOKEN};
use super::{Downstream, Upstream, UpstreamError};
use crate::metrics::Metrics;

/// [`Upstream::send`] for a request with a body or an upgrade (`upgrade`: the protocol asked for).
pub(super) async fn send(
    up: &Upstream,
    mut req: Request<ProxyBody>,
    down: &Downstream,
    metrics: &Metrics,
    upgrade: Option<HeaderValue>,
    resend: Resend,
) -> Result<Response<ProxyBody>, UpstreamError> {
    up.hop.apply(req.headers_mut(), down);
    // A body relayed as it arrives: a stall aborts the upstream request.
    let idle = up.body_timeouts.idle;
    let mut req = req.map(|body| body.idle_after(idle));
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (tx, mut resp) = up
        .timed(metrics, |started| round_trip(up, req, started, resend))
        .await?;

    strip_hop_by_hop(resp.headers_mut());
    match (upgrade, downstream_upgrade) {
        (Some(proto), Some(down_up)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            // The connection becomes the tunnel: it never goes back to the pool.
            let up_up = hyper::upgrade::on(&mut resp);
            resp.headers_mut().insert(header::CONNECTION, UPGRADE_TOKEN);
            resp.headers_mut().entry(header::UPGRADE).or_insert(proto);
            tokio::spawn(tunnel(down_up, up_up));
            Ok(resp.map(ProxyBody::Incoming))
        }
        _ => {
            let lease = up.pool.lease(tx);
            Ok(resp.map(|b| ProxyBody::Upstream(UpstreamBody::new(b, lease))))
        }
    }
}

/// Send `req` on an idle pooled connection, else on a new one. A pooled connection the
/// upstream closed before the request went out is retried once on a new connection. With
/// [`Resend::Never`]: on a new connection, once.
async fn round_trip(
    up: &Upstream,
    req: Request<ProxyBody>,
    now: Instant,
    resend: Resend,
) -> Result<(SendRequest<ProxyBody>, Response<Incoming>), UpstreamError> {
    let pooled = match resend {
        Resend::IfUnprocessed => up.pool.take_idle(now),
        Resend::Never => None,
    };
    let idle = match pooled {
        Some(tx) if !tx.is_ready() => Some(
            up.pool
                .ready_or_connect(tx)
                .await
                .map_err(UpstreamError::Connect)?,
        ),
        idle => idle,
    };
    let req = match idle {
        Some(mut tx) => match tx.try_send_request(req).await {
            Ok(resp) => return Ok((tx, resp)),
            Err(mut e) => match e.take_message() {
                Some(req) => req,
                None => return Err(classify(e.into_error())),
            },
        },
        None => req,
    };
    let mut tx = up.pool.connect().await.map_err(UpstreamError::Connect)?;
    let resp = tx.send_request(req).await.map_err(classify)?;
    Ok((tx, resp))
}

/// Which side failed: the client's own body erroring (it hung up mid-upload) surfaces as a
/// hyper "user" error and is not the upstream's fault.
fn classify(e: hyper::Error) -> UpstreamError {
    // hyper reports a failing request body as a user error whose cause is the body's own
    // error: the downstream connection's `hyper::Error`, or the idle timeout.
    let body_fault = e
        .is_user()
        .then(|| std::error::Error::source(&e))
        .flatten()
        .and_then(|cause| cause.downcast_ref::<BodyFault>());
    match body_fault {
        Some(BodyFault::Hyper(_)) => {
            tracing::debug!(error = %e, "client aborted its request body");
            UpstreamError::ClientAborted
        }
        Some(BodyFault::Idle) => {
            tracing::debug!("client's request body stalled; upstream request aborted");
            UpstreamError::BodyTimeout
        }
        _ => UpstreamError::Protocol(e),
    }
}

/// Relay bytes between the upgraded downstream and upstream connections until either closes.
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection closed");
    }
}
