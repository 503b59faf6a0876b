//! Who may do what on the admin API.
//!
//! Authentication reuses the proxy's caller classification (`Policy::callers`); the checks below
//! are pure functions of the classified [`Caller`] and the [`Approval`], so the rules can be
//! table-tested. Invariants: a gated caller never decides; nobody decides an approval in which
//! they appear on both sides (requester or any actor of its `act` chain versus approver or any
//! actor of the approver's chain); only admins bypass.

use axum::http::{header, HeaderMap, Method};

use super::error::ApiError;
use crate::caller::{Caller, CallerError};
use crate::store::{Approval, VoteKind};

/// Classify the request's credential: a bearer, or, without one, a session that a configured
/// `http` token source recognises (its forwarded headers, e.g. the `Cookie` of a same-site
/// control-plane login; `Callers::classify` asks the source). Neither → 401; a credential that
/// fails verification or that nothing recognises → 401; two Authorization headers → 400; a
/// source outage → 503. A session-authenticated request that changes state has passed
/// [`check_session_request`] first (the admin router's middleware).
pub(super) async fn authenticate(
    callers: &crate::caller::Callers,
    headers: &HeaderMap,
    now_unix: u64,
) -> Result<Caller, ApiError> {
    if !has_bearer(headers) && !callers.has_session(headers) {
        return Err(ApiError::MissingCredential);
    }
    match callers.classify(headers, now_unix).await {
        // A bearer (or session) no source recognised proves nobody.
        Ok(c) if !c.recognised => Err(ApiError::BadCredential),
        // Requesters and approvers are told apart by their subject: a gated or approver
        // credential without one would share an identity (its class name) with every other.
        Ok(c) if c.subject.is_none() && (c.is_gated() || c.is_approver()) => {
            tracing::info!(
                caller = c.class_name(),
                "admin API: credential without a subject refused"
            );
            Err(ApiError::BadCredential)
        }
        Ok(c) => Ok(c),
        Err(CallerError::DuplicateAuthorization) => {
            Err(ApiError::bad_request("more than one Authorization header"))
        }
        Err(CallerError::SourceUnavailable(source)) => {
            tracing::warn!(%source, "admin API: credential source unavailable");
            Err(ApiError::CredentialSourceUnavailable)
        }
        Err(e) => {
            tracing::info!(reason = %e, "admin API: credential rejected");
            Err(ApiError::BadCredential)
        }
    }
}

/// Cross-site request forgery check for a request the browser authenticates by itself (a
/// session cookie, no bearer): a state-changing method (anything but GET, HEAD, OPTIONS) must
/// come from the admin listener's own origin. Its `Origin` (or, when absent, its `Referer`) must
/// have the scheme, host and port of `public_admin_url`, or the host and port of the request's
/// own `Host` → otherwise 403. A body it carries must be `Content-Type: application/json` → 415:
/// the handlers read raw bytes (not axum's `Json` extractor, which would demand that type), and
/// this type is what forces a CORS preflight on a cross-origin `fetch` (which the admin listener
/// never grants: it sends no CORS headers), so no HTML form can send such a body. Cookies are
/// not separated by port: another service on the same host gets the admin listener's cookies
/// sent along, which is why the port is compared. Requests with a bearer are unaffected (a page
/// cannot make a browser attach someone's bearer), and so are requests without a session
/// (they fail authentication anyway).
pub(crate) fn check_session_request(
    method: &Method,
    headers: &HeaderMap,
    callers: &crate::caller::Callers,
    public_admin_url: &str,
) -> Result<(), ApiError> {
    // Exempt only a bearer the classification reads as one (`Bearer ` exactly): otherwise the
    // session would decide who the caller is while the request skipped this check.
    let bearer = matches!(crate::caller::bearer(headers), Ok(Some(_)));
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || bearer
        || !callers.has_session(headers)
    {
        return Ok(());
    }
    if !same_origin(headers, public_admin_url) {
        tracing::info!(
            %method,
            origin = ?headers.get(header::ORIGIN),
            "admin API: a session request from another origin refused"
        );
        return Err(ApiError::Forbidden(
            "a request signed in by a session must come from the inbox's own origin",
        ));
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if has_body && !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Does the request's `Origin` (else `Referer`) name the admin listener's own origin?
fn same_origin(headers: &HeaderMap, public_admin_url: &str) -> bool {
    let claimed = match headers.get(header::ORIGIN) {
        Some(origin) => origin,
        None => match headers.get(header::REFERER) {
            Some(referer) => referer,
            None => return false,
        },
    };
    let Some(claimed) = claimed.to_str().ok().and_then(origin_of) else {
        return false; // `Origin: null` (sandboxed frames, some redirects) and garbage
    };
    if origin_of(public_admin_url).is_some_and(|own| own == claimed) {
        return true;
    }
    // The request's own Host carries no scheme: take the claimed origin's for its default port.
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .is_some_and(|host| {
            let port = host.port_u16().or_else(|| default_port(&claimed.0));
            host.host().eq_ignore_ascii_case(&claimed.1) && port == Some(claimed.2)
        })
}

/// `(scheme, host, port)` of an absolute http(s) URL, lower-cased, the port defaulted.
fn origin_of(url: &str) -> Option<(String, String, u16)> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let port = authority.port_u16().or_else(|| default_port(&scheme))?;
    Some((scheme, authority.host().to_ascii_lowercase(), port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        let v = v.as_bytes();
        v.len() > 7
            && v[..7].eq_ignore_ascii_case(b"bearer ")
            && v[7..].iter().any(|b| !b.is_ascii_whitespace())
    })
}

/// The identity recorded for an approver's vote (subject, falling back to the class name).
pub(crate) fn approver_name(caller: &Caller) -> String {
    caller.requester()
}

/// May this caller act as an approver at all (list everything, vote, watch events)?
pub(super) fn require_approver(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_gated() {
        Err(ApiError::Forbidden(
            "a gated caller can never act as an approver",
        ))
    } else if caller.is_approver() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("this credential is not an approver"))
    }
}

/// May this caller read this approval? Approvers read all; a gated caller reads its own.
pub(super) fn may_view(caller: &Caller, approval: &Approval) -> bool {
    caller.is_approver() || (caller.is_gated() && caller.requester() == approval.requester)
}

/// All checks before a vote reaches the store (which enforces pending-ness and one vote each).
pub(super) fn check_vote(
    caller: &Caller,
    approval: &Approval,
    kind: VoteKind,
) -> Result<(), ApiError> {
    require_approver(caller)?;
    if kind == VoteKind::Bypass && !caller.is_admin() {
        return Err(ApiError::Forbidden("only an admin may bypass the quorum"));
    }
    if is_self_approval(
        &approver_name(caller),
        &caller.actors,
        &approval.requester,
        &approval.requester_actors,
    ) {
        return Err(ApiError::Forbidden(
            "self-approval is not allowed: the approver is part of the request's chain",
        ));
    }
    Ok(())
}

/// True when any party of the approver's chain (its subject and every actor in its `act` chain)
/// is also a party of the request's chain (the requester and its actors). This covers: the
/// requester approving, an agent that acted for the requester approving, the requester acting
/// through another subject's token, and one agent acting on both sides for two people.
pub(crate) fn is_self_approval(
    approver: &str,
    approver_actors: &[String],
    requester: &str,
    requester_actors: &[String],
) -> bool {
    let request_side =
        || std::iter::once(requester).chain(requester_actors.iter().map(String::as_str));
    std::iter::once(approver)
        .chain(approver_actors.iter().map(String::as_str))
        .any(|party| request_side().any(|r| r == party))
}

/// May this caller withdraw this approval? Only the gated requester itself.
pub(super) fn check_withdraw(caller: &Caller, approval: &Approval) -> Result<(), ApiError> {
    if caller.is_gated() && caller.requester() == approval.requester {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only the requester may withdraw its approval",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| (*s).to_owned()).collect()
    }

    /// (approver, approver actors, requester, requester actors, forbidden?)
    type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a [&'a str], bool);

    #[test]
    fn self_approval_table() {
        let cases: &[Case] = &[
            ("alice", &[], "bob", &[], false),
            ("bob", &[], "bob", &[], true),
            // the agent that acted for the requester approves with its own token
            ("agent-1", &[], "bob", &["agent-1"], true),
            // a deeper actor of the request's chain
            ("agent-0", &[], "bob", &["agent-1", "agent-0"], true),
            // the requester acting through someone else's token
            ("alice", &["bob"], "bob", &[], true),
            // the same agent acting for two different people on both sides
            ("alice", &["agent-1"], "bob", &["agent-1"], true),
            ("alice", &["agent-2"], "bob", &["agent-1"], false),
        ];
        for (a, aa, r, ra, want) in cases {
            assert_eq!(
                is_self_approval(a, &v(aa), r, &v(ra)),
                *want,
                "{a} {aa:?} vs {r} {ra:?}"
            );
        }
    }

    #[test]
    fn origin_table() {
        let own = "https://gw.example";
        // (Origin, Referer, Host, same origin?)
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);
        let cases: &[Case] = &[
            (Some("https://gw.example"), None, None, true),
            (Some("https://GW.example:443"), None, None, true),
            (Some("http://gw.example"), None, None, false),
            (Some("https://gw.example:8443"), None, None, false),
            (Some("https://evil.example"), None, None, false),
            (Some("null"), None, None, false),
            (None, Some("https://gw.example/some/page?x=1"), None, true),
            (None, Some("https://evil.example/gw.example"), None, false),
            (None, None, None, false),
            // the Host the browser sent the request to (e.g. a direct port on a private network)
            (
                Some("http://127.0.0.1:9090"),
                None,
                Some("127.0.0.1:9090"),
                true,
            ),
            (
                Some("http://127.0.0.1:9091"),
                None,
                Some("127.0.0.1:9090"),
                false,
            ),
            (
                Some("http://intra.example"),
                None,
                Some("intra.example"),
                true,
            ),
            (
                Some("http://intra.example:81"),
                None,
                Some("intra.example"),
                false,
            ),
            // an Origin wins over the Referer
            (
                Some("https://evil.example"),
                Some("https://gw.example/"),
                None,
                false,
            ),
        ];
        for (origin, referer, host, want) in cases {
            let mut h = HeaderMap::new();
            for (name, value) in [
                (header::ORIGIN, origin),
                (header::REFERER, referer),
                (header::HOST, host),
            ] {
                if let Some(v) = value {
                    h.insert(name, v.parse().expect("header"));
                }
            }
            assert_eq!(
                same_origin(&h, own),
                *want,
                "{origin:?} {referer:?} {host:?}"
            );
        }
    }

    #[test]
    fn json_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (v, want) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, v.parse().expect("header"));
            assert_eq!(is_json(&h), want, "{v}");
        }
    }

    #[test]
    fn bearer_detection() {
        let mut h = HeaderMap::new();
        assert!(!has_bearer(&h));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert!(!has_bearer(&h));
        h.insert(header::AUTHORIZATION, "Bearer   ".parse().expect("header"));
        assert!(!has_bearer(&h));
        h.insert(
            header::AUTHORIZATION,
            "bearer x.y.z".parse().expect("header"),
        );
        assert!(has_bearer(&h));
    }
}
