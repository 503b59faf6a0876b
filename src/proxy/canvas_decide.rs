//! The canvas's decide route on a mirrored approval (docs/molecule.md): `POST
//! /workspaces/{id}/approvals/{aid}/decide` where `aid` is the server row the canvas mirror made
//! for a gateway approval (`mirror_find`). Such a call is not forwarded: it is a vote in the
//! gateway by the caller, with the API's rules (`api::approvals::cast_vote`: an approver class —
//! an approver JWT or a recognised cookie session — with a subject; never the requester's own
//! chain; one vote each), answered in the server's shape `{"status":"approved"|"denied",
//! "approval_id":aid}`. The mirror worker then writes the gateway's outcome to the server row.
//!
//! Anyone else — a gated caller, a workspace token, an unverified same-origin request, a
//! known-but-not-approver class such as `ADMIN_TOKEN`'s — gets 403 and nothing is forwarded.
//! An `aid` that is not mirrored goes on down the normal path (the decide guard still refuses
//! gated callers). Only on when the mirror is (`Shared::canvas_decide`).

use std::borrow::Cow;

use bytes::Bytes;
use http::{request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::access::Note;
use super::gated::count;
use super::{json, read_within, Problem, ProxyBody, ProxyError, Shared};
use crate::api::error::ApiError;
use crate::caller::Caller;
use crate::config::Policy;
use crate::metrics::Outcome;
use crate::route::Normalized;
use crate::store::{Via, Vote, VoteKind};

/// Largest decide body read (the canvas sends a few dozen bytes).
const MAX_BODY: usize = 16 * 1024;
const ACTION: &str = "none";

/// Does this request name the decide route under any reading of its (normalised) path? A path
/// that only some readings make a decide is intercepted too, and refused as ambiguous, so no
/// spelling reaches the server's decide for a mirrored row.
pub(super) fn matches(method: &http::Method, path: &Normalized<'_>) -> bool {
    *method == http::Method::POST
        && match path {
            // The common case, every POST while the mirror is on: no allocation.
            Normalized::Clean(p) => is_decide(crate::route::path::clean_segments(p)),
            Normalized::Readings(readings) => readings
                .iter()
                .any(|r| is_decide(r.iter().map(String::as_str))),
        }
}

/// `workspaces / {id} / approvals / {aid} / decide`, segment by segment.
fn is_decide<'a>(mut segments: impl Iterator<Item = &'a str>) -> bool {
    let five = [(); 5].map(|()| segments.next());
    segments.next().is_none()
        && matches!(
            five,
            [
                Some("workspaces"),
                Some(_),
                Some("approvals"),
                Some(_),
                Some("decide")
            ]
        )
}

/// `(workspace id, approval id)` of `/workspaces/{id}/approvals/{aid}/decide`.
fn parse(path: &str) -> Option<(String, String)> {
    let mut it = path.split('/');
    match (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) {
        (
            Some(""),
            Some("workspaces"),
            Some(ws),
            Some("approvals"),
            Some(aid),
            Some("decide"),
            None,
        ) if !ws.is_empty() && !aid.is_empty() => Some((ws.to_owned(), aid.to_owned())),
        _ => None,
    }
}

/// What became of the request. (Once per decide call: boxing the response would buy nothing.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Intercepted {
    /// Answered here; nothing forwarded.
    Answered(Response<ProxyBody>),
    /// Not a mirrored approval: the normal path continues with the untouched body.
    NotMirrored(Incoming),
}

#[derive(Deserialize)]
struct DecideBody {
    decision: String,
}

pub(super) async fn handle(
    shared: &Shared,
    policy: &Policy,
    caller: &Caller,
    parts: &request::Parts,
    body: Incoming,
    note: &mut Note,
) -> Intercepted {
    let Some((ws, aid)) = crate::route::path::plain(parts.uri.path())
        .ok()
        .and_then(|p| parse(&p))
    else {
        // Some reading of it is a decide: the server might decide a mirrored row on it.
        let resp =
            ProxyError::AmbiguousPath("a decide call must use the plain path").into_response();
        return answered(shared, note, Outcome::bad_request, resp);
    };
    // The server's column is a UUID, which Postgres reads in any spelling (upper case, braces,
    // no hyphens): look the row up by its one canonical form.
    let aid = uuid::Uuid::parse_str(&aid).map_or(aid, |u| u.to_string());
    // With the store down it cannot be told whether `aid` is the gateway's: fail closed.
    if !shared.store.is_ready() {
        return answered(shared, note, Outcome::store_unavailable, unavailable(None));
    }
    let row = match shared.store.mirror_find(&aid).await {
        Ok(Some(row)) => row,
        Ok(None) => return Intercepted::NotMirrored(body),
        Err(e) => {
            return answered(
                shared,
                note,
                Outcome::store_unavailable,
                unavailable(Some(e)),
            )
        }
    };
    if !caller.recognised || caller.is_gated() || !caller.is_approver() || caller.subject.is_none()
    {
        tracing::info!(caller = caller.class_name().unwrap_or("unrecognised"), approval_id = %row.approval_id,
            server_id = %aid, "canvas decide refused: not a verified approver");
        let resp = ProxyError::Forbidden(Cow::Borrowed(
            "this approval is held by the approval gateway: only a verified human (an approver \
             JWT or a canvas session) may decide it; nothing was forwarded",
        ))
        .into_response();
        return answered(shared, note, Outcome::guard_denied, resp);
    }
    // A browser sends the canvas's session cookie by itself: a cross-site page must not be
    // able to vote with it. A session-signed request must come from the site's own origin (the
    // canvas is served by the server behind this gateway) with a JSON body.
    if let Err(e) =
        crate::api::auth::check_session_request(&parts.method, &parts.headers, &policy.callers, "")
    {
        tracing::info!(approval_id = %row.approval_id, "canvas decide refused: cross-site or not JSON");
        return answered(shared, note, Outcome::guard_denied, api_problem(&e));
    }
    let ws = uuid::Uuid::parse_str(&ws).map_or(ws, |u| u.to_string());
    if !ws.eq_ignore_ascii_case(&row.workspace_id) {
        let resp = json(
            StatusCode::NOT_FOUND,
            http::HeaderMap::new(),
            Bytes::from_static(br#"{"error":"approval not found or already decided"}"#),
        );
        return answered(shared, note, Outcome::bad_request, resp);
    }
    let within = shared.upstream.body_timeouts().read;
    let bytes = match read_within(body, MAX_BODY, within).await {
        Ok(bytes) => bytes,
        Err(e) => return answered(shared, note, Outcome::bad_request, e.into_response()),
    };
    let kind = match serde_json::from_slice::<DecideBody>(&bytes)
        .ok()
        .map(|b| b.decision)
        .as_deref()
    {
        Some("approved") => VoteKind::Approve,
        Some("denied") => VoteKind::Deny,
        _ => {
            let resp = json(
                StatusCode::BAD_REQUEST,
                http::HeaderMap::new(),
                Bytes::from_static(br#"{"error":"decision must be 'approved' or 'denied'"}"#),
            );
            return answered(shared, note, Outcome::bad_request, resp);
        }
    };
    let vote = Vote {
        approver: crate::api::auth::approver_name(caller),
        kind,
        comment: Some("decided in the Molecule canvas".to_owned()),
        via: Via::Gateway,
    };
    let outcome = crate::api::approvals::cast_vote(
        &shared.store,
        &shared.metrics,
        policy.gate.ttls,
        caller,
        row.approval_id,
        &vote,
    )
    .await;
    note.approval = Some(row.approval_id);
    match outcome {
        Ok(_) => {
            let status = if kind == VoteKind::Approve {
                "approved"
            } else {
                "denied"
            };
            let body = serde_json::json!({"status": status, "approval_id": aid});
            let resp = json(
                StatusCode::OK,
                http::HeaderMap::new(),
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            );
            answered(shared, note, Outcome::canvas_decided, resp)
        }
        Err(e) => {
            let outcome = match &e {
                ApiError::Store(_) => Outcome::store_unavailable,
                ApiError::Forbidden(_) => Outcome::guard_denied,
                _ => Outcome::bad_request,
            };
            answered(shared, note, outcome, api_problem(&e))
        }
    }
}

fn answered(
    shared: &Shared,
    note: &mut Note,
    outcome: Outcome,
    resp: Response<ProxyBody>,
) -> Intercepted {
    count(shared, note, ACTION, outcome);
    Intercepted::Answered(resp)
}

fn unavailable(e: Option<crate::store::StoreError>) -> Response<ProxyBody> {
    if let Some(e) = &e {
        tracing::error!(error = %e, "canvas decide: approval store failed; answering 503");
    }
    ProxyError::StoreUnavailable(e).into_response()
}

/// The API's refusal as the same problem body, from the data plane.
fn api_problem(e: &ApiError) -> Response<ProxyBody> {
    let (kind, title, detail) = e.parts();
    Problem::new(e.status(), kind, title, detail.into_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`matches`] on the path as received.
    fn decide(method: &http::Method, path: &str) -> bool {
        matches(method, &crate::route::normalise(path))
    }

    #[test]
    fn the_decide_route_and_nothing_else() {
        let post = http::Method::POST;
        assert_eq!(
            parse("/workspaces/w1/approvals/a1/decide"),
            Some(("w1".to_owned(), "a1".to_owned()))
        );
        assert!(decide(&post, "/workspaces/w1/approvals/a1/decide"));
        assert!(decide(&post, "/workspaces/w1/approvals/a%31/decide"));
        assert!(!decide(
            &http::Method::GET,
            "/workspaces/w1/approvals/a1/decide"
        ));
        // Readings that make it a decide are intercepted too (and refused there as ambiguous).
        for p in [
            "/workspaces/w1/approvals/a1/decide/",
            "/workspaces//approvals/a1/decide",
            "/workspaces/w1/approvals/a1/./decide",
        ] {
            assert!(decide(&post, p), "{p}");
            assert!(crate::route::path::plain(p).is_err(), "{p}");
        }
        for p in [
            "/workspaces/w1/approvals/a1",
            "/workspaces/w1/approvals/a1/decide/x",
            "/x/workspaces/w1/approvals/a1/decide",
        ] {
            assert!(!decide(&post, p), "{p}");
        }
    }
}
