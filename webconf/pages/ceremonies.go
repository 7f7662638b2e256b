package pages

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// ceremonyHandlers serve the setup wizard, the live view, the smart card tools and the factory
// reset: every page that starts or steers a ceremony.
type ceremonyHandlers struct {
	runner  web.CeremonyRunner
	records web.CeremonyRecords
	// ceremonyCtx is the context ceremonies run under (the server's lifetime, not a request's).
	ceremonyCtx func() (context.Context, error)
	rd          *Renderer
	log         *slog.Logger
}

func newCeremonyHandlers(runner web.CeremonyRunner, records web.CeremonyRecords, ceremonyCtx func() (context.Context, error), rd *Renderer, log *slog.Logger) *ceremonyHandlers {
	return &ceremonyHandlers{runner: runner, records: records, ceremonyCtx: ceremonyCtx, rd: rd, log: log}
}

// setupView is the wizard's first page.
type setupView struct {
	KeyID   string            // the loaded key's ID; the wizard then explains instead of offering
	Pending *ceremony.Pending // an interrupted ceremony that must be dealt with first
	Running *liveView
	Choice  web.Quorum
}

func (h *ceremonyHandlers) setup(w http.ResponseWriter, r *http.Request) {
	ov, err := h.records.Overview(r.Context())
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v := setupView{KeyID: ov.BackupKeyID, Pending: ov.Pending, Choice: web.Quorum{Preset: "2-3", K: 2, N: 3}}
	if ov.Running != nil {
		lv := liveFromEvent(*ov.Running, time.Now())
		v.Running = &lv
	}
	h.rd.HTML(w, r, http.StatusOK, setupPage(h.rd.Page(r, "Key setup", "setup"), v))
}

func (h *ceremonyHandlers) confirm(w http.ResponseWriter, r *http.Request) {
	c, err := web.ParseQuorum(r.URL.Query().Get)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusBadRequest, Title: "Quorum not accepted", What: err.Error(),
			Todo: "Go back to the key setup and choose 2 of 3, 3 of 5, or a custom k of n with 2 ≤ k ≤ n ≤ 255.", Back: "/setup"})
		return
	}
	h.rd.HTML(w, r, http.StatusOK, confirmPage(h.rd.Page(r, "Confirm key generation", "setup"), c))
}

// start begins the ceremony a form asks for. The factory reset has its own form (typed
// confirmation) and is not startable here.
func (h *ceremonyHandlers) start(w http.ResponseWriter, r *http.Request) {
	req, back, err := requestFromForm(r)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusBadRequest, Title: "Ceremony not started", What: err.Error(),
			Todo: "Go back, correct the form and start again.", Back: back})
		return
	}
	h.startRequest(w, r, req, back)
}

func (h *ceremonyHandlers) startRequest(w http.ResponseWriter, r *http.Request, req ceremony.Request, back string) {
	ctx, err := h.ceremonyCtx()
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusServiceUnavailable, Code: web.CodeStopping, Title: "The service is stopping", What: err.Error(),
			Todo: "Wait for the service to start again, then reload."})
		return
	}
	op := operator.NameOf(r)
	hd, err := h.runner.Start(ctx, op, req)
	if err != nil {
		h.log.Info("ceremony refused", "kind", req.Kind, "operator", op, "err", err)
		h.rd.Problem(w, r, web.For(err, back))
		return
	}
	h.log.Info("ceremony started from webconf", "ceremony", hd.ID(), "kind", hd.Kind(), "operator", op)
	http.Redirect(w, r, "/ceremony", http.StatusSeeOther)
}

// requestFromForm builds a ceremony request from a start form.
func requestFromForm(r *http.Request) (ceremony.Request, string, error) {
	kind := ceremony.Kind(r.PostFormValue("kind"))
	switch kind {
	case ceremony.KindGenerate:
		c, err := web.ParseQuorum(r.PostFormValue)
		if err != nil {
			return ceremony.Request{}, "/setup", err
		}
		return ceremony.Request{Kind: kind, K: c.K, N: c.N, Label: c.Label}, "/setup", nil
	case ceremony.KindLoad:
		return ceremony.Request{Kind: kind}, "/hsm", nil
	case ceremony.KindCopyCard:
		return ceremony.Request{Kind: kind, Overwrite: r.PostFormValue("overwrite") == "yes"}, "/cards", nil
	case ceremony.KindChangePIN:
		switch r.PostFormValue("slot") {
		case "share":
			return ceremony.Request{Kind: kind, Slot: pinpad.SlotShare}, "/cards", nil
		case "user":
			return ceremony.Request{Kind: kind, Slot: pinpad.SlotUser}, "/cards", nil
		}
		return ceremony.Request{}, "/cards", fmt.Errorf("choose the PIN to change: the backup key share PIN or the slot user PIN")
	case ceremony.KindSlotUserCard, ceremony.KindActivateSlot:
		slot, err := strconv.ParseUint(strings.TrimSpace(r.PostFormValue("pkcs11_slot")), 10, 32)
		if err != nil {
			return ceremony.Request{}, "/cards", fmt.Errorf("the PKCS#11 slot must be a number (0 or more)")
		}
		return ceremony.Request{Kind: kind, PKCS11Slot: uint(slot)}, "/cards", nil
	case ceremony.KindPrepareCards:
		n, err := strconv.Atoi(strings.TrimSpace(r.PostFormValue("n")))
		if err != nil || n < 1 {
			return ceremony.Request{}, "/cards", fmt.Errorf("say how many cards to prepare (1 or more)")
		}
		return ceremony.Request{Kind: kind, N: n}, "/cards", nil
	case ceremony.KindFactoryReset:
		return ceremony.Request{}, "/reset", fmt.Errorf("a factory reset is started from the factory reset page, with its typed confirmation")
	}
	return ceremony.Request{}, "/", fmt.Errorf("unknown ceremony kind %q", kind)
}

// liveViewPage is the live view of the running ceremony, or of the last one.
type liveViewPage struct {
	Live    liveView
	Any     bool // a ceremony has ever run
	Pending *ceremony.Pending
}

func (h *ceremonyHandlers) live(w http.ResponseWriter, r *http.Request) {
	ov, err := h.records.Overview(r.Context())
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	now := time.Now()
	v := liveViewPage{Pending: ov.Pending}
	switch {
	case ov.Running != nil:
		v.Live, v.Any = liveFromEvent(*ov.Running, now), true
	case ov.Last != nil:
		v.Live, v.Any = liveFromJournal(*ov.Last, now), true
	}
	h.rd.HTML(w, r, http.StatusOK, livePage(h.rd.Page(r, "Live ceremony", "ceremony"), v))
}

func (h *ceremonyHandlers) retry(w http.ResponseWriter, r *http.Request) {
	if err := h.runner.Retry(operator.NameOf(r)); err != nil {
		h.rd.Problem(w, r, web.For(err, "/ceremony"))
		return
	}
	web.RedirectBack(w, r, "/ceremony")
}

// answer answers, on the screen, the question the PIN pad cannot ask itself, named by the form's
// question ID: an answer to a question no longer asked is refused. OK to a destructive question
// must be declared so (destructive=1), which makes the route ask for a fresh assertion
// (answerFormAction); an undeclared one is refused here, so it never passes without one.
func (h *ceremonyHandlers) answer(w http.ResponseWriter, r *http.Request) {
	var ok bool
	switch r.PostFormValue("answer") {
	case "ok":
		ok = true
	case "cancel":
	default:
		h.rd.Problem(w, r, web.For(ceremony.ErrBadRequest, "/ceremony"))
		return
	}
	id := r.PostFormValue("question")
	declared := r.PostFormValue("destructive") == "1"
	q, asked := h.runner.Question()
	if ok && asked && q.ID == id && q.Destructive && !declared {
		h.rd.Problem(w, r, web.For(fmt.Errorf("answer %q: %w", q.Text, ceremony.ErrStepUpRequired), "/ceremony"))
		return
	}
	a := ceremony.Answer{Question: id, OK: ok, SteppedUp: ok && declared}
	if err := h.runner.Answer(operator.NameOf(r), a); err != nil {
		h.rd.Problem(w, r, web.For(err, "/ceremony"))
		return
	}
	web.RedirectBack(w, r, "/ceremony")
}

func (h *ceremonyHandlers) cancel(w http.ResponseWriter, r *http.Request) {
	if err := h.runner.Cancel(operator.NameOf(r)); err != nil {
		h.rd.Problem(w, r, web.For(err, "/ceremony"))
		return
	}
	web.RedirectBack(w, r, "/ceremony")
}

func (h *ceremonyHandlers) resume(w http.ResponseWriter, r *http.Request) {
	ctx, err := h.ceremonyCtx()
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusServiceUnavailable, Code: web.CodeStopping, Title: "The service is stopping", What: err.Error(),
			Todo: "Wait for the service to start again, then reload."})
		return
	}
	if _, err := h.runner.Resume(ctx, operator.NameOf(r)); err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	http.Redirect(w, r, "/ceremony", http.StatusSeeOther)
}

func (h *ceremonyHandlers) cards(w http.ResponseWriter, r *http.Request) {
	h.rd.HTML(w, r, http.StatusOK, cardsPage(h.rd.Page(r, "Smart cards", "cards")))
}

// resetView is the factory reset page.
type resetView struct {
	KeyID  string
	KeySet *ceremony.KeySet
}

func (h *ceremonyHandlers) resetForm(w http.ResponseWriter, r *http.Request) {
	ov, err := h.records.Overview(r.Context())
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	h.rd.HTML(w, r, http.StatusOK, resetPage(h.rd.Page(r, "Factory reset", "reset"), resetView{KeyID: ov.BackupKeyID, KeySet: ov.KeySet}))
}

func (h *ceremonyHandlers) reset(w http.ResponseWriter, r *http.Request) {
	if strings.TrimSpace(r.PostFormValue("confirm")) != web.ResetPhrase {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusBadRequest, Title: "Factory reset not confirmed",
			What: fmt.Sprintf("The confirmation did not read %q, so nothing was erased.", web.ResetPhrase),
			Todo: fmt.Sprintf("If you mean to erase the HSM's keys and the master backup key, go back and type %s exactly.", web.ResetPhrase), Back: "/reset"})
		return
	}
	h.startRequest(w, r, ceremony.Request{Kind: ceremony.KindFactoryReset}, "/reset")
}
