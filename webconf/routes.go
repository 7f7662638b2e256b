package webconf

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

//go:embed static
var staticFiles embed.FS

// routes wires the handler groups, each built with the interfaces it uses, behind the
// middleware: security headers on everything, then panics turned into pages, the client
// certificate (revocation, the operator's role), the CSRF checks and body limits on every
// POST, and the role rules of roles.go (with the fresh WebAuthn assertion of a dangerous
// action). Every route needs an entry in routeActions (roles.go).
func (s *Server) routes() http.Handler {
	rd := s.rd
	status := newStatusHandlers(s.cfg.Records, s.cfg.Appliance, s.cfg.PKI, rd, s.log)
	cer := newCeremonyHandlers(s.cfg.Runner, s.cfg.Records, s.ceremonyContext, rd, s.log)
	events := newEventHandlers(s.cfg.Runner, s.cfg.Sim, s.stopping, s.log)
	hsmPage := newHSMHandlers(s.cfg.HSM, s.cfg.Records, s.audit, s.cfg.MaxUpload, rd, s.log)
	audit := newAuditHandlers(s.cfg.Audit, s.cfg.Records, rd, s.log)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", status.status)
	mux.HandleFunc("GET /ca.pem", status.caCert)
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(static, rd)))

	mux.HandleFunc("GET /setup", cer.setup)
	mux.HandleFunc("GET /setup/confirm", cer.confirm)
	mux.HandleFunc("POST /ceremonies", cer.start)
	mux.HandleFunc("GET /ceremony", cer.live)
	mux.HandleFunc("POST /ceremony/retry", cer.retry)
	mux.HandleFunc("POST /ceremony/answer", cer.answer)
	mux.HandleFunc("POST /ceremony/cancel", cer.cancel)
	mux.HandleFunc("POST /ceremony/resume", cer.resume)
	mux.HandleFunc("GET /cards", cer.cards)
	mux.HandleFunc("GET /reset", cer.resetForm)
	mux.HandleFunc("POST /reset", cer.reset)
	mux.HandleFunc("GET /events", events.stream)

	mux.HandleFunc("GET /hsm", hsmPage.page)
	mux.HandleFunc("GET /hsm/backup", hsmPage.backup)
	mux.HandleFunc("POST /hsm/restore", hsmPage.restore)

	mux.HandleFunc("GET /audit", audit.page)
	mux.HandleFunc("GET /audit/export", audit.export)
	mux.HandleFunc("GET /ceremonies/{id}/protocol", audit.protocol)

	if s.cfg.Sim != nil {
		sim := simpanel.NewHandlers(s.cfg.Sim, rd, s.log)
		mux.HandleFunc("POST /sim/key", sim.Key)
		mux.HandleFunc("POST /sim/insert", sim.Insert)
		mux.HandleFunc("POST /sim/remove", sim.Remove)
		mux.HandleFunc("POST /sim/cards", sim.NewCard)
		mux.HandleFunc("GET /sim/rack", sim.Rack)
	}
	s.authRoutes(mux)
	s.apiRoutes(mux)
	s.cardSetRoutes(mux, cer)
	s.clusterRoutes(mux)
	// Everything else, including a known path with the wrong method, is a page, not plain text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { rd.Problem(w, r, web.NotFound()) })

	return securityHeaders(s.recoverPanics(s.requireClientCert(s.protect(s.authorizeRoutes(mux)))))
}

// staticHandler serves the embedded script and style sheets. They change only with the binary,
// so an hour of caching is safe; the Cache-Control of the security middleware is replaced.
func staticHandler(fsys fs.FS, rd *renderer) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fi, err := fs.Stat(fsys, r.URL.Path)
		if err != nil || fi.IsDir() { // no directory listings
			rd.Problem(w, r, web.NotFound())
			return
		}
		w.Header().Set("Cache-Control", "private, max-age=3600")
		files.ServeHTTP(w, r)
	})
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
