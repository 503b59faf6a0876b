//! `approval-gateway`: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;

use approval_gateway::cli::{Cli, Command};
use approval_gateway::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` and `demo` log JSON lines on stdout (the audit trail); the other commands keep
    // stdout for their output and log to stderr.
    let serving = matches!(cli.command, None | Some(Command::Serve | Command::Demo));
    init_tracing(serving);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("approval-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("approval-gateway: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many layers repeat their source in their own
/// message (sqlx's "while executing migrations: pool timed out…"), which `{:#}` would print
/// again for every layer.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn init_tracing(serving: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false);
    if serving {
        builder.init();
    } else {
        builder.with_writer(std::io::stderr).init();
    }
}
