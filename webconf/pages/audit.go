package pages

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// auditHandlers serve the audit log, its export and the printable ceremony protocol.
type auditHandlers struct {
	audit   web.AuditReader
	records web.CeremonyRecords
	rd      *Renderer
	log     *slog.Logger
}

func newAuditHandlers(a web.AuditReader, records web.CeremonyRecords, rd *Renderer, log *slog.Logger) *auditHandlers {
	return &auditHandlers{audit: a, records: records, rd: rd, log: log}
}

// auditPageSize is how many entries the page shows (the newest); the export has all.
const auditPageSize = 200

// auditView is the audit log page.
type auditView struct {
	Summary    ceremony.AuditSummary
	VerifyErr  string                // the break in the chain, "" when intact
	Entries    []ceremony.AuditEntry // newest first
	Total      int
	Ceremonies []ceremony.Journal
}

func (h *auditHandlers) page(w http.ResponseWriter, r *http.Request) {
	var v auditView
	sum, err := h.audit.VerifyAudit()
	v.Summary = sum
	if err != nil {
		v.VerifyErr = err.Error()
		h.log.Warn("audit log verification failed", "err", err)
	}
	entries, err := h.audit.AuditLog(0)
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v.Total = len(entries)
	for i := len(entries) - 1; i >= 0 && len(v.Entries) < auditPageSize; i-- {
		v.Entries = append(v.Entries, entries[i])
	}
	if v.Ceremonies, err = h.records.Ceremonies(0); err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	h.rd.HTML(w, r, http.StatusOK, auditPage(h.rd.Page(r, "Audit log", "audit"), v))
}

// export downloads the whole log as JSON lines; `keyquorum audit verify` checks such a file.
func (h *auditHandlers) export(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="keyquorum-audit-`+time.Now().UTC().Format("20060102-150405")+`.jsonl"`)
	if err := h.audit.ExportAudit(w); err != nil {
		h.log.Error("audit export failed", "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (h *auditHandlers) protocol(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		h.rd.Problem(w, r, web.NotFound())
		return
	}
	p, err := h.records.Protocol(id)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusNotFound, Title: "No such ceremony",
			What: err.Error(), Todo: "Choose a ceremony from the list on the status page or the audit log."})
		return
	}
	h.rd.HTML(w, r, http.StatusOK, protocolPage(h.rd.Page(r, "Protocol of ceremony "+strconv.FormatUint(id, 10), "audit"), p))
}
