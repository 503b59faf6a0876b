-- One pending approval per client: each client retries "its" request (b).
INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
  requester, requester_actors, caller, approvals_required, created_at, expires_at)
SELECT gen_random_uuid(), 'pending', 'delete_workspace', '@RUN@-' || c, 'delete workspace',
  jsonb_build_object('workspace_id', '@RUN@-' || c), md5('@RUN@-' || c), 'DELETE',
  '/workspaces/@RUN@-' || c, 'bench-agent', '[]', 'platform-agent', 1, now(), now() + interval '24h'
FROM generate_series(0, @CLIENTS@ - 1) AS c;
