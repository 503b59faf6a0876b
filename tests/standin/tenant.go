package main

// TenantGuard, as workspace-server/internal/middleware/tenant_guard.go: a
// no-op unless MOLECULE_ORG_ID is set; then a request passes only on an
// allowlisted path, /cp/*, a matching X-Molecule-Org-Id, a Fly-Replay-Src
// with state=<org id>, or a same-origin canvas request. Else a bare 404.

import (
	"os"
	"strings"

	"github.com/gin-gonic/gin"
)

var tenantGuardAllowlist = map[string]bool{
	"/health":             true,
	"/metrics":            true,
	"/registry/register":  true,
	"/registry/heartbeat": true,
}

func tenantGuard() gin.HandlerFunc {
	orgID := strings.TrimSpace(os.Getenv("MOLECULE_ORG_ID"))
	if orgID == "" {
		return func(c *gin.Context) { c.Next() }
	}
	return func(c *gin.Context) {
		p := c.Request.URL.Path
		if tenantGuardAllowlist[p] || strings.HasPrefix(p, "/cp/") ||
			c.GetHeader("X-Molecule-Org-Id") == orgID ||
			orgIDFromReplaySrc(c.GetHeader("Fly-Replay-Src")) == orgID ||
			isSameOriginCanvas(c) {
			c.Next()
			return
		}
		c.AbortWithStatus(404)
	}
}

func orgIDFromReplaySrc(header string) string {
	for _, seg := range strings.Split(header, ";") {
		seg = strings.TrimSpace(seg)
		if strings.HasPrefix(seg, "state=") {
			return seg[len("state="):]
		}
	}
	return ""
}
