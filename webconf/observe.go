package webconf

import (
	"errors"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/webconf/operator"
)

// transferRoutes are the routes whose requests are HSM backups and restores, for the transfer
// metrics; their outcome is the response status (a backup that breaks off mid-stream panics
// with http.ErrAbortHandler and counts as failed).
var transferRoutes = map[string]string{
	"GET /hsm/backup":      "backup",
	"GET /api/v1/backup":   "backup",
	"POST /hsm/restore":    "restore",
	"POST /api/v1/restore": "restore",
}

// observe is the outermost middleware when a monitor is configured: it serves /healthz
// without a client certificate, and records every other request's latency under its route
// pattern (never the raw path) and every backup's and restore's outcome.
func (s *Server) observe(mux *http.ServeMux, next http.Handler) http.Handler {
	m := s.cfg.Monitor
	if m == nil {
		return next
	}
	health := m.Health()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			health.ServeHTTP(w, r)
			return
		}
		_, route := mux.Handler(r)
		if route == "/" {
			route = "" // the catch-all: "unmatched"
		}
		rec := &statusRecorder{ResponseWriter: w}
		start := time.Now()
		defer func() {
			d := time.Since(start)
			p := recover()
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			if p != nil {
				code = 0 // aborted
			}
			m.ObserveRequest(route, code, d)
			if op, ok := transferRoutes[route]; ok {
				var err error
				if code == 0 || code >= 400 {
					err = errors.New("failed")
				}
				m.ObserveTransfer(op, d, err)
			}
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// statusRecorder remembers the status a handler wrote. Unwrap lets http.ResponseController
// reach the connection's Flush (the live view's event stream).
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// errorLog is the http.Server's error log: TLS handshake failures counted by reason (with a
// monitor), every line to the service log at debug level.
func (s *Server) errorLog() *log.Logger {
	next := func(line string) { s.log.Debug(strings.TrimPrefix(line, "http: ")) }
	if s.cfg.Monitor == nil {
		return log.New(lineWriter(next), "", 0)
	}
	return log.New(s.cfg.Monitor.ErrorLogWriter(next), "", 0)
}

type lineWriter func(string)

func (f lineWriter) Write(p []byte) (int, error) {
	f(strings.TrimSpace(string(p)))
	return len(p), nil
}

// countRevoked tells the monitor about a request refused for a revoked certificate or an
// unusable CRL.
func (s *Server) countRevoked(err error) {
	if s.cfg.Monitor == nil {
		return
	}
	var re *operator.RevokedError
	var ce *operator.CRLError
	if errors.As(err, &re) || errors.As(err, &ce) {
		s.cfg.Monitor.RevokedRefused()
	}
}
