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
//! With `jwks_url`, the keys published there (`jwks.rs`) are searched after the static ones; the
//! key lookup may then refresh them, so `JwtVerifier::verify_with_refresh` is async (the
//! decision itself stays pure: `now` is still passed in).

use std::sync::Arc;

use jsonwebtoken::{errors::ErrorKind, Algorithm, Header, Validation};
use serde_json::{Map, Value};

use super::CallerError;

mod jwks;
mod keys;

use jwks::JwksCache;
use jwks::JwksTiming;
use keys::{hs_key, jwks_keys, pem_key, Key, KeyKind};

/// Validated `[jwt]` settings; secrets and key material already read (from env / files).
#[derive(Clone)]
pub struct JwtSettings {
    /// `jwt.algorithms`: the only `alg` values accepted; any other is rejected.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// HS* secret bytes, read from the env var named by `hs_secret_env`.
    pub hs_secret: Option<Vec<u8>>,
    /// Contents of `public_key_file` (RSA/EC/Ed25519 PEM).
    pub public_key_pem: Option<Vec<u8>>,
    /// Contents of `jwks_file` (a JWKS JSON document).
    pub jwks_json: Option<String>,
    /// `jwks_url`, fetched at start and refreshed on an unknown `kid` (see `jwks.rs`).
    pub jwks_url: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (a string or one of an array), when set.
    pub audience: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf` (`jwt.leeway`, default 30 s).
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
    /// The HS secret, then the PEM key, then the `jwks_file` keys.
    keys: Vec<Key>,
    /// The `jwks_url` keys, searched after `keys`.
    jwks: Option<Arc<JwksCache>>,
}

impl JwtVerifier {
    /// Build keys once; every problem (bad PEM, key/alg mismatch, …) is returned together. With
    /// `jwks_url`, the first fetch is started in the background when called inside a tokio
    /// runtime (it never blocks or fails the load: an IdP down at start is logged).
    pub fn new(settings: JwtSettings) -> Result<Self, Vec<String>> {
        let verifier = Self::with_jwks_timing(settings, JwksTiming::default())?;
        verifier.spawn_prefetch();
        Ok(verifier)
    }

    /// As [`Self::new`] with the given `jwks_url` rate limit and timeout, and no start-up fetch.
    pub(super) fn with_jwks_timing(
        settings: JwtSettings,
        timing: JwksTiming,
    ) -> Result<Self, Vec<String>> {
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
            keys.extend(jwks_keys(json, "jwt.jwks_file", &mut problems));
        }
        let jwks = settings.jwks_url.as_deref().and_then(|url| {
            JwksCache::new(url, timing)
                .map_err(|e| problems.push(e))
                .ok()
        });
        for alg in algs {
            // Asymmetric keys may come from the URL later; a secret is never published there.
            let from_url = jwks.is_some() && !KeyKind::Hmac.fits(*alg);
            if !from_url && !keys.iter().any(|k| k.fits(*alg)) {
                problems.push(format!(
                    "jwt.algorithms lists {alg:?} but no configured key can verify it"
                ));
            }
        }
        if problems.is_empty() {
            let jwks = jwks.map(Arc::new);
            Ok(Self {
                settings,
                keys,
                jwks,
            })
        } else {
            Err(problems)
        }
    }

    #[cfg(test)]
    pub(crate) fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Start the first `jwks_url` fetch in the background (no-op without a URL or a runtime).
    pub(super) fn spawn_prefetch(&self) {
        if let (Some(jwks), Ok(rt)) = (&self.jwks, tokio::runtime::Handle::try_current()) {
            let jwks = Arc::clone(jwks);
            rt.spawn(async move { jwks.prefetch().await });
        }
    }

    /// Fetch the `jwks_url` keys now, unless a fetch already happened (no-op without a URL).
    #[cfg(test)]
    pub(super) async fn prefetch(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.prefetch().await;
        }
    }

    /// Verify `token` at `now_unix` with the keys at hand (no refresh) and return its claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Map<String, Value>, CallerError> {
        let header = self.header(token)?;
        let remote = self.jwks.as_ref().map(|j| j.snapshot());
        self.verify_with(
            token,
            &header,
            remote.as_deref().unwrap_or_default(),
            now_unix,
        )
    }

    /// As [`Self::verify`], but a token whose `kid` no key has (or that no key fits) first asks
    /// for a `jwks_url` refresh (rate-limited, single-flight) and is then verified once more.
    pub(super) async fn verify_with_refresh(
        &self,
        token: &str,
        now_unix: u64,
    ) -> Result<Map<String, Value>, CallerError> {
        let header = self.header(token)?;
        let Some(jwks) = &self.jwks else {
            return self.verify_with(token, &header, &[], now_unix);
        };
        // Read before the snapshot: a fetch finishing in between then counts as "since".
        let seen = jwks.attempts();
        let mut remote = jwks.snapshot();
        if self.unknown_key(&remote, &header) {
            jwks.refresh(seen).await;
            remote = jwks.snapshot();
        }
        self.verify_with(token, &header, &remote, now_unix)
    }

    /// The token's header, once its `alg` is known to be allowed (so `alg: none` floods never
    /// reach the IdP).
    fn header(&self, token: &str) -> Result<Header, CallerError> {
        // An unknown alg (including "none") fails to parse here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| CallerError::Rejected("malformed header"))?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(CallerError::Rejected("algorithm not allowed"));
        }
        Ok(header)
    }

    /// A named key nobody has, or no key for an unnamed one: worth asking the IdP.
    fn unknown_key(&self, remote: &[Key], header: &Header) -> bool {
        match header.kid.as_deref() {
            Some(kid) => !self
                .keys
                .iter()
                .chain(remote)
                .any(|k| k.kid.as_deref() == Some(kid)),
            None => self.select_key(remote, header.alg, None).is_none(),
        }
    }

    fn verify_with(
        &self,
        token: &str,
        header: &Header,
        remote: &[Key],
        now_unix: u64,
    ) -> Result<Map<String, Value>, CallerError> {
        let key = self
            .select_key(remote, header.alg, header.kid.as_deref())
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
    /// key of the right family is used, or the JWKS key when exactly one fits the alg. Static
    /// keys are searched before the `jwks_url` ones (`remote`).
    fn select_key<'a>(
        &'a self,
        remote: &'a [Key],
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Option<&'a Key> {
        let all = || self.keys.iter().chain(remote);
        if let Some(kid) = kid {
            let by_kid = all().find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg));
            if by_kid.is_some() {
                return by_kid;
            }
        }
        let mut unnamed = all().filter(|k| k.kid.is_none() && k.fits(alg));
        if let Some(key) = unnamed.next() {
            return Some(key);
        }
        if kid.is_some() {
            return None;
        }
        let mut fitting = all().filter(|k| k.fits(alg));
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
pub(super) fn is_jwt_shaped(bearer: &str) -> bool {
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
pub(crate) mod tests {
    //! Table tests for JWT verification. Tokens are minted with `jsonwebtoken::encode` and the
    //! throwaway keys in `tests/fixtures/keys/`.

    use std::time::Duration;

    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";
    const NOW: u64 = 1_700_000_000;
    const RSA_PRIV: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa_private.pem");
    const RSA_PUB: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa_public.pem");
    const EC_PRIV: &[u8] = include_bytes!("../../tests/fixtures/keys/ec_private.pem");
    const EC_PUB: &[u8] = include_bytes!("../../tests/fixtures/keys/ec_public.pem");
    const ED_PRIV: &[u8] = include_bytes!("../../tests/fixtures/keys/ed25519_private.pem");
    const ED_PUB: &[u8] = include_bytes!("../../tests/fixtures/keys/ed25519_public.pem");
    const JWKS: &str = include_str!("../../tests/fixtures/keys/jwks.json");

    pub(crate) fn settings(algorithms: Vec<Algorithm>) -> JwtSettings {
        JwtSettings {
            algorithms,
            hs_secret: None,
            public_key_pem: None,
            jwks_json: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
        }
    }

    pub(crate) fn hs_verifier() -> JwtVerifier {
        let s = JwtSettings {
            hs_secret: Some(SECRET.to_vec()),
            ..settings(vec![Algorithm::HS256])
        };
        JwtVerifier::new(s).expect("hs verifier")
    }

    pub(crate) fn hs_token(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    }

    fn b64(s: &str) -> String {
        // Minimal base64url (no padding) so tests can hand-craft headers jsonwebtoken refuses to mint.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn hs256_table() {
        let v = hs_verifier();
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(b"wrong"),
        )
        .expect("encode");
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode");
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"a"}"#)
        );
        let cases: Vec<(&str, String, Result<(), &str>)> = vec![
            (
                "valid",
                hs_token(&json!({"sub": "a", "exp": NOW + 60})),
                Ok(()),
            ),
            ("valid without exp", hs_token(&json!({"sub": "a"})), Ok(())),
            ("wrong secret", other, Err("bad signature")),
            ("alg none", none, Err("malformed header")),
            ("unlisted alg", hs384, Err("algorithm not allowed")),
            (
                "expired beyond leeway",
                hs_token(&json!({"exp": NOW - 31})),
                Err("expired"),
            ),
            (
                "expired within leeway",
                hs_token(&json!({"exp": NOW - 29})),
                Ok(()),
            ),
            (
                "nbf in future",
                hs_token(&json!({"nbf": NOW + 31})),
                Err("not yet valid"),
            ),
            (
                "nbf within leeway",
                hs_token(&json!({"nbf": NOW + 29})),
                Ok(()),
            ),
            (
                "exp not a number",
                hs_token(&json!({"exp": "soon"})),
                Err("exp is not a number"),
            ),
            ("garbage", "a.b.c".to_owned(), Err("malformed header")),
        ];
        for (name, token, want) in cases {
            let got = v.verify(&token, NOW).map(|_| ());
            assert_eq!(got, want.map_err(CallerError::Rejected), "{name}");
        }
    }

    #[test]
    fn iss_and_aud_are_checked_when_configured() {
        let s = JwtSettings {
            hs_secret: Some(SECRET.to_vec()),
            issuer: Some("https://idp/".into()),
            audience: Some("ws".into()),
            ..settings(vec![Algorithm::HS256])
        };
        let v = JwtVerifier::new(s).expect("verifier");
        let cases: Vec<(&str, Value, Result<(), &str>)> = vec![
            (
                "both match",
                json!({"iss": "https://idp/", "aud": "ws"}),
                Ok(()),
            ),
            (
                "aud array",
                json!({"iss": "https://idp/", "aud": ["x", "ws"]}),
                Ok(()),
            ),
            (
                "iss mismatch",
                json!({"iss": "https://evil/", "aud": "ws"}),
                Err("issuer mismatch"),
            ),
            ("iss missing", json!({"aud": "ws"}), Err("issuer mismatch")),
            (
                "aud mismatch",
                json!({"iss": "https://idp/", "aud": "other"}),
                Err("audience mismatch"),
            ),
            (
                "aud array mismatch",
                json!({"iss": "https://idp/", "aud": ["other"]}),
                Err("audience mismatch"),
            ),
            (
                "aud missing",
                json!({"iss": "https://idp/"}),
                Err("audience mismatch"),
            ),
        ];
        for (name, claims, want) in cases {
            let got = v.verify(&hs_token(&claims), NOW).map(|_| ());
            assert_eq!(got, want.map_err(CallerError::Rejected), "{name}");
        }
    }

    fn pem_verifier(alg: Algorithm, pem: &[u8]) -> JwtVerifier {
        JwtVerifier::new(JwtSettings {
            public_key_pem: Some(pem.to_vec()),
            ..settings(vec![alg])
        })
        .expect("verifier")
    }

    #[test]
    fn asymmetric_keys_from_pem() {
        let cases = [
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PRIV),
                RSA_PUB,
            ),
            (
                Algorithm::PS256,
                EncodingKey::from_rsa_pem(RSA_PRIV),
                RSA_PUB,
            ),
            (Algorithm::ES256, EncodingKey::from_ec_pem(EC_PRIV), EC_PUB),
            (Algorithm::EdDSA, EncodingKey::from_ed_pem(ED_PRIV), ED_PUB),
        ];
        for (alg, key, public) in cases {
            let key = key.expect("encoding key");
            let token = encode(
                &Header::new(alg),
                &json!({"sub": "a", "exp": NOW + 5}),
                &key,
            )
            .expect("encode");
            let claims = pem_verifier(alg, public)
                .verify(&token, NOW)
                .expect("valid");
            assert_eq!(claims.get("sub"), Some(&json!("a")), "{alg:?}");
            let tampered = format!("{}x", &token[..token.len() - 1]);
            assert!(
                pem_verifier(alg, public).verify(&tampered, NOW).is_err(),
                "{alg:?} tampered"
            );
        }
    }

    #[test]
    fn rs_to_hs_key_confusion_is_rejected() {
        let v = pem_verifier(Algorithm::RS256, RSA_PUB);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(RSA_PUB),
        )
        .expect("encode");
        assert_eq!(
            v.verify(&forged, NOW),
            Err(CallerError::Rejected("algorithm not allowed"))
        );
        // Even with HS256 listed beside RS256 (and a real HS secret), the PEM is never an HMAC key.
        let s = JwtSettings {
            hs_secret: Some(SECRET.to_vec()),
            public_key_pem: Some(RSA_PUB.to_vec()),
            ..settings(vec![Algorithm::RS256, Algorithm::HS256])
        };
        let v = JwtVerifier::new(s).expect("verifier");
        assert_eq!(
            v.verify(&forged, NOW),
            Err(CallerError::Rejected("bad signature"))
        );
    }

    #[test]
    fn jwks_by_kid_and_single_key_without_kid() {
        let v = JwtVerifier::new(JwtSettings {
            jwks_json: Some(JWKS.into()),
            ..settings(vec![Algorithm::RS256])
        })
        .expect("verifier");
        let key = EncodingKey::from_rsa_pem(RSA_PRIV).expect("key");
        let mint = |kid: Option<&str>| {
            let header = Header {
                kid: kid.map(str::to_owned),
                ..Header::new(Algorithm::RS256)
            };
            encode(&header, &json!({"sub": "a"}), &key).expect("encode")
        };
        assert!(v.verify(&mint(Some("rsa-1")), NOW).is_ok(), "by kid");
        assert!(v.verify(&mint(None), NOW).is_ok(), "single key, no kid");
        assert_eq!(
            v.verify(&mint(Some("nope")), NOW),
            Err(CallerError::Rejected("no key for token"))
        );
    }

    #[test]
    fn load_problems_are_all_reported() {
        let cases: Vec<(&str, JwtSettings, usize)> = vec![
            ("no algorithms", settings(vec![]), 1),
            (
                "HS listed without secret",
                settings(vec![Algorithm::HS256]),
                1,
            ),
            (
                "bad pem and bad jwks; jwks_url covers RS256",
                JwtSettings {
                    public_key_pem: Some(b"junk".to_vec()),
                    jwks_json: Some("{}".into()),
                    jwks_url: Some("https://idp/jwks".into()),
                    ..settings(vec![Algorithm::RS256])
                },
                2,
            ),
            (
                "jwks_url does not stand in for the HS secret",
                JwtSettings {
                    jwks_url: Some("https://idp/jwks".into()),
                    ..settings(vec![Algorithm::HS256, Algorithm::RS256])
                },
                1,
            ),
            (
                "jwks_url not http(s)",
                JwtSettings {
                    jwks_url: Some("ftp://idp/jwks".into()),
                    ..settings(vec![Algorithm::RS256])
                },
                2,
            ),
            (
                "RSA key but only ES256 listed",
                JwtSettings {
                    public_key_pem: Some(RSA_PUB.to_vec()),
                    ..settings(vec![Algorithm::ES256])
                },
                2,
            ),
            (
                "P-256 key but only ES384 listed",
                JwtSettings {
                    public_key_pem: Some(EC_PUB.to_vec()),
                    ..settings(vec![Algorithm::ES384])
                },
                2,
            ),
            (
                "private key given as public key",
                JwtSettings {
                    public_key_pem: Some(RSA_PRIV.to_vec()),
                    ..settings(vec![Algorithm::RS256])
                },
                2,
            ),
            (
                "secret without HS alg",
                JwtSettings {
                    hs_secret: Some(SECRET.to_vec()),
                    public_key_pem: Some(ED_PUB.to_vec()),
                    ..settings(vec![Algorithm::EdDSA])
                },
                1,
            ),
        ];
        for (name, s, n) in cases {
            let problems = JwtVerifier::new(s).expect_err(name);
            assert_eq!(problems.len(), n, "{name}: {problems:?}");
        }
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let s = JwtSettings {
            hs_secret: Some(SECRET.to_vec()),
            ..settings(vec![Algorithm::HS256])
        };
        assert!(!format!("{s:?}").contains("test-secret"));
        assert!(!format!("{s:?}").contains("116"), "no byte dump either");
    }

    #[test]
    fn jwt_shape() {
        for (bearer, want) in [
            ("aa.bb.cc", true),
            ("aa.bb.", true),
            ("aa.bb", false),
            ("aa.bb.cc.dd", false),
            (".bb.cc", false),
            ("a+a.bb.cc", false),
            ("org_token_abc", false),
        ] {
            assert_eq!(is_jwt_shaped(bearer), want, "{bearer}");
        }
    }
}
