//! Running the subcommands parsed by [`crate::cli`]. `anyhow` is fine here: this is the edge
//! of the process, where errors become a message and an exit code.

use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;

use crate::app::App;
use crate::cli::{ApprovalsCommand, Cli, Command, DecideArgs};
use crate::config::{self, Config};
use crate::store::{
    Approval, ApprovalId, DecideOutcome, ListFilter, Origin, Status, Store, Via, Vote, VoteKind,
};

/// Run one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config).await,
        Command::CheckConfig => check_config(&cli.config),
        Command::Migrate => {
            let config = load(&cli.config)?;
            let store = Store::open(&config.store.url)?;
            store.migrate().await?;
            println!(
                "migrations applied to the {} store",
                scheme(&config.store.url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { command } => approvals(&cli.config, command).await,
        Command::Hash {
            scope,
            action,
            context,
        } => {
            let context: serde_json::Value =
                serde_json::from_str(&context).context("--context must be a JSON object")?;
            if !context.is_object() {
                bail!("--context must be a JSON object");
            }
            println!("{}", crate::gate::request_hash(&scope, &action, &context));
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => crate::demo::run().await,
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    config::load(path, &env).map_err(|errors| anyhow::anyhow!("{}: {errors}", path.display()))
}

/// The config as the break-glass CLI needs it: the store and the TTLs. The gate's env (the
/// flag, the JWT secret, token sources' URLs) is not read, so a broken or absent gate setup
/// never keeps an operator from the approvals.
fn load_for_store(path: &std::path::Path) -> anyhow::Result<Config> {
    let store_only = |key: &str| (key != crate::gate::Mode::ENV).then(|| env(key)).flatten();
    config::load(path, &store_only)
        .map_err(|errors| anyhow::anyhow!("{}: {errors}", path.display()))
}

fn scheme(url: &str) -> &str {
    url.split(':').next().unwrap_or("?")
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match config::load(path, &env) {
        Ok(config) => {
            println!("{}: ok — {}", path.display(), config.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            println!("{}: {errors}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let app = App::build(config)
        .await?
        .reload_from(path.to_owned(), Box::new(env));
    app.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received; draining");
}

async fn approvals(path: &std::path::Path, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let config = load_for_store(path)?;
    probe_postgres(&config.store.url).await?;
    let store = Store::open(&config.store.url)?;
    store
        .migrate()
        .await
        .context("the approval store is not reachable")?;
    let now = Utc::now();
    match command {
        ApprovalsCommand::List {
            status,
            scope,
            action,
            limit,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(Status::parse(s).with_context(|| {
                    format!(
                        "unknown status {s:?}; use one of pending, approved, denied, expired, \
                         consumed, withdrawn"
                    )
                })?),
            };
            let filter = ListFilter {
                status,
                scope,
                action,
                requester: None,
                limit,
                cursor: None,
            };
            let page = store.list(&filter, now).await?;
            for a in &page.items {
                println!(
                    "{}  {:<9}  {:<20}  scope={}  requester={}  {}{}",
                    a.id,
                    a.status.as_str(),
                    a.action,
                    a.scope,
                    a.requester,
                    a.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    agent_label(a),
                );
            }
            if page.items.is_empty() {
                eprintln!("no approvals match");
            }
        }
        ApprovalsCommand::Show { id } => {
            let id = parse_id(&id)?;
            let approval = store
                .get(id, now)
                .await?
                .with_context(|| format!("no approval {id}"))?;
            println!("{}", serde_json::to_string_pretty(&approval)?);
            // Beside the JSON (stdout stays machine-readable), for the operator reading it.
            if approval.origin == Origin::Agent {
                eprintln!("note:{}", agent_label(&approval));
            }
        }
        ApprovalsCommand::Approve(args) => {
            return decide(&config, &store, args, VoteKind::Approve).await
        }
        ApprovalsCommand::Deny(args) => return decide(&config, &store, args, VoteKind::Deny).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// One direct connection to a Postgres store, so that an unreachable one is reported with its
/// cause (connection refused, unknown host, authentication) rather than the pool's timeout.
async fn probe_postgres(url: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let connect = sqlx::PgConnection::connect(url);
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot connect to the Postgres store: {e}")),
        Err(_) => bail!("cannot connect to the Postgres store: no answer within 10 s"),
    }
}

/// Marks an approval whose reason and context the requesting agent wrote (empty otherwise).
fn agent_label(a: &Approval) -> &'static str {
    match a.origin {
        Origin::Agent => "  [reason and context written by the requesting agent]",
        Origin::Proxy => "",
    }
}

fn parse_id(id: &str) -> anyhow::Result<ApprovalId> {
    ApprovalId::parse(id).with_context(|| format!("{id:?} is not an approval id (a UUID)"))
}

async fn decide(
    config: &Config,
    store: &Store,
    args: DecideArgs,
    kind: VoteKind,
) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let approver = args
        .as_name
        .or_else(|| env("USER"))
        .filter(|n| !n.trim().is_empty())
        .context("say who decides with --as NAME")?;
    let now = Utc::now();
    let approval = store
        .get(id, now)
        .await?
        .with_context(|| format!("no approval {id}"))?;
    // The API's rule, with the CLI's `--as` as the approver (no actor chain of its own).
    if crate::api::auth::is_self_approval(
        &approver,
        &[],
        &approval.requester,
        &approval.requester_actors,
    ) {
        bail!("{approver} requested approval {id} and cannot decide it (self-approval is never allowed)");
    }
    let vote = Vote {
        approver: approver.clone(),
        kind,
        comment: args.comment,
        via: Via::Cli,
    };
    let ttls = config.policy.gate.ttls;
    match store.decide(id, &vote, ttls, now).await? {
        DecideOutcome::Recorded(a) => {
            tracing::info!(event = "voted", via = "cli", approval_id = %id, approver = %approver, status = a.status.as_str(), "vote recorded");
            println!("{id}: {} (vote by {approver} recorded)", a.status.as_str());
            Ok(ExitCode::SUCCESS)
        }
        DecideOutcome::NotFound => bail!("no approval {id}"),
        DecideOutcome::NotPending(a) => {
            bail!("approval {id} is {}, not pending", a.status.as_str())
        }
        DecideOutcome::AlreadyVoted(_) => bail!("{approver} already voted on approval {id}"),
    }
}
