//! JWT verification with keys built at load (HS* from an env secret, RS*/PS*/ES*/EdDSA from a PEM
//! file or a JWKS document). Pure: `now` is passed in.
//!
//! Input: a bearer that looks like a JWT, and `now`. Output: its claims, or
//! [`CallerError::Rejected`] with a reason for the log (never for the response body).
//!
//! Invariants: the header's `alg` must be one of the configured algorithms *and* fit the family
//! of the key chosen for it, so `alg: none` and the HS/RS key-confusion attack (an HS256 token
//! MACed with the RSA public key) are rejected. `exp`/`nbf` are checked here against the passed-in
//! `now` with `leeway` (jsonwebtoken's own clock checks are off). `exp` is optional: a token
//! without one is accepted (Molecule-style long-lived tokens); when present it is enforced.
//! `jwks_url` is not implemented: configuring it is a load error rather than a silent no-op.

use jsonwebtoken::{errors::ErrorKind, Algorithm, Validation};
use serde_json::{Map, Value};

use super::CallerError;

mod keys;

use keys::{hs_key, jwks_keys, pem_key, Key};

/// Validated `[jwt]` settings; secrets and key material already read (from env / files).
#[derive(Clone)]
pub struct JwtSettings {
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// HS* secret bytes, read from the env var named by `hs_secret_env`.
    pub hs_secret: Option<Vec<u8>>,
    /// Contents of `public_key_file` (RSA/EC/Ed25519 PEM).
    pub public_key_pem: Option<Vec<u8>>,
    /// Contents of `jwks_file` (a JWKS JSON document).
    pub jwks_json: Option<String>,
    /// `jwks_url`, fetched at start and refreshed on an unknown `kid`. NOT IMPLEMENTED: setting it
    /// makes [`JwtVerifier::new`] fail.
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: std::time::Duration,
}

// Hand-written so the HS secret never reaches a log through `{:?}` of the config.
impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("algorithms", &self.algorithms)
            .field("hs_secret", &self.hs_secret.as_ref().map(|_| "<redacted>"))
            .field(
                "public_key_pem",
                &self.public_key_pem.as_ref().map(|p| p.len()),
            )
            .field("jwks_json", &self.jwks_json.as_ref().map(|j| j.len()))
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Verifies bearer JWTs against the configured keys.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSettings,
    /// The HS secret, then the PEM key, then the JWKS keys.
    keys: Vec<Key>,
}

impl JwtVerifier {
    /// Build keys once; every problem (bad PEM, key/alg mismatch, …) is returned together.
    pub fn new(settings: JwtSettings) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let algs = &settings.algorithms;
        if algs.is_empty() {
            problems.push("jwt.algorithms is empty".to_owned());
        }
        let mut keys = Vec::new();
        if let Some(secret) = &settings.hs_secret {
            keys.extend(hs_key(secret, algs, &mut problems));
        }
        if let Some(pem) = &settings.public_key_pem {
            keys.extend(pem_key(pem, algs, &mut problems));
        }
        if let Some(json) = &settings.jwks_json {
            keys.extend(jwks_keys(json, &mut problems));
        }
        if settings.jwks_url.is_some() {
            problems.push(
                "jwt.jwks_url is not supported yet; download the document and use jwks_file"
                    .to_owned(),
            );
        }
        for alg in algs {
            if !keys.iter().any(|k| k.fits(*alg)) {
                problems.push(format!(
                    "jwt.algorithms lists {alg:?} but no configured key can verify it"
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self { settings, keys })
        } else {
            Err(problems)
        }
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Verify `token` at `now_unix` and return its claims (a JSON object).
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Map<String, Value>, CallerError> {
        // An unknown alg (including "none") fails to parse here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| CallerError::Rejected("malformed header"))?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(CallerError::Rejected("algorithm not allowed"));
        }
        let key = self
            .select_key(header.alg, header.kid.as_deref())
            .ok_or(CallerError::Rejected("no key for token"))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| {
                CallerError::Rejected(match e.kind() {
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm => "algorithm does not fit key",
                    ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_)
                    | ErrorKind::InvalidToken => "malformed token",
                    _ => "invalid token",
                })
            })?;
        self.check_claims(&data.claims, now_unix)?;
        Ok(data.claims)
    }

    /// A `kid` names a JWKS key; without one (or with a kid the JWKS lacks) the HS secret or PEM
    /// key of the right family is used, or the JWKS key when exactly one fits the alg.
    fn select_key(&self, alg: Algorithm, kid: Option<&str>) -> Option<&Key> {
        if let Some(kid) = kid {
            let by_kid = self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg));
            if by_kid.is_some() {
                return by_kid;
            }
        }
        let mut unnamed = self.keys.iter().filter(|k| k.kid.is_none() && k.fits(alg));
        if let Some(key) = unnamed.next() {
            return Some(key);
        }
        if kid.is_some() {
            return None;
        }
        let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
        match (fitting.next(), fitting.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    fn check_claims(&self, claims: &Map<String, Value>, now_unix: u64) -> Result<(), CallerError> {
        let now = now_unix as f64;
        let leeway = self.settings.leeway.as_secs_f64();
        if let Some(exp) = claims.get("exp") {
            let exp = exp
                .as_f64()
                .ok_or(CallerError::Rejected("exp is not a number"))?;
            if now > exp + leeway {
                return Err(CallerError::Rejected("expired"));
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or(CallerError::Rejected("nbf is not a number"))?;
            if nbf - leeway > now {
                return Err(CallerError::Rejected("not yet valid"));
            }
        }
        if let Some(issuer) = &self.settings.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(CallerError::Rejected("issuer mismatch"));
            }
        }
        if let Some(audience) = &self.settings.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => {
                    auds.iter().any(|a| a.as_str() == Some(audience.as_str()))
                }
                _ => false,
            };
            if !ok {
                return Err(CallerError::Rejected("audience mismatch"));
            }
        }
        Ok(())
    }
}

/// Three base64url parts separated by dots; the signature may be empty (so `alg: none` tokens
/// are judged, and rejected, by the JWT rules rather than passed through).
pub fn is_jwt_shaped(bearer: &str) -> bool {
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = bearer.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
