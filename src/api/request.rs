//! `POST /v1/approvals`: a gated caller (an agent's `request_approval(action, reason)` tool) asks
//! approval for an action the gateway does not proxy. Same identity and dedup as the gate:
//! `request_hash(scope, action, context)`; 201 with a new approval, 200 with the open one when an
//! identical request is already open. Only gated callers may ask (approvers and other callers get
//! 403): an approval is a gated caller's request by definition, and its requester is the one
//! who may later withdraw it.
//!
//! `action` becomes a metric label, so it is restricted to a short identifier charset. An action
//! a configured route uses is refused (422): such approvals come only from the gate.
//! Approvals made here show `origin: "agent"`: their reason and context are the agent's words.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::{parse_json, AdminState};
use crate::caller::Caller;
use crate::metrics::ApprovalEvent;
use crate::store::{Approval, NewApproval};

/// Bound on `action` (a metric label) of API-made requests.
const MAX_NAME_LEN: usize = 128;
/// Bound on `scope`.
const MAX_SCOPE_LEN: usize = 1024;

#[derive(Debug, Deserialize)]
struct RequestBody {
    action: String,
    scope: String,
    reason: String,
    #[serde(default)]
    context: Option<Value>,
}

/// `POST /v1/approvals`: a gated caller asks approval for an action the gateway does not proxy.
/// 201 with a new approval; 200 with the open one when an identical request is already open.
pub(crate) async fn request(
    State(st): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Approval>), ApiError> {
    let caller = st.authenticate(&headers).await?;
    if !caller.is_gated() {
        return Err(ApiError::Forbidden(
            "only a gated caller may request an approval",
        ));
    }
    let body: RequestBody = parse_json(&body?)?;
    let policy = st.policy.load_full();
    // An approval asked for here could otherwise be consumed by a proxied request with the
    // same identity, on the strength of a reason and context the agent wrote itself.
    if policy.routes.values().any(|r| *r.action == *body.action) {
        return Err(ApiError::ActionIsProxied);
    }
    let new = new_approval(&caller, body, policy.gate.approvals_required)?;
    let (approval, created) = st.store.request(&new, policy.gate.ttls, Utc::now()).await?;
    let actor = caller.requester();
    if created {
        st.transition(&approval, ApprovalEvent::requested, &actor);
        Ok((StatusCode::CREATED, Json(approval)))
    } else {
        st.transition(&approval, ApprovalEvent::deduplicated, &actor);
        Ok((StatusCode::OK, Json(approval)))
    }
}

fn new_approval(
    caller: &Caller,
    body: RequestBody,
    approvals_required: u32,
) -> Result<NewApproval, ApiError> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
    };
    if !valid_name(&body.action) {
        return Err(ApiError::bad_request(format!(
            "action must be 1-{MAX_NAME_LEN} characters of letters, digits, _ - . : /"
        )));
    }
    if body.scope.is_empty() || body.scope.len() > MAX_SCOPE_LEN {
        return Err(ApiError::bad_request("scope must be a non-empty string"));
    }
    let context = match body.context {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::bad_request("context must be a JSON object")),
    };
    Ok(NewApproval {
        request_hash: crate::gate::hash::request_hash(&body.scope, &body.action, &context),
        scope: body.scope,
        action: body.action,
        reason: body.reason,
        context,
        method: None,
        path: None,
        requester: caller.requester(),
        requester_actors: caller.actors.clone(),
        caller: caller.class_name().map(str::to_owned),
        approvals_required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(action: &str, scope: &str, context: Option<Value>) -> RequestBody {
        RequestBody {
            action: action.into(),
            scope: scope.into(),
            reason: "r".into(),
            context,
        }
    }

    #[test]
    fn request_bodies_are_validated() {
        let caller = Caller::anonymous();
        let ok = new_approval(&caller, body("drop_db", "ws-1", None), 2).expect("valid");
        assert_eq!(
            (ok.context.clone(), ok.approvals_required),
            (serde_json::json!({}), 2)
        );
        assert_eq!(
            ok.request_hash,
            crate::gate::hash::request_hash("ws-1", "drop_db", &ok.context)
        );
        assert!(new_approval(&caller, body("", "ws-1", None), 1).is_err());
        assert!(new_approval(&caller, body("drop db", "ws-1", None), 1).is_err());
        assert!(new_approval(&caller, body("a", "", None), 1).is_err());
        assert!(new_approval(&caller, body("a", "s", Some(serde_json::json!([1]))), 1).is_err());
    }
}
