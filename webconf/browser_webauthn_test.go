package webconf

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// TestBrowserWebAuthnStartsCeremony: the first administrator (certificate from an NSS database,
// chosen by policy) registers a security key — Chromium's virtual authenticator, with user
// verification — on the account page, then starts a key load from the HSM page: the page asks
// the authenticator for an assertion and the load starts. Without a valid assertion the start
// is refused: before any key is registered, with the form sent around the page script, and
// with an authenticator that fails to verify the user.
func TestBrowserWebAuthnStartsCeremony(t *testing.T) {
	chromium, certutil, pk12util := browserTools(t)
	s := startService(t, t.TempDir(), serviceOptions{})
	origin := s.origin()
	installCertPolicy(t, origin, s.pki)
	ctx, cancel := newBrowser(t, chromium, nssHome(t, certutil, pk12util, s.pki, true))
	defer cancel()
	authenticator := virtualAuthenticator(t, ctx, true)
	started := func() int {
		js, err := s.mgr.Ceremonies(0)
		if err != nil {
			t.Fatal(err)
		}
		return len(js)
	}
	clickStartLoad := func() {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/hsm"),
			chromedp.WaitVisible(chromedp.CSS(`[data-testid="start-load"]`)),
			chromedp.Click(chromedp.CSS(`[data-testid="start-load"]`))); err != nil {
			t.Fatal(err)
		}
	}

	// No security key yet: the page says to register one, and nothing starts.
	clickStartLoad()
	textOf(t, ctx, `[data-testid="toast"]`, func(s string) bool { return strings.Contains(s, "Register a security key first") })
	if n := started(); n != 0 {
		t.Fatalf("%d ceremonies started before a security key was registered", n)
	}

	registerSecurityKey(t, ctx, origin, "virtual key")
	ops, err := s.ops.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].Role != operator.RoleAdmin || len(ops[0].Keys) != 1 || !ops[0].Keys[0].Credential.Flags.UserVerified {
		t.Fatalf("operator list after the registration: %+v", ops)
	}

	// The form sent without the page script, hence without an assertion: refused.
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/hsm"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="start-load"]`))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`HTMLFormElement.prototype.submit.call(document.querySelector('[data-testid="start-load"]').form), true`)); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="problem"] h1`, func(s string) bool { return s == "Security key confirmation required" })
	if n := started(); n != 0 {
		t.Fatalf("a start without an assertion started %d ceremonies", n)
	}

	// An authenticator that cannot verify the user (no PIN, no fingerprint): refused.
	setUserVerified(t, ctx, authenticator, false)
	clickStartLoad()
	textOf(t, ctx, `[data-testid="toast"]`, func(s string) bool { return s != "" })
	if n := started(); n != 0 {
		t.Fatalf("a start with an unverified assertion started %d ceremonies", n)
	}

	// With the assertion: the key load starts and the live view shows it.
	setUserVerified(t, ctx, authenticator, true)
	clickStartLoad()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`[data-testid="live"]`))); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="live-display"]`, func(s string) bool { return s == "Read Key press OK/Cancel" })
	js, err := s.mgr.Ceremonies(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 1 || js[0].Kind != ceremony.KindLoad || js[0].Operator != "CN=Keyquorum administrator,O=Keyquorum" {
		t.Fatalf("ceremonies: %+v", js)
	}
	ops, _ = s.ops.List()
	if ops[0].Keys[0].LastUsed.IsZero() {
		t.Error("the assertion did not record the key's use")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="live-cancel"]`))); err != nil {
		t.Fatal(err)
	}
	if j := waitEnded(t, s); j.Status != ceremony.StatusAborted {
		t.Errorf("after cancel: %s", j.Status)
	}
}
