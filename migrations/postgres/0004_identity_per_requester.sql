-- An approval is consumed only by the caller who requested it (same subject), and a second
-- caller sending the identical request gets its own pending approval rather than joining the
-- first one's: the requester becomes part of the identity the gate looks up. The pending
-- uniqueness and the gate's lookup indexes gain the requester column.
SET LOCAL lock_timeout = '5s';
DROP INDEX approvals_one_pending;
CREATE UNIQUE INDEX approvals_one_pending ON approvals (scope, action, request_hash, requester) WHERE status = 'pending';
DROP INDEX approvals_consumable;
CREATE INDEX approvals_consumable ON approvals (scope, action, request_hash, requester, decided_at) WHERE status = 'approved';
