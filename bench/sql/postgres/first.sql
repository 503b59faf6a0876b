-- (a) first call: a new identity each time, as the store sends it (src/store/postgres/gate.rs):
-- the gate statement (finds nothing), then CREATE_SQL (the pending row, the denied one it
-- follows, and its 'requested' audit row in one statement).
\set n random(1, 2000000000)
@GATE((:run::text || '-' || :client_id || '-' || :n))@;
WITH prev AS (
  SELECT a.id FROM (SELECT id, status, decided_at FROM approvals
                    WHERE scope = (:run::text || '-' || :client_id || '-' || :n) AND action = 'delete_workspace' AND request_hash = md5((:run::text || '-' || :client_id || '-' || :n))
                    ORDER BY created_at DESC, id DESC LIMIT 1) a
  WHERE a.status = 'denied' AND NOT EXISTS (
    SELECT 1 FROM approvals b WHERE b.scope = (:run::text || '-' || :client_id || '-' || :n) AND b.action = 'delete_workspace'
      AND b.request_hash = md5((:run::text || '-' || :client_id || '-' || :n)) AND b.consumed_at >= a.decided_at)),
i AS (
  INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
    requester, requester_actors, caller, approvals_required, created_at, expires_at, previous_id)
  VALUES (gen_random_uuid(), 'pending', 'delete_workspace', (:run::text || '-' || :client_id || '-' || :n), 'delete workspace',
    jsonb_build_object('workspace_id', (:run::text || '-' || :client_id || '-' || :n)), md5((:run::text || '-' || :client_id || '-' || :n)), 'DELETE', '/workspaces/x', 'bench-agent', '[]',
    'platform-agent', 1, now(), now() + interval '24h', (SELECT id FROM prev))
  ON CONFLICT (scope, action, request_hash, requester) WHERE status = 'pending' DO NOTHING
  RETURNING id, status, action, scope, reason, context, request_hash, method, path, requester,
    requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at,
    upstream_status, upstream_error, previous_id),
e AS (
  INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
  SELECT id, 'requested', requester, 'gateway',
    jsonb_build_object('previous', previous_id, 'method', method, 'path', path), created_at FROM i)
SELECT id, status, action, scope, reason, context, request_hash, method, path, requester,
  requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at,
  upstream_status, upstream_error, previous_id FROM i;
