//! Waiting for a decision on one approval: the one "subscribe, re-read, wait" loop, used by a
//! gated request held for `Prefer: wait` (`proxy/gated/hold.rs`) and by the long-poll `GET
//! /v1/approvals/{id}?wait=N` (`api/approvals.rs`).
//!
//! Invariants: the live feed is subscribed BEFORE the approval is read, so a decision committed
//! in between is never missed; an event about the approval (or a lag, which may have dropped
//! one) only triggers a re-read, since an event alone does not say whether a vote reached the
//! quorum; nothing polls; nothing is written, so a waiter that goes away changes nothing.

use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;

use super::{Approval, ApprovalId, AuditEvent, Status, Store, StoreError};

impl Store {
    /// Hold until approval `id` leaves `pending` (on any replica sharing the store) or
    /// `deadline` passes, then answer it as last read: no longer pending (decided, withdrawn,
    /// expired, consumed), still pending (the deadline passed), or `None` (no such approval).
    ///
    /// At the deadline it is read once more, so an expiry that is due reads as `expired` even
    /// before the sweeper announces it.
    pub(crate) async fn wait_for_decision(
        &self,
        id: ApprovalId,
        deadline: Instant,
    ) -> Result<Option<Approval>, StoreError> {
        // Subscribe first: every event committed after this point reaches `feed`, so the read
        // below plus the feed cover every decision, whenever it lands.
        let mut feed = self.subscribe();
        loop {
            let approval = self.get(id, Utc::now()).await?;
            if !approval
                .as_ref()
                .is_some_and(|a| a.status == Status::Pending)
            {
                return Ok(approval);
            }
            if !next_event_about(&mut feed, id, deadline).await {
                return self.get(id, Utc::now()).await;
            }
        }
    }
}

/// Wait for the next event about `id` (or a lag, after which the caller re-reads anyway).
/// False when `deadline` passed or the feed closed (the store outlives every waiter, so it
/// does not): the caller's next read is its last.
async fn next_event_about(
    feed: &mut Receiver<AuditEvent>,
    id: ApprovalId,
    deadline: Instant,
) -> bool {
    loop {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Ok(ev)) if ev.approval_id != id => continue,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => return true,
            Ok(Err(RecvError::Closed)) | Err(_) => return false,
        }
    }
}
