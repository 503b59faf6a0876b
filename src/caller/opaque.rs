//! Opaque-token sources: deployments whose tokens are not JWTs (Molecule's org tokens) recognise a
//! bearer by looking up `sha256(bearer)` in a database table, or by a constant-time comparison with
//! a token from the environment. A recognised token yields claims for the same `when` rules.

use serde_json::{Map, Value};

#[derive(Debug)]
pub struct TokenSource {
    pub name: std::sync::Arc<str>,
    pub kind: TokenSourceKind,
}

#[derive(Debug)]
pub enum TokenSourceKind {
    /// Constant-time comparison with a token read from an env var; on match yields `claims`.
    Env {
        token: Vec<u8>,
        claims: Map<String, Value>,
    },
    /// `query` is run with `$1` bound to the 32-byte `sha256(bearer)`; the first row's columns
    /// (as text/JSON) become the claims. No row: not recognised. Error: `SourceUnavailable`.
    Sql { pool: sqlx::PgPool, query: String },
}
