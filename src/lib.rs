//! approval-gateway: a reverse proxy that puts a human approval in front of destructive
//! operations of an unmodified HTTP API.
//!
//! One module per stage of a request, in flow order:
//!
//! ```text
//! proxy::listener ─▶ route (lookup) ─▶ caller::classify ─▶ gate::decide ─▶ store ─▶ proxy::upstream | 202
//!   (accept, drain)    (pure)            (pure JWT; opaque     (pure, `now`    (sqlx:    (proxy::error maps
//!                                         sources do IO)        passed in)      SQLite/PG) every error to a status)
//! ```
//!
//! `config` turns the TOML file into the compiled pieces the stages use; `app` wires them into
//! one shared state; `api` is the admin listener (approvals API, inbox, metrics, health).
#![forbid(unsafe_code)]

// Flow order: the stages of a request, then what wires and serves them.
pub mod proxy;
pub mod route;
pub mod caller;
pub mod gate;
pub mod store;

pub mod config;
pub mod reload;
pub mod metrics;
pub mod notify;
pub mod mirror;
pub mod api;
pub mod app;
pub mod cli;
pub mod commands;
mod demo;
