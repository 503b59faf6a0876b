//! Target 6: JWT verification (`caller::jwt`) and `when` rules (`caller::when`).
//!
//! Verifying any string, any hand-built token (any `alg`, including `none` and unlisted
//! ones, signed with the right key, a wrong one, or the RSA public key as an HMAC secret) or
//! any byte-mutation of a valid token never panics, and yields claims only for a token
//! signed with a configured key. The twin for HS256 is an HMAC computed here from `sha2`:
//! accepted implies this HMAC over the token's first two parts is its signature. For RS256,
//! accepted implies the signing input and signature are exactly those of a token minted here
//! with the private key. `When::holds` never panics and agrees with a restatement of its rules.

use std::time::Duration;

use approval_gateway::caller::{JwtSettings, JwtVerifier, When};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const SECRET: &[u8] = b"props-secret-props-secret-props-secret";
const NOW: u64 = 1_700_000_000;
const RSA_PRIV: &[u8] = include_bytes!("../fixtures/keys/rsa_private.pem");
const RSA_PUB: &[u8] = include_bytes!("../fixtures/keys/rsa_public.pem");

/// HS256 and RS256 together: the setting where key confusion could happen.
fn verifier() -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        algorithms: vec![Algorithm::HS256, Algorithm::RS256],
        hs_secret: Some(SECRET.to_vec()),
        public_key_pem: Some(RSA_PUB.to_vec()),
        jwks_json: None,
        jwks_url: None,
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(30),
    })
    .unwrap()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a hand-built token is signed.
#[derive(Debug, Clone, Copy)]
enum Sig {
    None,
    Secret,
    WrongSecret,
    /// The RSA public key PEM used as an HMAC secret (the HS/RS confusion attack).
    PublicKeyAsSecret,
    Garbage,
}

fn header_json() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA", "none", "None", "NONE",
            "hs256", "", "HS256 ",
        ]),
        prop::option::of(prop::sample::select(vec!["k1", "", "missing"])),
        prop::sample::select(vec![
            r#","typ":"JWT""#,
            "",
            r#","typ":1"#,
            r#","crit":["x"]"#,
        ]),
    )
        .prop_map(|(alg, kid, extra)| {
            let kid = kid.map(|k| format!(r#","kid":"{k}""#)).unwrap_or_default();
            format!(r#"{{"alg":"{alg}"{kid}{extra}}}"#)
        })
}

fn claims_json() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#"{"sub":"a"}"#,
        r#"{"sub":"a","exp":1}"#,
        r#"{"sub":"a","exp":"soon"}"#,
        r#"{"nbf":99999999999}"#,
        r#"{}"#,
        r#"[]"#,
        r#""x""#,
        r#"{"sub":"a","sub":"b"}"#,
        "not json",
    ])
    .prop_map(str::to_owned)
}

fn built_token() -> impl Strategy<Value = (String, Sig)> {
    (
        header_json(),
        claims_json(),
        prop::sample::select(vec![
            Sig::None,
            Sig::Secret,
            Sig::WrongSecret,
            Sig::PublicKeyAsSecret,
            Sig::Garbage,
        ]),
    )
        .prop_map(|(h, c, sig)| {
            let input = format!("{}.{}", b64(h.as_bytes()), b64(c.as_bytes()));
            let s = match sig {
                Sig::None => String::new(),
                Sig::Secret => b64(&hmac_sha256(SECRET, input.as_bytes())),
                Sig::WrongSecret => b64(&hmac_sha256(b"wrong", input.as_bytes())),
                Sig::PublicKeyAsSecret => b64(&hmac_sha256(RSA_PUB, input.as_bytes())),
                Sig::Garbage => b64(b"garbage-signature-bytes"),
            };
            (format!("{input}.{s}"), sig)
        })
}

/// Tokens minted with the real keys, to be mutated.
fn minted() -> Vec<String> {
    let claims = json!({"sub": "agent", "org_token_id": "t1", "exp": NOW + 3600});
    vec![
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap(),
        encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIV).unwrap(),
        )
        .unwrap(),
    ]
}

/// `token` may be accepted only when signed with a configured key (see the module doc).
fn check_accepted_only_if_signed(v: &JwtVerifier, token: &str) -> Result<(), TestCaseError> {
    let Ok(claims) = v.verify(token, NOW) else {
        return Ok(());
    };
    let parts: Vec<&str> = token.split('.').collect();
    prop_assert_eq!(parts.len(), 3, "accepted {:?}", token);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
    let input = format!("{}.{}", parts[0], parts[1]);
    match header["alg"].as_str() {
        Some("HS256") => prop_assert_eq!(
            sig,
            hmac_sha256(SECRET, input.as_bytes()),
            "accepted an HS256 token not MACed with the secret: {:?}",
            token
        ),
        Some("RS256") => {
            let ok = minted().iter().any(|m| {
                let mp: Vec<&str> = m.split('.').collect();
                format!("{}.{}", mp[0], mp[1]) == input
                    && URL_SAFE_NO_PAD.decode(mp[2]).ok() == Some(sig.clone())
            });
            prop_assert!(ok, "accepted an RS256 token we did not sign: {:?}", token);
        }
        other => prop_assert!(false, "accepted alg {:?}: {:?}", other, token),
    }
    drop(claims);
    Ok(())
}

fn mutate(token: &str, edits: &[(u8, Index, char)]) -> String {
    let mut t: Vec<char> = token.chars().collect();
    for (kind, at, c) in edits {
        let len = t.len();
        match kind % 4 {
            0 if len > 0 => t[at.index(len)] = *c,
            1 => t.insert(at.index(len + 1), *c),
            2 if len > 0 => {
                t.remove(at.index(len));
            }
            _ => t.truncate(at.index(len + 1)),
        }
    }
    t.into_iter().collect()
}

/// `When` restated: what `holds` must answer.
fn spec_holds(w: &When, claims: &Map<String, Value>) -> bool {
    let scalar_eq = |a: &Value, b: &Value| match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => {
            // Exact integers compare exactly; anything else as f64.
            match (x.as_i128(), y.as_i128()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        _ => false,
    };
    match w {
        When::Present { claim } => claims.get(claim).is_some_and(|v| !v.is_null()),
        When::Equals { claim, value } => claims.get(claim).is_some_and(|v| scalar_eq(v, value)),
        When::OneOf { claim, values } => claims
            .get(claim)
            .is_some_and(|v| values.iter().any(|w| scalar_eq(v, w))),
        When::All(rules) => rules.iter().all(|r| spec_holds(r, claims)),
        When::Any(rules) => rules.iter().any(|r| spec_holds(r, claims)),
    }
}

fn claim_value() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(null),
        json!("a"),
        json!("1"),
        json!(1),
        json!(1.0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e300),
        json!(true),
        json!(false),
        json!(["a"]),
        json!({"a": 1}),
    ])
}

fn claim_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "sub", ""]).prop_map(str::to_owned)
}

fn when() -> impl Strategy<Value = When> {
    let leaf = prop_oneof![
        claim_name().prop_map(|claim| When::Present { claim }),
        (claim_name(), claim_value()).prop_map(|(claim, value)| When::Equals { claim, value }),
        (claim_name(), prop::collection::vec(claim_value(), 0..3))
            .prop_map(|(claim, values)| When::OneOf { claim, values }),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(When::All),
            prop::collection::vec(inner, 0..4).prop_map(When::Any),
        ]
    })
}

proptest! {
    #![proptest_config(crate::cases(500))]

    #[test]
    fn jwt_any_string_is_refused_without_panic(token in prop_oneof![
        "\\PC{0,80}",
        "[A-Za-z0-9_-]{0,20}\\.[A-Za-z0-9_-]{0,20}\\.[A-Za-z0-9_-]{0,20}",
    ]) {
        check_accepted_only_if_signed(&verifier(), &token)?;
    }

    #[test]
    fn jwt_built_tokens_are_accepted_only_when_signed_with_the_secret(
        (token, sig) in built_token(),
    ) {
        let v = verifier();
        check_accepted_only_if_signed(&v, &token)?;
        if !matches!(sig, Sig::Secret) {
            prop_assert!(v.verify(&token, NOW).is_err(), "{:?} {:?}", sig, token);
        }
    }

    #[test]
    fn jwt_mutated_tokens_are_accepted_only_when_still_signed(
        which in any::<Index>(),
        edits in prop::collection::vec(
            (any::<u8>(), any::<Index>(), prop::sample::select(vec![
                'A', 'a', '0', '-', '_', '.', '=', '+', '/', ' ', 'e', 'y', 'J',
            ])),
            1..4,
        ),
    ) {
        let tokens = minted();
        let token = mutate(&tokens[which.index(tokens.len())], &edits);
        check_accepted_only_if_signed(&verifier(), &token)?;
    }

    #[test]
    fn when_holds_never_panics_and_follows_its_rules(
        w in when(),
        claims in prop::collection::vec((claim_name(), claim_value()), 0..4),
    ) {
        let claims: Map<String, Value> = claims.into_iter().collect();
        prop_assert_eq!(w.holds(&claims), spec_holds(&w, &claims), "{:?} over {:?}", w, claims);
    }
}

#[test]
fn jwt_regressions() {
    let v = verifier();
    for token in minted() {
        assert!(v.verify(&token, NOW).is_ok(), "{token}");
    }
    // alg none, and the RSA public key as an HMAC secret.
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"sub":"a"}"#));
    assert!(v.verify(&none, NOW).is_err());
    let input = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(br#"{"sub":"a"}"#));
    let confused = format!("{input}.{}", b64(&hmac_sha256(RSA_PUB, input.as_bytes())));
    assert!(v.verify(&confused, NOW).is_err());
    let signed = format!("{input}.{}", b64(&hmac_sha256(SECRET, input.as_bytes())));
    assert!(
        v.verify(&signed, NOW).is_ok(),
        "the twin HMAC agrees with jsonwebtoken"
    );
}
