//! The command line (README, Commands): `serve` (default), `check-config`, `migrate`, `approvals …`,
//! `hash`, `demo`. `--config PATH` is accepted by every subcommand, anywhere on the line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "approval-gateway",
    version,
    about = "A reverse proxy that puts a human approval in front of destructive operations of an unmodified HTTP API"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "GATEWAY_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub(crate) config: PathBuf,

    /// The subcommand; `None` runs `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration, print every problem, exit 1 if any.
    CheckConfig,
    /// Apply the store's migrations.
    Migrate,
    /// Operator CLI working directly on the configured store (break-glass; audited with via = "cli").
    Approvals {
        /// What to do with approvals.
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Print the request_hash of an approval identity (debugging).
    Hash {
        /// The approval's scope (e.g. the workspace id).
        #[arg(long)]
        scope: String,
        /// The route's action name.
        #[arg(long)]
        action: String,
        /// The context as a JSON object.
        #[arg(long)]
        context: String,
    },
    /// Try it now: an echo upstream behind the gateway with the gate on and a temporary SQLite store.
    Demo,
}

/// The `approvals` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, newest first.
    List {
        /// pending|approved|denied|expired|consumed|withdrawn
        #[arg(long)]
        status: Option<String>,
        /// Only approvals with this scope.
        #[arg(long)]
        scope: Option<String>,
        /// Only approvals of this action.
        #[arg(long)]
        action: Option<String>,
        /// Most approvals listed.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one approval as JSON.
    Show {
        /// The approval's id.
        id: String,
    },
    /// Approve a pending approval.
    Approve(DecideArgs),
    /// Deny a pending approval.
    Deny(DecideArgs),
}

/// What `approvals approve` and `approvals deny` take.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval's id.
    pub(crate) id: String,
    /// A comment recorded with the decision.
    #[arg(long)]
    pub(crate) comment: Option<String>,
    /// Who decides (recorded as the approver); defaults to $USER.
    #[arg(long = "as")]
    pub(crate) as_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_accepted_anywhere_on_the_line() {
        let a = Cli::try_parse_from(["approval-gateway", "--config", "x.toml", "check-config"])
            .unwrap();
        let b = Cli::try_parse_from(["approval-gateway", "check-config", "--config", "x.toml"])
            .unwrap();
        let c = Cli::try_parse_from([
            "approval-gateway",
            "approvals",
            "approve",
            "ID",
            "--as",
            "alice",
            "--config",
            "x.toml",
        ])
        .unwrap();
        for cli in [a, b, c] {
            assert_eq!(cli.config, PathBuf::from("x.toml"));
        }
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["approval-gateway"]).unwrap();
        assert!(cli.command.is_none());
    }
}
