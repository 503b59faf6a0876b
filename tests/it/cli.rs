//! The command line, run as a real process: check-config, hash, and the operator CLI working
//! directly on the store (both backends), audited with `via = "cli"`.

use std::process::Command;
use std::time::Duration;

use approval_gateway::store::{GateOutcome, NewApproval, Status, Store, Ttls, Via};
use serde_json::json;

use crate::support::db;
use crate::support::gateway::sqlite_url;

const TTLS: Ttls = Ttls {
    pending: Duration::from_secs(3600),
    approved: Duration::from_secs(3600),
};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_approval-gateway"));
    cmd.env_remove("MOLECULE_PLATFORM_APPROVAL_GATE")
        .env_remove("DATABASE_URL")
        .env_remove("GATEWAY_CONFIG");
    cmd
}

fn config_file(store_url: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ag-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, format!("[store]\nurl = \"{store_url}\"\n")).unwrap();
    path
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn pending(store: &Store, scope: &str) -> String {
    let new = NewApproval {
        scope: scope.to_owned(),
        action: "delete_workspace".to_owned(),
        request_hash: approval_gateway::gate::request_hash(scope, "delete_workspace", &json!({})),
        reason: format!("delete workspace {scope}"),
        context: json!({}),
        method: Some("DELETE".into()),
        path: Some(format!("/workspaces/{scope}")),
        requester: "agent-1".into(),
        requester_actors: vec![],
        caller: Some("platform-agent".into()),
        approvals_required: 1,
    };
    match store
        .consume_or_create(&new, TTLS, chrono::Utc::now())
        .await
        .unwrap()
    {
        GateOutcome::Pending { approval, .. } => approval.id.to_string(),
        other => panic!("{other:?}"),
    }
}

async fn operator_cli(url: String) {
    let store = Store::open(&url).unwrap();
    store.migrate().await.unwrap();
    let config = config_file(&url);
    let config = config.to_str().unwrap();
    let a = pending(&store, "ws-a").await;
    let b = pending(&store, "ws-b").await;

    let (ok, out, err) = run(&[
        "approvals",
        "list",
        "--status",
        "pending",
        "--config",
        config,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&a) && out.contains(&b), "{out}");

    let (ok, _, err) = run(&[
        "--config",
        config,
        "approvals",
        "approve",
        &a,
        "--as",
        "agent-1",
    ]);
    assert!(!ok, "the requester cannot approve its own request");
    assert!(err.contains("self-approval"), "{err}");

    let (ok, out, err) = run(&[
        "approvals",
        "approve",
        &a,
        "--as",
        "alice",
        "--comment",
        "checked",
        "--config",
        config,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("approved"), "{out}");
    let (ok, _, err) = run(&[
        "approvals",
        "approve",
        &a,
        "--as",
        "bob",
        "--config",
        config,
    ]);
    assert!(!ok && err.contains("not pending"), "{err}");
    let (ok, _, err) = run(&["approvals", "deny", &b, "--as", "bob", "--config", config]);
    assert!(ok, "{err}");

    let (ok, out, _) = run(&["approvals", "show", &a, "--config", config]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["decisions"][0]["approver"], "alice");
    assert_eq!(shown["decisions"][0]["comment"], "checked");

    let id = approval_gateway::store::ApprovalId::parse(&b).unwrap();
    let denied = store.get(id, chrono::Utc::now()).await.unwrap().unwrap();
    assert_eq!(denied.status, Status::Denied);
    let events = store.events_after(0, 100).await.unwrap();
    let cli_events: Vec<_> = events.iter().filter(|e| e.via == Via::Cli).collect();
    assert!(cli_events.iter().any(|e| e.actor == "alice"), "{events:?}");
    assert!(cli_events.iter().any(|e| e.actor == "bob"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_operator_cli_lists_shows_approves_and_denies() {
    operator_cli(sqlite_url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_operator_cli_lists_shows_approves_and_denies() {
    if let Some(url) = db::postgres_url().await {
        operator_cli(url).await;
    }
}

#[test]
fn check_config_reports_every_problem_and_exits_1() {
    let path = config_file("mysql://nope");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("[gate]\npending_ttl = \"0s\"\ncolour = \"red\"\n");
    std::fs::write(&path, text).unwrap();
    let (ok, out, _) = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    for needle in ["store.url", "gate.pending_ttl", "gate.colour"] {
        assert!(out.contains(needle), "{needle} missing in {out}");
    }
    let (ok, out, err) = run(&["check-config", "--config", "config/gateway.toml"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn hash_prints_the_upstream_compatible_request_hash() {
    let (ok, out, _) = run(&[
        "hash",
        "--scope",
        "ws",
        "--action",
        "delete_workspace",
        "--context",
        r#"{"target":"A"}"#,
    ]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "c75d2f4c5bcf719484b6bc9fbb58d149fd8a061c1219411b524c3faa41490dda"
    );
    let (ok, _, err) = run(&["hash", "--scope", "ws", "--action", "a", "--context", "[1]"]);
    assert!(!ok && err.contains("JSON object"), "{err}");
}

/// The break-glass CLI needs only the store: a gate flag it cannot use, or one whose secrets
/// are not in this shell, does not stop it; a bad status names the valid ones.
#[test]
fn the_cli_needs_only_the_store() {
    let path = config_file(&sqlite_url());
    let path = path.to_str().unwrap();
    for flag in ["enforce", "maybe"] {
        let out = bin()
            .env("MOLECULE_PLATFORM_APPROVAL_GATE", flag)
            .env_remove("GATEWAY_JWT_SECRET")
            .args(["approvals", "list", "--config", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (ok, _, err) = run(&["approvals", "list", "--status", "bogus", "--config", path]);
    assert!(!ok);
    assert!(
        err.contains("pending, approved, denied, expired, consumed, withdrawn"),
        "{err}"
    );
}

/// An unreachable Postgres store is reported once, with its cause, not as a pool timeout.
#[test]
fn an_unreachable_store_is_reported_with_its_cause() {
    let path = config_file("postgres://postgres@127.0.0.1:1/none");
    let (ok, _, err) = run(&["approvals", "list", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains("pool timed out"), "{err}");
}
