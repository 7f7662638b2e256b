package pages

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

//go:embed static
var staticFiles embed.FS

// pagesConfig is what the pages are built from.
type Config struct {
	Runner    web.CeremonyRunner
	Records   web.CeremonyRecords
	Audit     web.AuditReader
	HSM       web.BackupHSM
	Sim       simpanel.Simulator // nil with a real pad
	Appliance web.Appliance
	MaxUpload int64
	// Auth is the operator security: the account, operators and security key pages.
	Auth *operator.Auth
	// Recorder writes the audit entries of backups and restores; a failure is logged.
	Recorder operator.AuditRecorder
	Cluster  *cluster.Node
	// CeremonyContext is the context ceremonies run under (the server's, not a request's).
	CeremonyContext func() (context.Context, error)
	// Stopping is closed when the server shuts down: the live view's streams end.
	Stopping <-chan struct{}
	// ActionFor is the action a form sent to path would be checked for (the route table's).
	ActionFor func(path string, form url.Values) (operator.Action, bool)
	Log       *slog.Logger
}

// pagesSet are WebConf's pages.
type Pages struct {
	cfg Config
	rd  *Renderer
	log *slog.Logger
}

// newPages builds the pages; rd frames them (and the middleware's problems).
func New(cfg Config, rd *Renderer) *Pages {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pages{cfg: cfg, rd: rd, log: log}
}

// register adds every page's route to mux; each has its entry in the server's route table.
func (p *Pages) Register(mux *http.ServeMux) {
	cfg, rd, log := p.cfg, p.rd, p.log
	status := newStatusHandlers(cfg.Records, cfg.Appliance, cfg.Auth.PKI(), rd, log)
	cer := newCeremonyHandlers(cfg.Runner, cfg.Records, cfg.CeremonyContext, rd, log)
	events := NewEventStream(cfg.Runner, cfg.Sim, cfg.Stopping, log)
	hsmPage := newHSMHandlers(cfg.HSM, cfg.Records, cfg.Recorder, cfg.MaxUpload, rd, log)
	audit := newAuditHandlers(cfg.Audit, cfg.Records, rd, log)

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
	mux.HandleFunc("GET /events", events.Stream)

	mux.HandleFunc("GET /hsm", hsmPage.page)
	mux.HandleFunc("GET /hsm/backup", hsmPage.backup)
	mux.HandleFunc("POST /hsm/restore", hsmPage.restore)

	mux.HandleFunc("GET /audit", audit.page)
	mux.HandleFunc("GET /audit/export", audit.export)
	mux.HandleFunc("GET /ceremonies/{id}/protocol", audit.protocol)

	// The smart card tools' re-issue and card check pages; ceremonies start through the
	// ceremony handlers (the same refusals, the same redirect to the live view).
	sets := &cardSetHandlers{cer: cer, rd: rd, log: log}
	sets.sets, _ = cfg.Records.(CardSetRecords)
	mux.HandleFunc("GET /cards/reissue", sets.reissueForm)
	mux.HandleFunc("GET /cards/reissue/confirm", sets.reissueConfirm)
	mux.HandleFunc("POST /cards/reissue", sets.reissueStart)
	mux.HandleFunc("GET /cards/check", sets.checkForm)
	mux.HandleFunc("POST /cards/check", sets.checkStart)

	// The account, security keys and operator management.
	wa := &webauthnHandlers{auth: cfg.Auth, actionFor: cfg.ActionFor, rd: rd, log: log}
	op := &operatorHandlers{auth: cfg.Auth, rd: rd, log: log}
	mux.HandleFunc("GET /crl.pem", op.crl)
	mux.HandleFunc("GET /account", op.account)
	mux.HandleFunc("POST /account/keys/remove", op.removeOwnKey)
	mux.HandleFunc("POST /webauthn/register/begin", wa.registerBegin)
	mux.HandleFunc("POST /webauthn/register/finish", wa.registerFinish)
	mux.HandleFunc("POST /webauthn/assert/begin", wa.assertBegin)
	mux.HandleFunc("POST /webauthn/assert/finish", wa.assertFinish)
	mux.HandleFunc("GET /operators", op.list)
	mux.HandleFunc("POST /operators/role", op.setRole)
	mux.HandleFunc("POST /operators/issue", op.issue)
	mux.HandleFunc("GET /operators/issued/{id}", op.download)
	mux.HandleFunc("POST /operators/revoke", op.revoke)
	mux.HandleFunc("POST /operators/keys/remove", op.removeKeys)

	// Cluster onboarding in the browser (package cluster).
	cl := &clusterPageHandlers{records: cfg.Records, node: cfg.Cluster, auth: cfg.Auth, rd: rd, log: log}
	mux.HandleFunc("GET /cluster", cl.clusterPageView)
	mux.HandleFunc("POST /cluster/nodes", cl.clusterPageIssue)
	mux.HandleFunc("POST /cluster/join", cl.clusterPageJoin)
}

// staticHandler serves the embedded script and style sheets. They change only with the binary,
// so an hour of caching is safe; the Cache-Control of the security middleware is replaced.
func staticHandler(fsys fs.FS, rd *Renderer) http.Handler {
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
