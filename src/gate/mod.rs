//! Stage 4: the gate decision. Pure: no IO, no clock.
//!
//! Input: one request that hit a guard or a destructive route, as a `Call` (its head, the
//! classified caller, the matched [`GateRule`] with its path parameters, the body once read),
//! and the `[gate]` `Settings`. Output: a `#[must_use]` `Outcome` — forward, shadow,
//! refuse, read the body, or hold for an approval whose identity `(scope, action,
//! request_hash)` the store consumes or creates. The proxy only carries it out.
//!
//! Invariant: `request_hash` is byte-for-byte the hash the workspace-server's own Go gate computes
//! (see `canonical.rs` and the vectors in `tests/fixtures/request-hash-vectors.json`).
//!
//! Files: `decide.rs` (the decision), `template.rs` (parse at load, render per request),
//! `body.rs` (Go-binding body fields, parsed once per request), `binding.rs` (what an approval
//! binds), `canonical.rs` + `hash.rs` (the identity digest), `mode.rs` (the flag).

pub mod binding;
pub mod body;
mod canonical;
mod decide;
pub mod hash;
mod mode;
mod template;

pub use canonical::canonical_json;
pub(crate) use decide::{decide, Call, Outcome, Refusal, Settings};
pub use hash::request_hash;
pub use mode::Mode;
pub use template::{Template, TemplateError};

use std::sync::Arc;

use http::{HeaderMap, Uri};
use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::route::Params;

/// A configured destructive route: what the approval is called and what identifies it.
#[derive(Debug)]
pub struct GateRule {
    /// The approval's `action` (route key `action`), shared by every approval the route asks for.
    pub action: Arc<str>,
    pub(crate) scope: Template,
    pub(crate) reason: Template,
    /// Context keys in config order; rendered values are JSON strings.
    pub(crate) context: Vec<(String, Template)>,
    /// Per-route ceiling: the effective mode is `min(global, this)`.
    pub(crate) mode: Option<Mode>,
    /// Per-route quorum override.
    pub(crate) approvals_required: Option<u32>,
    /// What the approval's identity covers (`bind`, default [`Bind::Request`]).
    pub(crate) bind: Bind,
    /// Per-route override of `[gate] unknown_callers`.
    pub(crate) unknown_callers: Option<UnknownCallers>,
}

/// What an approval binds (route key `bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Bind {
    /// Scope, action, context, and the whole request the upstream acts on: method, path,
    /// every query parameter, the body (`binding.rs`), under the context key [`binding::KEY`].
    #[default]
    Request,
    /// Scope, action and context only: the hash equals the in-server Go gate's where the
    /// contexts are the same.
    Context,
}

/// What happens to a caller nobody recognised on a gated route (`unknown_callers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownCallers {
    /// 401 in enforce mode (shadow: logged and counted, forwarded).
    #[default]
    Refuse,
    /// Forwarded; the upstream authenticates it.
    Pass,
}

/// Everything of the request that templates may read. Borrowed: nothing is copied until rendering.
pub struct RequestView<'a> {
    /// The request's method.
    pub method: &'a http::Method,
    /// The decoded path the upstream acts on (`route::path::plain`), e.g. `/workspaces/w1`.
    pub path: &'a str,
    /// The route's path parameters, read by `{path.NAME}`.
    pub params: &'a Params,
    /// The request URI as received; `{query.NAME}` reads its query.
    pub uri: &'a Uri,
    /// The request headers, read by `{header.NAME}`.
    pub headers: &'a HeaderMap,
    /// Who sent it, read by `{claim.NAME}` and `{caller}`.
    pub caller: &'a Caller,
    /// `Some` only when `GateRule::needs_body` and the body was buffered.
    pub body: Option<&'a [u8]>,
}

/// The identity and description of the approval a gated request needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gated {
    pub(crate) action: Arc<str>,
    pub(crate) scope: String,
    pub(crate) reason: String,
    pub(crate) context: Map<String, Value>,
    pub(crate) request_hash: String,
    pub(crate) approvals_required: u32,
}

/// Why a gated request cannot be evaluated. All are the downstream's fault (400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    /// A body field is read but the body is not a JSON object.
    #[error("request body is not a JSON object but the route reads `{field}` from it")]
    BodyNotJson {
        /// The reference as the template writes it, e.g. `body.name`.
        field: String,
    },
    /// A body field a template reads is absent (or `null`).
    #[error("request body lacks field `{field}`")]
    FieldMissing {
        /// The reference as the template writes it, e.g. `body.name`.
        field: String,
    },
    /// A body field a template reads occurs more than once, in some letter case (Go binds it
    /// case-insensitively).
    #[error("request body field `{field}` appears more than once (in some letter case)")]
    FieldAmbiguous {
        /// The reference as the template writes it, e.g. `body.name`.
        field: String,
    },
    /// A body field a template reads is an object or an array.
    #[error("request body field `{field}` is not a string, number or boolean")]
    FieldNotScalar {
        /// The reference as the template writes it, e.g. `body.name`.
        field: String,
    },
    /// A `{header.NAME}` reference whose value is not valid UTF-8: rendering it lossily or as
    /// empty would let different requests share one approval.
    #[error("request header `{header}` is not valid UTF-8 but the route reads it")]
    HeaderNotUtf8 {
        /// The header's name.
        header: String,
    },
    /// The query cannot be read the one way the upstream reads it (Go `url.ParseQuery` drops
    /// pairs with a `;` or a malformed escape; invalid UTF-8 would be shown lossily).
    #[error("the query string is ambiguous: {why}")]
    QueryAmbiguous {
        /// What makes it ambiguous.
        why: &'static str,
    },
    /// A JSON body with a key that occurs twice (exactly or in another letter case) in one
    /// object: Go binds the last, and which one that is depends on member order.
    #[error("request body has the key `{key}` more than once (in some letter case) in one object")]
    BodyKeyAmbiguous {
        /// The key as it occurs the second time.
        key: String,
    },
    /// A JSON number a `float64` cannot hold exactly: the upstream may keep it exactly while
    /// the approval would show and bind a neighbour.
    #[error(
        "request body number `{literal}` cannot be bound exactly (it does not survive a float64)"
    )]
    NumberInexact {
        /// The number as written in the body.
        literal: String,
    },
}

impl GateRule {
    /// Whether the body is part of the identity or any template reads it, so the proxy must
    /// buffer it.
    pub(crate) fn needs_body(&self) -> bool {
        self.bind == Bind::Request
            || self.scope.needs_body()
            || self.reason.needs_body()
            || self.context.iter().any(|(_, t)| t.needs_body())
    }
}
