package pages

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// The card set tools of the smart card page: "Re-issue card set" (choose a new k-of-n, review,
// start; the live view follows it) and "Check a card" (one custodian, one card, the verdict on
// the live view and in the list of recent checks).

// CardSetRecords is what the card set pages read besides the ceremony records:
// *ceremony.Manager implements it. Records without it (a test double) leave the pages without
// the set registry.
type CardSetRecords interface {
	CardSets() ([]ceremony.CardSet, error)
}

// cardSetHandlers serve the re-issue and card check pages; ceremonies start through the smart
// card tools' own handlers (the same refusals, the same redirect to the live view).
type cardSetHandlers struct {
	cer  *ceremonyHandlers
	sets CardSetRecords // nil when the records keep no set registry
	rd   *Renderer
	log  *slog.Logger
}

// cardSetsView is what both pages show of the key and its sets.
type cardSetsView struct {
	KeyID   string
	Current *ceremony.CardSet
	Sets    []ceremony.CardSet // newest first
	Running *liveView
	Pending *ceremony.Pending
}

func (h *cardSetHandlers) view(r *http.Request) (cardSetsView, error) {
	ov, err := h.cer.records.Overview(r.Context())
	if err != nil {
		return cardSetsView{}, err
	}
	v := cardSetsView{KeyID: ov.BackupKeyID, Pending: ov.Pending}
	if ov.Running != nil {
		lv := liveFromEvent(*ov.Running, time.Now())
		v.Running = &lv
	}
	if h.sets != nil {
		sets, err := h.sets.CardSets()
		if err != nil {
			return v, err
		}
		for i := len(sets) - 1; i >= 0; i-- {
			v.Sets = append(v.Sets, sets[i])
			if sets[i].Status == ceremony.SetCurrent {
				cs := sets[i]
				v.Current = &cs
			}
		}
	}
	return v, nil
}

// reissueView is the re-issue page: the current set and the choice of the new quorum.
type reissueView struct {
	cardSetsView
	Choice web.Quorum
}

func (h *cardSetHandlers) reissueForm(w http.ResponseWriter, r *http.Request) {
	v, err := h.view(r)
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/cards"))
		return
	}
	rv := reissueView{cardSetsView: v, Choice: web.Quorum{Preset: "3-5", K: 3, N: 5}}
	if v.Current != nil {
		rv.Choice.Label = v.Current.Label
		if v.Current.K == 3 && v.Current.N == 5 {
			rv.Choice = web.Quorum{Preset: "2-3", K: 2, N: 3, Label: v.Current.Label}
		}
	}
	h.rd.HTML(w, r, http.StatusOK, reissuePage(h.rd.Page(r, "Re-issue the card set", "cards"), rv))
}

func (h *cardSetHandlers) reissueConfirm(w http.ResponseWriter, r *http.Request) {
	c, err := web.ParseQuorum(r.URL.Query().Get)
	if err != nil {
		h.rd.Problem(w, r, problemQuorum(err))
		return
	}
	v, err := h.view(r)
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/cards/reissue"))
		return
	}
	h.rd.HTML(w, r, http.StatusOK, reissueConfirmPage(h.rd.Page(r, "Confirm the re-issue", "cards"), reissueView{cardSetsView: v, Choice: c}))
}

func (h *cardSetHandlers) reissueStart(w http.ResponseWriter, r *http.Request) {
	c, err := web.ParseQuorum(r.PostFormValue)
	if err != nil {
		h.rd.Problem(w, r, problemQuorum(err))
		return
	}
	h.cer.startRequest(w, r, ceremony.Request{Kind: ceremony.KindReissue, K: c.K, N: c.N, Label: c.Label}, "/cards/reissue")
}

func problemQuorum(err error) web.Problem {
	return web.Problem{Status: http.StatusBadRequest, Title: "Quorum not accepted", What: err.Error(),
		Todo: "Go back and choose 2 of 3, 3 of 5, or a custom k of n with 2 ≤ k ≤ n ≤ 255.", Back: "/cards/reissue"}
}

// checkView is the card check page: the current set and the recent checks.
type checkView struct {
	cardSetsView
	Recent []checkResult
}

// checkResult is one past card check.
type checkResult struct {
	Ceremony uint64
	When     string
	Operator string
	Check    ceremony.CardCheck
}

// recentChecks is how many past card checks the page lists.
const recentChecks = 10

func (h *cardSetHandlers) checkForm(w http.ResponseWriter, r *http.Request) {
	v, err := h.view(r)
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/cards"))
		return
	}
	cv := checkView{cardSetsView: v}
	js, _, err := h.cer.records.CeremoniesPage(ceremony.CeremonyQuery{Kind: ceremony.KindCardCheck, Limit: recentChecks})
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/cards"))
		return
	}
	for _, j := range js {
		if j.Check == nil {
			continue
		}
		cv.Recent = append(cv.Recent, checkResult{Ceremony: j.ID, When: j.Ended.UTC().Format("2006-01-02 15:04 UTC"), Operator: j.Operator, Check: *j.Check})
	}
	h.rd.HTML(w, r, http.StatusOK, checkPage(h.rd.Page(r, "Check a card", "cards"), cv))
}

func (h *cardSetHandlers) checkStart(w http.ResponseWriter, r *http.Request) {
	h.cer.startRequest(w, r, ceremony.Request{Kind: ceremony.KindCardCheck}, "/cards/check")
}

// verdictClass colours a verdict: good, bad, or neither.
func verdictClass(v ceremony.Verdict) string {
	switch v {
	case ceremony.VerdictIntact:
		return "ok"
	case ceremony.VerdictAltered, ceremony.VerdictRetired, ceremony.VerdictForeign:
		return "bad"
	}
	return "st-stalled"
}

// verdictText names a verdict for people.
func verdictText(v ceremony.Verdict) string {
	switch v {
	case ceremony.VerdictIntact:
		return "intact"
	case ceremony.VerdictAltered:
		return "altered"
	case ceremony.VerdictRetired:
		return "retired set"
	case ceremony.VerdictForeign:
		return "foreign set"
	case ceremony.VerdictNotShare:
		return "not a share card"
	case ceremony.VerdictUnverified:
		return "cannot be vouched for"
	}
	return string(v)
}

// setStatusClass colours a set's status.
func setStatusClass(s ceremony.SetStatus) string {
	switch s {
	case ceremony.SetCurrent:
		return "ok"
	case ceremony.SetRetired, ceremony.SetAbandoned:
		return "bad"
	}
	return ""
}

func setTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// shortSet is a set ID as the ceremonies name it: 8 hex digits and an ellipsis.
func shortSet(id string) string {
	if len(id) > 8 {
		return id[:8] + "…"
	}
	return id
}
