package main

// gin 1.8.1 (Debian) vs gin 1.10.0 (the real server): 1.10 (gin #3227)
// recommends a trailing-slash redirect in cases 1.8.1 answers 404, e.g.
// GET|PATCH|DELETE /workspaces/X/ and POST /workspaces/X/artifacts/. This
// file closes that gap: for a path ending in "/" that a probe engine (same
// route patterns, gin 1.8.1) does not route, it redirects as gin's
// redirectTrailingSlash does when the path without its last "/" is routable
// (or itself a redirect). A differential run of ~8600 requests against the
// stand-in built on gin 1.10.0 source showed no difference with this on.
// When the stand-in is built against gin >= 1.10 this is a no-op: the engine
// redirects first and the probe sees a redirect, not a 404.

import (
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"

	"github.com/gin-gonic/gin"
)

var (
	regSafePrefix         = regexp.MustCompile("[^a-zA-Z0-9/-]+")
	regRemoveRepeatedChar = regexp.MustCompile("/{2,}")
)

type tsrProbe struct{ engine *gin.Engine }

func newTSRProbe(defs []routeDef, cp bool) *tsrProbe {
	e := gin.New()
	ok := func(c *gin.Context) { c.Status(http.StatusOK) }
	for _, d := range defs {
		e.Handle(d.method, d.path, ok)
	}
	if cp {
		e.Any("/cp/*path", ok)
	}
	return &tsrProbe{engine: e}
}

func (p *tsrProbe) status(method, urlPath string) int {
	req := httptest.NewRequest(method, "/", nil)
	req.URL.Path = urlPath
	req.URL.RawPath = ""
	w := httptest.NewRecorder()
	p.engine.ServeHTTP(w, req)
	return w.Code
}

// redirect answers the request with gin 1.10's trailing-slash redirect and
// returns true when gin 1.10 would redirect where gin 1.8.1 answers 404.
func (p *tsrProbe) redirect(w http.ResponseWriter, req *http.Request) bool {
	rPath := req.URL.Path
	n := len(rPath)
	if p == nil || req.Method == http.MethodConnect || rPath == "/" || n < 2 || rPath[n-1] != '/' {
		return false
	}
	if p.status(req.Method, rPath) != http.StatusNotFound {
		return false
	}
	// Routable without the slash; or, for an empty last segment ("…//"),
	// routable with that segment filled (gin 1.10 recommends the redirect
	// from the tree shape after an empty :param, not from a handler).
	if p.status(req.Method, rPath[:n-1]) == http.StatusNotFound &&
		(rPath[n-2] != '/' || p.status(req.Method, rPath[:n-1]+"x") == http.StatusNotFound) {
		return false
	}
	// As gin's redirectTrailingSlash + redirectRequest (v1.10.0).
	target := rPath
	if prefix := path.Clean(req.Header.Get("X-Forwarded-Prefix")); prefix != "." {
		prefix = regSafePrefix.ReplaceAllString(prefix, "")
		prefix = regRemoveRepeatedChar.ReplaceAllString(prefix, "/")
		target = prefix + "/" + rPath
	}
	u := *req.URL
	u.Path = target + "/"
	if l := len(target); l > 1 && target[l-1] == '/' {
		u.Path = target[:l-1]
	}
	u.RawPath = ""
	code := http.StatusMovedPermanently
	if req.Method != http.MethodGet {
		code = http.StatusTemporaryRedirect
	}
	http.Redirect(w, req, u.String(), code)
	return true
}
