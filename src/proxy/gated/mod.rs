//! The gated path: one request that hit a guard or a destructive route (or the canvas mirror's
//! decide route) with the flag not off, read top to bottom:
//!
//! 1. `request.rs` [`handle`]: classify the caller (`caller::classify`; IO: token sources),
//!    let the canvas mirror's decide route answer (`proxy/canvas_decide.rs`), then, as one
//!    [`GatedRequest`](request::GatedRequest), ask `gate::decide` for the whole outcome and carry
//!    it out: forward untouched, refuse with a problem, or read the body and decide again;
//! 2. `hold.rs`: hold for approval — the store consumes an approval of this identity (the
//!    request is sent once) or answers with the pending one: the 202 (`approval_response.rs`),
//!    or, for `Prefer: wait` (`prefer_wait.rs`), the request held until it is decided
//!    (`Store::wait_for_decision`).
//!
//! Fail closed: nothing here forwards a gated request unless the store consumed an approval for
//! exactly this identity. Store errors are 503, unverifiable credentials 401, unreadable body
//! fields 400, oversized bodies 413 — all mapped by `proxy/error.rs`. Every outcome is
//! counted and noted for the access line (`proxy/access.rs`).

mod approval_response;
mod hold;
mod prefer_wait;
mod request;

pub(super) use request::{count, handle, Matched};
