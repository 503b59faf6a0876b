//! The shipped config files load: `config/gateway.toml` on a fresh machine (gate off, no env) and
//! with the gate on; `config/molecule.toml` with and without a Tokio runtime and with the gate off.

use super::env_of;
use crate::caller::TokenSourceKind;
use crate::config::{load, DEFAULT_PATH};
use crate::gate::Mode;

#[test]
fn shipped_default_config_starts_on_a_fresh_machine() {
    let c =
        load(std::path::Path::new(DEFAULT_PATH), &env_of(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.policy.gate.mode, Mode::Off);
    assert!(
        c.policy.callers.jwt.is_none(),
        "no secret and gate off: no HS verifier"
    );
    assert!(c.policy.routes.len() >= 10);
    assert_eq!(c.policy.guards.len(), 1);
    assert_eq!(c.policy.callers.classes.len(), 3);
}

#[test]
fn shipped_default_config_loads_with_the_gate_on() {
    let env = [
        ("MOLECULE_PLATFORM_APPROVAL_GATE", "1"),
        ("GATEWAY_JWT_SECRET", "s3cret"),
    ];
    let c = load(std::path::Path::new("config/gateway.toml"), &env_of(&env))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.policy.gate.mode, Mode::Enforce);
    let jwt = c.policy.callers.jwt.as_ref().expect("verifier");
    assert_eq!(jwt.settings().hs_secret.as_deref(), Some(&b"s3cret"[..]));
}

const MOLECULE_ENV: &[(&str, &str)] = &[
    ("MOLECULE_PLATFORM_APPROVAL_GATE", "enforce"),
    ("GATEWAY_JWT_SECRET", "s3cret"),
    (
        "MOLECULE_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/molecule",
    ),
    ("ADMIN_TOKEN", "admin-secret"),
    (
        "MOLECULE_CP_TENANT_MEMBER_URL",
        "http://127.0.0.1:9/cp/auth/tenant-member?slug=acme",
    ),
];

#[test]
fn shipped_molecule_config_loads_outside_a_runtime() {
    let c = load(
        std::path::Path::new("config/molecule.toml"),
        &env_of(MOLECULE_ENV),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.store.url.starts_with("postgres://"));
    assert!(c.policy.routes.len() >= 40);
    // Every credential Molecule accepts has a source: org tokens, workspace tokens,
    // ADMIN_TOKEN and the canvas's cookie session.
    let kinds: Vec<&str> = c
        .policy
        .callers
        .sources
        .iter()
        .map(|s| match s.kind {
            TokenSourceKind::Sql { .. } => "sql",
            TokenSourceKind::Env { .. } => "env",
            TokenSourceKind::Http(_) => "http",
        })
        .collect();
    assert_eq!(kinds, ["sql", "sql", "env", "http"]);
}

#[tokio::test]
async fn shipped_molecule_config_loads_inside_a_runtime_without_connecting() {
    let c = load(
        std::path::Path::new("config/molecule.toml"),
        &env_of(MOLECULE_ENV),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let TokenSourceKind::Env { token, claims } = &c.policy.callers.sources[2].kind else {
        panic!("env source")
    };
    assert_eq!(token, b"admin-secret");
    assert_eq!(
        claims.get("admin_token"),
        Some(&serde_json::Value::Bool(true))
    );
}

#[test]
fn shipped_molecule_config_loads_with_the_gate_off_and_no_env() {
    let c = load(std::path::Path::new("config/molecule.toml"), &env_of(&[]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        c.policy.callers.sources.is_empty(),
        "unset vars skip both sources when off"
    );
}
