//! The end-to-end suite: one binary, one module per area. Servers bind port 0; tests wait on
//! conditions, never on sleeps. Postgres tests use a fresh database per test
//! (`support::db`); set `AG_REQUIRE_POSTGRES=1` to make an unreachable Postgres a failure.

#![allow(clippy::unwrap_used)]
// A test binary exports nothing: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

mod support;

mod api;
mod bypass;
mod cli;
mod differential;
mod gate;
mod hardening;
mod mirror;
mod molecule;
mod notify;
mod proxy;
mod reload;
mod replicas;
mod standin;
mod store;
mod wait;
