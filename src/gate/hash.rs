//! `request_hash`: the approval identity's digest, identical to the workspace-server's own gate.
//!
//! Input: scope, action and the rendered context object. Output: lowercase hex SHA-256 of
//! `scope + "\0" + action + "\0" + canonical_json(context)`.

use sha2::{Digest, Sha256};

use super::canonical::{canonical_json, canonical_object};

/// Lowercase hex SHA-256 of `scope \0 action \0 canonical_json(context)`.
pub fn request_hash(scope: &str, action: &str, context: &serde_json::Value) -> String {
    digest(scope, action, &canonical_json(context))
}

/// [`request_hash`] of a context object held as a `Map` (what [`super::decide`] builds).
pub(crate) fn request_hash_of_map(
    scope: &str,
    action: &str,
    context: &serde_json::Map<String, serde_json::Value>,
) -> String {
    digest(scope, action, &canonical_object(context))
}

fn digest(scope: &str, action: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0u8]);
    h.update(action.as_bytes());
    h.update([0u8]);
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every vector the upstream's Go code produced: canonical JSON and hash must both agree.
    #[test]
    fn matches_every_go_vector() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/request-hash-vectors.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 10, "fixture looks truncated");
        for v in vectors {
            let scope = v["scope"].as_str().unwrap();
            let action = v["action"].as_str().unwrap();
            let context = &v["context"];
            let want_json = v["canonical_json"].as_str().unwrap();
            assert_eq!(
                canonical_json(context),
                want_json,
                "canonical_json of {context}"
            );
            let want_hash = v["request_hash"].as_str().unwrap();
            assert_eq!(
                request_hash(scope, action, context),
                want_hash,
                "hash of {context}"
            );
            let map = context.as_object().unwrap();
            assert_eq!(
                request_hash_of_map(scope, action, map),
                want_hash,
                "map hash of {context}"
            );
        }
    }

    #[test]
    fn separators_keep_fields_apart() {
        let ctx = serde_json::json!({});
        assert_ne!(request_hash("ab", "c", &ctx), request_hash("a", "bc", &ctx));
    }
}
