-- (c) approved: consume (one statement with its audit row), then, after the upstream answered,
-- record its status (one statement with its audit row), as the store sends them.
-- Each operation consumes the next identity of this client (:i persists per client; -D i=0).
\set i :i + 1
WITH c AS (
  UPDATE approvals SET status = 'consumed', consumed_at = now()
  WHERE id = (SELECT id FROM approvals
              WHERE scope = :run::text || '-' || :client_id || '-' || :i AND action = 'delete_workspace'
                AND request_hash = md5(:run::text || '-' || :client_id || '-' || :i)
                AND status = 'approved' AND expires_at > now()
              ORDER BY decided_at DESC, id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
    AND status = 'approved' AND consumed_at IS NULL AND expires_at > now()
  RETURNING id)
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
SELECT id, 'consumed', 'bench-agent', 'gateway', '{}'::jsonb, now() FROM c
RETURNING approval_id \gset
WITH u AS (UPDATE approvals SET upstream_status = 200, upstream_error = NULL
           WHERE id = :approval_id RETURNING id)
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
SELECT id, 'upstream', 'system', 'gateway', jsonb_build_object('status', 200), now() FROM u;
