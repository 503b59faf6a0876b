-- The Molecule canvas mirror (SPEC §12); see migrations/postgres/0005_molecule_mirror.sql.
CREATE TABLE molecule_mirror (
    approval_id   TEXT PRIMARY KEY REFERENCES approvals (id),
    workspace_id  TEXT NOT NULL,
    server_id     TEXT NOT NULL,
    mirrored_at   INTEGER NOT NULL,
    written_back  TEXT NULL CHECK (written_back IN ('approved', 'denied'))
);
CREATE UNIQUE INDEX molecule_mirror_server ON molecule_mirror (server_id);
