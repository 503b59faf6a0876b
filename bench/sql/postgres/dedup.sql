-- (b) retry of a pending request, as the store sends it (src/store/postgres/gate.rs GATE_SQL):
-- one statement tries to consume, finds the live pending row and audits the retry. With a
-- quorum of one the decisions query is skipped.
@GATE((:run::text || '-' || :client_id))@;
