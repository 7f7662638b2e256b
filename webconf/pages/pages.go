package pages

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"net/http"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

//go:embed static
var staticFiles embed.FS

// Config is what the pages are built from.
type Config struct {
	Runner    web.CeremonyRunner
	Records   web.CeremonyRecords
	Audit     web.AuditReader
	HSM       web.BackupHSM
	Sim       simpanel.Simulator // nil with a real pad
	Surveyor  web.CardSurveyor   // nil: no card survey
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
	Log      *slog.Logger
}

// Pages are WebConf's pages.
type Pages struct {
	cfg Config
	rd  *Renderer
	log *slog.Logger
}

// New builds the pages; rd frames them (and the middleware's problems).
func New(cfg Config, rd *Renderer) *Pages {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pages{cfg: cfg, rd: rd, log: log}
}

// Register adds every page's route to mux; each has its entry in the server's route table.
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
	mux.HandleFunc("POST /hsm/restore/preview", hsmPage.preview)
	mux.HandleFunc("POST /hsm/objects", hsmPage.createObject)
	mux.HandleFunc("POST /hsm/objects/import", hsmPage.importObject)

	mux.HandleFunc("GET /audit", audit.page)
	mux.HandleFunc("GET /audit/export", audit.export)
	mux.HandleFunc("GET /audit/checkpoint", audit.checkpoint)
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
	survey := &surveyHandlers{surveyor: cfg.Surveyor, records: cfg.Records, rd: rd, log: log}
	mux.HandleFunc("POST /cards/survey", survey.survey)

	// Cluster onboarding in the browser (package cluster).
	cl := &clusterPageHandlers{records: cfg.Records, node: cfg.Cluster, auth: cfg.Auth, rd: rd, log: log}
	mux.HandleFunc("GET /cluster", cl.clusterPageView)
	mux.HandleFunc("POST /cluster/nodes", cl.clusterPageIssue)
	mux.HandleFunc("POST /cluster/join", cl.clusterPageJoin)
	mux.HandleFunc("POST /cluster/sync", cl.clusterPageSync)
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
