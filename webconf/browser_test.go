package webconf

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// chromiumPolicyDir is where Debian's chromium reads managed (mandatory) policies.
const chromiumPolicyDir = "/etc/chromium/policies/managed"

// browserTools finds Chromium and the NSS tools, or ends the test: a skip outside CI, a
// failure with CI=true.
func browserTools(t *testing.T) (chromium, certutil, pk12util string) {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (scripts/deps installs it) and CI=true", what)
		}
		t.Skipf("%s is missing: run scripts/deps", what)
	}
	for _, p := range []string{"/usr/lib/chromium/chromium", "/usr/bin/chromium"} {
		if _, err := os.Stat(p); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		missing("chromium")
	}
	var err error
	if certutil, err = exec.LookPath("certutil"); err != nil {
		missing("certutil (libnss3-tools)")
	}
	if pk12util, err = exec.LookPath("pk12util"); err != nil {
		missing("pk12util (libnss3-tools)")
	}
	requireRoot(t, "the browser test (it installs a Chromium policy under /etc/chromium)")
	return
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// nssHome makes a HOME whose NSS database (where Chromium on Linux keeps certificates) trusts
// the management CA and, when p12 is set, holds that client certificate and key.
func nssHome(t *testing.T, certutil, pk12util string, pki *operator.PKI, withAdmin bool) string {
	t.Helper()
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, certutil, "-N", "-d", "sql:"+db, "--empty-password")
	run(t, certutil, "-A", "-d", "sql:"+db, "-n", "Keyquorum management CA", "-t", "CT,C,C", "-i", pki.CACertPath())
	if withAdmin {
		pw, err := os.ReadFile(pki.AdminPasswordPath())
		if err != nil {
			t.Fatal(err)
		}
		pwFile := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pwFile, []byte(strings.TrimSpace(string(pw))), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, pk12util, "-i", pki.AdminP12Path(), "-d", "sql:"+db, "-w", pwFile, "-K", "")
	}
	return home
}

// installCertPolicy makes Chromium pick the management CA's client certificate for origin
// without a dialog, and removes the policy when the test ends.
func installCertPolicy(t *testing.T, origin string, pki *operator.PKI) {
	t.Helper()
	rule, _ := json.Marshal(map[string]any{
		"pattern": origin,
		"filter":  map[string]any{"ISSUER": map[string]string{"CN": pki.CA.Subject.CommonName}},
	})
	policy, _ := json.Marshal(map[string]any{"AutoSelectCertificateForUrls": []string{string(rule)}})
	if err := os.MkdirAll(chromiumPolicyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(chromiumPolicyDir, fmt.Sprintf("keyquorum-browser-test-%d.json", os.Getpid()))
	if err := os.WriteFile(path, policy, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// newBrowser starts headless Chromium with HOME set to home.
func newBrowser(t *testing.T, chromium, home string) (context.Context, context.CancelFunc) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.DisableGPU,
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("HOME=" + home),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	return ctx, func() { cancelTimeout(); cancelCtx(); cancelAlloc() }
}

// browserActor operates the simulator panel by clicking in Chromium.
type browserActor struct {
	t   *testing.T
	ctx context.Context
	pad *sim.Pad // to see that a click on the card rack took effect
}

// click clicks an enabled element. The card rack is re-rendered when the cards change, so an
// element found may be replaced before the click lands: then it is looked up again.
func (a browserActor) click(sel string) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.ctx, 20*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if err = chromedp.Do(ctx, chromedp.WaitEnabled(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel))); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("click %s: %v", sel, err)
}

// clickUntil clicks a button of the card rack until the pad shows its effect: a click on a
// button that the rack's refresh replaces at that moment is lost, as it would be for a person.
func (a browserActor) clickUntil(sel string, done func(sim.State) bool) {
	a.t.Helper()
	for range 5 {
		a.click(sel)
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if done(a.pad.State()) {
				return
			}
		}
		a.t.Logf("click on %s had no effect yet: clicking again", sel)
	}
	a.t.Fatalf("clicking %s had no effect: %+v", sel, a.pad.State())
}

func (a browserActor) pressOK() { a.click(`[data-testid="sim-key-ok"]`) }
func (a browserActor) insert(serial string) {
	a.clickUntil(`[data-testid="sim-insert-`+serial+`"]`, func(st sim.State) bool { return st.Inserted == serial })
}
func (a browserActor) remove() {
	a.clickUntil(`[data-testid="sim-remove"]`, func(st sim.State) bool { return st.Inserted == "" })
}
func (a browserActor) typeDigits(d string) {
	for _, c := range d {
		a.click(`[data-testid="sim-key-` + string(c) + `"]`)
	}
}

// virtualAuthenticator gives the browser tab a security key: Chromium's virtual CTAP2
// authenticator (DevTools WebAuthn domain) with a PIN or fingerprint that verifies the user when
// verified is true, and fails to when false.
func virtualAuthenticator(t *testing.T, ctx context.Context, verified bool) webauthn.AuthenticatorID {
	t.Helper()
	id, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (webauthn.AuthenticatorID, error) {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return "", err
		}
		res, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21,
				Transport: webauthn.AuthenticatorTransportUsb, HasResidentKey: true,
				HasUserVerification: true, IsUserVerified: verified, AutomaticPresenceSimulation: true,
			}})
		return res.AuthenticatorID, err
	})
	if err != nil {
		t.Fatalf("add a virtual authenticator: %v", err)
	}
	return id
}

// setUserVerified makes the virtual authenticator's user verification succeed or fail.
func setUserVerified(t *testing.T, ctx context.Context, id webauthn.AuthenticatorID, verified bool) {
	t.Helper()
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, webauthn.SetUserVerified, webauthn.SetUserVerifiedParams{AuthenticatorID: id, IsUserVerified: verified})
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
}

// registerSecurityKey registers the tab's virtual authenticator on the account page.
func registerSecurityKey(t *testing.T, ctx context.Context, origin, name string) {
	t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(origin+"/account"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="register-key-form"]`)),
		chromedp.SetValue(chromedp.CSS(`[data-testid="register-key-name"]`), name),
		chromedp.Click(chromedp.CSS(`[data-testid="register-key"]`)),
	); err != nil {
		t.Fatal(err)
	}
	// The page reloads with the key listed.
	textOf(t, ctx, `[data-testid="account-keys"]`, func(s string) bool { return strings.Contains(s, name) })
}

// textOf polls until the element's text satisfies ok, and returns it.
func textOf(t *testing.T, ctx context.Context, sel string, ok func(string) bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var text string
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		got, err := chromedp.Run(attempt, chromedp.TextContent(chromedp.CSS(sel)))
		cancelAttempt()
		if err == nil {
			text = strings.TrimSpace(got)
		}
		if err == nil && ok(text) {
			return text
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never showed what was expected; last text %q (%v)", sel, text, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestBrowserGenerate runs a whole 2-of-3 key generation in headless Chromium: the operator
// signs in with the administrator's client certificate (from an NSS database, chosen by policy
// without a dialog), makes three virtual cards in the simulator panel, goes through the setup
// wizard, and plays the custodians on the virtual pad. The live view must follow the ceremony
// without a reload. Then the service is restarted and the status page must show the loaded key
// ID; and a browser without a certificate must be refused.
func TestBrowserGenerate(t *testing.T) {
	chromium, certutil, pk12util := browserTools(t)

	// A fixed port, so that the restarted service is the same origin.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	s := startService(t, dir, serviceOptions{listen: addr})
	origin := s.origin() // https://localhost:port: security keys are bound to the name localhost
	installCertPolicy(t, origin, s.pki)
	home := nssHome(t, certutil, pk12util, s.pki, true)
	ctx, cancel := newBrowser(t, chromium, home)
	defer cancel()
	virtualAuthenticator(t, ctx, true)

	// Signed in by certificate.
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/")); err != nil {
		t.Fatal(err)
	}
	op := textOf(t, ctx, `[data-testid="operator"]`, func(s string) bool { return s != "" })
	if !strings.Contains(op, "CN=Keyquorum administrator") {
		t.Fatalf("operator shown as %q", op)
	}
	textOf(t, ctx, `[data-testid="no-key"]`, func(s string) bool { return strings.Contains(s, "none loaded") })
	// The first administrator is an administrator, and is told to register a security key.
	textOf(t, ctx, `[data-testid="register-key-banner"]`, func(s string) bool { return strings.Contains(s, "Register your security key") })
	registerSecurityKey(t, ctx, origin, "virtual key")
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/")); err != nil {
		t.Fatal(err)
	}

	// Three blank cards from the simulator panel; the rack updates by itself.
	act := browserActor{t: t, ctx: ctx, pad: s.pad}
	for i := range 3 {
		act.clickUntil(`[data-testid="sim-new-card"]`, func(sim.State) bool { return len(s.pad.Cards()) == i+1 })
	}
	n := 0
	for deadline := time.Now().Add(20 * time.Second); ; {
		if n, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#sim-rack li').length`)); err != nil {
			t.Fatal(err)
		}
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the card rack shows %d cards, want 3", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var cards []string
	for _, c := range s.pad.Cards() {
		cards = append(cards, c.Serial)
	}

	// The wizard: 2 of 3, review, start.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`nav a[href="/setup"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="setup-form"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="quorum-2-3"]`)),
		chromedp.SetValue(chromedp.CSS(`[data-testid="label"]`), "browser test appliance"),
		chromedp.Click(chromedp.CSS(`[data-testid="setup-next"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="confirm"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	if q := textOf(t, ctx, `[data-testid="confirm-quorum"]`, func(string) bool { return true }); !strings.HasPrefix(q, "2 of 3") {
		t.Fatalf("confirm page shows quorum %q", q)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-testid="start-generate"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="live"]`)),
		// A mark on the page: a reload would wipe it.
		func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.keyquorumMark = 'not reloaded'`))
			return chromedp.Void{}, err
		},
	); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="live-connection"]`, func(s string) bool { return strings.HasPrefix(s, "live") })
	textOf(t, ctx, `[data-testid="live-display"]`, func(s string) bool { return s == "Write New Key press OK/Cancel" })
	textOf(t, ctx, `[data-testid="live-countdown"]`, func(s string) bool { return strings.HasSuffix(s, "left") })

	// The custodians, clicking on the virtual pad. At the first PIN entry the live view must
	// show it, with the card and the tries left.
	sawPIN := false
	j := driveCeremony(t, context.Background(), s, act, cards, func(st sim.State) {
		if st.Waiting == sim.WaitPIN && !sawPIN {
			sawPIN = true
			textOf(t, ctx, `[data-testid="live-display"]`, func(s string) bool { return s == "Enter PIN" })
			textOf(t, ctx, `[data-testid="live-tries"]`, func(s string) bool { return s == "3 PIN tries left" })
			textOf(t, ctx, `[data-testid="live-cards"]`, func(s string) bool { return s == "0 of 3 cards written" })
			textOf(t, ctx, `[data-testid="sim-display"]`, func(s string) bool { return strings.HasPrefix(s, "Enter PIN") })
		}
	})
	if j.Status != ceremony.StatusDone {
		t.Fatalf("ceremony ended %s: %s / %s", j.Status, j.LastError, j.Outcome)
	}
	textOf(t, ctx, `[data-testid="live-status"]`, func(s string) bool { return s == "done" })
	textOf(t, ctx, `[data-testid="live-outcome"]`, func(s string) bool { return s != "" })
	textOf(t, ctx, `[data-testid="live-cards"]`, func(s string) bool { return s == "2 of 2 cards done" })
	mark, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.keyquorumMark || ''`))
	if err != nil {
		t.Fatal(err)
	}
	if mark != "not reloaded" {
		t.Fatal("the live view was reloaded to show the ceremony's progress")
	}

	// The printable protocol.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="live-protocol"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="protocol"]`))); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="protocol-key-id"]`, func(s string) bool { return s == j.KeyID })

	// Restart: the HSM keeps its key, the status page shows it.
	s.stop()
	s = startService(t, dir, serviceOptions{listen: addr})
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/")); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="key-id"]`, func(s string) bool { return s == j.KeyID })
	textOf(t, ctx, `[data-testid="keyset"]`, func(s string) bool { return strings.HasPrefix(s, "2 of 3 cards") })

	// Without a client certificate: refused, by a plain client and by a browser that has none.
	resp, err := s.client(nil).Get(origin + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("request without a client certificate: %d", resp.StatusCode)
	}
	bare, cancelBare := newBrowser(t, chromium, nssHome(t, certutil, pk12util, s.pki, false))
	defer cancelBare()
	if err := chromedp.Do(bare, chromedp.Navigate(origin+"/setup")); err != nil {
		t.Fatal(err)
	}
	textOf(t, bare, `[data-testid="problem"] h1`, func(s string) bool { return s == "Client certificate required" })
	hasNav, err := chromedp.Run(bare, chromedp.Evaluate[bool](`!!document.querySelector('nav') || !!document.querySelector('[data-testid="sim-panel"]')`))
	if err != nil {
		t.Fatal(err)
	}
	if hasNav {
		t.Error("the refusal page shows the menu or the simulator to a browser without a certificate")
	}
}
