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
