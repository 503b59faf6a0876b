//! Stage 3: caller classification.
//!
//! Input: the request headers. Output: a [`Caller`] — which configured caller class the
//! credential belongs to (first whose `when` holds), its subject, and its claims (for
//! `{claim.*}` templates and self-approval checks). JWT verification is pure (keys are built at
//! load, `now` is passed in) except that an unknown `kid` may refresh the `jwt.jwks_url` keys;
//! opaque-token sources (a hashed-token lookup in a database, a constant-time comparison with an
//! env token) do IO and are tried in configured order.
//!
//! Invariant: a credential that is present but cannot be verified is an error here; whether that
//! is a 401 or a pass-through is decided by the caller of `classify` (only routes/guards 401).

use std::sync::Arc;

use serde_json::{Map, Value};

/// A compiled `[[callers]]` entry.
#[derive(Debug, Clone)]
pub struct CallerClass {
    pub name: Arc<str>,
    pub when: When,
    pub gated: bool,
    pub approver: bool,
    /// May bypass quorum (break-glass). Implies `approver`.
    pub admin: bool,
}

/// A compiled `when` rule over claims (JWT claims or an opaque source's row fields).
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Present { claim: String },
    Equals { claim: String, value: Value },
    OneOf { claim: String, values: Vec<Value> },
    All(Vec<When>),
    Any(Vec<When>),
}

/// Who is calling. `class` is `None` for anonymous callers and credentials no class matches.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub class: Option<Arc<CallerClass>>,
    /// Value of `subject_claim`, when present.
    pub subject: Option<String>,
    pub claims: Map<String, Value>,
    /// Subjects of the RFC 8693 `act` chain (outermost actor first), for self-approval checks.
    pub actors: Vec<String>,
    /// Whether a source or the JWT rules positively recognised the credential. `false` means
    /// unknown: no credential, or one nobody recognised (see `[gate] unknown_callers`).
    pub recognised: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn class_name(&self) -> Option<&str> {
        self.class.as_deref().map(|c| &*c.name)
    }

    pub fn is_gated(&self) -> bool {
        self.class.as_deref().is_some_and(|c| c.gated)
    }

    pub fn is_approver(&self) -> bool {
        self.class
            .as_deref()
            .is_some_and(|c| !c.gated && (c.approver || c.admin))
    }

    pub fn is_admin(&self) -> bool {
        self.class.as_deref().is_some_and(|c| !c.gated && c.admin)
    }

    /// The approval's `requester`: the subject, falling back to the caller class name.
    pub fn requester(&self) -> String {
        self.subject
            .clone()
            .or_else(|| self.class_name().map(str::to_owned))
            .unwrap_or_else(|| "anonymous".to_owned())
    }
}

/// Why a credential could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    /// The `Authorization` value is not UTF-8: the gateway cannot read it the way the upstream
    /// (Go) does, so on a route or guard it is refused rather than treated as absent.
    #[error("Authorization header is not valid UTF-8")]
    Undecodable,
    /// Present but unverifiable (bad signature, expired, wrong alg, wrong iss/aud, malformed).
    /// The reason is for logs only, never for the response body.
    #[error("credential rejected: {0}")]
    Rejected(&'static str),
    /// An opaque-token source failed (database down): fail closed with 503 on gated routes.
    #[error("credential source {0} unavailable")]
    SourceUnavailable(Arc<str>),
}

pub mod jwt;
pub mod opaque;
pub mod session;
mod when;

pub use jwt::{JwksTiming, JwtSettings, JwtVerifier};
pub use opaque::{TokenSource, TokenSourceKind};

/// Everything needed to classify callers, compiled once at load and shared behind an `Arc`.
#[derive(Debug)]
pub struct Callers {
    pub classes: Vec<Arc<CallerClass>>,
    pub jwt: Option<JwtVerifier>,
    pub sources: Vec<TokenSource>,
    pub subject_claim: String,
}

impl Callers {
    /// Classify the request's credential. `now_unix` is seconds since the epoch (for exp/nbf).
    ///
    /// Order: the `Authorization` header read as the upstream reads it ([`bearer`]; none,
    /// another scheme or empty -> no bearer; two -> error), then the sources in configured
    /// order (bearer sources only when there is a bearer, header sources only when their
    /// headers are present), then the JWT rules for JWT-shaped bearers. A credential nobody
    /// recognises yields an unrecognised caller with no class (see `unknown_callers`).
    pub async fn classify(
        &self,
        headers: &http::HeaderMap,
        now_unix: u64,
    ) -> Result<Caller, CallerError> {
        let bearer = bearer(headers)?;
        for source in &self.sources {
            if let Some(claims) = source.lookup(bearer, headers).await? {
                return Ok(self.caller_from_claims(claims));
            }
        }
        let Some(bearer) = bearer else {
            return Ok(Caller::anonymous());
        };
        match &self.jwt {
            Some(verifier) if jwt::is_jwt_shaped(bearer) => {
                let claims = verifier.verify_with_refresh(bearer, now_unix).await?;
                Ok(self.caller_from_claims(claims))
            }
            _ => Ok(Caller::anonymous()),
        }
    }

    /// Does the request carry a session an `http` source would ask about (one of its forwarded
    /// headers, e.g. `Cookie`)? The admin API accepts such a request without a bearer.
    pub fn has_session(&self, headers: &http::HeaderMap) -> bool {
        self.sources.iter().any(|s| match &s.kind {
            TokenSourceKind::Http(source) => source.forwards_any(headers),
            _ => false,
        })
    }

    /// The first class whose `when` holds, the subject and the `act` chain.
    pub fn caller_from_claims(&self, claims: Map<String, Value>) -> Caller {
        let class = self.classes.iter().find(|c| c.when.holds(&claims)).cloned();
        let subject = claims.get(&self.subject_claim).and_then(subject_string);
        let actors = act_chain(&claims);
        Caller {
            class,
            subject,
            claims,
            actors,
            recognised: true,
        }
    }
}

/// The bearer token exactly as the upstream reads it, if the request carries one.
///
/// The workspace-server (`wsauth.BearerTokenFromHeader`) takes the first `Authorization` value,
/// requires the exact, case-sensitive prefix `Bearer ` and applies Go's `strings.TrimSpace` to
/// the rest. Go keeps header bytes ≥ 0x80, so the value is decoded as UTF-8 here; `str::trim`
/// removes exactly the set `TrimSpace` removes on valid UTF-8 (Unicode `White_Space`: U+0009–
/// U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F,
/// U+3000). A value that is not UTF-8 is [`CallerError::Undecodable`]; two values are refused
/// ([`CallerError::DuplicateAuthorization`]) rather than picking the one Go would.
pub fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, CallerError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CallerError::DuplicateAuthorization);
    }
    let value = std::str::from_utf8(value.as_bytes()).map_err(|_| CallerError::Undecodable)?;
    let Some(token) = value.strip_prefix("Bearer ") else {
        // Another scheme, or `bearer` in another case: the upstream sees no bearer either.
        return Ok(None);
    };
    let token = token.trim();
    Ok((!token.is_empty()).then_some(token))
}

/// A subject is a string claim; a number is accepted and stringified.
fn subject_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// RFC 8693 `act` chain, outermost (current) actor first.
fn act_chain(claims: &Map<String, Value>) -> Vec<String> {
    let mut actors = Vec::new();
    let mut act = claims.get("act");
    while let Some(Value::Object(a)) = act {
        actors.extend(a.get("sub").and_then(subject_string));
        act = a.get("act");
    }
    actors
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
