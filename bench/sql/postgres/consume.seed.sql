-- @ROWS@ approved approvals, one per identity @RUN@-<client>-<i> (i from 1), as after approvals
-- through the API: each consume operation finds exactly one candidate.
INSERT INTO approvals (id, status, action, scope, reason, context, request_hash, method, path,
  requester, requester_actors, caller, approvals_required, created_at, expires_at, decided_at)
SELECT gen_random_uuid(), 'approved', 'delete_workspace', '@RUN@-' || (i % @CLIENTS@) || '-' || (i / @CLIENTS@ + 1),
  'delete workspace', jsonb_build_object('workspace_id', '@RUN@-' || (i % @CLIENTS@) || '-' || (i / @CLIENTS@ + 1)),
  md5('@RUN@-' || (i % @CLIENTS@) || '-' || (i / @CLIENTS@ + 1)), 'DELETE', '/workspaces/x', 'bench-agent', '[]',
  'platform-agent', 1, now(), now() + interval '1h', now()
FROM generate_series(0, @ROWS@ - 1) AS i;
