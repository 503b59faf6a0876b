package main

// The route table of workspace-server/internal/router/router.go (Molecule-AI
// staging @ 7cf77f27), with the auth tier of each route and the destructive
// marks of the reference (§3 ★/◆, §8, §9).

import (
	"database/sql"
	"net/http"
	"os"

	"github.com/gin-gonic/gin"
)

// Auth tiers.
const (
	tierOpen      = "O"
	tierAdmin     = "A"
	tierWorkspace = "W"
	tierCanvas    = "C"
)

type routeDef struct {
	method string
	path   string
	tier   string
	// marks is empty for a non-destructive route, else why it is destructive:
	// "★" / "◆" / "★◆" from reference §3, or "§8: …" / "§9: …".
	marks string
}

type routeInfo struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Auth        string `json:"auth"`
	Destructive bool   `json:"destructive"`
	Marks       string `json:"marks"`
}

const ws = "/workspaces/:id"

func routeTable() []routeDef {
	t := []routeDef{
		{"GET", "/health", tierOpen, ""},
		{"GET", "/admin/liveness", tierAdmin, ""},
		{"GET", "/metrics", tierOpen, ""},
		{"GET", "/workspaces/:id", tierOpen, ""},

		{"GET", "/workspaces", tierAdmin, ""},
		{"POST", "/workspaces", tierAdmin, "§9: body workspace_dir bind-mounted rw; body secrets"},
		{"DELETE", "/workspaces/:id", tierAdmin, "★"},
		{"POST", "/admin/workspaces/:id/bootstrap-failed", tierAdmin, ""},
		{"GET", "/workspaces/:id/console", tierAdmin, "review: boot output can carry user-data credentials"},
		{"GET", "/admin/memories/export", tierAdmin, "◆"},
		{"POST", "/admin/memories/import", tierAdmin, "★"},

		{"POST", "/workspaces/:id/a2a", tierOpen, ""},

		{"PATCH", ws, tierWorkspace, "§9: changes workspace_dir, parent_id, tier, runtime"},
		{"GET", ws + "/state", tierWorkspace, ""},
		{"POST", ws + "/restart", tierWorkspace, "★"},
		{"POST", ws + "/pause", tierWorkspace, ""},
		{"POST", ws + "/resume", tierWorkspace, ""},
		{"POST", ws + "/hibernate", tierWorkspace, "§9: hibernate with ?force"},
		{"POST", ws + "/delegate", tierWorkspace, "§9: delegate"},
		{"GET", ws + "/delegations", tierWorkspace, ""},
		{"POST", ws + "/delegations/record", tierWorkspace, ""},
		{"POST", ws + "/delegations/:delegation_id/update", tierWorkspace, ""},
		{"GET", ws + "/traces", tierWorkspace, ""},
		{"GET", ws + "/transcript", tierWorkspace, ""},
		{"POST", ws + "/memories", tierWorkspace, ""},
		{"GET", ws + "/memories", tierWorkspace, ""},
		{"DELETE", ws + "/memories/:memoryId", tierWorkspace, "★"},
		{"POST", ws + "/approvals", tierWorkspace, ""},
		{"GET", ws + "/approvals", tierWorkspace, ""},
		{"POST", ws + "/approvals/:approvalId/decide", tierWorkspace, "§8: a gated caller can decide its own approval"},
		{"GET", "/approvals/pending", tierAdmin, ""},
		{"POST", ws + "/expand", tierWorkspace, ""},
		{"POST", ws + "/collapse", tierWorkspace, "★"},
		{"POST", ws + "/agent", tierWorkspace, ""},
		{"PATCH", ws + "/agent", tierWorkspace, ""},
		{"DELETE", ws + "/agent", tierWorkspace, "★"},
		{"POST", ws + "/agent/move", tierWorkspace, ""},

		{"POST", "/registry/register", tierOpen, ""},
		{"POST", "/registry/heartbeat", tierOpen, ""},
		{"POST", "/registry/update-card", tierOpen, ""},
		{"POST", "/webhooks/github", tierOpen, ""},
		{"POST", "/webhooks/github/:id", tierOpen, ""},
		{"GET", "/registry/discover/:id", tierOpen, ""},
		{"GET", "/registry/:id/peers", tierOpen, ""},
		{"POST", "/registry/check-access", tierOpen, ""},
		{"GET", "/events", tierAdmin, ""},
		{"GET", "/events/:workspaceId", tierAdmin, ""},

		{"GET", ws + "/activity", tierWorkspace, ""},
		{"GET", ws + "/session-search", tierWorkspace, ""},
		{"POST", ws + "/activity", tierWorkspace, ""},
		{"POST", ws + "/notify", tierWorkspace, ""},
		{"GET", ws + "/config", tierWorkspace, ""},
		{"PATCH", ws + "/config", tierWorkspace, "★"},
		{"GET", ws + "/schedules", tierWorkspace, ""},
		{"POST", ws + "/schedules", tierWorkspace, "§9: schedules write"},
		{"PATCH", ws + "/schedules/:scheduleId", tierWorkspace, "§9: schedules write"},
		{"DELETE", ws + "/schedules/:scheduleId", tierWorkspace, "★"},
		{"POST", ws + "/schedules/:scheduleId/run", tierWorkspace, "§9: schedules write (runs the schedule now)"},
		{"GET", ws + "/schedules/:scheduleId/history", tierWorkspace, ""},
		{"GET", "/workspaces/:id/schedules/health", tierOpen, ""},
		{"GET", ws + "/budget", tierWorkspace, ""},
		{"PATCH", "/workspaces/:id/budget", tierAdmin, "§9: PATCH budget"},
		{"GET", ws + "/tokens", tierWorkspace, ""},
		{"POST", ws + "/tokens", tierWorkspace, "◆"},
		{"DELETE", ws + "/tokens/:tokenId", tierWorkspace, "★"},
		{"GET", ws + "/memory", tierWorkspace, ""},
		{"GET", ws + "/memory/:key", tierWorkspace, ""},
		{"POST", ws + "/memory", tierWorkspace, "review: overwrites a key, as destructive as deleting it"},
		{"DELETE", ws + "/memory/:key", tierWorkspace, "★"},
		{"GET", ws + "/secrets", tierWorkspace, ""},
		{"GET", ws + "/secrets/values", tierWorkspace, "◆"},
		{"POST", ws + "/secrets", tierWorkspace, "★"},
		{"PUT", ws + "/secrets", tierWorkspace, "★"},
		{"DELETE", ws + "/secrets/:key", tierWorkspace, "★"},
		{"GET", ws + "/model", tierWorkspace, ""},
		{"PUT", ws + "/model", tierWorkspace, "§8: writes secret MODEL_PROVIDER and restarts"},
		{"GET", ws + "/metrics", tierWorkspace, ""},
		{"POST", ws + "/artifacts", tierWorkspace, ""},
		{"GET", ws + "/artifacts", tierWorkspace, ""},
		{"POST", ws + "/artifacts/fork", tierWorkspace, ""},
		{"POST", ws + "/artifacts/token", tierWorkspace, "◆"},
		{"POST", ws + "/checkpoints", tierWorkspace, "review: upserts over an existing checkpoint"},
		{"GET", ws + "/checkpoints/latest", tierWorkspace, ""},
		{"GET", ws + "/checkpoints/:wfid", tierWorkspace, ""},
		{"DELETE", ws + "/checkpoints/:wfid", tierWorkspace, "★"},
		{"GET", ws + "/mcp/stream", tierWorkspace, ""},
		{"POST", ws + "/mcp", tierWorkspace, ""},

		// §3 marks the row ★◆, but §9 (secrets.go:302-328): the GET lists key names only.
		{"GET", "/settings/secrets", tierAdmin, ""},
		{"PUT", "/settings/secrets", tierAdmin, "★◆"},
		{"POST", "/settings/secrets", tierAdmin, "★◆"},
		{"DELETE", "/settings/secrets/:key", tierAdmin, "★"},
		{"GET", "/admin/secrets", tierAdmin, ""}, // same handler as GET /settings/secrets: key names only
		{"POST", "/admin/secrets", tierAdmin, "same handler as POST /settings/secrets (★◆)"},
		{"DELETE", "/admin/secrets/:key", tierAdmin, "★"},

		{"GET", "/instructions", tierAdmin, ""},
		{"POST", "/instructions", tierAdmin, "§9: instructions write"},
		{"PUT", "/instructions/:id", tierAdmin, "§9: instructions write"},
		{"DELETE", "/instructions/:id", tierAdmin, "★"},
		{"GET", ws + "/instructions/resolve", tierWorkspace, ""},

		{"GET", "/admin/schedules/health", tierAdmin, ""},
		{"POST", "/admin/a2a-queue/drop-stale", tierAdmin, "★"},
	}
	// Registered by the real server only with the Docker provisioner (the
	// default self-hosted setup); STANDIN_NO_DOCKER=1 leaves it out.
	if os.Getenv("STANDIN_NO_DOCKER") != "1" {
		t = append(t, routeDef{"POST", "/admin/workspace-images/refresh", tierAdmin, "★"})
	}
	t = append(t, []routeDef{
		{"GET", "/admin/workspaces/:id/test-token", tierOpen, "◆"},
		{"GET", "/admin/github-installation-token", tierAdmin, "◆"},
		{"GET", ws + "/github-installation-token", tierWorkspace, "◆"},
		{"GET", ws + "/terminal", tierWorkspace, "★◆"},
		{"GET", "/canvas/viewport", tierOpen, ""},
		{"PUT", "/canvas/viewport", tierCanvas, ""},
		{"GET", "/templates", tierAdmin, ""},
		{"POST", "/templates/import", tierAdmin, "★"},
		{"GET", ws + "/shared-context", tierWorkspace, ""},
		{"PUT", ws + "/files", tierWorkspace, "★"},
		{"GET", ws + "/files", tierWorkspace, ""},
		{"GET", ws + "/files/*path", tierWorkspace, "§9: can read /configs/.auth_token"},
		{"PUT", ws + "/files/*path", tierWorkspace, "★"},
		{"DELETE", ws + "/files/*path", tierWorkspace, "★"},
		{"POST", ws + "/chat/uploads", tierWorkspace, ""},
		{"GET", ws + "/chat/download", tierWorkspace, "review: ?path= reads /configs/.auth_token as root (chat_files.go)"},
		{"GET", "/plugins", tierOpen, ""},
		{"GET", "/plugins/sources", tierOpen, ""},
		{"GET", ws + "/plugins", tierWorkspace, ""},
		{"GET", ws + "/plugins/available", tierWorkspace, ""},
		{"GET", ws + "/plugins/compatibility", tierWorkspace, ""},
		{"POST", ws + "/plugins", tierWorkspace, "★"},
		{"DELETE", ws + "/plugins/:name", tierWorkspace, "★"},
		{"GET", ws + "/plugins/:name/download", tierWorkspace, ""},
		{"GET", "/bundles/export/:id", tierAdmin, "◆"},
		{"POST", "/bundles/import", tierAdmin, "★"},
		{"GET", "/org/templates", tierAdmin, ""},
		{"GET", "/org/tokens", tierAdmin, ""},
		{"POST", "/org/tokens", tierAdmin, "★◆"},
		{"DELETE", "/org/tokens/:id", tierAdmin, "★"},
		{"POST", "/org/import", tierAdmin, "★"},
		{"GET", "/orgs/:id/plugins/allowlist", tierAdmin, ""},
		{"PUT", "/orgs/:id/plugins/allowlist", tierAdmin, "★"},
		{"GET", "/channels/adapters", tierOpen, ""},
		{"GET", ws + "/channels", tierWorkspace, ""},
		{"POST", ws + "/channels", tierWorkspace, "§9: channels write"},
		{"PATCH", ws + "/channels/:channelId", tierWorkspace, "§9: channels write"},
		{"DELETE", ws + "/channels/:channelId", tierWorkspace, "★"},
		{"POST", ws + "/channels/:channelId/send", tierWorkspace, "§9: channel send"},
		{"POST", ws + "/channels/:channelId/test", tierWorkspace, "§9: channels write (sends a test message)"},
		{"POST", "/channels/discover", tierAdmin, ""},
		{"POST", "/webhooks/:type", tierOpen, ""},
		{"GET", ws + "/audit", tierWorkspace, ""},
		{"GET", ws + "/events/stream", tierWorkspace, ""},
		{"GET", "/ws", tierOpen, ""},
	}...)
	return t
}

// setupRouter builds the engine: gin.Default() minus its logger, no trusted
// proxies, the route table, and the two catch-alls of the real router.
func setupRouter(db *sql.DB, rec *recorder) *gin.Engine {
	r := gin.New()
	// gin.Default() is Logger + Recovery; the logger is left out. Of the
	// real global chain (CORS, rate limiter, metrics, TenantGuard,
	// SecurityHeaders) only TenantGuard is kept.
	r.Use(captureMiddleware, gin.Recovery(), tenantGuard())
	if err := r.SetTrustedProxies(nil); err != nil {
		panic(err)
	}
	h := &handlers{db: db}
	special := map[string]gin.HandlerFunc{
		"POST /workspaces/:id/approvals":                    h.createApproval,
		"GET /workspaces/:id/approvals":                     h.listApprovals,
		"GET /approvals/pending":                            h.listPendingApprovals,
		"POST /workspaces/:id/approvals/:approvalId/decide": h.decideApproval,
		"DELETE /workspaces/:id":                            h.deleteWorkspace,
		"POST /org/tokens":                                  h.mintOrgToken,
		"DELETE /org/tokens/:id":                            h.revokeOrgToken,
		"POST /workspaces/:id/tokens":                       h.mintWorkspaceToken,
		"POST /workspaces/:id/secrets":                      h.setSecret,
		"PUT /workspaces/:id/secrets":                       h.setSecret,
	}
	defs := map[string]routeDef{}
	for _, d := range routeTable() {
		var chain []gin.HandlerFunc
		switch d.tier {
		case tierAdmin:
			chain = append(chain, adminAuth(db))
		case tierWorkspace:
			chain = append(chain, workspaceAuth(db))
		case tierCanvas:
			chain = append(chain, canvasOrBearer(db))
		}
		final := generic
		if f, ok := special[d.method+" "+d.path]; ok {
			final = f
		}
		chain = append(chain, markHandled, final)
		r.Handle(d.method, d.path, chain...)
		defs[d.method+" "+d.path] = d
	}
	// The real server proxies /cp/* to the CP when CP_UPSTREAM_URL is set,
	// and sends NoRoute to the canvas when CANVAS_PROXY_URL is set. The
	// stand-in registers the same routes but only answers and records.
	cp := os.Getenv("CP_UPSTREAM_URL") != ""
	if cp {
		r.Any("/cp/*path", markHandled, generic)
	}
	rec.tsr = newTSRProbe(routeTable(), cp)
	if os.Getenv("CANVAS_PROXY_URL") != "" {
		r.NoRoute(func(c *gin.Context) {
			c.JSON(http.StatusOK, gin.H{"ok": true, "route": "", "canvas_proxy": true})
		})
	}
	// The dump is engine.Routes(), annotated from the table.
	for _, ri := range r.Routes() {
		d, ok := defs[ri.Method+" "+ri.Path]
		if !ok {
			d = routeDef{tier: tierOpen}
		}
		rec.routes = append(rec.routes, routeInfo{
			Method: ri.Method, Path: ri.Path, Auth: d.tier,
			Destructive: d.marks != "", Marks: d.marks,
		})
	}
	return r
}

func generic(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"ok": true, "route": c.FullPath()})
}
