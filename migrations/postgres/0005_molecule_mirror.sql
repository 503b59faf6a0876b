-- The Molecule canvas mirror (SPEC §12): which row of the workspace-server's approval_requests
-- shows each gateway approval in the canvas. One row per approval; replaced (and audited as a
-- `mirrored` event) when the server auto-denies its row after 10 minutes and a new one is made.
-- `mirrored` is not announced: the trigger's NOT IN list (0003) would announce it, so it is
-- added there.
CREATE TABLE molecule_mirror (
    approval_id   uuid PRIMARY KEY REFERENCES approvals (id),
    workspace_id  text NOT NULL,
    server_id     text NOT NULL,
    mirrored_at   timestamptz NOT NULL,
    written_back  text NULL CHECK (written_back IN ('approved', 'denied'))
);
CREATE UNIQUE INDEX molecule_mirror_server ON molecule_mirror (server_id);

SET LOCAL lock_timeout = '5s';
DROP TRIGGER approval_events_notify ON approval_events;
CREATE TRIGGER approval_events_notify AFTER INSERT ON approval_events
    FOR EACH ROW WHEN (NEW.event NOT IN ('deduplicated', 'upstream', 'mirrored'))
    EXECUTE FUNCTION approval_events_notify();
