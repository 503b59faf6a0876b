//! TEMPORARY (branch `api` only): signature of the gate engineer's `request_hash`. Reverted
//! before `git merge main`.

pub fn request_hash(scope: &str, action: &str, context: &serde_json::Value) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(action.as_bytes());
    h.update([0]);
    h.update(context.to_string().as_bytes());
    hex::encode(h.finalize())
}
