package webconf

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

// TestBrowserAnswerDestructive: in the live view opened before the question came, the OK button
// answers the question the event stream named, and OK to a destructive one (the last PIN try)
// goes through only with the security key: the page script makes the assertion first.
func TestBrowserAnswerDestructive(t *testing.T) {
	chromium, certutil, pk12util := browserTools(t)
	s := startService(t, t.TempDir(), serviceOptions{noOKKey: true})
	origin := s.origin()
	installCertPolicy(t, origin, s.pki)
	ctx, cancel := newBrowser(t, chromium, nssHome(t, certutil, pk12util, s.pki, true))
	defer cancel()
	virtualAuthenticator(t, ctx, true)
	registerSecurityKey(t, ctx, origin, "virtual key")

	card, err := s.pad.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.mgr.Start(context.Background(), "CN=Keyquorum administrator,O=Keyquorum", ceremony.Request{Kind: ceremony.KindCardCheck}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/ceremony"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="live"]`))); err != nil {
		t.Fatal(err)
	}
	waitPad(t, s.pad, sim.WaitCard)
	if err := s.pad.Insert(card); err != nil {
		t.Fatal(err)
	}
	s.pad.PressOK()
	for range 2 { // two wrong PINs: the next try is the last
		st := waitPad(t, s.pad, sim.WaitPIN)
		if err := s.pad.TypeDigits("999999"); err != nil {
			t.Fatal(err)
		}
		s.pad.PressOK()
		for s.pad.State().Waiting == sim.WaitPIN && s.pad.State().Deadline.Equal(st.Deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	q := waitQuestionAsked(t, s)
	if !q.Destructive {
		t.Fatalf("question %+v", q)
	}
	textOf(t, ctx, `[data-testid="live-question-detail"]`, func(s string) bool { return strings.Contains(s, "1 PIN try left") })
	id := ""
	deadline := time.Now().Add(10 * time.Second)
	for id != q.ID && time.Now().Before(deadline) {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="live-question-id"]').value`))
		if err != nil {
			t.Fatal(err)
		}
		id = got
		time.Sleep(50 * time.Millisecond)
	}
	if id != q.ID {
		t.Fatalf("the live view's form names question %q, the pad asks %q", id, q.ID)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="live-confirm-ok"]`))); err != nil {
		t.Fatal(err)
	}
	waitPad(t, s.pad, sim.WaitPIN) // the last try is entered on the pad now
	entries, err := s.mgr.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(entries, func(e ceremony.AuditEntry) bool {
		return e.Event == ceremony.AuditCeremonyConfirmed && strings.Contains(e.Message, q.ID) && strings.Contains(e.Message, "security key")
	}) {
		t.Errorf("the answer is not audited as confirmed with the security key")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="live-cancel"]`))); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, s)
}

// waitQuestionAsked waits for the running ceremony to ask a question on the screen.
func waitQuestionAsked(t *testing.T, s *service) ceremony.Question {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if q, ok := s.mgr.Question(); ok {
			return q
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no question asked on the screen")
	return ceremony.Question{}
}
