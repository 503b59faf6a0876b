//! The per-shard state of the data plane, held in one place.
//!
//! The data plane runs as shards: each is a thread with its own single-threaded tokio runtime
//! and its own `SO_REUSEPORT` listener (`proxy/listener.rs`, `serve_sharded`). A connection,
//! its requests and their upstream connections stay on one shard, so what a shard keeps for
//! itself needs no lock and is hit every time. What it keeps:
//!
//! - the [`Shard`] below (this module's one `thread_local!`): the upstream pool's idle
//!   connections (`pool.rs`) and the coarse timer's deadline registry (`timer.rs`);
//! - the shard's `Proxy` value (`Proxy::for_this_thread`, made on the shard's runtime): the same
//!   upstream, policy and metrics as every other shard, and a store handle whose Postgres
//!   connections belong to this shard's runtime (`Store::for_this_thread`).
//!
//! Why a thread-local rather than a value passed down: the pool and the timer are reached from
//! response bodies and deadlines that hyper owns and polls (its service futures and bodies must
//! be `Send`), so a per-shard value would have to be shared (`Arc` and a lock) to reach them, a
//! cost on every request that the thread-local does not have. On a multi-threaded runtime (the
//! `multi` mode of `examples/passthrough.rs`) each worker thread is a shard in this sense: a
//! connection handed back on another worker goes on that worker's shelf, and a deadline keeps a
//! handle to the registry it was armed in.

use std::cell::RefCell;
use std::sync::Arc;

use super::pool::Shelf;
use super::timer::Registry;

/// Everything a shard keeps for itself (see the module doc).
struct Shard {
    /// The idle connections of every upstream pool, one shelf per pool (`pool.rs`).
    shelves: RefCell<Vec<Shelf>>,
    /// The deadlines armed on this shard (`timer.rs`). An `Arc`: a deadline armed here may be
    /// disarmed on another thread (a task moved by a multi-threaded runtime).
    timers: Arc<Registry>,
}

thread_local! {
    static SHARD: Shard = Shard {
        shelves: RefCell::new(Vec::new()),
        timers: Arc::new(Registry::default()),
    };
}

/// Run `f` on this shard's pool shelves.
pub(super) fn shelves<R>(f: impl FnOnce(&mut Vec<Shelf>) -> R) -> R {
    SHARD.with(|shard| f(&mut shard.shelves.borrow_mut()))
}

/// This shard's deadline registry.
pub(super) fn timers() -> Arc<Registry> {
    SHARD.with(|shard| Arc::clone(&shard.timers))
}
