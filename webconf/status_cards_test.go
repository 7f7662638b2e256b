package webconf

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

// TestStatusCardsOfSet (web): the status page's "cards of the set" lists each card of the set
// once (a generation's read-back is no extra card), with its share; a loaded set keeps the
// label its cards carry. On the way, the live view at "Read New Key" counts cards read from 0,
// not the cards written.
func TestStatusCardsOfSet(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Alice Admin")
	cards := newCards(t, s.pad, 3)
	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}, "label": {"dc-1"}}, http.StatusSeeOther)
	var atRead string
	gen := driveCeremony(t, context.Background(), s, httpActor{b}, cards, func(st sim.State) {
		if st.Waiting == sim.WaitOK && strings.HasPrefix(st.Display, "Read New Key") && atRead == "" {
			atRead = b.get("/ceremony", http.StatusOK)
		}
	})
	if gen.Status != ceremony.StatusDone {
		t.Fatalf("generation: %s %s", gen.Status, gen.Outcome)
	}
	if m := regexp.MustCompile(`data-testid="live-cards">([^<]*)<`).FindStringSubmatch(atRead); m == nil || m[1] != "0 of 2 cards read" {
		t.Errorf("live view at Read New Key: cards %q", m)
	}
	listed := func() string {
		page := b.get("/", http.StatusOK)
		m := regexp.MustCompile(`(?s)data-testid="keyset-cards">(.*?)</dd>`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no cards of the set on the status page:\n%s", excerpt(page))
		}
		return m[1]
	}
	got := listed()
	for i, c := range cards {
		if n := strings.Count(got, c); n != 1 {
			t.Errorf("card %s listed %d times: %s", c, n, got)
		}
		if !strings.Contains(got, "(share "+string(rune('1'+i))+")") {
			t.Errorf("share %d not listed: %s", i+1, got)
		}
	}
	if strings.Count(got, "(share ") != 3 {
		t.Errorf("cards of the set: %s", got)
	}

	// After a factory reset, a load of two cards: those two are the cards of the set, and the
	// set keeps the label on its cards.
	b.post("/reset", url.Values{"confirm": {"FACTORY RESET"}}, http.StatusSeeOther)
	waitEnded(t, s)
	if s.pad.State().Inserted != "" {
		httpActor{b}.remove()
	}
	b.post("/ceremonies", url.Values{"kind": {"load"}}, http.StatusSeeOther)
	load := driveCeremony(t, context.Background(), s, httpActor{b}, []string{cards[2], cards[0]}, nil)
	if load.Status != ceremony.StatusDone {
		t.Fatalf("load: %s %s", load.Status, load.Outcome)
	}
	got = listed()
	if strings.Count(got, "(share ") != 2 || !strings.Contains(got, cards[2]) || !strings.Contains(got, cards[0]) || strings.Contains(got, cards[1]) {
		t.Errorf("cards of the set after the load: %s", got)
	}
	if page := b.get("/", http.StatusOK); !strings.Contains(page, "label “dc-1”") {
		t.Errorf("the loaded set lost its label:\n%s", excerpt(page))
	}
}
