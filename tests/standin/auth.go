package main

// Auth middleware: WorkspaceAuth, AdminAuth and CanvasOrBearer, in the order
// and with the responses of workspace-server/internal/middleware/
// wsauth_middleware.go, session_auth.go and devmode.go. Each passing branch
// also notes the credential class on the request record (test-only; the real
// server sets no such key).

import (
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

const (
	credAdminToken     = "admin-token"
	credOrgToken       = "org-token"
	credWorkspaceToken = "workspace-token"
	credSession        = "session"
	credSameOrigin     = "same-origin"
	credCanvasOrigin   = "canvas-origin"
	credDev            = "dev"
	credFailOpen       = "fail-open"
	credTier3          = "tier3"
)

var errInvalidToken = errors.New("invalid token")

// canvasProxyActive mirrors the real package-level var: read once at start.
var canvasProxyActive = os.Getenv("CANVAS_PROXY_URL") != ""

func setCredential(c *gin.Context, class string) {
	if r := recordOf(c.Request); r != nil {
		r.setCredential(class)
	}
}

func abortAuthLookupError(c *gin.Context, where string, err error) {
	log.Printf("wsauth: %s: datastore lookup failed (returning 503): %v", where, err)
	c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{
		"error": "platform datastore unavailable — retry shortly",
		"code":  "platform_unavailable",
	})
}

// bearerTokenFromHeader: prefix exactly "Bearer " (case-sensitive), then
// strings.TrimSpace (Unicode white space).
func bearerTokenFromHeader(h string) string {
	const prefix = "Bearer "
	if !strings.HasPrefix(h, prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}

func tokenHash(plaintext string) []byte {
	h := sha256.Sum256([]byte(plaintext))
	return h[:]
}

// validateOrgToken mirrors orgtoken.Validate: every query failure collapses
// into errInvalidToken (so the 503 branch of the callers is unreachable in
// this version of the server, as in the real one).
func validateOrgToken(c *gin.Context, db *sql.DB, plaintext string) (id, prefix, orgID string, err error) {
	if plaintext == "" {
		return "", "", "", errInvalidToken
	}
	var orgIDNull sql.NullString
	qerr := db.QueryRowContext(c.Request.Context(), `
		SELECT id, prefix, org_id FROM org_api_tokens
		WHERE token_hash = $1 AND revoked_at IS NULL
	`, tokenHash(plaintext)).Scan(&id, &prefix, &orgIDNull)
	if qerr != nil {
		return "", "", "", errInvalidToken
	}
	if orgIDNull.Valid {
		orgID = orgIDNull.String
	}
	_, _ = db.ExecContext(c.Request.Context(),
		`UPDATE org_api_tokens SET last_used_at = now() WHERE id = $1`, id)
	return id, prefix, orgID, nil
}

// validateWorkspaceToken mirrors wsauth.ValidateToken (bound to expectedID;
// the workspace must not be 'removed').
func validateWorkspaceToken(c *gin.Context, db *sql.DB, expectedID, plaintext string) error {
	if plaintext == "" || expectedID == "" {
		return errInvalidToken
	}
	var tokenID, workspaceID string
	err := db.QueryRowContext(c.Request.Context(), `
		SELECT t.id, t.workspace_id
		FROM workspace_auth_tokens t
		JOIN workspaces w ON w.id = t.workspace_id
		WHERE t.token_hash = $1
		  AND t.revoked_at IS NULL
		  AND w.status != 'removed'
	`, tokenHash(plaintext)).Scan(&tokenID, &workspaceID)
	if err != nil || workspaceID != expectedID {
		return errInvalidToken
	}
	_, _ = db.ExecContext(c.Request.Context(),
		`UPDATE workspace_auth_tokens SET last_used_at = now() WHERE id = $1`, tokenID)
	return nil
}

// validateAnyWorkspaceToken mirrors wsauth.ValidateAnyToken.
func validateAnyWorkspaceToken(c *gin.Context, db *sql.DB, plaintext string) error {
	if plaintext == "" {
		return errInvalidToken
	}
	var tokenID string
	err := db.QueryRowContext(c.Request.Context(), `
		SELECT t.id
		FROM workspace_auth_tokens t
		JOIN workspaces w ON w.id = t.workspace_id
		WHERE t.token_hash = $1
		  AND t.revoked_at IS NULL
		  AND w.status != 'removed'
	`, tokenHash(plaintext)).Scan(&tokenID)
	if err != nil {
		return errInvalidToken
	}
	_, _ = db.ExecContext(c.Request.Context(),
		`UPDATE workspace_auth_tokens SET last_used_at = now() WHERE id = $1`, tokenID)
	return nil
}

func hasAnyLiveTokenGlobal(c *gin.Context, db *sql.DB) (bool, error) {
	var n int
	err := db.QueryRowContext(c.Request.Context(),
		`SELECT COUNT(*) FROM workspace_auth_tokens WHERE revoked_at IS NULL`).Scan(&n)
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

func isDevModeFailOpen() bool {
	if os.Getenv("ADMIN_TOKEN") != "" {
		return false
	}
	env := strings.ToLower(strings.TrimSpace(os.Getenv("MOLECULE_ENV")))
	return env == "dev" || env == "development"
}

func adminTokenMatches(tok string) bool {
	admin := os.Getenv("ADMIN_TOKEN")
	return admin != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(admin)) == 1
}

func setOrgKeys(c *gin.Context, id, prefix, orgID string) {
	c.Set("org_token_id", id)
	c.Set("org_token_prefix", prefix)
	if orgID != "" {
		c.Set("org_id", orgID)
	}
}

func workspaceAuth(db *sql.DB) gin.HandlerFunc {
	return func(c *gin.Context) {
		workspaceID := c.Param("id")
		if workspaceID == "" {
			c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "missing workspace ID"})
			return
		}
		if tok := bearerTokenFromHeader(c.GetHeader("Authorization")); tok != "" {
			if adminTokenMatches(tok) {
				setCredential(c, credAdminToken)
				c.Next()
				return
			}
			if id, prefix, orgID, err := validateOrgToken(c, db, tok); err == nil {
				setOrgKeys(c, id, prefix, orgID)
				setCredential(c, credOrgToken)
				c.Next()
				return
			} else if !errors.Is(err, errInvalidToken) {
				abortAuthLookupError(c, "WorkspaceAuth: orgtoken.Validate", err)
				return
			}
			if err := validateWorkspaceToken(c, db, workspaceID, tok); err != nil {
				c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid workspace auth token"})
				return
			}
			setCredential(c, credWorkspaceToken)
			c.Next()
			return
		}
		if isSameOriginCanvas(c) {
			setCredential(c, credSameOrigin)
			c.Next()
			return
		}
		if isDevModeFailOpen() {
			setCredential(c, credDev)
			c.Next()
			return
		}
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "missing workspace auth token"})
	}
}

func adminAuth(db *sql.DB) gin.HandlerFunc {
	return func(c *gin.Context) {
		adminSecret := os.Getenv("ADMIN_TOKEN")
		hasLive, err := hasAnyLiveTokenGlobal(c, db)
		if err != nil {
			abortAuthLookupError(c, "AdminAuth: HasAnyLiveTokenGlobal", err)
			return
		}
		if !hasLive && adminSecret == "" {
			setCredential(c, credFailOpen)
			c.Next()
			return
		}
		if isDevModeFailOpen() {
			setCredential(c, credDev)
			c.Next()
			return
		}
		if cookie := c.GetHeader("Cookie"); cookie != "" {
			if ok, _ := verifiedCPSession(cookie); ok {
				setCredential(c, credSession)
				c.Next()
				return
			}
		}
		tok := bearerTokenFromHeader(c.GetHeader("Authorization"))
		if tok == "" {
			c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "admin auth required"})
			return
		}
		if id, prefix, orgID, err := validateOrgToken(c, db, tok); err == nil {
			setOrgKeys(c, id, prefix, orgID)
			setCredential(c, credOrgToken)
			c.Next()
			return
		} else if !errors.Is(err, errInvalidToken) {
			abortAuthLookupError(c, "AdminAuth: orgtoken.Validate", err)
			return
		}
		if adminSecret != "" {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(adminSecret)) != 1 {
				c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid admin auth token"})
				return
			}
			setCredential(c, credAdminToken)
			c.Next()
			return
		}
		if err := validateAnyWorkspaceToken(c, db, tok); err != nil {
			c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid admin auth token"})
			return
		}
		setCredential(c, credTier3)
		c.Next()
	}
}

func canvasOrBearer(db *sql.DB) gin.HandlerFunc {
	return func(c *gin.Context) {
		hasLive, err := hasAnyLiveTokenGlobal(c, db)
		if err != nil || !hasLive {
			// The real middleware allows the request on a lookup error too.
			setCredential(c, credFailOpen)
			c.Next()
			return
		}
		if tok := bearerTokenFromHeader(c.GetHeader("Authorization")); tok != "" {
			if adminTokenMatches(tok) {
				setCredential(c, credAdminToken)
				c.Next()
				return
			}
			if err := validateAnyWorkspaceToken(c, db, tok); err != nil {
				c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid admin auth token"})
				return
			}
			setCredential(c, credWorkspaceToken)
			c.Next()
			return
		}
		if canvasOriginAllowed(c.GetHeader("Origin")) {
			setCredential(c, credCanvasOrigin)
			c.Next()
			return
		}
		if isSameOriginCanvas(c) {
			setCredential(c, credSameOrigin)
			c.Next()
			return
		}
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "admin auth required"})
	}
}

func canvasOriginAllowed(origin string) bool {
	if origin == "" {
		return false
	}
	allowed := []string{"http://localhost:3000", "http://localhost:3001"}
	if v := os.Getenv("CORS_ORIGINS"); v != "" {
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				allowed = append(allowed, o)
			}
		}
	}
	for _, a := range allowed {
		if a == origin {
			return true
		}
	}
	return false
}

func isSameOriginCanvas(c *gin.Context) bool {
	if !canvasProxyActive {
		return false
	}
	host := c.Request.Host
	if host == "" {
		return false
	}
	if referer := c.GetHeader("Referer"); referer != "" {
		if strings.HasPrefix(referer, "https://"+host+"/") ||
			strings.HasPrefix(referer, "http://"+host+"/") ||
			referer == "https://"+host ||
			referer == "http://"+host {
			return true
		}
	}
	origin := c.GetHeader("Origin")
	return origin == "https://"+host || origin == "http://"+host
}

// CP session verification, as session_auth.go: GET
// $CP_UPSTREAM_URL/cp/auth/tenant-member?slug=<MOLECULE_ORG_SLUG> with the
// caller's whole Cookie header; valid on 200 + {"member":true,"user_id":<non-empty>}.
// Results are cached 30 s (valid) / 5 s (invalid) keyed by sha256(slug 0x00 cookie),
// like the real server; STANDIN_SESSION_CACHE=off disables the cache.

type sessionEntry struct {
	expires time.Time
	ok      bool
}

var sessionCache = struct {
	sync.Mutex
	m map[string]sessionEntry
}{m: map[string]sessionEntry{}}

func sessionCacheEnabled() bool { return os.Getenv("STANDIN_SESSION_CACHE") != "off" }

func verifiedCPSession(cookie string) (valid, presented bool) {
	if cookie == "" {
		return false, false
	}
	slug := strings.TrimSpace(os.Getenv("MOLECULE_ORG_SLUG"))
	if slug == "" {
		return false, false
	}
	base := strings.TrimRight(os.Getenv("CP_UPSTREAM_URL"), "/")
	if base == "" {
		return false, true
	}
	verifyURL := base + "/cp/auth/tenant-member?slug=" + url.QueryEscape(slug)

	h := sha256.New()
	h.Write([]byte(slug))
	h.Write([]byte{0})
	h.Write([]byte(cookie))
	key := hex.EncodeToString(h.Sum(nil))
	if sessionCacheEnabled() {
		sessionCache.Lock()
		e, hit := sessionCache.m[key]
		sessionCache.Unlock()
		if hit && time.Now().Before(e.expires) {
			return e.ok, true
		}
	}
	put := func(ok bool) {
		if !sessionCacheEnabled() {
			return
		}
		ttl := 5 * time.Second
		if ok {
			ttl = 30 * time.Second
		}
		sessionCache.Lock()
		sessionCache.m[key] = sessionEntry{expires: time.Now().Add(ttl), ok: ok}
		sessionCache.Unlock()
	}

	req, err := http.NewRequest("GET", verifyURL, nil)
	if err != nil {
		return false, true
	}
	req.Header.Set("Cookie", cookie)
	req.Header.Set("User-Agent", "molecule-tenant-platform/session-verifier")
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		log.Printf("VerifiedCPSession: upstream: %v", err)
		return false, true // transport errors are not cached
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		put(false)
		return false, true
	}
	var body struct {
		Member bool   `json:"member"`
		UserID string `json:"user_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || !body.Member || body.UserID == "" {
		put(false)
		return false, true
	}
	put(true)
	return true, true
}
