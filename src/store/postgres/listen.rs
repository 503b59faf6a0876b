//! The live feed on Postgres: a listener per replica turns `NOTIFY approval_events, '<event
//! row as JSON>'` (sent by a trigger at commit, from every replica; just the id when the row is
//! too big for a payload) into `AuditEvent`s on the handle's broadcast feed.
//!
//! Invariant: `start_listener` returns once LISTEN is in place, so no event committed after the
//! store turns ready is missed by local subscribers; events lost while the listener reconnects
//! are still in `approval_events` for `events_after` readers.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;

use super::PgStore;
use crate::store::model::{classify, parse_event, parse_via};
use crate::store::rules::{Rules, EVENT_COLS};
use crate::store::{ApprovalId, AuditEvent, StoreError};

/// The NOTIFY channel the `approval_events` trigger announces on.
pub const EVENTS_CHANNEL: &str = "approval_events";

impl PgStore {
    /// Subscribe to the events channel and spawn the task feeding `feed`; returns once LISTEN
    /// is in place. The task ends when the feed (the last `Store` clone) is dropped.
    pub(in crate::store) async fn start_listener(
        &self,
        feed: Weak<broadcast::Sender<AuditEvent>>,
    ) -> Result<(), StoreError> {
        if self.listening.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(classify)?;
        listener.listen(EVENTS_CHANNEL).await.map_err(classify)?;
        self.listening.store(true, Ordering::Release);
        tokio::spawn(relay(listener, self.pool.clone(), feed));
        Ok(())
    }
}

/// Notification → event → broadcast. The payload is the event row as JSON (migration 0002),
/// or its id alone when the row is too big for a payload; only then is the row read. Events
/// are decoded only while someone subscribes (SSE streams, waiting requests).
async fn relay(mut listener: PgListener, pool: PgPool, feed: Weak<broadcast::Sender<AuditEvent>>) {
    loop {
        let note = tokio::time::timeout(Duration::from_secs(15), listener.recv()).await;
        let Some(feed) = feed.upgrade() else { return };
        match note {
            Err(_idle) => {}
            Ok(Ok(note)) if feed.receiver_count() > 0 => {
                match announced(&pool, note.payload()).await {
                    Ok(Some(e)) => {
                        let _ = feed.send(e);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, payload_len = note.payload().len(), "cannot read announced audit event")
                    }
                }
            }
            Ok(Ok(_unheard)) => {}
            Ok(Err(e)) => {
                // recv() reconnects and re-subscribes on the next call; events in between are
                // still in `approval_events` for `events_after` readers.
                tracing::warn!(error = %e, "event listener lost its connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The event a NOTIFY payload announces: the row itself as JSON, or an id to read.
async fn announced(pool: &PgPool, payload: &str) -> Result<Option<AuditEvent>, StoreError> {
    if let Ok(id) = payload.parse::<i64>() {
        return event_by_id(pool, id).await;
    }
    let raw: NotifiedEvent = serde_json::from_str(payload)
        .map_err(|e| StoreError::Corrupt(format!("audit event payload: {e}")))?;
    Ok(Some(AuditEvent {
        id: raw.id,
        approval_id: ApprovalId(raw.approval_id),
        event: parse_event(&raw.event)?,
        actor: raw.actor,
        via: parse_via(&raw.via)?,
        detail: raw.detail,
        at: raw.at,
    }))
}

/// An `approval_events` row as `row_to_json` writes it.
#[derive(serde::Deserialize)]
struct NotifiedEvent {
    id: i64,
    approval_id: uuid::Uuid,
    event: String,
    actor: String,
    via: String,
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

async fn event_by_id(pool: &PgPool, id: i64) -> Result<Option<AuditEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLS} FROM approval_events WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
    row.as_ref().map(Rules::<PgStore>::decode_event).transpose()
}
