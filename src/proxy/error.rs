//! The ONE place errors become HTTP responses.
//!
//! Input: a [`ProxyError`] (or a [`Problem`] built by a later stage). Output: a response with an
//! `application/problem+json` body `{"type","title","status","detail"}` (RFC 9457). Invariant:
//! bodies never carry internals — the error's cause chain goes to `tracing`, the body gets a
//! fixed title and a detail written for the client.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

use super::body::BodyError;
use super::upstream::body::ProxyBody;
use super::upstream::h1::H1Error;
use super::upstream::UpstreamError;

const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// An RFC 9457 problem. `kind` is the `type` member: a stable URN per kind of error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: Cow<'static, str>,
}

#[derive(serde::Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
        }
    }

    /// The serialized body (for tests and for the admin API, which shares the shape).
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let body = ProblemBody {
            kind: self.kind,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        // Serializing a struct of strings cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(CONTENT_TYPE, PROBLEM_JSON);
        build(self.status, headers, Bytes::from(self.to_json()))
    }
}

/// A JSON response (e.g. the gate's 202): `headers` are sent as given, plus
/// `Content-Type: application/json` unless `headers` already names one.
pub(crate) fn json(
    status: StatusCode,
    mut headers: HeaderMap,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    headers.entry(CONTENT_TYPE).or_insert(JSON);
    build(status, headers, body.into())
}

fn build(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Everything that can stop the proxy from answering with the upstream's response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The upstream leg failed (`upstream/error.rs`); its statuses are decided here too.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The client's request body did not arrive in time while it was buffered
    /// (`[listen] body_read_timeout`): not an upstream fault. (A relayed body's stall is
    /// [`UpstreamError::BodyTimeout`].)
    #[error("request body timed out")]
    BodyTimeout,
    #[error("request body too large (limit {limit} bytes)")]
    BodyTooLarge { limit: usize },
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    #[error("unauthorized: {0}")]
    Unauthorized(Cow<'static, str>),
    /// A caller nobody recognised on a gated route (`unknown_callers = "refuse"`).
    #[error("unknown caller: {0}")]
    UnknownCaller(&'static str),
    /// A gated caller's path that the upstream could read otherwise than the gate.
    #[error("ambiguous path: {0}")]
    AmbiguousPath(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(Cow<'static, str>),
    #[error("approval store unavailable")]
    StoreUnavailable(#[source] Option<crate::store::StoreError>),
}

impl From<BodyError> for ProxyError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => Self::BodyTooLarge { limit },
            BodyError::Read(_) => {
                Self::BadRequest(Cow::Borrowed("the request body could not be read"))
            }
        }
    }
}

impl ProxyError {
    /// What the approval a request consumed records when that request got no upstream answer.
    /// It is never sent again, so the text says plainly whether the upstream may have acted on
    /// it (the request may have been written before the failure).
    pub(crate) fn upstream_outcome(&self) -> Cow<'static, str> {
        const CLOSED: &str =
            "connection closed before a response; the request may have been executed";
        use UpstreamError as U;
        match self {
            Self::Upstream(U::Connect(_)) => {
                Cow::Borrowed("upstream unreachable; the request was not sent")
            }
            Self::Upstream(U::Timeout) => Cow::Borrowed(
                "no response within the request timeout; the request may have been executed",
            ),
            Self::Upstream(U::Response(H1Error::Malformed(why))) => Cow::Owned(format!(
                "invalid upstream response ({why}); the request may have been executed"
            )),
            Self::Upstream(U::Response(_)) => Cow::Borrowed(CLOSED),
            Self::Upstream(U::Protocol(e)) if e.is_parse() => {
                Cow::Borrowed("invalid upstream response; the request may have been executed")
            }
            Self::Upstream(U::Protocol(_)) => Cow::Borrowed(CLOSED),
            Self::Upstream(U::ClientAborted | U::BodyTimeout) | Self::BodyTimeout => Cow::Borrowed(
                "the client stopped sending the request body; the request may have been executed",
            ),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The problem the client sees. Details are fixed texts or ones written for the client.
    pub(crate) fn problem(&self) -> Problem {
        use StatusCode as S;
        use UpstreamError as U;
        fn p(
            s: StatusCode,
            k: &'static str,
            t: &'static str,
            d: impl Into<Cow<'static, str>>,
        ) -> Problem {
            Problem::new(s, k, t, d)
        }
        match self {
            Self::Upstream(U::Connect(_)) => p(
                S::BAD_GATEWAY,
                "urn:approval-gateway:upstream-unreachable",
                "Bad Gateway",
                "the upstream service could not be reached",
            ),
            Self::Upstream(U::Timeout) => p(
                S::GATEWAY_TIMEOUT,
                "urn:approval-gateway:upstream-timeout",
                "Gateway Timeout",
                "the upstream service did not answer in time",
            ),
            Self::Upstream(U::Protocol(_) | U::Response(_)) => p(
                S::BAD_GATEWAY,
                "urn:approval-gateway:upstream-protocol",
                "Bad Gateway",
                "the upstream service sent an invalid response",
            ),
            Self::Upstream(U::ClientAborted) => p(
                S::BAD_REQUEST,
                "urn:approval-gateway:request-aborted",
                "Bad Request",
                "the request body was not received completely",
            ),
            Self::BodyTimeout | Self::Upstream(U::BodyTimeout) => p(
                S::REQUEST_TIMEOUT,
                "urn:approval-gateway:body-timeout",
                "Request Timeout",
                "the request body did not arrive in time",
            ),
            Self::BodyTooLarge { limit } => p(
                S::PAYLOAD_TOO_LARGE,
                "urn:approval-gateway:body-too-large",
                "Payload Too Large",
                format!("the request body exceeds {limit} bytes"),
            ),
            Self::BadRequest(d) | Self::Upstream(U::BadRequest(d)) => p(
                S::BAD_REQUEST,
                "urn:approval-gateway:bad-request",
                "Bad Request",
                d.clone(),
            ),
            Self::Unauthorized(d) => p(
                S::UNAUTHORIZED,
                "urn:approval-gateway:unauthorized",
                "Unauthorized",
                d.clone(),
            ),
            Self::UnknownCaller(why) => p(
                S::UNAUTHORIZED,
                "urn:approval-gateway:unknown-caller",
                "Unauthorized",
                format!(
                    "this route needs an approval for gated callers, and the caller could not \
                     be classified: {why}"
                ),
            ),
            Self::AmbiguousPath(why) => p(
                S::BAD_REQUEST,
                "urn:approval-gateway:ambiguous-path",
                "Bad Request",
                format!(
                    "the path could be routed otherwise by the upstream than by the gate: {why}; \
                     send the plain path"
                ),
            ),
            Self::Forbidden(d) => p(
                S::FORBIDDEN,
                "urn:approval-gateway:forbidden",
                "Forbidden",
                d.clone(),
            ),
            Self::StoreUnavailable(_) => p(
                S::SERVICE_UNAVAILABLE,
                "urn:approval-gateway:store-unavailable",
                "Service Unavailable",
                "the approval store is unavailable; the request was not forwarded",
            ),
        }
    }

    /// Log the cause chain (never sent to the client) and build the response.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let problem = self.problem();
        if problem.status.is_server_error() {
            tracing::warn!(status = problem.status.as_u16(), error = %Chain(&self), "request failed");
        } else {
            tracing::debug!(status = problem.status.as_u16(), error = %Chain(&self), "request refused");
        }
        problem.into_response()
    }
}

/// Displays an error and its sources, `a: b: c`.
struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statuses_per_kind() {
        let cases = [
            (ProxyError::Upstream(UpstreamError::Timeout), 504),
            (ProxyError::Upstream(UpstreamError::BodyTimeout), 408),
            (ProxyError::Upstream(UpstreamError::ClientAborted), 400),
            (
                ProxyError::Upstream(UpstreamError::BadRequest("x".into())),
                400,
            ),
            (ProxyError::BodyTimeout, 408),
            (ProxyError::BodyTooLarge { limit: 10 }, 413),
            (ProxyError::BadRequest("x".into()), 400),
            (ProxyError::Unauthorized("x".into()), 401),
            (ProxyError::Forbidden("x".into()), 403),
        ];
        for (err, status) in cases {
            assert_eq!(err.problem().status.as_u16(), status, "{err}");
        }
    }

    #[test]
    fn problem_body_has_the_four_members() {
        let p = ProxyError::Upstream(UpstreamError::Timeout).problem();
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["status"], 504);
        assert_eq!(v["type"], "urn:approval-gateway:upstream-timeout");
        assert_eq!(v["title"], "Gateway Timeout");
        assert!(v["detail"].is_string());
        let resp = p.into_response();
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn json_keeps_a_given_content_type() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            json(StatusCode::ACCEPTED, h, "x").headers()[CONTENT_TYPE],
            "text/plain"
        );
        assert_eq!(
            json(StatusCode::ACCEPTED, HeaderMap::new(), "{}").headers()[CONTENT_TYPE],
            "application/json"
        );
    }
}
