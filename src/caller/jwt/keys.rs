//! Key building for [`super::JwtVerifier`]: the HS secret, a public-key PEM and JWKS entries
//! become [`Key`]s once at load; every problem found is pushed to `problems`.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// What a key can verify. `EcAnyCurve`: an EC PEM whose curve OID was not recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Hmac,
    Rsa,
    Ec256,
    Ec384,
    EcAnyCurve,
    Ed25519,
}

impl KeyKind {
    pub(super) fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match alg {
            HS256 | HS384 | HS512 => self == KeyKind::Hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => self == KeyKind::Rsa,
            ES256 => matches!(self, KeyKind::Ec256 | KeyKind::EcAnyCurve),
            ES384 => matches!(self, KeyKind::Ec384 | KeyKind::EcAnyCurve),
            EdDSA => self == KeyKind::Ed25519,
        }
    }
}

/// One decoding key with what it may be used for.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    pub(super) alg: Option<Algorithm>,
    pub(super) kind: KeyKind,
    pub(super) key: DecodingKey,
}

impl Key {
    pub(super) fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish()
    }
}

pub(super) fn hs_key(secret: &[u8], algs: &[Algorithm], problems: &mut Vec<String>) -> Option<Key> {
    if secret.is_empty() {
        problems.push("jwt HS secret is empty".to_owned());
        return None;
    }
    if !algs.iter().any(|a| KeyKind::Hmac.fits(*a)) {
        problems.push("jwt HS secret is set but jwt.algorithms lists no HS* algorithm".to_owned());
    }
    Some(Key {
        kid: None,
        alg: None,
        kind: KeyKind::Hmac,
        key: DecodingKey::from_secret(secret),
    })
}

pub(super) fn pem_key(pem: &[u8], algs: &[Algorithm], problems: &mut Vec<String>) -> Option<Key> {
    if pem.windows(7).any(|w| w == b"PRIVATE") {
        problems.push("jwt.public_key_file holds a private key; give the public key".to_owned());
        return None;
    }
    let (kind, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (KeyKind::Rsa, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        (ec_curve(pem), key)
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        (KeyKind::Ed25519, key)
    } else {
        problems.push("jwt.public_key_file is not an RSA, EC or Ed25519 public key PEM".to_owned());
        return None;
    };
    if !algs.iter().any(|a| kind.fits(*a)) {
        problems.push(format!(
            "jwt.public_key_file holds a {kind:?} key but jwt.algorithms lists no algorithm for it"
        ));
    }
    Some(Key {
        kid: None,
        alg: None,
        kind,
        key,
    })
}

/// The curve of an EC public key PEM, found by its named-curve OID in the DER, so a P-256 key
/// listed only for ES384 is a load error rather than a stream of signature failures.
fn ec_curve(pem: &[u8]) -> KeyKind {
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let der = pem_body(pem);
    if der.windows(P256.len()).any(|w| w == P256) {
        KeyKind::Ec256
    } else if der.windows(P384.len()).any(|w| w == P384) {
        KeyKind::Ec384
    } else {
        KeyKind::EcAnyCurve
    }
}

/// Base64-decode the body of a PEM (lines without `-----`); invalid characters are skipped.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let body = pem
        .split(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"-----"));
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for v in body.flatten().filter_map(|&c| sextet(c)) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Keys of a JWKS document; `origin` (`jwt.jwks_file`, `jwt.jwks_url`) names it in problems.
pub(super) fn jwks_keys(json: &str, origin: &str, problems: &mut Vec<String>) -> Vec<Key> {
    let doc: Value = match serde_json::from_str(json) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(format!("{origin} is not JSON: {e}"));
            return Vec::new();
        }
    };
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        problems.push(format!("{origin} has no \"keys\" array"));
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        // Encryption keys published alongside signing keys are not ours to use.
        if entry.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        match jwk_key(entry) {
            Ok(key) => keys.push(key),
            Err(e) => problems.push(format!("{origin} key #{i}: {e}")),
        }
    }
    keys
}

fn jwk_key(entry: &Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| e.to_string())?;
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::OctetKey(_) => KeyKind::Hmac,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::Ec256,
            EllipticCurve::P384 => KeyKind::Ec384,
            _ => return Err("unsupported EC curve".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err("unsupported OKP curve".to_owned()),
    };
    let alg = match jwk.common.key_algorithm {
        Some(ka) => Some(
            Algorithm::from_str(&ka.to_string()).map_err(|_| format!("unsupported alg {ka}"))?,
        ),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(Key {
        kid: jwk.common.key_id,
        alg,
        kind,
        key,
    })
}
