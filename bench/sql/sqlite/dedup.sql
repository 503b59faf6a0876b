-- (b) retry of a pending request, as the store sends it: one transaction (with a quorum of one
-- the decisions query is skipped).
BEGIN IMMEDIATE;
UPDATE approvals SET status = 'consumed', consumed_at = :now
WHERE id = (SELECT id FROM approvals WHERE scope = '@RUN@-dedup' AND action = 'delete_workspace'
            AND request_hash = 'h-@RUN@-dedup' AND status = 'approved' AND expires_at > :now
            ORDER BY decided_at DESC, id DESC LIMIT 1)
  AND status = 'approved' AND consumed_at IS NULL AND expires_at > :now
RETURNING id;
-- capture: aid
SELECT id, status, action, scope, reason, context, request_hash, method, path, requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at, consumed_at, upstream_status, upstream_error, previous_id FROM approvals
WHERE scope = '@RUN@-dedup' AND action = 'delete_workspace' AND request_hash = 'h-@RUN@-dedup'
  AND status = 'pending';
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
VALUES (:aid, 'deduplicated', 'bench-agent', 'gateway', '{}', :now) RETURNING id;
COMMIT
