package webconf

import (
	"net/http"
	"net/url"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// routes wires the rooms behind the middleware: security headers on everything, then panics
// turned into pages, the client certificate (revocation, the operator's role), the CSRF
// checks and body limits on every POST, and the role rules of routeactions.go (with the fresh
// WebAuthn assertion of a dangerous action). Every route needs an entry in routeActions; a
// route without one is refused to everybody.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// actionFor is the action a form sent to path (POST) is checked for: what the page script
	// asks before it sends a form that needs a security key.
	actionFor := func(path string, form url.Values) (operator.Action, bool) {
		req := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: "webconf"}
		_, pattern := mux.Handler(req)
		return actionOf(pattern, form)
	}
	pg := pages.New(pages.Config{Runner: s.cfg.Runner, Records: s.cfg.Records, Audit: s.cfg.Audit, HSM: s.cfg.HSM, Sim: s.cfg.Sim,
		Appliance: s.cfg.Appliance, MaxUpload: s.cfg.MaxUpload, Auth: s.auth, Recorder: s.audit, Cluster: s.cluster,
		CeremonyContext: s.ceremonyContext, Stopping: s.stopping, ActionFor: actionFor, Log: s.log}, s.rd)
	pg.Register(mux)
	if s.cfg.Sim != nil {
		sim := simpanel.NewHandlers(s.cfg.Sim, s.rd, s.log)
		mux.HandleFunc("POST /sim/key", sim.Key)
		mux.HandleFunc("POST /sim/insert", sim.Insert)
		mux.HandleFunc("POST /sim/remove", sim.Remove)
		mux.HandleFunc("POST /sim/cards", sim.NewCard)
		mux.HandleFunc("GET /sim/rack", sim.Rack)
	}
	s.apiRoutes(mux)
	// Everything else, including a known path with the wrong method, is a page, not plain text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.rd.Problem(w, r, web.NotFound()) })

	return securityHeaders(s.recoverPanics(s.requireClientCert(s.protect(s.authorizeRoutes(mux)))))
}

// apiRoutes adds the API's routes; their actions are in routeActions (routeactions.go).
func (s *Server) apiRoutes(mux *http.ServeMux) {
	a := api.New(api.Config{Runner: s.cfg.Runner, Records: s.cfg.Records, Audit: s.cfg.Audit, HSM: s.cfg.HSM, Sim: s.cfg.Sim,
		Appliance: s.cfg.Appliance, MaxUpload: s.cfg.MaxUpload, Auth: s.auth, Recorder: s.audit, Cluster: s.cluster,
		Authorize: s.authorize, CeremonyContext: s.ceremonyContext, Stopping: s.stopping, Log: s.log})
	mux.HandleFunc("GET /api/v1/status", a.Status)
	mux.HandleFunc("GET /api/v1/ceremony", a.CeremonyState)
	mux.HandleFunc("POST /api/v1/ceremony/start", a.Start)
	mux.HandleFunc("POST /api/v1/ceremony/cancel", a.Cancel)
	mux.HandleFunc("POST /api/v1/ceremony/retry", a.Retry)
	mux.HandleFunc("POST /api/v1/ceremony/answer", a.Answer)
	mux.HandleFunc("POST /api/v1/ceremony/resume", a.Resume)
	mux.HandleFunc("GET /api/v1/ceremony/events", a.Events)
	mux.HandleFunc("GET /api/v1/backup", a.Backup)
	mux.HandleFunc("POST /api/v1/restore", a.Restore)
	mux.HandleFunc("GET /api/v1/audit/verify", a.AuditVerify)
	mux.HandleFunc("GET /api/v1/audit/export", a.AuditExport)
	mux.HandleFunc("GET /api/v1/card", a.Card)
	mux.HandleFunc("POST /api/v1/cluster/nodes", a.IssueNode)
	mux.HandleFunc("GET "+cluster.StatePath, a.ClusterState)
	mux.HandleFunc("POST /api/v1/cluster/join", a.ClusterJoin)
	mux.HandleFunc("GET /api/v1/operators", a.Operators)
	mux.HandleFunc("POST /api/v1/operators/role", a.SetRole)
}
