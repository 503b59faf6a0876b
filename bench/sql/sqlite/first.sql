-- (a) first call, as the store sends it: one transaction on the single connection.
BEGIN IMMEDIATE;
UPDATE approvals SET status = 'consumed', consumed_at = :now
WHERE id = (SELECT id FROM approvals WHERE scope = '@RUN@-' || :n AND action = 'delete_workspace'
            AND request_hash = 'h-@RUN@-' || :n AND status = 'approved' AND expires_at > :now
            ORDER BY decided_at DESC, id DESC LIMIT 1)
  AND status = 'approved' AND consumed_at IS NULL AND expires_at > :now
RETURNING id;
SELECT id, status, action, scope, reason, context, request_hash, method, path, requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at, upstream_status, upstream_error, previous_id FROM approvals
WHERE scope = '@RUN@-' || :n AND action = 'delete_workspace' AND request_hash = 'h-@RUN@-' || :n
  AND status = 'pending';
SELECT id FROM approvals a WHERE scope = '@RUN@-' || :n AND action = 'delete_workspace'
  AND request_hash = 'h-@RUN@-' || :n AND status = 'denied'
  AND a.created_at = (SELECT MAX(created_at) FROM approvals WHERE scope = '@RUN@-' || :n
                      AND action = 'delete_workspace' AND request_hash = 'h-@RUN@-' || :n)
  AND NOT EXISTS (SELECT 1 FROM approvals b WHERE b.scope = '@RUN@-' || :n
                  AND b.action = 'delete_workspace' AND b.request_hash = 'h-@RUN@-' || :n
                  AND b.consumed_at >= a.decided_at)
ORDER BY id DESC LIMIT 1;
-- capture: aid
INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
  requester, requester_actors, caller, approvals_required, created_at, expires_at, previous_id)
VALUES (lower(hex(randomblob(16))), 'pending', 'delete_workspace', '@RUN@-' || :n,
  'delete workspace', '{"workspace_id":"x"}', 'h-@RUN@-' || :n, 'DELETE', '/workspaces/x',
  'bench-agent', '[]', 'platform-agent', 1, :now, :now + 86400000000, NULL)
ON CONFLICT (scope, action, request_hash, requester) WHERE status = 'pending' DO NOTHING
RETURNING id, status, action, scope, reason, context, request_hash, method, path, requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at, upstream_status, upstream_error, previous_id;
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
VALUES (:aid, 'requested', 'bench-agent', 'gateway',
  '{"previous":null,"method":"DELETE","path":"/workspaces/x"}', :now) RETURNING id;
COMMIT
