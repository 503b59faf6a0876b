-- @ROWS@ approved approvals, one per identity @RUN@-<i> (i from 1).
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < @ROWS@)
INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
  requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at)
SELECT lower(hex(randomblob(16))), 'approved', 'delete_workspace', '@RUN@-' || i,
  'delete workspace', '{"workspace_id":"x"}', 'h-@RUN@-' || i, 'DELETE', '/workspaces/x',
  'bench-agent', '[]', 'platform-agent', 1, CAST(strftime('%s','now') AS INTEGER) * 1000000,
  CAST(strftime('%s','now') AS INTEGER) * 1000000 + 3600000000,
  CAST(strftime('%s','now') AS INTEGER) * 1000000
FROM s;
