-- The approval store (Postgres dialect). Timestamps always come from the caller (never now()).
-- Append-only: rows change state, nothing is ever deleted.

CREATE TABLE approvals (
    id                 uuid PRIMARY KEY,
    status             text NOT NULL CHECK (status IN ('pending','approved','denied','expired','consumed','withdrawn')),
    action             text NOT NULL,
    scope              text NOT NULL,
    reason             text NOT NULL,
    context            jsonb NOT NULL,
    request_hash       text NOT NULL,
    method             text,
    path               text,
    requester          text NOT NULL,
    requester_actors   jsonb NOT NULL DEFAULT '[]',
    caller             text,
    approvals_required integer NOT NULL,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    decided_at         timestamptz,
    consumed_at        timestamptz,
    upstream_status    integer,
    upstream_error     text,
    previous_id        uuid
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
    approval_id uuid NOT NULL REFERENCES approvals (id),
    approver    text NOT NULL,
    decision    text NOT NULL CHECK (decision IN ('approve','deny','bypass')),
    comment     text,
    decided_at  timestamptz NOT NULL,
    via         text NOT NULL,
    PRIMARY KEY (approval_id, approver)
);

CREATE TABLE approval_events (
    id          bigserial PRIMARY KEY,
    approval_id uuid NOT NULL REFERENCES approvals (id),
    event       text NOT NULL,
    actor       text NOT NULL,
    via         text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL
);
CREATE INDEX approval_events_approval ON approval_events (approval_id, id);

-- Every committed event is announced to every replica (delivered at commit, in commit order).
CREATE FUNCTION approval_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('approval_events', NEW.id::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER approval_events_notify AFTER INSERT ON approval_events
    FOR EACH ROW EXECUTE FUNCTION approval_events_notify();
