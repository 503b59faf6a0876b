package main

// Request recording. An outer http.Handler wraps the gin engine so that every
// request is recorded, including the ones gin answers without running any
// handler (trailing-slash redirects). Inside gin, the first global
// middleware fills in what only gin knows (FullPath, Params, context keys)
// after c.Next().

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"
)

type param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// record is one request as the stand-in saw it (see README.md for the shape).
type record struct {
	mu sync.Mutex

	Seq        int                 `json:"seq"`
	Method     string              `json:"method"`
	RequestURI string              `json:"request_uri"`
	Path       string              `json:"path"`
	RawPath    string              `json:"raw_path"`
	Host       string              `json:"host"`
	FullPath   string              `json:"full_path"`
	Params     []param             `json:"params"`
	Query      map[string][]string `json:"query"`
	Status     int                 `json:"status"`
	Handled    bool                `json:"handled"`
	Credential *string             `json:"credential"`
	Context    map[string]string   `json:"context"`
	Headers    map[string][]string `json:"headers"`
	AllHeaders map[string][]string `json:"all_headers"`
	BodyB64    string              `json:"body_b64"`
}

func (r *record) setCredential(class string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Credential = &class
}

type recordKey struct{}

func recordOf(req *http.Request) *record {
	r, _ := req.Context().Value(recordKey{}).(*record)
	return r
}

type recorder struct {
	mu      sync.Mutex
	records []*record
	routes  []routeInfo
	tsr     *tsrProbe
}

func newRecorder() *recorder { return &recorder{} }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

var recordedHeaders = []string{"Approval-Id", "X-Forwarded-Proto", "X-Forwarded-For"}

// wrap returns the server's root handler: the test-only /__standin/ routes,
// then every other request recorded around the gin engine.
func (rc *recorder) wrap(engine http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.URL.Path == "/__standin/requests" && req.Method == http.MethodGet:
			rc.mu.Lock()
			out := make([]*record, len(rc.records))
			copy(out, rc.records)
			rc.mu.Unlock()
			for _, r := range out {
				r.mu.Lock()
			}
			body, err := json.Marshal(out)
			for _, r := range out {
				r.mu.Unlock()
			}
			writeJSON(w, body, err)
			return
		case req.URL.Path == "/__standin/reset" && req.Method == http.MethodPost:
			rc.mu.Lock()
			rc.records = nil
			rc.mu.Unlock()
			writeJSON(w, []byte(`{"ok":true}`), nil)
			return
		case req.URL.Path == "/__standin/routes" && req.Method == http.MethodGet:
			body, err := json.Marshal(rc.routes)
			writeJSON(w, body, err)
			return
		}

		var body []byte
		if req.Body != nil {
			body, _ = io.ReadAll(req.Body)
			_ = req.Body.Close()
		}
		req.Body = io.NopCloser(bytes.NewReader(body))

		headers := map[string][]string{}
		for _, h := range recordedHeaders {
			if v := req.Header.Values(h); len(v) > 0 {
				headers[h] = v
			}
		}
		all := map[string][]string{}
		for k, v := range req.Header {
			all[k] = append([]string(nil), v...)
		}
		r := &record{
			Method:     req.Method,
			RequestURI: req.RequestURI,
			Path:       req.URL.Path,
			RawPath:    req.URL.RawPath,
			Host:       req.Host,
			Params:     []param{},
			Query:      req.URL.Query(),
			Context:    map[string]string{},
			Headers:    headers,
			AllHeaders: all,
			BodyB64:    base64.StdEncoding.EncodeToString(body),
		}
		req = req.WithContext(context.WithValue(req.Context(), recordKey{}, r))
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			r.mu.Lock()
			r.Status = sw.status
			if r.Status == 0 {
				r.Status = http.StatusOK
			}
			r.mu.Unlock()
			rc.mu.Lock()
			r.Seq = len(rc.records)
			rc.records = append(rc.records, r)
			rc.mu.Unlock()
		}()
		if rc.tsr.redirect(sw, req) {
			return
		}
		engine.ServeHTTP(sw, req)
	})
}

func writeJSON(w http.ResponseWriter, body []byte, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// captureMiddleware is the first global gin middleware: after the chain ran it
// copies the route pattern, the params and the context keys into the record.
func captureMiddleware(c *gin.Context) {
	c.Next()
	r := recordOf(c.Request)
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.FullPath = c.FullPath()
	for _, p := range c.Params {
		r.Params = append(r.Params, param{Key: p.Key, Value: p.Value})
	}
	for _, k := range []string{"org_token_id", "org_token_prefix", "org_id"} {
		if v, ok := c.Get(k); ok {
			if s, ok := v.(string); ok {
				r.Context[k] = s
			}
		}
	}
}

// markHandled is the first link of every route's final handler: the request
// passed routing and auth.
func markHandled(c *gin.Context) {
	if r := recordOf(c.Request); r != nil {
		r.mu.Lock()
		r.Handled = true
		r.mu.Unlock()
	}
}
