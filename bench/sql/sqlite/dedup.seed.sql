INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
  requester, requester_actors, caller, approvals_required, created_at, expires_at)
VALUES (lower(hex(randomblob(16))), 'pending', 'delete_workspace', '@RUN@-dedup', 'delete workspace',
  '{"workspace_id":"x"}', 'h-@RUN@-dedup', 'DELETE', '/workspaces/x', 'bench-agent', '[]',
  'platform-agent', 1, CAST(strftime('%s','now') AS INTEGER) * 1000000,
  CAST(strftime('%s','now') AS INTEGER) * 1000000 + 86400000000);
