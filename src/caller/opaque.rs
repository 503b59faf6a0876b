//! Opaque-token sources: deployments whose tokens are not JWTs (Molecule's org tokens) recognise a
//! bearer by looking up `sha256(bearer)` in a database table, or by a constant-time comparison with
//! a token from the environment; a session cookie is recognised by asking an HTTP endpoint
//! (`session.rs`). A recognised credential yields claims for the same `when` rules.
//!
//! Input: the bearer. Output: `Some(claims)` when recognised, `None` when not (try the next
//! source), [`CallerError::SourceUnavailable`] when the database fails. The bearer is never
//! logged and only its hash is sent to the database.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{Column, Row, TypeInfo};
use subtle::ConstantTimeEq;

use super::CallerError;

/// A compiled `[[token_sources]]` entry (README, "Opaque tokens and sessions").
#[derive(Debug)]
pub struct TokenSource {
    /// The entry's `name`, in logs and in [`CallerError::SourceUnavailable`].
    pub name: std::sync::Arc<str>,
    /// How it recognises a credential.
    pub kind: TokenSourceKind,
}

/// What a token source asks to recognise a credential.
pub enum TokenSourceKind {
    /// Constant-time comparison with a token read from an env var; on match yields `claims`.
    Env {
        /// The expected bearer token, from the env var named by `env`.
        token: Vec<u8>,
        /// The claims a matching bearer gets.
        claims: Map<String, Value>,
    },
    /// `query` is run with `$1` bound to the 32-byte `sha256(bearer)`; the first row's columns
    /// (as text/JSON) become the claims. No row: not recognised. Error: `SourceUnavailable`.
    Sql {
        /// The pool for `url_env` (or `url`).
        pool: sqlx::PgPool,
        /// The SQL text, with `$1` the token's hash.
        query: String,
    },
    /// Asks an HTTP endpoint about the request's session headers (`session.rs`).
    Http(Box<super::session::HttpSource>),
}

// Hand-written so the env token never reaches a log through `{:?}` of the config.
impl std::fmt::Debug for TokenSourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSourceKind::Env { claims, .. } => f
                .debug_struct("Env")
                .field("token", &"<redacted>")
                .field("claims", claims)
                .finish(),
            TokenSourceKind::Sql { pool, query } => f
                .debug_struct("Sql")
                .field("pool", pool)
                .field("query", query)
                .finish(),
            TokenSourceKind::Http(source) => source.fmt(f),
        }
    }
}

impl TokenSource {
    /// Try to recognise the request's credential: the bearer for `env` and `sql` sources (none:
    /// not recognised), the forwarded headers for `http` ones.
    pub(crate) async fn lookup(
        &self,
        bearer: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<Option<Map<String, Value>>, CallerError> {
        if let TokenSourceKind::Http(source) = &self.kind {
            return source.lookup(&self.name, headers).await;
        }
        let Some(bearer) = bearer else {
            return Ok(None);
        };
        let hash: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        match &self.kind {
            TokenSourceKind::Http(_) => Ok(None),
            TokenSourceKind::Env { token, claims } => {
                // Comparing fixed-size hashes hides the configured token's length too.
                let want: [u8; 32] = Sha256::digest(token).into();
                // An empty configured token must never match anything.
                let hit = !token.is_empty() && bool::from(want.ct_eq(&hash));
                Ok(hit.then(|| claims.clone()))
            }
            TokenSourceKind::Sql { pool, query } => {
                let row = sqlx::query(query).bind(&hash[..]).fetch_optional(pool).await.map_err(|e| {
                    tracing::warn!(source = %self.name, error = %e, "opaque token source failed");
                    CallerError::SourceUnavailable(self.name.clone())
                })?;
                Ok(row.map(|row| row_claims(&row)))
            }
        }
    }
}

/// Every column becomes a claim named after it; NULL becomes JSON null.
fn row_claims(row: &PgRow) -> Map<String, Value> {
    row.columns()
        .iter()
        .map(|col| {
            let i = col.ordinal();
            let value = column_value(row, i, col.type_info().name()).unwrap_or_else(|e| {
                tracing::warn!(column = col.name(), error = %e, "opaque token source: undecodable column");
                Value::Null
            });
            (col.name().to_owned(), value)
        })
        .collect()
}

fn column_value(row: &PgRow, i: usize, type_name: &str) -> Result<Value, sqlx::Error> {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match type_name {
        "BOOL" => opt(row.try_get::<Option<bool>, _>(i)?, Value::Bool),
        "INT2" => opt(row.try_get::<Option<i16>, _>(i)?, Value::from),
        "INT4" => opt(row.try_get::<Option<i32>, _>(i)?, Value::from),
        "INT8" => opt(row.try_get::<Option<i64>, _>(i)?, Value::from),
        "FLOAT4" => opt(row.try_get::<Option<f32>, _>(i)?, Value::from),
        "FLOAT8" => opt(row.try_get::<Option<f64>, _>(i)?, Value::from),
        "JSON" | "JSONB" => row.try_get::<Option<Value>, _>(i)?.unwrap_or(Value::Null),
        "UUID" => opt(row.try_get::<Option<uuid::Uuid>, _>(i)?, |u| {
            Value::String(u.to_string())
        }),
        "TIMESTAMPTZ" => opt(
            row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)?,
            |t| Value::String(t.to_rfc3339()),
        ),
        "TIMESTAMP" => opt(row.try_get::<Option<chrono::NaiveDateTime>, _>(i)?, |t| {
            Value::String(t.to_string())
        }),
        "BYTEA" => opt(row.try_get::<Option<Vec<u8>>, _>(i)?, |b| {
            Value::String(hex::encode(b))
        }),
        // TEXT, VARCHAR, BPCHAR, NAME, CITEXT; other types (NUMERIC, …) fail the type check -> null.
        _ => opt(row.try_get::<Option<String>, _>(i)?, Value::String),
    })
}
