-- (a) first call: a new identity each time, statement for statement as the store sends it
-- (consume attempt; pending lookup; then in one transaction: expire due pending, previous
-- denied, insert pending, audit 'requested').
\set n random(1, 2000000000)
WITH c AS (
  UPDATE approvals SET status = 'consumed', consumed_at = now()
  WHERE id = (SELECT id FROM approvals
              WHERE scope = :run::text || '-' || :client_id || '-' || :n AND action = 'delete_workspace'
                AND request_hash = md5(:run::text || '-' || :client_id || '-' || :n)
                AND status = 'approved' AND expires_at > now()
              ORDER BY decided_at DESC, id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
    AND status = 'approved' AND consumed_at IS NULL AND expires_at > now()
  RETURNING id)
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
SELECT id, 'consumed', 'bench-agent', 'gateway', '{}'::jsonb, now() FROM c RETURNING approval_id;
SELECT id, status, action, scope, reason, context, request_hash, method, path, requester,
  requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at,
  upstream_status, upstream_error, previous_id
FROM approvals WHERE scope = :run::text || '-' || :client_id || '-' || :n AND action = 'delete_workspace'
  AND request_hash = md5(:run::text || '-' || :client_id || '-' || :n) AND status = 'pending';
BEGIN;
WITH e AS (UPDATE approvals SET status = 'expired'
           WHERE scope = :run::text || '-' || :client_id || '-' || :n AND action = 'delete_workspace'
             AND request_hash = md5(:run::text || '-' || :client_id || '-' || :n)
             AND status = 'pending' AND expires_at <= now()
           RETURNING id, expires_at)
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
SELECT id, 'expired', 'system', 'gateway',
  jsonb_build_object('from', 'pending', 'expires_at', expires_at), now() FROM e;
SELECT id FROM (SELECT id, status, decided_at FROM approvals
                WHERE scope = :run::text || '-' || :client_id || '-' || :n AND action = 'delete_workspace'
                  AND request_hash = md5(:run::text || '-' || :client_id || '-' || :n)
                ORDER BY created_at DESC, id DESC LIMIT 1) a
WHERE a.status = 'denied' AND NOT EXISTS (
  SELECT 1 FROM approvals b WHERE b.scope = :run::text || '-' || :client_id || '-' || :n
    AND b.action = 'delete_workspace'
    AND b.request_hash = md5(:run::text || '-' || :client_id || '-' || :n)
    AND b.consumed_at >= a.decided_at);
INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
  requester, requester_actors, caller, approvals_required, created_at, expires_at, previous_id)
VALUES (gen_random_uuid(), 'pending', 'delete_workspace', :run::text || '-' || :client_id || '-' || :n,
  'delete workspace', jsonb_build_object('workspace_id', :run::text || '-' || :client_id || '-' || :n),
  md5(:run::text || '-' || :client_id || '-' || :n), 'DELETE', '/workspaces/x', 'bench-agent', '[]',
  'platform-agent', 1, now(), now() + interval '24h', NULL)
ON CONFLICT (scope, action, request_hash) WHERE status = 'pending' DO NOTHING
RETURNING id, status, action, scope, reason, context, request_hash, method, path, requester,
  requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at,
  upstream_status, upstream_error, previous_id \gset p_
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
VALUES (:p_id, 'requested', 'bench-agent', 'gateway',
  jsonb_build_object('previous', NULL, 'method', 'DELETE', 'path', '/workspaces/x'), now());
COMMIT;
