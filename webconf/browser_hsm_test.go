package webconf

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// requestLog keeps what the tab requested (from the DevTools network events): every URL, the
// bodies of the security key's begin requests, and the tokens its finish requests answered.
type requestLog struct {
	mu       sync.Mutex
	urls     []string
	begins   []string // the urlencoded bodies of POST /webauthn/assert/begin
	finished int      // answers of POST /webauthn/assert/finish
	tokens   []string // the approval tokens those answers carried
	pending  sync.WaitGroup
}

// watchRequests records the tab's requests into a requestLog. The answers of
// /webauthn/assert/finish are held (Fetch domain, response stage) until their token is read:
// the page navigates away right after, and a body read later may be gone.
func watchRequests(t *testing.T, ctx context.Context) *requestLog {
	t.Helper()
	l := &requestLog{}
	paused := make(chan fetch.RequestID, 64)
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			l.mu.Lock()
			defer l.mu.Unlock()
			l.urls = append(l.urls, ev.Request.URL+ev.Request.URLFragment)
			if u, err := url.Parse(ev.Request.URL); err == nil && u.Path == "/webauthn/assert/begin" {
				var b bytes.Buffer
				for _, e := range ev.Request.PostDataEntries {
					b.Write(e.Bytes)
				}
				l.begins = append(l.begins, b.String())
			}
		case *fetch.EventRequestPaused:
			l.pending.Add(1)
			paused <- ev.RequestID // room for far more than this test makes
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "*/webauthn/assert/finish*", RequestStage: fetch.RequestStageResponse}}}); err != nil {
		t.Fatal(err)
	}
	// Outside the event loop, which must not wait for a command.
	go func() {
		for id := range paused {
			res, err := chromedp.Call(ctx, fetch.GetResponseBody, fetch.GetResponseBodyParams{RequestID: id})
			var f struct {
				Token string `json:"token"`
			}
			l.mu.Lock()
			l.finished++
			if err == nil && json.Unmarshal(res.Body, &f) == nil && f.Token != "" {
				l.tokens = append(l.tokens, f.Token)
			} else {
				t.Logf("the body of an assertion's answer could not be read: %v", err)
			}
			l.mu.Unlock()
			if _, err := chromedp.Call(ctx, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: id}); err != nil {
				t.Logf("continue the assertion's answer: %v", err)
			}
			l.pending.Done()
		}
	}()
	return l
}

// stepUps is how many assertions the tab finished so far, and the begin requests' bodies.
func (l *requestLog) stepUps() (int, []string) {
	l.pending.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.finished, slices.Clone(l.begins)
}

// TestBrowserHSMPage runs the HSM page's whole-store features in Chromium (issues 14 and 20):
// the object table says for each object whether a backup carries it and, if not, why; objects
// are created and imported through the page's forms with the security key; a backup of an HSM
// holding a key that cannot leave is refused naming it, and the skip checkbox downloads one
// whose header lists it; the downloaded file goes back through the restore form as a preview
// (no security key: it changes nothing) and then as a make-equal restore (the security key's
// approval bound to make_equal), and the page and the HSM show the outcome. No CSRF or
// approval token appears in any URL the browser requested.
func TestBrowserHSMPage(t *testing.T) {
	chromium, certutil, pk12util := browserTools(t)
	s := startService(t, t.TempDir(), serviceOptions{})
	origin := s.origin()
	installCertPolicy(t, origin, s.pki)
	ctx, cancel := newBrowser(t, chromium, nssHome(t, certutil, pk12util, s.pki, true))
	defer cancel()
	reqs := watchRequests(t, ctx)
	virtualAuthenticator(t, ctx, true)
	registerSecurityKey(t, ctx, origin, "virtual key")
	bg := context.Background()

	// A master backup key from a real 2-of-3 generation, its custodians played over HTTP (the
	// browser tests of the ceremony itself click them).
	b := s.browser("Gen Admin")
	cards := newCards(t, s.pad, 3)
	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}, "label": {"hsm page"}}, http.StatusSeeOther)
	if j := driveCeremony(t, bg, s, httpActor{b}, cards, nil); j.Status != ceremony.StatusDone {
		t.Fatalf("generation: %s %s", j.Status, j.Outcome)
	}
	// A key that cannot leave the HSM, as another application may keep one on the token.
	if _, err := s.hsm.CreateObject(bg, hsm.ObjectSpec{Kind: "AES-128", Label: "stays inside", NotExtractable: true}); err != nil {
		t.Fatal(err)
	}

	navigate := func(path string, waitFor string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(origin+path), chromedp.WaitVisible(chromedp.CSS(waitFor))); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	labels := func() []string {
		t.Helper()
		objs, err := s.hsm.Objects(bg)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range objs {
			out = append(out, o.Label)
		}
		return out
	}

	// Create a key through the page's form: the security key confirms it.
	before, _ := reqs.stepUps()
	navigate("/hsm", `[data-testid="create-form"]`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`[data-testid="create-form"] select[name="kind"]`), "AES-256"),
		chromedp.SetValue(chromedp.CSS(`[data-testid="create-form"] input[name="label"]`), "made in the browser"),
		chromedp.Click(chromedp.CSS(`[data-testid="create-submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="created"]`, func(s string) bool { return strings.Contains(s, "stored in the HSM") })
	n, begins := reqs.stepUps()
	if n != before+1 || !strings.Contains(begins[len(begins)-1], "label=made+in+the+browser") {
		t.Fatalf("create: %d assertions (want %d), begin requests %q", n, before+1, begins)
	}

	// Import a data object through the upload form: its options lead, the file follows.
	note := filepath.Join(t.TempDir(), "note.txt")
	if err := os.WriteFile(note, []byte("a data object brought in from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	navigate("/hsm", `[data-testid="import-form"]`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`[data-testid="import-form"] select[name="what"]`), "data"),
		chromedp.SetValue(chromedp.CSS(`[data-testid="import-form"] input[name="label"]`), "imported note"),
		chromedp.SetValue(chromedp.CSS(`[data-testid="import-form"] input[name="application"]`), "browser test"),
		chromedp.SetUploadFiles(chromedp.CSS(`[data-testid="import-form"] input[type="file"]`), []string{note}),
		chromedp.Click(chromedp.CSS(`[data-testid="import-submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="created"]`, func(s string) bool { return strings.Contains(s, "stored in the HSM") })
	n, begins = reqs.stepUps()
	if n != before+2 || !strings.Contains(begins[len(begins)-1], "label=imported+note") || !strings.Contains(begins[len(begins)-1], "what=data") {
		t.Fatalf("import: %d assertions (want %d), begin requests %q", n, before+2, begins)
	}
	if got := labels(); !slices.Contains(got, "made in the browser") || !slices.Contains(got, "imported note") {
		t.Fatalf("objects after create and import: %q", got)
	}

	// The object table: each object, carried or not and why.
	navigate("/hsm", `[data-testid="hsm-objects"]`)
	textOf(t, ctx, `[data-testid="objects-summary"]`, func(s string) bool { return strings.Contains(s, "2 carried, 1 not") })
	textOf(t, ctx, `[data-testid="objects-not-carried"]`, func(s string) bool { return strings.HasPrefix(s, "1 object(s) cannot leave") })
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('[data-testid="hsm-object"]')).map(r => r.innerText.replace(/\s+/g, ' ').trim())`))
	if err != nil {
		t.Fatal(err)
	}
	row := func(label string) string {
		for _, r := range rows {
			if strings.Contains(r, label) {
				return r
			}
		}
		t.Fatalf("the object table has no row for %q: %q", label, rows)
		return ""
	}
	if r := row("stays inside"); !strings.Contains(r, "no, because it is not extractable") {
		t.Errorf("the uncarried key's row: %q", r)
	}
	for _, l := range []string{"made in the browser", "imported note"} {
		if r := row(l); !strings.HasSuffix(r, "yes") {
			t.Errorf("row of %q: %q", l, r)
		}
	}

	// A backup without the skip: refused, naming the key that cannot leave; nothing downloaded.
	dir := t.TempDir()
	if _, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: new(true)}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-testid="backup-download"]`))); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="problem"] h1`, func(s string) bool { return strings.Contains(s, "Backup refused") })
	textOf(t, ctx, `[data-testid="problem"]`, func(s string) bool { return strings.Contains(s, "stays inside") })
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("the refused backup downloaded %d files", len(files))
	}

	// With the skip checkbox: the download, whose header names what it left out.
	navigate("/hsm", `[data-testid="backup-form"]`)
	lctx, stopEvents := context.WithCancel(ctx)
	progress := chromedp.Events(lctx, cdpbrowser.DownloadProgress)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`[data-testid="backup-skip"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="backup-download"]`)),
	); err != nil {
		t.Fatal(err)
	}
	file := ""
	dctx, dcancel := context.WithTimeout(lctx, 30*time.Second)
	go func() { <-dctx.Done(); stopEvents() }()
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("waiting for the download: %v", err)
		}
		if ev.State == cdpbrowser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
		if ev.State == cdpbrowser.DownloadProgressStateCanceled {
			t.Fatal("the backup's download was cancelled")
		}
	}
	dcancel()
	stopEvents()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the downloaded backup: %v", err)
	}
	hdr, err := backup.ReadHeader(bytes.NewReader(data))
	if err != nil || hdr.SkippedTotal != 1 || len(hdr.Skipped) != 1 || hdr.Skipped[0].Label != "stays inside" {
		t.Fatalf("header of the downloaded backup: %+v %v", hdr, err)
	}

	// After the backup, another object: a make-equal restore removes it, and keeps the key the
	// backup had to skip (it is in no backup: removing it would lose it for good).
	if _, err := s.hsm.CreateObject(bg, hsm.ObjectSpec{Kind: "AES-128", Label: "after the backup"}); err != nil {
		t.Fatal(err)
	}

	// The preview: the plan, nothing changed, and no security key asked for (it changes nothing).
	before, _ = reqs.stepUps()
	navigate("/hsm", `[data-testid="restore-form"]`)
	if err := chromedp.Do(ctx,
		chromedp.SetUploadFiles(chromedp.CSS(`[data-testid="restore-form"] input[type="file"]`), []string{file}),
		chromedp.Click(chromedp.CSS(`[data-testid="restore-make-equal"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="restore-preview"]`)),
	); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="preview-notice"]`, func(s string) bool { return strings.HasPrefix(s, "Nothing was changed") })
	counts := textOf(t, ctx, `[data-testid="plan-counts"]`, func(s string) bool { return s != "" })
	textOf(t, ctx, `[data-testid="plan-skipped"]`, func(s string) bool { return strings.Contains(s, "stays inside") })
	items := textOf(t, ctx, `[data-testid="plan-items"]`, func(s string) bool { return strings.Contains(s, "after the backup") })
	t.Logf("preview: %s / %s", counts, strings.Join(strings.Fields(items), " "))
	if n, _ := reqs.stepUps(); n != before {
		t.Errorf("the preview asked the security key (%d assertions): a preview changes nothing and needs none", n-before)
	}
	if got := labels(); !slices.Contains(got, "after the backup") {
		t.Fatalf("the preview changed the HSM: %q", got)
	}

	// The make-equal restore: the security key's approval binds make_equal.
	before, _ = reqs.stepUps()
	navigate("/hsm", `[data-testid="restore-form"]`)
	if err := chromedp.Do(ctx,
		chromedp.SetUploadFiles(chromedp.CSS(`[data-testid="restore-form"] input[type="file"]`), []string{file}),
		chromedp.Click(chromedp.CSS(`[data-testid="restore-make-equal"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="restore-submit"]`)),
	); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `h1`, func(s string) bool { return s == "Backup restored" })
	counts = textOf(t, ctx, `[data-testid="plan-counts"]`, func(s string) bool { return s != "" })
	items = textOf(t, ctx, `[data-testid="plan-items"]`, func(s string) bool { return strings.Contains(s, "after the backup") })
	t.Logf("restore: %s / %s", counts, strings.Join(strings.Fields(items), " "))
	n, begins = reqs.stepUps()
	if n != before+1 {
		t.Fatalf("the restore made %d assertions, want 1", n-before)
	}
	if last, _ := url.ParseQuery(begins[len(begins)-1]); last.Get("_path") != "/hsm/restore" || last.Get("make_equal") != "1" {
		t.Errorf("the restore's approval was asked for %q", begins[len(begins)-1])
	}
	if !strings.Contains(strings.Join(strings.Fields(items), ""), "keptAES-128secretkeystaysinside") { // cells' text runs together
		t.Errorf("the restore's plan does not keep the key the backup skipped: %s", items)
	}
	got := labels()
	if slices.Contains(got, "after the backup") || !slices.Contains(got, "made in the browser") || !slices.Contains(got, "imported note") || !slices.Contains(got, "stays inside") {
		t.Errorf("objects after the make-equal restore: %q", got)
	}
	t.Logf("objects after the make-equal restore: %q", got)
	entries, err := s.mgr.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(entries, func(e ceremony.AuditEntry) bool {
		return e.Event == cluster.AuditRestore && e.Operator == "CN=Keyquorum administrator,O=Keyquorum" && strings.Contains(e.Message, "1 removed")
	}) {
		t.Error("the audit log does not record the make-equal restore by the browser's operator")
	}
	// The HSM page shows the store as it is now.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a.button[href="/hsm"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="hsm-objects"]`))); err != nil {
		t.Fatal(err)
	}
	textOf(t, ctx, `[data-testid="objects-summary"]`, func(s string) bool { return strings.Contains(s, "2 carried, 1 not") })
	if text := textOf(t, ctx, `[data-testid="hsm-objects"]`, func(string) bool { return true }); strings.Contains(text, "after the backup") {
		t.Errorf("the object table still lists the removed object: %s", text)
	}

	// No token in any URL the browser requested.
	csrf, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('meta[name="csrf-token"]').content`))
	if err != nil || csrf == "" {
		t.Fatalf("the page's CSRF token: %q %v", csrf, err)
	}
	reqs.pending.Wait()
	reqs.mu.Lock()
	defer reqs.mu.Unlock()
	if len(reqs.tokens) != reqs.finished || len(reqs.tokens) < 3 {
		t.Fatalf("%d approval tokens read from %d answers", len(reqs.tokens), reqs.finished)
	}
	secrets := append([]string{csrf}, reqs.tokens...)
	for _, u := range reqs.urls {
		pu, err := url.Parse(u)
		if err != nil {
			t.Errorf("unparsable URL requested: %q", u)
			continue
		}
		for k := range pu.Query() {
			if k == csrfField || k == stepUpField || strings.Contains(strings.ToLower(k), "token") {
				t.Errorf("a URL carries the parameter %q: %s", k, u)
			}
		}
		for _, sec := range secrets {
			if strings.Contains(u, sec) || strings.Contains(u, url.QueryEscape(sec)) {
				t.Errorf("a URL carries a token: %s", u)
			}
		}
	}
	t.Logf("%d requests checked for tokens", len(reqs.urls))
}
