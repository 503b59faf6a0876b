-- Announce only the events the live feed carries (`EventKind::is_announced` in
-- src/store/mod.rs): not `deduplicated` (a retry of a pending request) nor `upstream` (the
-- upstream's answer to a consumed one). Both are still audited rows; they change no status and
-- nobody waits for them. Why it matters: a transaction that calls pg_notify takes one
-- cluster-wide lock at commit and holds it until its commit record is flushed, so every
-- notifying commit in the cluster is serialised. These two events are the gate's hot path.
-- Replacing the trigger locks approval_events exclusively: give up rather than queue every
-- replica's gate behind a long transaction (the gateway retries migrations with backoff).
SET LOCAL lock_timeout = '5s';
DROP TRIGGER approval_events_notify ON approval_events;
CREATE TRIGGER approval_events_notify AFTER INSERT ON approval_events
    FOR EACH ROW WHEN (NEW.event NOT IN ('deduplicated', 'upstream'))
    EXECUTE FUNCTION approval_events_notify();
