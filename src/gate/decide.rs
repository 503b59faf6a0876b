//! `decide`: the gate's pure decision for one request on a gated route.
//!
//! Input: the rule, the request view, the global mode and the default quorum. Output: `Pass`
//! (caller not gated, or effective mode off), or `Shadow`/`Enforce` with the approval identity.
//! The effective mode is `min(global, rule ceiling)`; a rule without a ceiling allows enforce.
//! Templates are rendered only for gated callers, so an ungated caller's odd body is never a 400.

use serde_json::{Map, Value};

use super::binding;
use super::body::Body;
use super::hash::request_hash_of_map;
use super::{Bind, Decision, GateError, GateRule, Gated, Mode, RequestView};

/// Decide whether this request needs an approval, and which one.
pub fn decide(
    rule: &GateRule,
    req: &RequestView<'_>,
    global: Mode,
    default_quorum: u32,
) -> Result<Decision, GateError> {
    let effective = global.min(rule.mode.unwrap_or(Mode::Enforce));
    if effective == Mode::Off || !req.caller.is_gated() {
        return Ok(Decision::Pass);
    }
    let body = Body::new(req.body);
    let scope = rule.scope.render(req, &body)?;
    let reason = rule.reason.render(req, &body)?;
    let mut context = Map::new();
    for (key, template) in &rule.context {
        context.insert(key.clone(), Value::String(template.render(req, &body)?));
    }
    if rule.bind == Bind::Request {
        context.insert(binding::KEY.to_owned(), binding::request(req, &body)?);
    }
    let request_hash = request_hash_of_map(&scope, &rule.action, &context);
    let gated = Gated {
        action: rule.action.clone(),
        scope,
        reason,
        context,
        request_hash,
        approvals_required: rule.approvals_required.unwrap_or(default_quorum),
    };
    Ok(match effective {
        Mode::Shadow => Decision::Shadow(gated),
        _ => Decision::Enforce(gated),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "decide_tests.rs"]
mod tests;
