-- (b) retry of a pending request, statement for statement as the store sends it
-- (src/store/postgres.rs consume_or_create -> ops::consume, ops::open_pending -> reuse; with a
-- quorum of one the decisions query is skipped).
-- 1. consume attempt (finds nothing: the identity is pending)
WITH c AS (
  UPDATE approvals SET status = 'consumed', consumed_at = now()
  WHERE id = (SELECT id FROM approvals
              WHERE scope = :run::text || '-' || :client_id AND action = 'delete_workspace'
                AND request_hash = md5(:run::text || '-' || :client_id)
                AND status = 'approved' AND expires_at > now()
              ORDER BY decided_at DESC, id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
    AND status = 'approved' AND consumed_at IS NULL AND expires_at > now()
  RETURNING id)
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
SELECT id, 'consumed', 'bench-agent', 'gateway', '{}'::jsonb, now() FROM c RETURNING approval_id;
-- 2. the live pending row
SELECT id, status, action, scope, reason, context, request_hash, method, path, requester,
  requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at,
  upstream_status, upstream_error, previous_id
FROM approvals WHERE scope = :run::text || '-' || :client_id AND action = 'delete_workspace'
  AND request_hash = md5(:run::text || '-' || :client_id) AND status = 'pending' \gset p_
-- 3. audit the retry
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
VALUES (:p_id, 'deduplicated', 'bench-agent', 'gateway', '{}', now());
