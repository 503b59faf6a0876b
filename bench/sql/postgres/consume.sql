-- (c) approved: the gate statement consumes (with its audit row), then, after the upstream
-- answered, the store records its status (one statement with its audit row).
-- Each operation consumes the next identity of this client (:i persists per client; -D i=0).
\set i :i + 1
@GATE((:run::text || '-' || :client_id || '-' || :i))@ \gset
WITH u AS (UPDATE approvals SET upstream_status = 200, upstream_error = NULL
           WHERE id = :consumed_id RETURNING id)
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
SELECT id, 'upstream', 'system', 'gateway', jsonb_build_object('status', 200), now() FROM u;
