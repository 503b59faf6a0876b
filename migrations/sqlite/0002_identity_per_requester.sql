-- An approval is consumed only by the caller who requested it (same subject), and a second
-- caller sending the identical request gets its own pending approval: the requester becomes
-- part of the identity the gate looks up (see migrations/postgres/0004).
DROP INDEX approvals_one_pending;
CREATE UNIQUE INDEX approvals_one_pending ON approvals (scope, action, request_hash, requester) WHERE status = 'pending';
DROP INDEX approvals_consumable;
CREATE INDEX approvals_consumable ON approvals (scope, action, request_hash, requester, decided_at) WHERE status = 'approved';
