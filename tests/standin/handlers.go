package main

// The handlers that do more than record: approvals (handlers/approvals.go),
// workspace delete (workspace_crud.go Delete), org tokens (org_tokens.go),
// workspace tokens (tokens.go Create) and workspace secret writes
// (secrets.go Set, without storing the secret).

import (
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/lib/pq"
)

type handlers struct{ db *sql.DB }

// ---- approvals ----

func (h *handlers) createApproval(c *gin.Context) {
	workspaceID := c.Param("id")
	var body struct {
		TaskID  string                 `json:"task_id"`
		Action  string                 `json:"action" binding:"required"`
		Reason  string                 `json:"reason"`
		Context map[string]interface{} `json:"context"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid request body"})
		return
	}
	ctxJSON, _ := json.Marshal(body.Context) // a missing context is stored as JSON null, as upstream
	if ctxJSON == nil {
		ctxJSON = []byte("{}")
	}
	var id string
	err := h.db.QueryRowContext(c.Request.Context(), `
		INSERT INTO approval_requests (workspace_id, task_id, action, reason, context)
		VALUES ($1, $2, $3, $4, $5::jsonb)
		RETURNING id
	`, workspaceID, body.TaskID, body.Action, body.Reason, string(ctxJSON)).Scan(&id)
	if err != nil {
		log.Printf("Create approval error: %v", err)
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to create approval"})
		return
	}
	c.JSON(http.StatusCreated, gin.H{"approval_id": id, "status": "pending"})
}

func (h *handlers) listApprovals(c *gin.Context) {
	rows, err := h.db.QueryContext(c.Request.Context(), `
		SELECT id, task_id, action, reason, status, decided_by, decided_at, created_at
		FROM approval_requests WHERE workspace_id = $1
		ORDER BY created_at DESC LIMIT 50
	`, c.Param("id"))
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "query failed"})
		return
	}
	defer rows.Close()
	out := make([]map[string]interface{}, 0)
	for rows.Next() {
		var id, action, status, createdAt string
		var taskID, reason, decidedBy, decidedAt *string
		if rows.Scan(&id, &taskID, &action, &reason, &status, &decidedBy, &decidedAt, &createdAt) != nil {
			continue
		}
		out = append(out, map[string]interface{}{
			"id": id, "task_id": taskID, "action": action, "reason": reason, "status": status,
			"decided_by": decidedBy, "decided_at": decidedAt, "created_at": createdAt,
		})
	}
	c.JSON(http.StatusOK, out)
}

func (h *handlers) listPendingApprovals(c *gin.Context) {
	ctx := c.Request.Context()
	_, _ = h.db.ExecContext(ctx, `
		UPDATE approval_requests SET status = 'denied', decided_by = 'auto-expired', decided_at = now()
		WHERE status = 'pending' AND created_at < now() - interval '10 minutes'
	`)
	rows, err := h.db.QueryContext(ctx, `
		SELECT a.id, a.workspace_id, w.name, a.action, a.reason, a.status, a.created_at
		FROM approval_requests a
		JOIN workspaces w ON w.id = a.workspace_id
		WHERE a.status = 'pending'
		ORDER BY a.created_at DESC
		LIMIT 50
	`)
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "query failed"})
		return
	}
	defer rows.Close()
	out := make([]map[string]interface{}, 0)
	for rows.Next() {
		var id, wsID, wsName, action, status, createdAt string
		var reason *string
		if rows.Scan(&id, &wsID, &wsName, &action, &reason, &status, &createdAt) != nil {
			continue
		}
		out = append(out, map[string]interface{}{
			"id": id, "workspace_id": wsID, "workspace_name": wsName, "action": action,
			"reason": reason, "status": status, "created_at": createdAt,
		})
	}
	c.JSON(http.StatusOK, out)
}

func (h *handlers) decideApproval(c *gin.Context) {
	workspaceID, approvalID := c.Param("id"), c.Param("approvalId")
	var body struct {
		Decision  string `json:"decision" binding:"required"`
		DecidedBy string `json:"decided_by"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid request body"})
		return
	}
	if body.Decision != "approved" && body.Decision != "denied" {
		c.JSON(http.StatusBadRequest, gin.H{"error": "decision must be 'approved' or 'denied'"})
		return
	}
	decidedBy := body.DecidedBy
	if decidedBy == "" {
		decidedBy = "human"
	}
	res, err := h.db.ExecContext(c.Request.Context(), `
		UPDATE approval_requests
		SET status = $1, decided_by = $2, decided_at = now()
		WHERE id = $3 AND workspace_id = $4 AND status = 'pending'
	`, body.Decision, decidedBy, approvalID, workspaceID)
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to update"})
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		c.JSON(http.StatusNotFound, gin.H{"error": "approval not found or already decided"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": body.Decision, "approval_id": approvalID})
}

// ---- workspace delete ----

// parseUUID accepts what github.com/google/uuid.Parse accepts: the 36-char
// form, "urn:uuid:" + 36, "{" 36 "}", and 32 bare hex digits; any case.
func parseUUID(s string) bool {
	switch len(s) {
	case 36:
	case 36 + 9:
		if !strings.EqualFold(s[:9], "urn:uuid:") {
			return false
		}
		s = s[9:]
	case 36 + 2:
		if s[0] != '{' || s[37] != '}' {
			return false
		}
		s = s[1:37]
	case 32:
		return isHex(s)
	default:
		return false
	}
	if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	return isHex(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
			return false
		}
	}
	return true
}

func (h *handlers) deleteWorkspace(c *gin.Context) {
	id := c.Param("id")
	ctx := c.Request.Context()
	confirm := c.Query("confirm") == "true"
	if !parseUUID(id) {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid workspace ID"})
		return
	}
	rows, err := h.db.QueryContext(ctx,
		`SELECT id, name FROM workspaces WHERE parent_id = $1 AND status != 'removed'`, id)
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to check children"})
		return
	}
	children := []map[string]string{}
	for rows.Next() {
		var cid, cname string
		if rows.Scan(&cid, &cname) == nil {
			children = append(children, map[string]string{"id": cid, "name": cname})
		}
	}
	rerr := rows.Err()
	rows.Close()
	if rerr != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to check children"})
		return
	}
	if len(children) > 0 && !confirm {
		c.JSON(http.StatusConflict, gin.H{
			"status":         "confirmation_required",
			"message":        "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.",
			"children":       children,
			"children_count": len(children),
		})
		return
	}
	descendants := []string{}
	if len(children) > 0 {
		drows, err := h.db.QueryContext(ctx, `
			WITH RECURSIVE descendants AS (
				SELECT id FROM workspaces WHERE parent_id = $1 AND status != 'removed'
				UNION ALL
				SELECT w.id FROM workspaces w JOIN descendants d ON w.parent_id = d.id WHERE w.status != 'removed'
			)
			SELECT id FROM descendants
		`, id)
		if err == nil {
			for drows.Next() {
				var d string
				if drows.Scan(&d) == nil {
					descendants = append(descendants, d)
				}
			}
			drows.Close()
		}
	}
	all := pq.Array(append([]string{id}, descendants...))
	if _, err := h.db.ExecContext(ctx,
		`UPDATE workspaces SET status = 'removed' WHERE id = ANY($1::uuid[])`, all); err != nil {
		log.Printf("Delete status update error for %s: %v", id, err)
	}
	if _, err := h.db.ExecContext(ctx,
		`UPDATE workspace_auth_tokens SET revoked_at = now() WHERE workspace_id = ANY($1::uuid[]) AND revoked_at IS NULL`,
		all); err != nil {
		log.Printf("Delete token revocation error for %s: %v", id, err)
	}
	if c.Query("purge") == "true" {
		for _, table := range []string{"approval_requests", "workspace_auth_tokens"} {
			if _, err := h.db.ExecContext(ctx,
				fmt.Sprintf("DELETE FROM %s WHERE workspace_id = ANY($1::uuid[])", table), all); err != nil {
				log.Printf("Purge %s error: %v", table, err)
			}
		}
		_, _ = h.db.ExecContext(ctx, "UPDATE workspaces SET parent_id = NULL WHERE parent_id = ANY($1::uuid[])", all)
		if _, err := h.db.ExecContext(ctx, "DELETE FROM workspaces WHERE id = ANY($1::uuid[])", all); err != nil {
			log.Printf("Purge workspace row error: %v", err)
			c.JSON(http.StatusInternalServerError, gin.H{"error": "purge failed"})
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "purged", "cascade_deleted": len(descendants)})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "removed", "cascade_deleted": len(descendants)})
}

// ---- tokens ----

func newPlaintextToken() (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

func nullIfEmpty(s string) interface{} {
	if s == "" {
		return nil
	}
	return s
}

// orgTokenActor mirrors handlers/org_tokens.go: org-token:<prefix> (and the
// caller token's org_id), else "session" when any Cookie header is present,
// else "admin-token".
func (h *handlers) orgTokenActor(c *gin.Context) (createdBy, orgID string) {
	if v, ok := c.Get("org_token_prefix"); ok {
		if s, ok := v.(string); ok && s != "" {
			if tid, ok := c.Get("org_token_id"); ok {
				if ts, ok := tid.(string); ok && ts != "" {
					var o sql.NullString
					if err := h.db.QueryRowContext(c.Request.Context(),
						`SELECT org_id FROM org_api_tokens WHERE id = $1`, ts).Scan(&o); err == nil && o.Valid {
						orgID = o.String
					}
				}
			}
			return "org-token:" + s, orgID
		}
	}
	if c.GetHeader("Cookie") != "" {
		return "session", ""
	}
	return "admin-token", ""
}

func (h *handlers) mintOrgToken(c *gin.Context) {
	var req struct {
		Name string `json:"name"`
	}
	_ = c.ShouldBindJSON(&req)
	if len(req.Name) > 100 {
		c.JSON(http.StatusBadRequest, gin.H{"error": "name too long (max 100 chars)"})
		return
	}
	createdBy, orgID := h.orgTokenActor(c)
	plaintext, err := newPlaintextToken()
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to mint token"})
		return
	}
	var id string
	err = h.db.QueryRowContext(c.Request.Context(), `
		INSERT INTO org_api_tokens (token_hash, prefix, name, created_by, org_id)
		VALUES ($1, $2, $3, $4, $5)
		RETURNING id
	`, tokenHash(plaintext), plaintext[:8], nullIfEmpty(req.Name), nullIfEmpty(createdBy), nullIfEmpty(orgID)).Scan(&id)
	if err != nil {
		log.Printf("orgtoken issue: %v", err)
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to mint token"})
		return
	}
	resp := gin.H{
		"id":         id,
		"prefix":     plaintext[:8],
		"auth_token": plaintext,
		"warning":    "copy this token now; it will not be shown again",
	}
	if req.Name != "" { // `json:"name,omitempty"` upstream
		resp["name"] = req.Name
	}
	c.JSON(http.StatusOK, resp)
}

func (h *handlers) revokeOrgToken(c *gin.Context) {
	id := c.Param("id")
	res, err := h.db.ExecContext(c.Request.Context(),
		`UPDATE org_api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, id)
	if err != nil {
		// A non-UUID id is a query error upstream too (500).
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to revoke"})
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		c.JSON(http.StatusNotFound, gin.H{"error": "token not found or already revoked"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"revoked": id})
}

func (h *handlers) mintWorkspaceToken(c *gin.Context) {
	workspaceID := c.Param("id")
	ctx := c.Request.Context()
	var count int
	_ = h.db.QueryRowContext(ctx,
		`SELECT COUNT(*) FROM workspace_auth_tokens WHERE workspace_id = $1 AND revoked_at IS NULL`,
		workspaceID).Scan(&count)
	if count >= 50 {
		c.JSON(http.StatusTooManyRequests, gin.H{"error": "maximum 50 active tokens per workspace"})
		return
	}
	plaintext, err := newPlaintextToken()
	if err == nil {
		_, err = h.db.ExecContext(ctx,
			`INSERT INTO workspace_auth_tokens (workspace_id, token_hash, prefix) VALUES ($1, $2, $3)`,
			workspaceID, tokenHash(plaintext), plaintext[:8])
	}
	if err != nil {
		log.Printf("tokens: issue failed for %s: %v", workspaceID, err)
		c.JSON(http.StatusInternalServerError, gin.H{"error": "failed to create token"})
		return
	}
	c.JSON(http.StatusCreated, gin.H{
		"auth_token":   plaintext,
		"workspace_id": workspaceID,
		"message":      "Save this token now — it cannot be retrieved again.",
	})
}

// ---- secrets ----

var uuidRegex = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (h *handlers) setSecret(c *gin.Context) {
	if !uuidRegex.MatchString(c.Param("id")) {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid workspace ID"})
		return
	}
	var body struct {
		Key   string `json:"key" binding:"required"`
		Value string `json:"value" binding:"required"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"error": "invalid request body"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "saved", "key": body.Key})
}
