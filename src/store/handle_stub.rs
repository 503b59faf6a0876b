//! TEMPORARY (branch `api` only): the shape of the store engineer's `Store` handle so the API
//! compiles before the real one lands. Reverted before `git merge main`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{ApprovalStore, AuditEvent};

#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn ApprovalStore>,
    ready: Arc<AtomicBool>,
    events: broadcast::Sender<AuditEvent>,
}

impl Store {
    pub fn backend(&self) -> &dyn ApprovalStore {
        &*self.backend
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.events.subscribe()
    }
}
