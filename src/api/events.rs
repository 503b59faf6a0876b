//! `GET /v1/events`: Server-Sent Events, one per approval transition (approver-only).
//!
//! Frame: `event: approval.<kind>`, `id: <audit event id>`, `data: <Approval JSON>` (the approval
//! as read when the frame is sent — normally just after the event; on a catch-up, its current
//! state). Kinds sent: requested, approved, bypassed, denied, consumed, expired, withdrawn. The
//! store's internal audit kinds (voted, deduplicated, upstream) are not transitions of the
//! approval's status and are not sent (they stay in the audit table).
//!
//! Resume without gaps or duplicates: subscribe to the live feed FIRST, then replay the audit
//! table after `Last-Event-ID` (header, or `?last_event_id=`) with `events_after`, then forward
//! live events skipping every id ≤ the last one sent. Events published between the subscription
//! and the end of the replay are in both and are dropped by that id check. A lagging subscriber
//! (broadcast buffer overrun) is repaired the same way, from the audit table.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::{auth, AdminState};
use crate::store::{AuditEvent, EventKind, StoreError};

/// Interval of the `: keep-alive` comment lines.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Audit rows fetched per catch-up query.
const CATCH_UP_PAGE: u32 = 500;

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    last_event_id: Option<String>,
}

pub(super) async fn stream(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let caller = st.authenticate(&headers).await?;
    auth::require_approver(&caller)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.last_event_id)
        .filter(|s| !s.trim().is_empty());
    let last = match last {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be an integer"))?,
        ),
    };
    let live = st.store.subscribe();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(e) = pump(&st, live, last, &tx).await {
            tracing::warn!(error = %e, "SSE stream ended: store error");
        }
    });
    Ok(
        Sse::new(ReceiverStream::new(rx).map(Ok::<Event, Infallible>))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")),
    )
}

/// Why the pump stopped early.
#[derive(Debug, thiserror::Error)]
enum PumpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("client gone")]
    Closed,
}

async fn pump(
    st: &AdminState,
    mut live: broadcast::Receiver<AuditEvent>,
    last: Option<i64>,
    tx: &mpsc::Sender<Event>,
) -> Result<(), StoreError> {
    // An immediate comment flushes the response head, so the client knows it is subscribed.
    if tx
        .send(Event::default().comment("connected"))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut cursor = last;
    match run(st, &mut live, &mut cursor, tx).await {
        Ok(()) | Err(PumpError::Closed) => Ok(()),
        Err(PumpError::Store(e)) => Err(e),
    }
}

async fn run(
    st: &AdminState,
    live: &mut broadcast::Receiver<AuditEvent>,
    cursor: &mut Option<i64>,
    tx: &mpsc::Sender<Event>,
) -> Result<(), PumpError> {
    if let Some(after) = *cursor {
        catch_up(st, after, cursor, tx).await?;
    }
    loop {
        let received = tokio::select! {
            _ = tx.closed() => return Err(PumpError::Closed),
            r = live.recv() => r,
        };
        match received {
            Ok(ev) => {
                if cursor.is_some_and(|c| ev.id <= c) {
                    continue;
                }
                send(st, &ev, tx).await?;
                *cursor = Some(ev.id);
            }
            Err(RecvError::Lagged(missed)) => match *cursor {
                Some(after) => catch_up(st, after, cursor, tx).await?,
                None => tracing::warn!(
                    missed,
                    "SSE subscriber lagged before its first event; events skipped"
                ),
            },
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

/// Replay audit rows after `after` until the table is exhausted, advancing `cursor`.
async fn catch_up(
    st: &AdminState,
    after: i64,
    cursor: &mut Option<i64>,
    tx: &mpsc::Sender<Event>,
) -> Result<(), PumpError> {
    let mut after = after;
    loop {
        let batch = st.store.events_after(after, CATCH_UP_PAGE).await?;
        for ev in &batch {
            send(st, ev, tx).await?;
            after = ev.id;
            *cursor = Some(ev.id);
        }
        if batch.len() < CATCH_UP_PAGE as usize {
            return Ok(());
        }
    }
}

/// Send one frame for `ev` (nothing for internal kinds).
async fn send(st: &AdminState, ev: &AuditEvent, tx: &mpsc::Sender<Event>) -> Result<(), PumpError> {
    let Some(name) = sse_name(ev.event) else {
        return Ok(());
    };
    let Some(approval) = st.store.get(ev.approval_id, Utc::now()).await? else {
        return Ok(());
    };
    let data = serde_json::to_string(&approval).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let frame = Event::default()
        .event(name)
        .id(ev.id.to_string())
        .data(data);
    tx.send(frame).await.map_err(|_| PumpError::Closed)
}

/// The SSE event name of an audit kind; `None` for kinds that are not status transitions.
pub(crate) fn sse_name(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::Requested => "approval.requested",
        EventKind::Approved => "approval.approved",
        EventKind::Bypassed => "approval.bypassed",
        EventKind::Denied => "approval.denied",
        EventKind::Consumed => "approval.consumed",
        EventKind::Expired => "approval.expired",
        EventKind::Withdrawn => "approval.withdrawn",
        EventKind::Voted | EventKind::Deduplicated | EventKind::Upstream | EventKind::Mirrored => {
            return None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_kinds_are_not_sent() {
        assert_eq!(sse_name(EventKind::Voted), None);
        assert_eq!(sse_name(EventKind::Deduplicated), None);
        assert_eq!(sse_name(EventKind::Upstream), None);
        assert_eq!(sse_name(EventKind::Bypassed), Some("approval.bypassed"));
        assert_eq!(sse_name(EventKind::Expired), Some("approval.expired"));
    }
}
