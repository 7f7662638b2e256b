package webconf

import (
	"net/http"
	"net/url"

	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/pages/account"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// routes wires the rooms behind the middleware: security headers on everything, then panics
// turned into pages, the client certificate (revocation, the operator's role; node
// certificates only to the cluster state), the per-operator limit of live streams, the
// progress deadlines of an operator's request, the CSRF checks and body limits on every POST,
// and the role rules of routeactions.go (with the fresh
// WebAuthn assertion of a dangerous action). Every route needs an entry in routeActions; a
// route without one is refused to everybody.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// detailsFor is the action and details a form sent to path (POST) is checked for: what the
	// page script asks before it sends a form that needs a security key (see
	// account.Config.DetailsFor).
	detailsFor := func(path string, form url.Values) (operator.Details, bool) {
		if path == "" { // a command-line request stated as fields, its action in _action
			return operator.NewDetails(operator.Action(form.Get("_action")), detailFields(form)), true
		}
		req := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: "webconf"}
		_, pattern := mux.Handler(req)
		a, ok := actionOf(pattern, form)
		return operator.NewDetails(a, detailFields(form)), ok
	}
	pages.New(pages.Config{Runner: s.cfg.Runner, Records: s.cfg.Records, Audit: s.cfg.Audit, HSM: s.cfg.HSM, Sim: s.cfg.Sim, Surveyor: s.cfg.Surveyor,
		Appliance: s.cfg.Appliance, MaxUpload: s.cfg.MaxUpload, Auth: s.auth, Recorder: s.audit, Cluster: s.cluster,
		CeremonyContext: s.ceremonyContext, Stopping: s.stopping, Log: s.log}, s.rd).Register(mux)
	account.New(account.Config{Auth: s.auth, DetailsFor: detailsFor, Log: s.log}, s.rd).Register(mux)
	if s.cfg.Sim != nil {
		simpanel.NewHandlers(s.cfg.Sim, s.rd, s.log).Register(mux)
	}
	api.New(api.Config{Runner: s.cfg.Runner, Records: s.cfg.Records, Audit: s.cfg.Audit, HSM: s.cfg.HSM, Sim: s.cfg.Sim, Surveyor: s.cfg.Surveyor,
		Appliance: s.cfg.Appliance, MaxUpload: s.cfg.MaxUpload, Auth: s.auth, Recorder: s.audit, Cluster: s.cluster,
		Authorize: s.authorize, CeremonyContext: s.ceremonyContext, Stopping: s.stopping, Log: s.log}).Register(mux)
	// Everything else, including a known path with the wrong method, is a page, not plain text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.rd.Problem(w, r, web.NotFound()) })

	return s.observe(mux, securityHeaders(s.recoverPanics(s.requireClientCert(s.limitStreams(mux, deadlines(s.protect(s.authorizeRoutes(mux))))))))
}
