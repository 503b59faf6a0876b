-- (c) consume (one transaction), then record the upstream's status (another), as the store does.
BEGIN IMMEDIATE;
-- capture: aid
UPDATE approvals SET status = 'consumed', consumed_at = :now
WHERE id = (SELECT id FROM approvals WHERE scope = '@RUN@-' || :n AND action = 'delete_workspace'
            AND request_hash = 'h-@RUN@-' || :n AND status = 'approved' AND expires_at > :now
            ORDER BY decided_at DESC, id DESC LIMIT 1)
  AND status = 'approved' AND consumed_at IS NULL AND expires_at > :now
RETURNING id;
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
VALUES (:aid, 'consumed', 'bench-agent', 'gateway', '{}', :now) RETURNING id;
COMMIT;
BEGIN IMMEDIATE;
UPDATE approvals SET upstream_status = 200, upstream_error = NULL WHERE id = :aid;
INSERT INTO approval_events (approval_id, event, actor, via, detail, at)
VALUES (:aid, 'upstream', 'system', 'gateway', '{"status":200}', :now) RETURNING id;
COMMIT
