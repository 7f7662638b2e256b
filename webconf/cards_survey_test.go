package webconf

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// TestCardSurveyPage surveys a blank card from the Smart cards page, prepares it with the
// Prepare cards ceremony (its PINs chosen on the pad), and surveys it again: now it fits.
// The API answers the same survey as JSON; an auditor may not survey.
func TestCardSurveyPage(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Frank")
	body := b.get("/cards", http.StatusOK)
	for _, want := range []string{`data-testid="start-survey"`, `data-testid="start-prepare"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the Smart cards page lacks %s", want)
		}
	}
	_, body = b.post("/cards/survey", nil, http.StatusConflict)
	if !strings.Contains(body, "No card in the reader") {
		t.Errorf("survey of an empty reader: %s", excerpt(body))
	}
	serial, err := s.pad.NewShapedCard(vcard.Options{Creatable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.pad.Insert(serial); err != nil {
		t.Fatal(err)
	}
	_, body = b.post("/cards/survey", nil, http.StatusOK)
	for _, want := range []string{"No card profile fits", "Prepare cards can lay out a profile", serial, "no PIN was asked for"} {
		if !strings.Contains(body, want) {
			t.Errorf("survey page lacks %q: %s", want, excerpt(body))
		}
	}
	code, js := s.api(t, b.cert).json(http.MethodPost, "/api/v1/card/survey", struct{}{}, nil)
	var rep tcos.SurveyReport
	if code != http.StatusOK || json.Unmarshal(js, &rep) != nil || rep.Serial != serial || rep.Fits != "" {
		t.Fatalf("API survey: %d %s", code, js)
	}
	auditor := s.browserAs("Ida", operator.RoleAuditor, false)
	auditor.post("/cards/survey", nil, http.StatusForbidden)

	// Prepare it: OK for the card in the slot, then each new PIN twice on the pad.
	b.post("/ceremonies", url.Values{"kind": {"prepare-cards"}, "n": {"1"}}, http.StatusSeeOther)
	waitPad(t, s.pad, sim.WaitCard)
	s.pad.PressOK()
	var last time.Time
	for range 4 { // two PINs, each typed twice; each entry has its own deadline
		deadline := time.Now().Add(10 * time.Second)
		for st := s.pad.State(); st.Waiting != sim.WaitPIN || st.Deadline.Equal(last); st = s.pad.State() {
			if time.Now().After(deadline) {
				t.Fatalf("pad never asked for the next PIN: %+v", st)
			}
			time.Sleep(10 * time.Millisecond)
		}
		last = s.pad.State().Deadline
		if err := s.pad.TypeDigits("97531864"); err != nil {
			t.Fatal(err)
		}
		s.pad.PressOK()
	}
	waitPad(t, s.pad, sim.WaitRemoval)
	s.pad.Remove()
	j := waitEnded(t, s)
	if j.Kind != ceremony.KindPrepareCards || j.Status != ceremony.StatusDone {
		t.Fatalf("prepare: %s %s %s", j.Kind, j.Status, j.LastError)
	}
	s.pad.Insert(serial)
	_, body = b.post("/cards/survey", nil, http.StatusOK)
	if !strings.Contains(body, `data-testid="survey-fits">keyquorum-mf<`) {
		t.Errorf("survey after preparing: %s", excerpt(body))
	}
	if _, body := b.post("/ceremonies", url.Values{"kind": {"prepare-cards"}, "n": {"none"}}, http.StatusBadRequest); !strings.Contains(body, "how many cards") {
		t.Errorf("prepare without a number: %s", excerpt(body))
	}
}

// TestSimPanelShapedCards: the simulator panel makes an unprepared card and one whose PINs are
// still in their transport state, to try the survey and Prepare cards in the browser.
func TestSimPanelShapedCards(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Frank")
	for _, kind := range []string{"unprepared", "transport"} {
		before := len(s.pad.Cards())
		b.post("/sim/cards", url.Values{"kind": {kind}}, http.StatusSeeOther)
		cards := s.pad.Cards()
		if len(cards) != before+1 {
			t.Fatalf("%s: %d cards", kind, len(cards))
		}
		var made string
		for _, c := range cards {
			if vc, _ := s.pad.VirtualCard(c.Serial); vc != nil && len(vc.PINs()) == map[string]int{"unprepared": 0, "transport": 2}[kind] {
				made = c.Serial
			}
		}
		vc, ok := s.pad.VirtualCard(made)
		if !ok {
			t.Fatalf("%s: no card of that shape among %+v", kind, cards)
		}
		for _, p := range vc.PINs() {
			if !p.Null {
				t.Errorf("%s card PIN %+v", kind, p)
			}
		}
	}
}
