//! Who may do what on the admin API.
//!
//! Authentication reuses the proxy's caller classification (`Policy::callers`); the checks below
//! are pure functions of the classified [`Caller`] and the [`Approval`], so the rules can be
//! table-tested. Invariants: a gated caller never decides; nobody decides an approval in which
//! they appear on both sides (requester or any actor of its `act` chain versus approver or any
//! actor of the approver's chain); only admins bypass.

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::caller::{Caller, CallerError};
use crate::store::{Approval, VoteKind};

/// Classify the request's credential. No bearer credential → 401; a credential that fails
/// verification or that nothing recognises → 401; two Authorization headers → 400; a source
/// outage → 503.
pub async fn authenticate(
    callers: &crate::caller::Callers,
    headers: &HeaderMap,
    now_unix: u64,
) -> Result<Caller, ApiError> {
    if !has_bearer(headers) {
        return Err(ApiError::MissingCredential);
    }
    match callers.classify(headers, now_unix).await {
        // A bearer no source recognised proves nobody.
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

fn has_bearer(headers: &HeaderMap) -> bool {
    headers.get_all(header::AUTHORIZATION).iter().any(|v| {
        let v = v.as_bytes();
        v.len() > 7
            && v[..7].eq_ignore_ascii_case(b"bearer ")
            && v[7..].iter().any(|b| !b.is_ascii_whitespace())
    })
}

/// The identity recorded for an approver's vote (subject, falling back to the class name).
pub fn approver_name(caller: &Caller) -> String {
    caller.requester()
}

/// May this caller act as an approver at all (list everything, vote, watch events)?
pub fn require_approver(caller: &Caller) -> Result<(), ApiError> {
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
pub fn may_view(caller: &Caller, approval: &Approval) -> bool {
    caller.is_approver() || (caller.is_gated() && caller.requester() == approval.requester)
}

/// All checks before a vote reaches the store (which enforces pending-ness and one vote each).
pub fn check_vote(caller: &Caller, approval: &Approval, kind: VoteKind) -> Result<(), ApiError> {
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
pub fn is_self_approval(
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
pub fn check_withdraw(caller: &Caller, approval: &Approval) -> Result<(), ApiError> {
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
