package webconf

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/sharing"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// cardSetPages fetches the card set pages and records them.
func cardSetPages(t *testing.T, b *browser, rec *recorder, tag string) {
	t.Helper()
	for _, p := range []string{"/cards/reissue", "/cards/reissue/confirm?quorum=3-5", "/cards/check"} {
		req, _ := http.NewRequest(http.MethodGet, b.s.url(p), nil)
		resp, body := b.do(req)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET %s: %d %s", tag, p, resp.StatusCode, excerpt(body))
		}
		rec.add(tag+" "+p, []byte(body))
	}
}

// TestReissueAndCardCheckThroughPages: a 2-of-3 generation, its re-issue as 3-of-5 started from
// the re-issue page and followed by the live stream, card checks started from the check page
// (a new card intact, an old one of the retired set), the pages showing each step; then every
// response is searched for the MBK and the shares of both sets.
func TestReissueAndCardCheckThroughPages(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Rita Admin")
	rec := &recorder{bodies: map[string][]byte{}}
	ctx, stopStream := context.WithCancel(context.Background())
	wg := streamAll(t, ctx, b, rec)

	body := b.get("/cards", http.StatusOK)
	for _, want := range []string{`data-testid="link-reissue"`, `data-testid="link-check"`} {
		if !strings.Contains(body, want) {
			t.Errorf("smart cards page lacks %s", want)
		}
	}
	if body := b.get("/cards/reissue", http.StatusOK); !strings.Contains(body, `data-testid="reissue-no-key"`) || strings.Contains(body, `data-testid="reissue-form"`) {
		t.Errorf("re-issue page without a key: %s", excerpt(body))
	}

	old := newCards(t, s.pad, 3)
	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}, "label": {"dc-1"}}, http.StatusSeeOther)
	gen := driveCeremony(t, context.Background(), s, httpActor{b}, old, nil)
	if gen.Status != ceremony.StatusDone {
		t.Fatalf("generation: %s %s", gen.Status, gen.Outcome)
	}
	s.pad.Remove()

	body = b.get("/cards/reissue", http.StatusOK)
	for _, want := range []string{`data-testid="reissue-form"`, gen.SetID, `data-testid="current-set-quorum">2 of 3<`, `value="3-5" checked`, `value="dc-1"`, `data-testid="set-history"`} {
		if !strings.Contains(body, want) {
			t.Errorf("re-issue page lacks %q", want)
		}
	}
	body = b.get("/cards/reissue/confirm?quorum=custom&k=3&n=5&label=dc-1", http.StatusOK)
	for _, want := range []string{"3 of 5", `data-testid="start-reissue"`, "Have 2 cards of the current set", "Write New Set press OK/Cancel", `name="csrf"`} {
		if !strings.Contains(body, want) {
			t.Errorf("confirm page lacks %q", want)
		}
	}

	fresh := newCards(t, s.pad, 5)
	resp, _ := b.post("/cards/reissue", url.Values{"quorum": {"custom"}, "k": {"3"}, "n": {"5"}, "label": {"dc-1"}}, http.StatusSeeOther)
	if loc := resp.Header.Get("Location"); loc != "/ceremony" {
		t.Fatalf("re-issue start redirected to %q", loc)
	}
	n := 0
	re := driveCeremony(t, context.Background(), s, httpActor{b}, append([]string{old[0], old[1]}, fresh...), func(st sim.State) {
		n++
		everyPage(t, b, rec, "during re-issue "+strings.Repeat("+", n))
		cardSetPages(t, b, rec, "during re-issue "+strings.Repeat("+", n))
	})
	if re.Status != ceremony.StatusDone || re.Kind != ceremony.KindReissue || re.K != 3 || re.N != 5 || re.FromSetID != gen.SetID {
		t.Fatalf("re-issue: %+v", re)
	}
	if live := b.get("/ceremony", http.StatusOK); !strings.Contains(live, "card set re-issue") || !strings.Contains(live, "is now current") {
		t.Errorf("live view after the re-issue: %s", excerpt(live))
	}
	s.pad.Remove()
	body = b.get("/cards/reissue", http.StatusOK)
	if !strings.Contains(body, `data-testid="current-set-id">`+re.SetID) || !strings.Contains(body, `data-testid="current-set-quorum">3 of 5<`) {
		t.Errorf("re-issue page after: %s", excerpt(body))
	}
	if !strings.Contains(body, `data-testid="set-`+gen.SetID+`"`) || !strings.Contains(body, `class="bad" data-testid="set-status">retired<`) {
		t.Errorf("set history does not show the old set retired")
	}

	// Card checks: a new card, then an old one.
	for _, c := range []struct {
		serial  string
		verdict ceremony.Verdict
		shows   string
	}{
		{fresh[3], ceremony.VerdictIntact, `class="ok" data-testid="check-verdict">intact<`},
		{old[2], ceremony.VerdictRetired, `class="bad" data-testid="check-verdict">retired set<`},
	} {
		resp, _ := b.post("/cards/check", nil, http.StatusSeeOther)
		if loc := resp.Header.Get("Location"); loc != "/ceremony" {
			t.Fatalf("check start redirected to %q", loc)
		}
		j := driveCeremony(t, context.Background(), s, httpActor{b}, []string{c.serial}, nil)
		if j.Status != ceremony.StatusDone || j.Check == nil || j.Check.Verdict != c.verdict || j.Check.Serial != c.serial {
			t.Fatalf("check of %s: %+v", c.serial, j)
		}
		s.pad.Remove()
		page := b.get("/cards/check", http.StatusOK)
		if !strings.Contains(page, c.shows) || !strings.Contains(page, c.serial) {
			t.Errorf("check page after checking %s lacks %q", c.serial, c.shows)
		}
	}
	everyPage(t, b, rec, "after")
	cardSetPages(t, b, rec, "after")
	stopStream()
	wg.Wait()

	// The secrets: both sets' records and shares, and the key.
	var secrets [][]byte
	var newRecords []*sharing.Record
	for _, serial := range append(append([]string{}, old...), fresh...) {
		raw := readShareRecord(t, s.pad, serial)
		r, err := sharing.Unmarshal(raw)
		if err != nil {
			t.Fatalf("card %s: %v", serial, err)
		}
		if r.SetID.String() == re.SetID {
			newRecords = append(newRecords, r)
		}
		secrets = append(secrets, raw, bytes.Clone(r.Share))
	}
	mbk, err := sharing.Combine(newRecords[:3])
	if err != nil || sharing.KeyIDOf(mbk).String() != gen.KeyID {
		t.Fatalf("the new set does not give the key: %v", err)
	}
	secrets = append(secrets, mbk)
	if !bytes.Contains(rec.bodies["after /cards/reissue"], []byte(re.SetID)) {
		t.Error("the new set ID is not on the re-issue page: the search looks at the wrong bodies")
	}
	for name, body := range rec.bodies {
		for i, sec := range secrets {
			for _, enc := range encodings(sec) {
				if bytes.Contains(body, []byte(enc)) {
					t.Errorf("secret %d found in %s as %q", i, name, enc)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d waits observed during the re-issue", n)
	}
}

// Custodians check cards; only administrators re-issue the set. A bad quorum is a page that
// says what to do.
func TestCardSetRolesAndErrors(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	cust := s.browserAs("Carl Custodian", operator.RoleCustodian, true)
	_, body := cust.post("/cards/reissue", url.Values{"quorum": {"3-5"}}, http.StatusForbidden)
	if !strings.Contains(body, "re-issue the card set") {
		t.Errorf("custodian re-issue: %s", excerpt(body))
	}
	resp, _ := cust.post("/cards/check", nil, http.StatusSeeOther)
	if loc := resp.Header.Get("Location"); loc != "/ceremony" {
		t.Fatalf("custodian check redirected to %q", loc)
	}
	waitPad(t, s.pad, sim.WaitCard)
	cust.post("/ceremony/cancel", nil, http.StatusSeeOther)
	waitEnded(t, s)

	admin := s.browser("Ada Admin")
	for _, c := range []struct {
		method, path string
		form         url.Values
		want         int
		says         string
	}{
		{"GET", "/cards/reissue/confirm?quorum=custom&k=4&n=3", nil, 400, "not a possible quorum"},
		{"POST", "/cards/reissue", url.Values{"quorum": {"custom"}, "k": {"1"}, "n": {"3"}}, 400, "not a possible quorum"},
		{"POST", "/cards/reissue", url.Values{"quorum": {"3-5"}}, 409, "No master backup key is loaded"},
	} {
		var resp *http.Response
		var body string
		if c.method == "GET" {
			req, _ := http.NewRequest(http.MethodGet, s.url(c.path), nil)
			resp, body = admin.do(req)
		} else {
			resp, body = admin.post(c.path, c.form, 0)
		}
		if resp.StatusCode != c.want || !strings.Contains(body, c.says) || !strings.Contains(body, "What to do") {
			t.Errorf("%s %s: %d, want %d saying %q\n%s", c.method, c.path, resp.StatusCode, c.want, c.says, excerpt(body))
		}
	}
}
