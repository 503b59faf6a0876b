// Command workspace-server is a test stand-in for the Molecule workspace-server
// (Molecule-AI/molecule-core staging @ 7cf77f27). It is a real gin server with
// the real route table and auth middleware; most handlers only record the
// request. See tests/standin/README.md.
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/gin-gonic/gin"
	_ "github.com/lib/pq"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()

	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		log.Fatal("standin: DATABASE_URL is required")
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		log.Fatalf("standin: open database: %v", err)
	}
	if err := ensureSchema(db); err != nil {
		log.Fatalf("standin: schema: %v", err)
	}

	// gin prints debug lines on stdout in debug mode; stdout carries the
	// LISTENING line, so run in release mode (routing is unaffected).
	gin.SetMode(gin.ReleaseMode)
	rec := newRecorder()
	engine := setupRouter(db, rec)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("standin: listen %s: %v", *listen, err)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr().String())
	_ = os.Stdout.Sync()

	srv := &http.Server{Handler: rec.wrap(engine)}
	log.Fatal(srv.Serve(ln))
}

// ensureSchema creates the tables the stand-in reads and writes, with the
// column types and nullability of the real migrations.
func ensureSchema(db *sql.DB) error {
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS workspaces (
			id        UUID PRIMARY KEY,
			name      TEXT NOT NULL,
			status    TEXT NOT NULL DEFAULT 'online',
			parent_id UUID NULL
		)`,
		`CREATE TABLE IF NOT EXISTS workspace_auth_tokens (
			id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
			workspace_id UUID NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
			token_hash   BYTEA NOT NULL,
			prefix       TEXT NOT NULL,
			created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
			last_used_at TIMESTAMPTZ,
			revoked_at   TIMESTAMPTZ
		)`,
		`CREATE TABLE IF NOT EXISTS org_api_tokens (
			id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
			token_hash   BYTEA NOT NULL UNIQUE,
			prefix       TEXT NOT NULL,
			name         TEXT,
			created_by   TEXT,
			created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
			last_used_at TIMESTAMPTZ,
			revoked_at   TIMESTAMPTZ,
			org_id       UUID NULL REFERENCES workspaces(id) ON DELETE SET NULL
		)`,
		`CREATE TABLE IF NOT EXISTS approval_requests (
			id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
			workspace_id UUID REFERENCES workspaces(id),
			task_id      TEXT,
			action       TEXT NOT NULL,
			reason       TEXT,
			context      JSONB DEFAULT '{}'::jsonb,
			status       TEXT DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'escalated')),
			decided_by   TEXT,
			decided_at   TIMESTAMPTZ,
			created_at   TIMESTAMPTZ DEFAULT now()
		)`,
		`CREATE INDEX IF NOT EXISTS idx_approvals_workspace ON approval_requests(workspace_id)`,
		`CREATE INDEX IF NOT EXISTS idx_approvals_status ON approval_requests(status)`,
	}
	// Two stand-ins starting on one database would race on CREATE TABLE IF
	// NOT EXISTS (a unique violation in pg_type); an advisory lock orders them.
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.Exec(`SELECT pg_advisory_xact_lock(7412365)`); err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := tx.Exec(s); err != nil {
			return err
		}
	}
	return tx.Commit()
}
