-- The approval store (SQLite dialect). Timestamps are INTEGER microseconds since the Unix epoch
-- (UTC): sortable, fixed width, and always supplied by the caller (never the DB clock).
-- Append-only: rows change state, nothing is ever deleted.

CREATE TABLE approvals (
    id                 TEXT PRIMARY KEY,
    status             TEXT NOT NULL CHECK (status IN ('pending','approved','denied','expired','consumed','withdrawn')),
    action             TEXT NOT NULL,
    scope              TEXT NOT NULL,
    reason             TEXT NOT NULL,
    context            TEXT NOT NULL,
    request_hash       TEXT NOT NULL,
    method             TEXT,
    path               TEXT,
    requester          TEXT NOT NULL,
    requester_actors   TEXT NOT NULL DEFAULT '[]',
    caller             TEXT,
    approvals_required INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    decided_at         INTEGER,
    consumed_at        INTEGER,
    upstream_status    INTEGER,
    upstream_error     TEXT,
    previous_id        TEXT
);

-- Concurrent first calls for one identity produce exactly one pending row.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (scope, action, request_hash) WHERE status = 'pending';
-- The consume lookup: approved, unconsumed, newest first.
CREATE INDEX approvals_consumable ON approvals (scope, action, request_hash, decided_at) WHERE status = 'approved';
-- Newest approval per identity (the `previous` lookup).
CREATE INDEX approvals_identity ON approvals (scope, action, request_hash, created_at);
-- Listing, newest first, keyset-paginated.
CREATE INDEX approvals_created ON approvals (created_at, id);
-- The sweeper.
CREATE INDEX approvals_open_expiry ON approvals (expires_at) WHERE status IN ('pending','approved');

CREATE TABLE approval_decisions (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    approver    TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('approve','deny','bypass')),
    comment     TEXT,
    decided_at  INTEGER NOT NULL,
    via         TEXT NOT NULL,
    PRIMARY KEY (approval_id, approver)
);

CREATE TABLE approval_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    event       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    via         TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    at          INTEGER NOT NULL
);
CREATE INDEX approval_events_approval ON approval_events (approval_id, id);
