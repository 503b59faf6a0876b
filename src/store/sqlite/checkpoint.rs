//! SQLite WAL checkpoints off the request path.
//!
//! Why: in WAL mode the connection that commits past `wal_autocheckpoint` frames runs the
//! checkpoint itself, inline, with two `fsync`s (the WAL, then the database file). The store has
//! one connection, so every gated request queued behind that commit waited too: 17–20 ms per
//! checkpoint on the benchmark machine, every few hundred writes, which made the p99 of retries
//! at 4 connections 20 ms where the statements alone take 0.3 ms.
//!
//! How: the store's connection checkpoints inline only past [`INLINE_AFTER_FRAMES`] (a backstop
//! for when this task falls behind or fails), and this task runs a `PASSIVE` checkpoint every
//! [`EVERY`] on a connection of its own. `PASSIVE` never waits for and never blocks the writer.
//! But under steady writes it never catches up with the last few frames, and the WAL starts
//! over only once every frame is copied. So when the WAL holds [`RESTART_AFTER_FRAMES`] or
//! more, a `RESTART` checkpoint follows: it holds the writer back while it copies the few
//! frames `PASSIVE` left, so that the next commit starts the WAL over. Measured at 4
//! connections (first calls and retries, 2 repetitions), against inline checkpoints: p99
//! 3.7–9.8 ms instead of 16–26 ms, p99.9 11–40 ms instead of 20–66 ms. Without the `RESTART`,
//! p99 was as good but p99.9 reached 112 ms (the WAL grew to the backstop). The full benchmark
//! still finds the rarer stalls longer than inline ones (`bench/analysis.md`).
//!
//! Invariants: this connection only runs `PRAGMA wal_checkpoint`; it never reads or writes
//! rows, so the store's single-writer rule (`mod.rs`) is untouched. While a `RESTART` holds
//! the write lock, the store's transactions wait for it at `BEGIN IMMEDIATE` (its busy
//! timeout); a deferred `BEGIN` would fail the ones that read before they write.

use std::sync::Weak;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, SqliteConnection};
use tokio::time::MissedTickBehavior;

/// Frames the store's own connection lets the WAL grow to before it checkpoints inline (SQLite's
/// default is 1,000; 10,000 frames of 4 KiB pages is about 40 MiB of WAL).
pub(super) const INLINE_AFTER_FRAMES: u32 = 10_000;

/// How often the background checkpoint runs. An idle one costs one statement on its own thread.
pub(super) const EVERY: Duration = Duration::from_millis(500);

/// WAL frames (after a `PASSIVE` checkpoint) from which a `RESTART` checkpoint follows.
const RESTART_AFTER_FRAMES: i64 = 2_000;

/// Checkpoints every [`EVERY`] until `alive` (the last `Store` clone) is gone. A failure is
/// logged once per streak of failures, and the connection is opened again on the next tick.
pub(super) async fn run<T: Send + Sync + 'static>(opts: SqliteConnectOptions, alive: Weak<T>) {
    let mut conn: Option<SqliteConnection> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.strong_count() == 0 {
            break;
        }
        match checkpoint(&mut conn, &opts).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("SQLite background checkpoints resumed");
            }
            Ok(()) => {}
            Err(e) => {
                conn = None;
                if !failing {
                    failing = true;
                    tracing::warn!(
                        error = %e,
                        inline_after_frames = INLINE_AFTER_FRAMES,
                        "SQLite background checkpoint failed; the store checkpoints inline \
                         once the WAL holds that many frames"
                    );
                }
            }
        }
    }
    if let Some(c) = conn {
        let _ = sqlx::Connection::close(c).await;
    }
}

async fn checkpoint(
    conn: &mut Option<SqliteConnection>,
    opts: &SqliteConnectOptions,
) -> Result<(), sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(opts.connect().await?),
    };
    // One row: (busy, frames in the WAL, frames checkpointed).
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *c)
        .await?;
    if frames >= RESTART_AFTER_FRAMES {
        // Waits for the writer's current transaction (the busy timeout), then holds it back.
        let _: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *c)
            .await?;
    }
    Ok(())
}
