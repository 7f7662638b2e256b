package webconf

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/web"
)

func pkixName(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{"Keyquorum test"}}
}

// selfCA makes a CA that is not the management CA, and a client certificate it signed.
func selfCA(t *testing.T, cn string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corporate PIV CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: []string{"Corp"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return ca, tlsCert(cert, key)
}

// checkSecurityHeaders checks the headers every response must carry.
func checkSecurityHeaders(t *testing.T, h http.Header, what string) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("%s: CSP %q", what, csp)
	}
	for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if h.Get(k) != v {
			t.Errorf("%s: %s = %q, want %q", what, k, h.Get(k), v)
		}
	}
}

func TestClientCertificates(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	bundleCA, bundleCert := selfCA(t, "Alice Custodian")
	s.stop()
	s = startService(t, s.dir, serviceOptions{bundle: []*x509.Certificate{bundleCA}})

	t.Run("no certificate", func(t *testing.T) {
		c := s.client(nil)
		for _, path := range []string{"/", "/setup", "/events", "/hsm/backup", "/audit/export"} {
			resp, err := c.Get(s.url(path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "Client certificate required") ||
				!strings.Contains(string(body), operator.AdminP12File) || strings.Contains(string(body), s.dir) || !strings.Contains(string(body), "What to do") {
				t.Errorf("GET %s without certificate: %d\n%s", path, resp.StatusCode, excerpt(string(body)))
			}
			checkSecurityHeaders(t, resp.Header, path)
		}
		resp, err := c.PostForm(s.url("/ceremonies"), url.Values{"kind": {"generate"}, "quorum": {"2-3"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST without certificate: %d", resp.StatusCode)
		}
		// The CA certificate and the static files are public.
		resp, err = c.Get(s.url("/ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.pki.CAPEM) {
			t.Errorf("GET /ca.pem: %d", resp.StatusCode)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		_, stranger := selfCA(t, "Mallory")
		c := s.client(&stranger)
		resp, err := c.Get(s.url("/"))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("certificate of an unknown CA accepted: %d", resp.StatusCode)
		}
		t.Logf("refused as it should be: %v", err)
	})

	t.Run("CA bundle", func(t *testing.T) {
		// Trusted, but no role yet: a page that says so, naming the operator.
		c := s.client(&bundleCert)
		resp, err := c.Get(s.url("/"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "No role yet") || !strings.Contains(string(body), "CN=Alice Custodian,O=Corp") {
			t.Errorf("bundle certificate without a role: %d %s", resp.StatusCode, excerpt(string(body)))
		}
		// Given a role, it is an operator like any other.
		b := s.browserWith(bundleCert, operator.RoleAuditor, false)
		if body := b.get("/", http.StatusOK); !strings.Contains(body, "CN=Alice Custodian,O=Corp") {
			t.Errorf("bundle certificate with a role: operator not shown\n%s", excerpt(body))
		}
	})

	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cert := s.operatorCert("Bob")
		roots := x509.NewCertPool()
		roots.AddCert(s.pki.CA)
		conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
		if err == nil {
			conn.Close()
			t.Error("TLS 1.2 handshake succeeded")
		}
	})
}

func TestCSRF(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Carol")
	post := func(form url.Values, header map[string]string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, s.url("/sim/cards"), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, body := b.do(req)
		return resp.StatusCode, body
	}
	cases := []struct {
		name   string
		form   url.Values
		header map[string]string
		want   int
	}{
		{"missing token", url.Values{"kind": {"tcos"}}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"kind": {"tcos"}, "csrf": {"AAAA" + b.csrf[4:]}}, nil, http.StatusForbidden},
		{"token of another operator", url.Values{"kind": {"tcos"}, "csrf": {s.browser("Dave").csrf}}, nil, http.StatusForbidden},
		{"cross-site request with the right token", url.Values{"kind": {"tcos"}, "csrf": {b.csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"foreign origin with the right token", url.Values{"kind": {"tcos"}, "csrf": {b.csrf}}, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"right token", url.Values{"kind": {"tcos"}, "csrf": {b.csrf}}, nil, http.StatusSeeOther},
		{"right token in the header", url.Values{"kind": {"tcos"}}, map[string]string{csrfHeader: b.csrf, "Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
	}
	for _, c := range cases {
		before := len(s.pad.Cards())
		got, body := post(c.form, c.header)
		if got != c.want {
			t.Errorf("%s: status %d, want %d\n%s", c.name, got, c.want, excerpt(body))
		}
		made := len(s.pad.Cards()) - before
		if (c.want == http.StatusSeeOther) != (made == 1) {
			t.Errorf("%s: %d cards made", c.name, made)
		}
		if c.want == http.StatusForbidden && !strings.Contains(body, "reload the page") {
			t.Errorf("%s: the refusal does not say what to do: %s", c.name, excerpt(body))
		}
	}
	// The token survives a restart: a page left open in a browser still works.
	cert := s.operatorCert("Carol")
	now := time.Now()
	tok := s.srv.csrf.token(cert.Leaf, now)
	s.stop()
	s = startService(t, s.dir, serviceOptions{})
	if s.srv.csrf.token(cert.Leaf, now) != tok {
		t.Error("CSRF token changed with a restart")
	}
	b = s.browser("Carol")
	// A multipart upload carries its token in the URL; without it, refused before reading.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("backup", "b.kqb")
	fw.Write([]byte("x"))
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.url("/hsm/restore"), bytes.NewReader(buf.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if resp, body := b.do(req); resp.StatusCode != http.StatusForbidden {
		t.Errorf("upload without token: %d %s", resp.StatusCode, excerpt(body))
	}
}

// upload posts a backup file to the restore form.
func (b *browser) upload(content io.Reader, size int64) (*http.Response, string) {
	b.t.Helper()
	tok := ""
	if b.key != nil {
		tok = b.stepUp("/hsm/restore", nil)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		// The tokens lead, in the body, as the page sends them.
		mw.WriteField(csrfField, b.csrf)
		if tok != "" {
			mw.WriteField(stepUpField, tok)
		}
		fw, _ := mw.CreateFormFile("backup", "backup.kqb")
		_, err := io.Copy(fw, content)
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	target := "/hsm/restore"
	req, _ := http.NewRequest(http.MethodPost, b.s.url(target), pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if size >= 0 {
		req.ContentLength = size
	}
	return b.do(req)
}

func TestUploadBounded(t *testing.T) {
	const limit = 4 << 10
	s := startService(t, t.TempDir(), serviceOptions{maxUpload: limit})
	b := s.browser("Erin")
	// Restore needs a loaded key before it reads a byte; any key will do here.
	if err := s.hsm.LoadBackupKey(context.Background(), bytes.Repeat([]byte{7}, 32)); err != nil {
		t.Fatal(err)
	}

	// Announced too large: refused before a byte of the body is read.
	req, _ := http.NewRequest(http.MethodPost, s.url("/hsm/restore"), strings.NewReader(""))
	req.Header.Set(csrfHeader, b.csrf)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	req.ContentLength = limit + maxForm + 1
	req.Body = io.NopCloser(io.LimitReader(zeroReader{}, req.ContentLength))
	resp, body := b.do(req)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "Upload too large") {
		t.Errorf("announced oversized upload: %d %s", resp.StatusCode, excerpt(body))
	}
	// Streamed without a length: cut off at the bound while the HSM reads it. A real backup
	// larger than the bound, so the HSM reads past the header.
	for i := range 200 {
		if _, err := s.hsm.CreateKey(context.Background(), fmt.Sprintf("application key %03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var backup bytes.Buffer
	if err := s.hsm.Backup(context.Background(), &backup); err != nil {
		t.Fatal(err)
	}
	if backup.Len() <= limit {
		t.Fatalf("backup of %d bytes is not larger than the bound", backup.Len())
	}
	resp, body = b.upload(bytes.NewReader(backup.Bytes()), -1)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "What to do") {
		t.Errorf("streamed oversized upload: %d %s", resp.StatusCode, excerpt(body))
	}
	// A small file that is no backup: refused by the HSM, nothing changed.
	resp, body = b.upload(strings.NewReader("not a backup"), -1)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "Backup not accepted") {
		t.Errorf("garbage upload: %d %s", resp.StatusCode, excerpt(body))
	}
	// An oversized ordinary form.
	_, body = b.post("/sim/cards", url.Values{"kind": {"tcos"}, "pad": {strings.Repeat("x", maxForm)}}, http.StatusRequestEntityTooLarge)
	if !strings.Contains(body, "Upload too large") {
		t.Errorf("oversized form: %s", excerpt(body))
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestCeremonyAlreadyRunning(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Frank")
	resp, _ := b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}}, http.StatusSeeOther)
	if loc := resp.Header.Get("Location"); loc != "/ceremony" {
		t.Errorf("start redirected to %q", loc)
	}
	waitPad(t, s.pad, sim.WaitOK)
	_, body := b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"3-5"}}, http.StatusConflict)
	if !strings.Contains(body, "A ceremony is already running") || !strings.Contains(body, "CN=Frank") || !strings.Contains(body, "What to do") {
		t.Errorf("second start: %s", excerpt(body))
	}
	other := s.browser("Grace")
	_, body = other.post("/reset", url.Values{"confirm": {web.ResetPhrase}}, http.StatusConflict)
	if !strings.Contains(body, "already running") {
		t.Errorf("reset while running: %s", excerpt(body))
	}
	// Retry is refused while nothing stalled; cancel ends it, and is journaled with the canceller.
	_, body = other.post("/ceremony/retry", nil, http.StatusConflict)
	if !strings.Contains(body, "not waiting for a retry") {
		t.Errorf("retry: %s", excerpt(body))
	}
	other.post("/ceremony/cancel", nil, http.StatusSeeOther)
	j := waitEnded(t, s)
	if j.Status != ceremony.StatusAborted || !strings.Contains(j.LastError+j.Outcome, "CN=Grace") {
		t.Errorf("after cancel: %s / %s / %s", j.Status, j.LastError, j.Outcome)
	}
	_, body = other.post("/ceremony/cancel", nil, http.StatusConflict)
	if !strings.Contains(body, "No ceremony is running") {
		t.Errorf("cancel with nothing running: %s", excerpt(body))
	}
}

// waitPad waits until the virtual pad waits for w.
func waitPad(t *testing.T, pad *sim.Pad, w sim.Wait) sim.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for st := range pad.Watch(ctx) {
		if st.Waiting == w {
			return st
		}
	}
	t.Fatalf("pad never waited for %v: %+v", w, pad.State())
	return sim.State{}
}

// waitEnded waits for the latest ceremony to end and returns its journal.
func waitEnded(t *testing.T, s *service) ceremony.Journal {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		js, err := s.mgr.Ceremonies(1)
		if err != nil {
			t.Fatal(err)
		}
		if len(js) == 1 && js[0].Status.Ended() {
			return js[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("ceremony did not end")
	return ceremony.Journal{}
}

func TestFormErrors(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Heidi")
	checks := []struct {
		method, path string
		form         url.Values
		want         int
		says         string
	}{
		{"GET", "/setup/confirm?quorum=custom&k=4&n=3", nil, 400, "not a possible quorum"},
		{"GET", "/setup/confirm?quorum=custom&k=x&n=3", nil, 400, "two whole numbers"},
		{"GET", "/setup/confirm?quorum=9-9", nil, 400, "choose 2 of 3"},
		{"GET", "/setup/confirm?quorum=2-3&label=" + url.QueryEscape(strings.Repeat("l", 65)), nil, 400, "at most 64"},
		{"POST", "/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"custom"}, "k": {"1"}, "n": {"3"}}, 400, "not a possible quorum"},
		{"POST", "/ceremonies", url.Values{"kind": {"nonsense"}}, 400, "unknown ceremony kind"},
		{"POST", "/ceremonies", url.Values{"kind": {"factory-reset"}}, 400, "typed confirmation"},
		{"POST", "/ceremonies", url.Values{"kind": {"change-pin"}}, 400, "choose the PIN"},
		{"POST", "/ceremonies", url.Values{"kind": {"slot-user-card"}, "pkcs11_slot": {"-1"}}, 400, "must be a number"},
		{"POST", "/reset", url.Values{"confirm": {"factory reset"}}, 400, "nothing was erased"},
		{"POST", "/ceremony/resume", nil, 409, "Nothing to resume"},
		{"GET", "/hsm/backup", nil, 409, "No master backup key is loaded"},
		{"GET", "/ceremonies/99/protocol", nil, 404, "No such ceremony"},
		{"GET", "/ceremonies/x/protocol", nil, 404, "Page not found"},
		{"GET", "/no/such/page", nil, 404, "Page not found"},
		{"POST", "/", nil, 404, "Page not found"},
		{"POST", "/sim/key", url.Values{"key": {"5"}}, 409, "Enter PIN"},
		{"POST", "/sim/key", url.Values{"key": {"x"}}, 400, "only the digits"},
		{"POST", "/sim/insert", url.Values{"serial": {"NOSUCHCARD"}}, 404, "no virtual card"},
		{"POST", "/sim/remove", nil, 409, "no card in the reader"},
		{"POST", "/hsm/restore", nil, 400, "file upload"},
	}
	for _, c := range checks {
		var body string
		var resp *http.Response
		if c.method == "GET" {
			req, _ := http.NewRequest("GET", s.url(c.path), nil)
			resp, body = b.do(req)
		} else {
			resp, body = b.post(c.path, c.form, 0)
		}
		if resp.StatusCode != c.want || !strings.Contains(body, c.says) || !strings.Contains(body, "What to do") {
			t.Errorf("%s %s %v: %d, want %d saying %q\n%s", c.method, c.path, c.form, resp.StatusCode, c.want, c.says, excerpt(body))
		}
		checkSecurityHeaders(t, resp.Header, c.path)
	}
	// A problem reported to the page script is JSON.
	req, _ := http.NewRequest(http.MethodPost, s.url("/sim/remove"), strings.NewReader("csrf="+url.QueryEscape(b.csrf)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(web.FetchHeader, "1")
	resp, body := b.do(req)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `"todo"`) {
		t.Errorf("fetch problem: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

func TestPagesRender(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Ivan")
	pages := map[string][]string{
		"/":                         {`data-testid="no-key"`, "SIMULATOR", "CN=Ivan", s.pki.Fingerprint()},
		"/setup":                    {`data-testid="setup-form"`, `value="2-3"`, `value="3-5"`, `value="custom"`},
		"/setup/confirm?quorum=3-5": {"3 of 5", `data-testid="start-generate"`, `name="csrf"`},
		"/setup/confirm?quorum=custom&k=4&n=7&label=DC1": {"4 of 7", "DC1"},
		"/ceremony": {`data-testid="live-none"`, `data-live="display"`},
		"/hsm":      {`data-testid="hsm-no-key"`, `data-testid="restore-form"`, `data-testid="start-load"`},
		"/cards":    {`data-testid="start-copy"`, `data-testid="start-change-pin"`, `data-testid="start-slot-user"`, `data-testid="start-activate"`},
		"/audit":    {`data-testid="audit-ok"`, `data-testid="audit-export"`},
		"/reset":    {`data-testid="reset-form"`, web.ResetPhrase},
		"/sim/rack": {"Card rack"},
	}
	for path, wants := range pages {
		req, _ := http.NewRequest("GET", s.url(path), nil)
		resp, body := b.do(req)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, excerpt(body))
			continue
		}
		checkSecurityHeaders(t, resp.Header, path)
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q", path, w)
			}
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") {
			t.Errorf("GET %s: inline script", path)
		}
	}
	for _, f := range []string{"/static/app.js", "/static/style.css", "/static/print.css"} {
		req, _ := http.NewRequest("GET", s.url(f), nil)
		resp, body := b.do(req)
		if resp.StatusCode != http.StatusOK || len(body) < 100 {
			t.Errorf("GET %s: %d", f, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", s.url("/static/"), nil)
	if resp, _ := b.do(req); resp.StatusCode != http.StatusNotFound {
		t.Errorf("static directory listing: %d", resp.StatusCode)
	}
	// The audit export is JSON lines of the log (the journal opened entry at least).
	body := b.get("/audit/export", http.StatusOK)
	if _, err := ceremony.VerifyAuditExport(strings.NewReader(body)); err != nil {
		t.Errorf("audit export does not verify: %v", err)
	}
}

// TestNoSimulatorWithRealPad checks that without the simulator there is no panel and no route
// that accepts a key.
func TestNoSimulatorWithRealPad(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	s.srv.cfg.Sim = nil
	s.srv.rd = pages.NewRenderer(nil, s.srv.auth, s.srv.log)
	h := s.srv.routes()
	cert := s.operatorCert("Judy")
	s.browserWith(cert, operator.RoleAdmin, false)
	for _, path := range []string{"/", "/ceremony"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert.Leaf}}}
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || strings.Contains(rec.Body.String(), "sim-panel") {
			t.Errorf("GET %s without simulator: %d, panel shown: %v", path, rec.Code, strings.Contains(rec.Body.String(), "sim-panel"))
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/sim/key", strings.NewReader("key=1&csrf="+url.QueryEscape(s.srv.csrf.token(cert.Leaf, time.Now()))))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert.Leaf}}}
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Errorf("POST /sim/key without simulator: %d", rec.Code)
	}
}

// TestEventStreamEnds checks that the event stream handler returns when its request's context
// ends and when the server stops, and that it sends the latest event and pad changes.
func TestEventStreamEnds(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	stopping := make(chan struct{})
	h := pages.NewEventStream(s.mgr, s.pad, stopping, slog.New(slog.DiscardHandler))

	run := func(ctx context.Context) (*httptest.ResponseRecorder, chan struct{}) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/events", nil).WithContext(ctx)
		done := make(chan struct{})
		go func() { h.Stream(rec, req); close(done) }()
		return rec, done
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, done := run(ctx)
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("stream did not end with its request's context")
	}

	_, done = run(context.Background())
	time.Sleep(50 * time.Millisecond)
	close(stopping)
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("stream did not end when the server stopped")
	}
}

// TestEventStreamOverHTTP reads the live stream as a browser does: hello, then the ceremony's
// events and the pad's changes, from two watchers at once.
func TestEventStreamOverHTTP(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Ken")
	type watcher struct {
		lines chan string
	}
	watch := func() (*watcher, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.url("/events"), nil)
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		w := &watcher{lines: make(chan string, 1000)}
		go func() {
			defer resp.Body.Close()
			buf := make([]byte, 64<<10)
			var acc string
			for {
				n, err := resp.Body.Read(buf)
				acc += string(buf[:n])
				for {
					i := strings.Index(acc, "\n\n")
					if i < 0 {
						break
					}
					w.lines <- acc[:i]
					acc = acc[i+2:]
				}
				if err != nil {
					close(w.lines)
					return
				}
			}
		}()
		return w, cancel
	}
	expect := func(w *watcher, sub string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-w.lines:
				if !ok {
					t.Fatalf("stream ended before %q", sub)
				}
				if strings.Contains(l, sub) {
					return
				}
			case <-timeout:
				t.Fatalf("no event with %q", sub)
			}
		}
	}
	w1, c1 := watch()
	defer c1()
	w2, c2 := watch()
	defer c2()
	for _, w := range []*watcher{w1, w2} {
		expect(w, "event: hello")
		expect(w, "event: pad") // the pad as it is now
	}
	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}}, http.StatusSeeOther)
	for _, w := range []*watcher{w1, w2} {
		expect(w, `"display":"Write New Key press OK/Cancel"`)
		expect(w, `"deadline":"20`)
	}
	b.post("/ceremony/cancel", nil, http.StatusSeeOther)
	for _, w := range []*watcher{w1, w2} {
		expect(w, `"status":"aborted"`)
	}
}

// TestRetryAfterTimeout lets a wait on the pad time out: the ceremony stalls, the live view
// says so with the problem and a Retry button, and Retry repeats the step.
func TestRetryAfterTimeout(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{timeouts: ceremony.Timeouts{OK: 300 * time.Millisecond}})
	b := s.browser("Mallory Timeout")
	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}}, http.StatusSeeOther)
	deadline := time.Now().Add(10 * time.Second)
	var live string
	for {
		live = b.get("/ceremony", http.StatusOK)
		if strings.Contains(live, `data-stalled="true"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ceremony did not stall after the pad timed out:\n%s", excerpt(live))
		}
		time.Sleep(50 * time.Millisecond)
	}
	retryForm := mustFind(t, `(<form[^>]*action="/ceremony/retry"[^>]*>)`, live)
	if strings.Contains(retryForm, "hidden") {
		t.Errorf("retry button hidden while stalled: %s", retryForm)
	}
	if !strings.Contains(live, "timed out") {
		t.Errorf("the live view does not say the pad timed out:\n%s", excerpt(live))
	}
	b.post("/ceremony/retry", nil, http.StatusSeeOther)
	st := waitPad(t, s.pad, sim.WaitOK)
	if st.Display != "Write New Key press OK/Cancel" {
		t.Errorf("after retry the pad shows %q", st.Display)
	}
	b.post("/ceremony/cancel", nil, http.StatusSeeOther)
	waitEnded(t, s)
}

// TestAnswerOnScreen: with a pad that cannot report its OK key, the live view asks the question
// with OK and Cancel buttons, and OK there moves the ceremony on as OK on the pad would.
func TestAnswerOnScreen(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{noOKKey: true})
	b := s.browser("Olga Screen")
	_, body := b.post("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {"c1-q1"}}, http.StatusConflict)
	if !strings.Contains(body, "No ceremony is running") {
		t.Errorf("answer with nothing running: %s", excerpt(body))
	}
	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}}, http.StatusSeeOther)
	deadline := time.Now().Add(10 * time.Second)
	var form string
	for {
		live := b.get("/ceremony", http.StatusOK)
		form = mustFind(t, `(<form[^>]*action="/ceremony/answer"[^>]*>)`, live)
		if !strings.Contains(form, "hidden") && strings.Contains(live, "Write New Key press OK/Cancel") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live view never asked on screen:\n%s", excerpt(live))
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, body = b.post("/ceremony/answer", url.Values{"answer": {"maybe"}}, http.StatusBadRequest)
	if !strings.Contains(body, "Request not accepted") {
		t.Errorf("bad answer: %s", excerpt(body))
	}
	id := liveQuestionID(t, b.get("/ceremony", http.StatusOK))
	b.post("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {id}}, http.StatusSeeOther)
	if st := waitPad(t, s.pad, sim.WaitCard); !strings.HasPrefix(st.Display, "Insert 1. card") {
		t.Errorf("after OK on screen the pad shows %q", st.Display)
	}
	_, body = b.post("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {id}}, http.StatusConflict)
	if !strings.Contains(body, "no longer asked") {
		t.Errorf("answer while the pad waits for a card: %s", excerpt(body))
	}
	b.post("/ceremony/cancel", nil, http.StatusSeeOther)
	waitEnded(t, s)
}

// TestFactoryReset erases a loaded key through the typed confirmation.
func TestFactoryReset(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	ctx := context.Background()
	if err := s.hsm.LoadBackupKey(ctx, bytes.Repeat([]byte{9}, 32)); err != nil {
		t.Fatal(err)
	}
	b := s.browser("Oscar Reset")
	page := b.get("/reset", http.StatusOK)
	id, _ := s.hsm.BackupKeyID(ctx)
	if !strings.Contains(page, id.String()) {
		t.Error("the reset page does not name the key it erases")
	}
	b.post("/reset", url.Values{"confirm": {"FACTORY"}}, http.StatusBadRequest)
	if _, err := s.hsm.BackupKeyID(ctx); err != nil {
		t.Fatal("a wrong confirmation erased the key")
	}
	b.post("/reset", url.Values{"confirm": {web.ResetPhrase}}, http.StatusSeeOther)
	j := waitEnded(t, s)
	if j.Kind != ceremony.KindFactoryReset || j.Status != ceremony.StatusDone || j.Operator != "CN=Oscar Reset,O=Keyquorum test" {
		t.Errorf("reset ceremony: %s %s by %s", j.Kind, j.Status, j.Operator)
	}
	if !strings.Contains(b.get("/", http.StatusOK), `data-testid="no-key"`) {
		t.Error("status page still shows a key after the reset")
	}
	audit := b.get("/audit", http.StatusOK)
	if !strings.Contains(audit, "factory.reset") || !strings.Contains(audit, `data-testid="audit-ok"`) {
		t.Error("the audit log does not show the reset, or does not verify")
	}
}
