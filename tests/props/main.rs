//! Property, differential and fuzz-style targets for every hand-written parser: each target
//! runs the parser on generated input and checks it against a well-kept library reading the
//! same bytes (its "twin"), or against properties that must hold whatever the input.
//!
//! One `#[test]` per target. By default each runs a bounded number of cases (the whole binary
//! takes well under a minute in debug); `PROPTEST_CASES=N` overrides every target's count.
//! `fuzz/run` runs each target for a fixed time with a huge count (see its header for how a
//! failure it finds becomes a regression test).
//!
//! Failing inputs are shrunk, and their seeds persisted under `tests/proptest-regressions/`
//! (commit those files: the seeds are replayed first on every later run). Every bug found also
//! gets a hand-written regression case next to its target.

#![allow(clippy::unwrap_used)]

use proptest::test_runner::Config;

mod binding;
mod config;
mod h1;
mod jwt;
mod path;
mod template;

/// The proptest configuration of a target: `cases` unless `PROPTEST_CASES` says otherwise.
pub fn cases(cases: u32) -> Config {
    // `Config::default()` reads `PROPTEST_CASES` (and the other `PROPTEST_*` variables).
    let from_env = std::env::var_os("PROPTEST_CASES").is_some();
    Config {
        cases: if from_env {
            Config::default().cases
        } else {
            cases
        },
        ..Config::default()
    }
}
