-- The gate statement (src/store/postgres/gate.rs GATE_SQL) for one identity, with now() for
-- $1 and @ID@ for the scope (and md5(@ID@) for the hash). The pgbench scripts include it as
-- @GATE(<identity expression>)@; bench/harness/dbbase.py expands it.
WITH c AS (
  UPDATE approvals SET status = 'consumed', consumed_at = now()
  WHERE true AND id = (SELECT id FROM approvals
              WHERE scope = @ID@ AND action = 'delete_workspace'
                AND request_hash = md5(@ID@) AND requester = 'bench-agent'
                AND status = 'approved' AND expires_at > now() AND method IS NOT NULL
              ORDER BY decided_at DESC, id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
    AND status = 'approved' AND consumed_at IS NULL AND expires_at > now()
  RETURNING id),
ce AS (
  INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
  SELECT id, 'consumed', 'bench-agent', 'gateway', '{}'::jsonb, now() FROM c),
p AS (
  SELECT id, status, action, scope, reason, context, request_hash, method, path, requester,
    requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at,
    upstream_status, upstream_error, previous_id
  FROM approvals WHERE scope = @ID@ AND action = 'delete_workspace'
    AND request_hash = md5(@ID@) AND requester = 'bench-agent' AND status = 'pending'
    AND NOT EXISTS (SELECT 1 FROM c)),
pe AS (
  INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
  SELECT id, 'deduplicated', 'bench-agent', 'gateway', '{}'::jsonb, now() FROM p WHERE expires_at > now())
SELECT (SELECT id FROM c) AS consumed_id, p.* FROM (VALUES (1)) AS one LEFT JOIN p ON true
