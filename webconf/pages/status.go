package pages

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// statusHandlers serve the status page and the CA certificate.
type statusHandlers struct {
	records   web.CeremonyRecords
	appliance web.Appliance
	pki       *operator.PKI
	rd        *Renderer
	log       *slog.Logger
}

func newStatusHandlers(records web.CeremonyRecords, appliance web.Appliance, pki *operator.PKI, rd *Renderer, log *slog.Logger) *statusHandlers {
	return &statusHandlers{records: records, appliance: appliance, pki: pki, rd: rd, log: log}
}

// statusView is the status page: the HSM's key, the card set, what runs, what is pending.
type statusView struct {
	Appliance     web.Appliance
	PadName       string // the pad now
	PadProblem    string // why it cannot be used now ("no PIN pad connected"), "" when it can
	Overview      ceremony.Overview
	Running       *liveView
	Recent        []ceremony.Journal
	CAFingerprint string
}

func (h *statusHandlers) status(w http.ResponseWriter, r *http.Request) {
	ov, err := h.records.Overview(r.Context())
	if err != nil {
		h.log.Error("read overview", "err", err)
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v := statusView{Appliance: h.appliance, Overview: ov, CAFingerprint: h.pki.Fingerprint()}
	v.PadName, v.PadProblem = h.appliance.PadNow(r.Context())
	if ov.Running != nil {
		lv := liveFromEvent(*ov.Running, time.Now())
		v.Running = &lv
	}
	if v.Recent, err = h.records.Ceremonies(10); err != nil {
		h.log.Error("list ceremonies", "err", err)
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	h.rd.HTML(w, r, http.StatusOK, statusPage(h.rd.Page(r, "Status", "status"), v))
}

// caCert serves the management CA certificate, to every client: an operator needs it before
// trusting the server, and it is public.
func (h *statusHandlers) caCert(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="keyquorum-management-ca.pem"`)
	w.Write(h.pki.CAPEM)
}
