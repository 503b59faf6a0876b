//! `[jwt]` → [`JwtVerifier`] and `[[token_sources]]` → opaque-token sources (README, "Opaque tokens and sessions").
//!
//! Secrets never come from the file: the HS secret is read from the env var named by
//! `hs_secret_env`, an `env` source's token from the var named by `env`, a `sql` source's URL
//! from `url_env` (or `url`). Error messages name variables and files, never their values.
//!
//! Missing env vars, by design:
//! - HS secret unset/empty: an error, unless the gate's mode is off — then the HS algorithms are
//!   dropped (no verifier at all if nothing else is left), so the shipped default config starts on
//!   a fresh machine as a pure pass-through.
//! - `env` source var unset/empty: the source is skipped with a warning (a deployment without
//!   `ADMIN_TOKEN` is legal).
//! - `sql` source `url_env` unset/empty: an error, unless the mode is off (then skipped with a
//!   warning, like the HS secret).

use std::collections::HashSet;
use std::str::FromStr;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value as Json};

use super::file::{Errors, Section};
use super::validate::{duration, http_base_url, nonempty_env, Env};
use crate::caller::session::{HttpSource, HttpSourceSettings};
use crate::caller::{JwtSettings, JwtVerifier, TokenSource, TokenSourceKind};
use crate::gate::Mode;

const JWT_KEYS: &[&str] = &[
    "algorithms",
    "hs_secret_env",
    "public_key_file",
    "jwks_file",
    "jwks_url",
    "issuer",
    "audience",
    "leeway",
    "subject_claim",
];

fn is_hs(a: &Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The verifier (`None` without `[jwt]`) and the subject claim (default `sub`).
pub(crate) fn jwt(
    root: &Section<'_>,
    env: Env<'_>,
    mode: Mode,
    errs: &mut Errors,
) -> (Option<JwtVerifier>, String) {
    let Some(s) = root.table("jwt", errs) else {
        return (None, "sub".to_owned());
    };
    let before = errs.0.len();
    s.deny_unknown(JWT_KEYS, errs);
    let subject_claim = s
        .string("subject_claim", errs)
        .unwrap_or_else(|| "sub".to_owned());
    if subject_claim.trim().is_empty() {
        errs.push(s.key_at("subject_claim"), "must not be empty");
    }
    let mut algorithms = algorithms(&s, errs);
    let hs_secret = hs_secret(&s, env, mode, &mut algorithms, errs);
    // Every HS algorithm dropped for want of a secret (gate off) and nothing else listed.
    let nothing_left = algorithms.is_empty() && errs.0.len() == before;
    let jwks_at = s.key_at("jwks_file");
    let settings = JwtSettings {
        algorithms,
        hs_secret,
        public_key_pem: s
            .string("public_key_file", errs)
            .and_then(|p| read_file(&p, &s.key_at("public_key_file"), errs)),
        jwks_json: s
            .string("jwks_file", errs)
            .and_then(|p| read_file(&p, &jwks_at, errs))
            .and_then(|b| utf8(b, &jwks_at, errs)),
        jwks_url: jwks_url(&s, errs),
        issuer: s.string("issuer", errs),
        audience: s.string("audience", errs),
        leeway: duration(
            s.string("leeway", errs).as_deref(),
            &s.key_at("leeway"),
            "30s",
            false,
            errs,
        ),
    };
    if errs.0.len() > before || nothing_left {
        // Building keys from half-valid settings would only add noise to the report.
        return (None, subject_claim);
    }
    match JwtVerifier::new(settings) {
        Ok(v) => (Some(v), subject_claim),
        Err(problems) => {
            for p in problems {
                errs.push("jwt", p);
            }
            (None, subject_claim)
        }
    }
}

/// The HS secret from the env var named by `hs_secret_env`, when an HS algorithm is listed. With
/// the gate off an unset secret drops the HS algorithms instead (a fresh machine still starts).
fn hs_secret(
    s: &Section<'_>,
    env: Env<'_>,
    mode: Mode,
    algorithms: &mut Vec<Algorithm>,
    errs: &mut Errors,
) -> Option<Vec<u8>> {
    let var = s
        .string("hs_secret_env", errs)
        .unwrap_or_else(|| "GATEWAY_JWT_SECRET".to_owned());
    if !algorithms.iter().any(is_hs) {
        return None;
    }
    match nonempty_env(env, &var) {
        Some(secret) => return Some(secret.into_bytes()),
        None if mode == Mode::Off => algorithms.retain(|a| !is_hs(a)),
        None => errs.push(
            s.key_at("hs_secret_env"),
            format!("environment variable {var} is unset or empty; it must hold the HS* secret"),
        ),
    }
    None
}

fn jwks_url(s: &Section<'_>, errs: &mut Errors) -> Option<String> {
    let url = s.string("jwks_url", errs)?;
    match http_base_url(url.trim()) {
        Ok(_) => Some(url.trim().to_owned()),
        Err(msg) => {
            errs.push(s.key_at("jwks_url"), msg);
            None
        }
    }
}

fn algorithms(s: &Section<'_>, errs: &mut Errors) -> Vec<Algorithm> {
    let names = s
        .strings("algorithms", errs)
        .unwrap_or_else(|| vec!["HS256".to_owned()]);
    if names.is_empty() {
        errs.push(s.key_at("algorithms"), "must list at least one algorithm");
    }
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{}[{i}]", s.key_at("algorithms"));
        match Algorithm::from_str(name) {
            Ok(a) if out.contains(&a) => errs.push(at, format!("{name} is listed twice")),
            Ok(a) => out.push(a),
            Err(_) => errs.push(
                at,
                format!("{name:?} is not supported; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
            ),
        }
    }
    out
}

fn read_file(path: &str, at: &str, errs: &mut Errors) -> Option<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| errs.push(at, format!("cannot read {path:?}: {e}")))
        .ok()
}

fn utf8(bytes: Vec<u8>, at: &str, errs: &mut Errors) -> Option<String> {
    String::from_utf8(bytes)
        .map_err(|_| errs.push(at, "the file is not UTF-8 text"))
        .ok()
}

const SOURCE_KEYS: &[&str] = &[
    "name",
    "kind",
    "url",
    "url_env",
    "query",
    "env",
    "claims",
    "forward_headers",
    "timeout",
    "cache_ttl",
    "negative_cache_ttl",
    "when",
    "subject_field",
];
/// Keys only a `kind = "http"` source takes.
const HTTP_ONLY: &[&str] = &[
    "forward_headers",
    "timeout",
    "cache_ttl",
    "negative_cache_ttl",
    "when",
    "subject_field",
];

/// `[[token_sources]]`, in configured order (the order they are tried in).
pub(crate) fn token_sources(
    root: &Section<'_>,
    env: Env<'_>,
    mode: Mode,
    subject_claim: &str,
    errs: &mut Errors,
) -> Vec<TokenSource> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for s in root.tables("token_sources", errs) {
        s.deny_unknown(SOURCE_KEYS, errs);
        let name = s.string("name", errs).map(|n| n.trim().to_owned());
        match &name {
            None if !s.has("name") => errs.push(s.key_at("name"), "is required"),
            Some(n) if n.is_empty() => errs.push(s.key_at("name"), "must not be empty"),
            Some(n) if !names.insert(n.clone()) => {
                errs.push(s.key_at("name"), format!("{n:?} is used by another source"))
            }
            _ => {}
        }
        let kind = match s.string("kind", errs).as_deref() {
            Some("sql") => sql_source(&s, env, mode, errs),
            Some("env") => env_source(&s, env, errs),
            Some("http") => http_source(&s, env, mode, subject_claim, errs),
            Some(other) => {
                errs.push(
                    s.key_at("kind"),
                    format!("{other:?} is not a source kind; use \"sql\", \"env\" or \"http\""),
                );
                None
            }
            None => {
                if !s.has("kind") {
                    errs.push(
                        s.key_at("kind"),
                        "is required (\"sql\", \"env\" or \"http\")",
                    );
                }
                None
            }
        };
        if let (Some(name), Some(kind)) = (name.filter(|n| !n.is_empty()), kind) {
            out.push(TokenSource {
                name: name.into(),
                kind,
            });
        }
    }
    out
}

fn only_for(s: &Section<'_>, keys: &[&str], kind: &str, errs: &mut Errors) {
    for key in keys.iter().filter(|k| s.has(k)) {
        errs.push(s.key_at(key), format!("only allowed with kind = {kind:?}"));
    }
}

fn sql_source(
    s: &Section<'_>,
    env: Env<'_>,
    mode: Mode,
    errs: &mut Errors,
) -> Option<TokenSourceKind> {
    only_for(s, &["env", "claims"], "env", errs);
    only_for(s, HTTP_ONLY, "http", errs);
    let query = s.string("query", errs);
    match &query {
        None if !s.has("query") => errs.push(s.key_at("query"), "is required"),
        Some(q) if !q.contains("$1") => {
            errs.push(s.key_at("query"), "must bind the token's sha256 as $1")
        }
        _ => {}
    }
    let (url, at) = source_url(s, env, mode, errs)?;
    if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        errs.push(
            &at,
            "the database URL must start with postgres: or postgresql:",
        );
        return None;
    }
    let pool = lazy_pool(&url)
        .map_err(|e| errs.push(&at, format!("invalid database URL: {e}")))
        .ok()?;
    Some(TokenSourceKind::Sql {
        pool,
        query: query?,
    })
}

/// The source's URL from `url` or `url_env`, with the key it came from. An unset `url_env` is
/// an error unless the gate is off (then the source is skipped with a warning).
fn source_url(
    s: &Section<'_>,
    env: Env<'_>,
    mode: Mode,
    errs: &mut Errors,
) -> Option<(String, String)> {
    match (s.string("url", errs), s.string("url_env", errs)) {
        (Some(_), Some(_)) => {
            errs.push(
                s.key_at("url_env"),
                "give either `url` or `url_env`, not both",
            );
            None
        }
        (Some(url), None) => Some((url, s.key_at("url"))),
        (None, Some(var)) => match nonempty_env(env, &var) {
            Some(url) => Some((url, s.key_at("url_env"))),
            None if mode == Mode::Off => {
                tracing::warn!(source = %s.at, var = %var, "token source skipped: env var unset (gate is off)");
                None
            }
            None => {
                errs.push(
                    s.key_at("url_env"),
                    format!("environment variable {var} is unset or empty"),
                );
                None
            }
        },
        (None, None) => {
            errs.push(s.key_at("url"), "one of `url` or `url_env` is required");
            None
        }
    }
}

/// `kind = "http"`: a session the gateway asks an endpoint about (`caller/session.rs`).
fn http_source(
    s: &Section<'_>,
    env: Env<'_>,
    mode: Mode,
    subject_claim: &str,
    errs: &mut Errors,
) -> Option<TokenSourceKind> {
    only_for(s, &["env"], "env", errs);
    only_for(s, &["query"], "sql", errs);
    let forward_headers: Vec<http::HeaderName> = match s.strings("forward_headers", errs) {
        Some(names) if !names.is_empty() => names
            .iter()
            .filter_map(|n| {
                http::HeaderName::from_bytes(n.trim().as_bytes())
                    .map_err(|_| {
                        errs.push(
                            s.key_at("forward_headers"),
                            format!("{n:?} is not a header name"),
                        )
                    })
                    .ok()
            })
            .collect(),
        _ => {
            errs.push(
                s.key_at("forward_headers"),
                "is required: the request headers to forward, e.g. [\"Cookie\"]",
            );
            Vec::new()
        }
    };
    let d = |key: &str, default: &str, errs: &mut Errors| {
        let v = s.string(key, errs);
        duration(v.as_deref(), &s.key_at(key), default, true, errs)
    };
    let timeout = d("timeout", "2s", errs);
    let cache_ttl = d("cache_ttl", "30s", errs);
    let negative_cache_ttl = d("negative_cache_ttl", "5s", errs);
    let when = s
        .value("when")
        .and_then(|v| super::callers::when(v, &s.key_at("when"), errs));
    let subject_field = s.string("subject_field", errs);
    let claims = match s.table("claims", errs) {
        Some(t) => claims(&t, errs),
        None => Map::new(),
    };
    let (url, at) = source_url(s, env, mode, errs)?;
    // Unlike the upstream's base URL, this one may carry a query (`?slug=…`).
    let url = match url.trim().parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            errs.push(&at, "must be an http:// or https:// URL");
            return None;
        }
    };
    if forward_headers.is_empty() {
        return None;
    }
    let settings = HttpSourceSettings {
        url,
        forward_headers,
        timeout,
        cache_ttl,
        negative_cache_ttl,
        when,
        subject_field,
        subject_claim: subject_claim.to_owned(),
        claims,
    };
    HttpSource::new(settings)
        .map(|h| TokenSourceKind::Http(Box::new(h)))
        .map_err(|e| errs.push(&at, e))
        .ok()
}

/// A pool that connects on first use: loading the config never touches the database.
fn lazy_pool(url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
    let mut options = sqlx::postgres::PgPoolOptions::new();
    if tokio::runtime::Handle::try_current().is_err() {
        // Outside a runtime (check-config) the pool's reaper task cannot be spawned; the pool is
        // never used there, so run without idle/lifetime maintenance instead of panicking.
        options = options.idle_timeout(None).max_lifetime(None);
    }
    options.connect_lazy(url)
}

fn env_source(s: &Section<'_>, env: Env<'_>, errs: &mut Errors) -> Option<TokenSourceKind> {
    only_for(s, &["url", "url_env", "query"], "sql", errs);
    only_for(s, HTTP_ONLY, "http", errs);
    let claims = match s.table("claims", errs) {
        Some(t) => claims(&t, errs),
        None => Map::new(),
    };
    let Some(var) = s.string("env", errs) else {
        if !s.has("env") {
            errs.push(
                s.key_at("env"),
                "is required (the env var holding the token)",
            );
        }
        return None;
    };
    let Some(token) = nonempty_env(env, &var) else {
        tracing::warn!(source = %s.at, var = %var, "token source skipped: env var unset or empty");
        return None;
    };
    Some(TokenSourceKind::Env {
        token: token.into_bytes(),
        claims,
    })
}

fn claims(t: &Section<'_>, errs: &mut Errors) -> Map<String, Json> {
    let mut out = Map::new();
    for key in t.keys() {
        let Some(v) = t.value(key) else { continue };
        match serde_json::to_value(v) {
            Ok(j) => {
                out.insert(key.clone(), j);
            }
            Err(e) => errs.push(t.key_at(key), format!("cannot be a claim value: {e}")),
        }
    }
    out
}
