//! Target 5: the configuration parser (`config::parse`): any text, valid TOML or not, with
//! any environment, is either a `Config` or a list of problems — never a panic.
//!
//! The generator writes syntactically valid TOML whose tables and keys are mostly the known
//! ones (so validation, not just the TOML parser, is exercised) with values of every type,
//! plus raw random text.

use approval_gateway::config::parse;
use proptest::prelude::*;
use toml::{Table, Value};

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        " ",
        "5s",
        "-1s",
        "0s",
        "1h",
        "99999999999999h",
        "500ms",
        "x",
        "sub",
        "HS256",
        "RS256",
        "none",
        "DELETE",
        "GET",
        "POST",
        "delete_workspace",
        "/workspaces/{id}",
        "/w/{*rest}",
        "/w/{id}/{id}",
        "w",
        "{path.id}",
        "{body.key}",
        "{claim.sub?}",
        "{",
        "request",
        "enforce",
        "shadow",
        "off",
        "pass",
        "refuse",
        "127.0.0.1:8080",
        ":0",
        "[::1]:1",
        "http://127.0.0.1:8081",
        "http://h/p/",
        "https://h",
        "sqlite::memory:",
        "sqlite://x.db",
        "postgres://u@127.0.0.1:1/db",
        "GATEWAY_JWT_SECRET",
        "UNSET_VAR",
        "10.0.0.0/8",
        "::/0",
        "sql",
        "env",
        "select 1",
        "role",
        "admin",
        "\u{e9}",
        "tests/fixtures/keys/rsa_public.pem",
        "tests/fixtures/keys/jwks.json",
        "/nonexistent",
        "http://127.0.0.1:1/jwks",
    ])
    .prop_map(str::to_owned)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => text().prop_map(Value::String),
        1 => "\\PC{0,8}".prop_map(Value::String),
        2 => prop::sample::select(vec![0i64, 1, 2, -1, 1 << 40, i64::MAX, i64::MIN, 1048576])
            .prop_map(Value::Integer),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => prop::sample::select(vec![0.5f64, -0.0, 1e300]).prop_map(Value::Float),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Value::Table(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "proxy",
        "admin",
        "trusted_proxies",
        "url",
        "connect_timeout",
        "request_timeout",
        "pending_ttl",
        "approval_ttl",
        "max_body_bytes",
        "retry_after",
        "public_admin_url",
        "approvals_required",
        "max_wait",
        "unknown_callers",
        "algorithms",
        "hs_secret_env",
        "public_key_file",
        "jwks_file",
        "jwks_url",
        "issuer",
        "audience",
        "leeway",
        "subject_claim",
        "name",
        "when",
        "gated",
        "approver",
        "claim",
        "present",
        "equals",
        "one_of",
        "all",
        "any",
        "action",
        "method",
        "methods",
        "path",
        "scope",
        "reason",
        "context",
        "mode",
        "bind",
        "kind",
        "url_env",
        "query",
        "env",
        "claims",
        "forward_headers",
        "bogus",
    ])
    .prop_map(str::to_owned)
}

fn table() -> impl Strategy<Value = Table> {
    prop::collection::vec((key(), value()), 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// A whole file: known top-level tables and arrays of tables, sometimes an unknown one.
fn file() -> impl Strategy<Value = String> {
    let top = prop::sample::select(vec![
        "listen",
        "upstream",
        "store",
        "gate",
        "jwt",
        "callers",
        "routes",
        "guards",
        "token_sources",
        "bogus",
    ]);
    prop::collection::vec((top, table(), 0usize..3), 0..7).prop_map(|entries| {
        let mut root = Table::new();
        for (name, t, n) in entries {
            let v = match name {
                "callers" | "routes" | "guards" | "token_sources" => {
                    Value::Array(vec![Value::Table(t); n.max(1)])
                }
                _ => Value::Table(t),
            };
            root.insert(name.to_owned(), v);
        }
        toml::to_string(&root).unwrap_or_default()
    })
}

fn env() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "MOLECULE_PLATFORM_APPROVAL_GATE",
                "GATEWAY_JWT_SECRET",
                "GATEWAY_LISTEN",
                "GATEWAY_ADMIN_LISTEN",
                "GATEWAY_UPSTREAM",
                "DATABASE_URL",
                "UNSET_VAR",
            ]),
            text(),
        ),
        0..4,
    )
}

fn run(text: &str, vars: &[(&'static str, String)]) {
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let _ = parse(text, &lookup);
}

proptest! {
    #![proptest_config(crate::cases(500))]

    #[test]
    fn config_parse_of_generated_toml_never_panics(text in file(), vars in env()) {
        run(&text, &vars);
    }

    #[test]
    fn config_parse_of_any_text_never_panics(
        text in prop_oneof![
            "\\PC{0,200}",
            prop::collection::vec(
                prop::sample::select(vec![
                    "[", "]", "[[", "]]", "=", "\"", "'", "\n", "listen", "routes", "gate", ".",
                    "path", "x", "1", "{", "}", ",", "#", "\"\"\"", " ",
                ]),
                0..40,
            ).prop_map(|v| v.concat()),
        ],
        vars in env(),
    ) {
        run(&text, &vars);
    }
}

#[test]
fn config_regressions() {
    for text in [
        "",
        "[gate]\nmax_body_bytes = -1",
        "[gate]\napprovals_required = 9223372036854775807",
        "[upstream]\nconnect_timeout = \"99999999999999h\"",
        "[[routes]]\npath = \"/w/{id}/{id}\"",
        "[jwt]\nalgorithms = [\"none\"]",
    ] {
        run(
            text,
            &[("MOLECULE_PLATFORM_APPROVAL_GATE", "enforce".into())],
        );
    }
    // The shipped default configuration parses.
    let shipped = std::fs::read_to_string("config/gateway.toml").unwrap();
    run(&shipped, &[]);
}
