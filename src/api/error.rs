//! The one place the admin API turns errors into responses: `application/problem+json` bodies
//! (`{"type","title","status","detail"}`, RFC 9457). Details are fixed, client-facing sentences;
//! causes (store errors, verification failures) go to the log, never to the body.

use std::borrow::Cow;

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// Every way an admin request can fail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("no credential")]
    MissingCredential,
    #[error("credential rejected")]
    BadCredential,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The credential source (e.g. an opaque-token database) is down: fail closed.
    #[error("credential source unavailable")]
    CredentialSourceUnavailable,
    #[error(transparent)]
    Store(StoreError),
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// A reload found problems in the new configuration (listed; no secrets in them).
    #[error("invalid configuration")]
    InvalidConfig(String),
    /// The request body is over the admin listener's limit (axum's default, 2 MiB).
    #[error("request body too large")]
    BodyTooLarge,
    /// `POST /v1/approvals` named an action a configured route uses: the gate asks for those
    /// itself, from the request it will forward (README, Approvals API).
    #[error("the action is proxied")]
    ActionIsProxied,
    /// A session-authenticated request with a body that is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
}

/// axum's own rejection of a body (text/plain) becomes a problem like every other error.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::bad_request("the request body could not be read")
        }
    }
}

impl ApiError {
    pub(crate) fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        ApiError::BadRequest(detail.into())
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingCredential | ApiError::BadCredential => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ActionIsProxied => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CredentialSourceUnavailable | ApiError::Store(_) | ApiError::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// `(type URN, title, detail)`; never includes a cause chain.
    pub(crate) fn parts(&self) -> (&'static str, &'static str, Cow<'static, str>) {
        match self {
            ApiError::MissingCredential => (
                "urn:approval-gateway:unauthorized",
                "Unauthorized",
                "an Authorization: Bearer credential (or a recognised session) is required".into(),
            ),
            ApiError::BadCredential => (
                "urn:approval-gateway:unauthorized",
                "Unauthorized",
                "the credential could not be verified".into(),
            ),
            ApiError::Forbidden(why) => (
                "urn:approval-gateway:forbidden",
                "Forbidden",
                Cow::Borrowed(*why),
            ),
            ApiError::NotFound(what) => (
                "urn:approval-gateway:not-found",
                "Not Found",
                Cow::Borrowed(*what),
            ),
            ApiError::BadRequest(why) => (
                "urn:approval-gateway:bad-request",
                "Bad Request",
                why.clone(),
            ),
            ApiError::Conflict(why) => (
                "urn:approval-gateway:conflict",
                "Conflict",
                Cow::Borrowed(*why),
            ),
            ApiError::CredentialSourceUnavailable => (
                "urn:approval-gateway:credential-source-unavailable",
                "Service Unavailable",
                "the credential source is unavailable; try again later".into(),
            ),
            ApiError::Store(_) => (
                "urn:approval-gateway:store-unavailable",
                "Service Unavailable",
                "the approval store is unavailable; try again later".into(),
            ),
            ApiError::NotReady(why) => (
                "urn:approval-gateway:not-ready",
                "Service Unavailable",
                Cow::Borrowed(*why),
            ),
            ApiError::BodyTooLarge => (
                "urn:approval-gateway:body-too-large",
                "Payload Too Large",
                "the request body is too large".into(),
            ),
            ApiError::ActionIsProxied => (
                "urn:approval-gateway:action-is-proxied",
                "Unprocessable Content",
                "this action is one the gateway proxies: send the request itself, and the gate \
                 asks for its approval"
                    .into(),
            ),
            ApiError::UnsupportedMediaType => (
                "urn:approval-gateway:unsupported-media-type",
                "Unsupported Media Type",
                "a request signed in by a session must send its body as application/json".into(),
            ),
            ApiError::InvalidConfig(errors) => (
                "urn:approval-gateway:invalid-config",
                "Invalid Configuration",
                format!(
                    "the new configuration was rejected; the previous one keeps serving. {errors}"
                )
                .into(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The client's fault (a cursor it did not get from us), not the store's.
            StoreError::InvalidCursor => ApiError::bad_request("the cursor is not valid"),
            e => ApiError::Store(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Store(e) = &self {
            tracing::warn!(error = %e, "admin API: store error");
        }
        let (kind, title, detail) = self.parts();
        // The one problem shape, shared with the data plane (`proxy::error`).
        let body = crate::proxy::Problem::new(status, kind, title, detail.into_owned()).to_json();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::MissingCredential, 401),
            (ApiError::BadCredential, 401),
            (ApiError::Forbidden("x"), 403),
            (ApiError::NotFound("x"), 404),
            (ApiError::bad_request("x"), 400),
            (ApiError::Conflict("x"), 409),
            (ApiError::Store(StoreError::NotReady), 503),
            (ApiError::from(StoreError::NotReady), 503),
            (ApiError::from(StoreError::InvalidCursor), 400),
            (ApiError::CredentialSourceUnavailable, 503),
        ];
        for (err, want) in cases {
            assert_eq!(err.status().as_u16(), want, "{err:?}");
        }
    }

    #[test]
    fn store_errors_do_not_leak_their_cause() {
        let err = ApiError::Store(StoreError::Url("postgres://secret@db".into()));
        let (_, _, detail) = err.parts();
        assert!(!detail.contains("secret"));
    }
}
