//! The command line (README, Commands): `serve` (default), `check-config`, `migrate`, `approvals …`,
//! `hash`, `demo`. `--config PATH` is accepted by every subcommand, anywhere on the line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

    #[command(subcommand)]
    pub command: Option<Command>,
}

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
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Print the request_hash of an approval identity (debugging).
    Hash {
        #[arg(long)]
        scope: String,
        #[arg(long)]
        action: String,
        /// The context as a JSON object.
        #[arg(long)]
        context: String,
    },
    /// Try it now: an echo upstream behind the gateway with the gate on and a temporary SQLite store.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, newest first.
    List {
        /// pending|approved|denied|expired|consumed|withdrawn
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one approval as JSON.
    Show { id: String },
    /// Approve a pending approval.
    Approve(DecideArgs),
    /// Deny a pending approval.
    Deny(DecideArgs),
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    pub(crate) id: String,
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
