package webconf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestSecuritySlowBodyFlood: 1,000 connections without a client certificate, each sending a
// POST with a Content-Length under 256 KiB and then only a few bytes of its body, are answered
// 401 at once and closed by the server without waiting for the body; meanwhile an operator's
// request is answered at once, and memory and open files come back down.
func TestSecuritySlowBodyFlood(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("flood admin")
	admin.get("/api/v1/status", http.StatusOK)
	fds, heap := openFDs(t), heapInuse()

	roots := x509.NewCertPool()
	roots.AddCert(s.pki.CA)
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS13}
	const n = 1000
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		fails   []string
		answers = make(chan struct{}, n)
		release = make(chan struct{})
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(fails) < 5 {
			fails = append(fails, fmt.Sprintf(format, args...))
		}
	}
	// Generous client-side timeouts: the test machine's CPU is shared, and 1,000 TLS handshakes
	// take their time; what is measured is the operator's request and what is held afterwards.
	dialer := &net.Dialer{Timeout: 60 * time.Second}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tls.DialWithDialer(dialer, "tcp", s.addr, cfg)
			if err != nil {
				fail("dial %d: %v", i, err)
				answers <- struct{}{}
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /operators/role HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200000\r\n\r\nrole=admin")
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				fail("slow body %d: no answer: %v", i, err)
				answers <- struct{}{}
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || err != nil {
				fail("slow body %d: %s, %v", i, resp.Status, err)
			}
			// The server closes the connection: nothing more comes, then EOF.
			if _, err := conn.Read(make([]byte, 1)); err != io.EOF && !strings.Contains(fmt.Sprint(err), "close") {
				fail("slow body %d: the connection was not closed by the server: %v", i, err)
			}
			answers <- struct{}{}
			<-release
		}()
	}
	// While the flood is under way, an operator's request on a new connection is answered.
	time.Sleep(200 * time.Millisecond)
	admin.c.CloseIdleConnections()
	start := time.Now()
	admin.get("/api/v1/status", http.StatusOK)
	t.Logf("an operator's request during the flood: %s", time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("an operator's request during the flood took %s", d)
	}
	deadline := time.After(120 * time.Second)
	for range n {
		select {
		case <-answers:
		case <-deadline:
			close(release)
			t.Fatal("the flood's connections were not all answered within 120 s")
		}
	}
	t.Logf("the flood's %d connections answered and closed within %s", n, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	admin.get("/api/v1/status", http.StatusOK)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("an operator's request after the flood took %s", d)
	}
	close(release)
	wg.Wait()
	for _, f := range fails {
		t.Error(f)
	}
	time.Sleep(time.Second) // the server's side of the last closes
	if got := openFDs(t); got > fds+50 {
		t.Errorf("open files: %d before the flood, %d after it", fds, got)
	}
	if got := heapInuse(); got > heap+32<<20 {
		t.Errorf("heap in use: %d MiB before the flood, %d MiB after it", heap>>20, got>>20)
	}
}

// TestSecurityConnectionLimit: at most MaxConnections connections are served at once, and a
// connection that sends nothing (not even its TLS handshake) is closed after the handshake
// timeout, so a client that holds every slot frees them within it.
func TestSecurityConnectionLimit(t *testing.T) {
	const limit = 8
	s := startService(t, t.TempDir(), serviceOptions{maxConns: limit})
	admin := s.browser("limit admin")
	admin.c.CloseIdleConnections() // its connection would hold a slot
	time.Sleep(200 * time.Millisecond)
	var idle []net.Conn
	for range limit {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	time.Sleep(200 * time.Millisecond) // accepted
	start := time.Now()
	roots := x509.NewCertPool()
	roots.AddCert(s.pki.CA)
	probe, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", s.addr,
		&tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err == nil {
		probe.Close()
		t.Fatalf("a connection beyond the limit of %d was served", limit)
	}
	// The idle connections are closed by the server at the handshake timeout.
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(readHeaderTimeout + 10*time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("an idle connection: %v after %s, want EOF", err, time.Since(start).Round(time.Second))
		}
	}
	if d := time.Since(start); d > readHeaderTimeout+5*time.Second {
		t.Errorf("idle connections were held %s", d)
	}
	admin.get("/api/v1/status", http.StatusOK)
}

// TestSecurityWebAuthnTable: a certificate without a role cannot begin a key registration (so
// it cannot fill the table of begun WebAuthn ceremonies); an operator with a role who begins
// hundreds holds only a few entries; the administrator's confirmation still begins at once.
// A node certificate is no operator: no account page, no key registration, no entry.
func TestSecurityWebAuthnTable(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("table admin")
	nobody := s.browserAs("Role-less", operator.RoleNone, false)
	custodian := s.browserAs("Busy custodian", operator.RoleCustodian, true)
	begin := func(b *browser) int {
		resp, _ := b.script("/webauthn/register/begin", "application/x-www-form-urlencoded", url.Values{"name": {"k"}}.Encode(), nil)
		return resp.StatusCode
	}
	for i := range 300 {
		if code := begin(nobody); code != http.StatusForbidden {
			t.Fatalf("registration %d begun by a certificate without a role: %d", i, code)
		}
	}
	// A custodian's further key needs a fresh assertion; each assertion begin is an entry too.
	for i := range 300 {
		resp, body := custodian.script("/webauthn/assert/begin", "application/x-www-form-urlencoded",
			url.Values{"_path": {"/webauthn/register/begin"}}.Encode(), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("custodian's assertion %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// The administrator still confirms a dangerous action.
	admin.post("/operators/role", url.Values{"id": {custodian.id.ID}, "role": {"auditor"}}, http.StatusSeeOther)

	node := s.nodeCert("node-z")
	nc := s.client(&node)
	for _, path := range []string{"/account", "/"} {
		resp, err := nc.Get(s.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("node certificate at %s: %d", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, s.url("/webauthn/register/begin"), strings.NewReader("name=k"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(web.FetchHeader, "1")
	resp, err := nc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("node certificate begins a key registration: %d", resp.StatusCode)
	}
	ops, err := s.ops.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if strings.Contains(op.Subject, "node-z") {
			t.Errorf("a node certificate is in the operator list: %+v", op)
		}
	}
}

// nodeCert issues a node certificate of the service's management CA, as add-node does.
func (s *service) nodeCert(name string) tls.Certificate {
	s.t.Helper()
	cert, key, err := s.pki.IssueClient(pkix.Name{CommonName: name, Organization: []string{cluster.NodeOrganization}}, time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	return tlsCert(cert, key)
}

// firstAdminCert is the first administrator's certificate as the PKI directory holds it now.
func firstAdminCert(t *testing.T, s *service) tls.Certificate {
	t.Helper()
	der, err := os.ReadFile(s.pki.AdminP12Path())
	if err != nil {
		t.Fatal(err)
	}
	pw, err := os.ReadFile(s.pki.AdminPasswordPath())
	if err != nil {
		t.Fatal(err)
	}
	key, cert, _, err := pkcs12.DecodeChain(der, strings.TrimSpace(string(pw)))
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// registerWithCode registers a new security key with extra form fields (the recovery code).
func (b *browser) registerWithCode(k *softKey, code string) (int, string) {
	b.t.Helper()
	resp, body := b.script("/webauthn/register/begin", "application/x-www-form-urlencoded", url.Values{"name": {"after recovery"}, "recovery_code": {code}}.Encode(), nil)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, body
	}
	var o options
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		b.t.Fatal(err)
	}
	resp, body = b.script("/webauthn/register/finish?session="+url.QueryEscape(o.Session), "application/json", string(k.create(o, b.s.origin())), nil)
	return resp.StatusCode, body
}

// TestSecurityRecoveryCutsOffOldAdmin: after the first administrator's certificate was made anew
// and serve --recover-admin ran, the old certificate (same name, same operator) is revoked; the
// new one registers its first security key only with the one-time code printed on the console,
// which is good for that one registration.
func TestSecurityRecoveryCutsOffOldAdmin(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	old := s.browserWith(firstAdminCert(t, s), operator.RoleAdmin, true)
	old.get("/operators", http.StatusOK)
	if s.srv.RecoveryCode() != "" {
		t.Error("a recovery code without a recovery")
	}
	// The administrator lost certificate and key: admin.p12 is moved aside, a start makes a new
	// one, a start with --recover-admin recovers it.
	s.stop()
	for _, f := range []string{s.pki.AdminP12Path(), s.pki.AdminPasswordPath(), filepath.Join(s.pki.Dir, operator.AdminCertFile)} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	s = startService(t, s.dir, serviceOptions{})
	s.stop()
	s = startService(t, s.dir, serviceOptions{recover: true})
	code := s.srv.RecoveryCode()
	if len(code) < 16 {
		t.Fatalf("recovery code %q", code)
	}

	resp, err := s.client(&old.cert).Get(s.url("/account"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the replaced administrator certificate after the recovery: %d", resp.StatusCode)
	}
	if es := auditEvents(t, s, operator.AuditCertRevoked); len(es) != 1 || !strings.Contains(es[0].Message, old.id.Serial) {
		t.Errorf("revocation audit: %+v", es)
	}

	admin := s.browserWith(firstAdminCert(t, s), operator.RoleNone, false)
	if admin.id.ID != old.id.ID {
		t.Fatal("the new administrator certificate is another operator")
	}
	key := newSoftKey(t)
	if status, body := admin.registerWithCode(key, ""); status != http.StatusForbidden || !strings.Contains(body, web.CodeRecoveryCode) {
		t.Fatalf("first key after the recovery without the code: %d %s", status, body)
	}
	if status, body := admin.registerWithCode(key, "AAAAAAAAAAAAAAAA"); status != http.StatusForbidden {
		t.Fatalf("first key after the recovery with a wrong code: %d %s", status, body)
	}
	if status, body := admin.registerWithCode(key, strings.ToLower(code)); status != http.StatusOK {
		t.Fatalf("first key after the recovery with the code: %d %s", status, body)
	}
	if op, _ := s.ops.Get(admin.id.ID); op.RecoveryPending || len(op.Keys) != 1 {
		t.Errorf("after the registration: pending %v, keys %d", op.RecoveryPending, len(op.Keys))
	}
	s.stop()
	s = startService(t, s.dir, serviceOptions{})
	if s.srv.RecoveryCode() != "" {
		t.Error("a recovery code after the recovery was completed")
	}
}

// TestSecuritySmallerPoints: the page without a certificate names no path of the appliance; a
// redirect target a browser reads as another site is refused; 503 and 421 answers carry codes
// that say so.
func TestSecuritySmallerPoints(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	resp, err := s.client(nil).Get(s.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), s.dir) || strings.Contains(string(body), s.pki.Dir) {
		t.Errorf("the page without a certificate shows a path of the appliance: %d %s", resp.StatusCode, excerpt(string(body)))
	}

	admin := s.browser("smaller admin")
	for _, back := range []string{"/\t/evil.example", "/\\evil.example", "//evil.example"} {
		resp, _ := admin.postRaw("/sim/cards", url.Values{"back": {back}}, http.StatusSeeOther)
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("back=%q: Location %q", back, loc)
		}
	}

	if c := web.CodeOf(web.Problem{Status: http.StatusServiceUnavailable}); c != web.CodeUnavailable {
		t.Errorf("503: code %q", c)
	}
	if c := web.CodeOf(web.Problem{Status: http.StatusMisdirectedRequest}); c != web.CodeMisdirected {
		t.Errorf("421: code %q", c)
	}
	// A security key request at another name than the relying party's: 421 misdirected.
	req, _ := http.NewRequest(http.MethodPost, "https://"+s.addr+"/webauthn/assert/begin", strings.NewReader(url.Values{"_path": {"/operators/role"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(csrfHeader, admin.csrf)
	req.Header.Set(web.FetchHeader, "1")
	req.Header.Set("Origin", "https://"+s.addr)
	resp, got := admin.do(req)
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(got, `"code":"misdirected"`) {
		t.Errorf("security key at another host: %d %s", resp.StatusCode, got)
	}
}

// TestSecurityLiveStreamsPerOperator: one operator cannot hold more than a few live streams
// open; another operator still gets one, and a closed stream frees its place.
func TestSecurityLiveStreamsPerOperator(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	greedy := s.browserAs("greedy auditor", operator.RoleAuditor, false)
	other := s.browserAs("other auditor", operator.RoleAuditor, false)
	open := func(b *browser, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.url(path), nil)
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var streams []*http.Response
	for i := range maxStreamsPerOperator {
		path := "/events"
		if i%2 == 1 {
			path = "/api/v1/ceremony/events"
		}
		resp := open(greedy, path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", i, resp.StatusCode)
		}
		streams = append(streams, resp)
	}
	resp := open(greedy, "/events")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a stream beyond the limit: %d %s", resp.StatusCode, excerpt(string(body)))
	}
	if resp := open(other, "/events"); resp.StatusCode != http.StatusOK {
		t.Errorf("another operator's stream: %d", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	streams[0].Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := open(greedy, "/events")
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream did not free its place: %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, r := range streams[1:] {
		r.Body.Close()
	}
}

// TestSecurityCSRFTokenNotInURL: the upload forms carry the CSRF token in their body, not their
// address, and a token in the address is not accepted.
func TestSecurityCSRFTokenNotInURL(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("csrf admin")
	if err := s.hsm.LoadBackupKey(context.Background(), bytes.Repeat([]byte{9}, 32)); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"/hsm", "/cluster"} {
		body := admin.get(page, http.StatusOK)
		if strings.Contains(body, "csrf=") {
			t.Errorf("%s: a token in a form's address", page)
		}
		if !strings.Contains(body, `name="csrf"`) {
			t.Errorf("%s: no CSRF field", page)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, s.url("/hsm/restore?csrf="+url.QueryEscape(admin.csrf)), strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"backup\"; filename=\"b\"\r\n\r\nxx\r\n--x--\r\n"))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	resp, body := admin.do(req)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Errorf("a token in the URL: %d %s", resp.StatusCode, excerpt(body))
	}
}

// TestSecurityApprovalBoundToDetails (issue 20, point 8): an approval binds the request's
// details, not only its action: a "2 of 3" approval does not start "3 of 5", neither from the
// command line (a pending request approved on the account page) nor through the web form.
func TestSecurityApprovalBoundToDetails(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	cli := s.api(t, admin.cert)
	start := func(k, n int, header map[string]string) (int, []byte) {
		return cli.json("POST", "/api/v1/ceremony/start", api.StartRequest{Kind: ceremony.KindGenerate, K: k, N: n, Label: "vault"}, header)
	}

	// The command line: refused once, the request waits on the account page in words.
	code, body := start(2, 3, nil)
	if code != http.StatusForbidden || problemCode(t, body) != web.CodeApprovalRequired {
		t.Fatalf("start without an approval: %d %s", code, body)
	}
	request := mustFind(t, `Approval required: request ([A-Z2-7]{4}-[A-Z2-7]{4})`, string(body))
	if !strings.Contains(string(body), `start a key generation: 2 of 3, label \"vault\"`) {
		t.Errorf("the refusal does not say what is to be approved: %s", body)
	}
	page := admin.get("/account", http.StatusOK)
	if !strings.Contains(page, request) || !strings.Contains(page, "start a key generation: 2 of 3, label &#34;vault&#34;") {
		t.Fatalf("the account page does not show request %s in words: %s", request, excerpt(page))
	}
	tok, refusal := admin.approveRequest(request)
	if refusal != "" {
		t.Fatal(refusal)
	}
	if page := admin.get("/account", http.StatusOK); strings.Contains(page, request) {
		t.Error("an approved request is still listed as waiting")
	}
	// The approval of "2 of 3" used for "3 of 5": refused, saying both, and burnt.
	code, body = start(3, 5, map[string]string{operator.ApprovalHeader: tok})
	if code != http.StatusForbidden || problemCode(t, body) != web.CodeApprovalRequired ||
		!strings.Contains(string(body), "another request") || !strings.Contains(string(body), "2 of 3") || !strings.Contains(string(body), "3 of 5") {
		t.Fatalf("a 2-of-3 approval used for 3 of 5: %d %s", code, body)
	}
	if code, body := start(2, 3, map[string]string{operator.ApprovalHeader: tok}); code != http.StatusForbidden {
		t.Fatalf("an approval refused once is used again: %d %s", code, body)
	}
	if js, _ := s.mgr.Ceremonies(10); len(js) != 0 {
		t.Fatalf("a ceremony started: %+v", js)
	}
	// Approved for exactly "2 of 3", the same request starts.
	code, body = start(2, 3, nil)
	tok, refusal = admin.approveRequest(mustFind(t, `Approval required: request ([A-Z2-7]{4}-[A-Z2-7]{4})`, string(body)))
	if refusal != "" {
		t.Fatal(refusal)
	}
	if code, body := start(2, 3, map[string]string{operator.ApprovalHeader: tok}); code != http.StatusAccepted {
		t.Fatalf("the approved request: %d %s", code, body)
	}
	waitRunning(t, s)
	admin.post("/ceremony/cancel", nil, http.StatusSeeOther)
	waitEnded(t, s)

	// The web form: the page's confirmation of "2 of 3" sent with a "3 of 5" form.
	two := url.Values{"kind": {"generate"}, "quorum": {"custom"}, "k": {"2"}, "n": {"3"}, "label": {"vault"}}
	five := url.Values{"kind": {"generate"}, "quorum": {"custom"}, "k": {"3"}, "n": {"5"}, "label": {"vault"}}
	tok = admin.stepUp("/ceremonies", two)
	five.Set(stepUpField, tok)
	_, page = admin.postRaw("/ceremonies", five, http.StatusForbidden)
	if !strings.Contains(page, "another request") {
		t.Errorf("the web form's refusal: %s", excerpt(page))
	}
	// The same through the approval header of a command-line approval stated for 2 of 3.
	tok, refusal = admin.tryStepUp("", two, operator.ActionForKind(ceremony.KindGenerate))
	if refusal != "" {
		t.Fatal(refusal)
	}
	five.Del(stepUpField)
	req, _ := http.NewRequest(http.MethodPost, s.url("/ceremonies"), strings.NewReader(five.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(csrfHeader, admin.csrf)
	req.Header.Set(operator.ApprovalHeader, tok)
	if resp, body := admin.do(req); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another request") {
		t.Errorf("a 2-of-3 approval in the header of a 3-of-5 form: %d %s", resp.StatusCode, excerpt(body))
	}
	if js, _ := s.mgr.Ceremonies(10); len(js) != 1 {
		t.Fatalf("ceremonies: %+v", js)
	}

	// An upload form binds the options it puts before its file: a confirmation of a plain
	// restore does not make the HSM equal to the backup.
	tok = admin.stepUp("/hsm/restore", url.Values{})
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField(stepUpField, tok) // as the page script puts it: first
	mw.WriteField(csrfField, admin.csrf)
	mw.WriteField("make_equal", "1")
	fw, _ := mw.CreateFormFile("backup", "b.kqb")
	fw.Write([]byte("not read"))
	mw.Close()
	req, _ = http.NewRequest(http.MethodPost, s.url("/hsm/restore"), &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if resp, body := admin.do(req); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "another request") || !strings.Contains(body, "make equal") {
		t.Errorf("a plain restore's confirmation used with make-equal: %d %s", resp.StatusCode, excerpt(body))
	}
}

// TestSecurityRevokedNodeCertificate (issue 19 point 4): a cluster node's certificate is
// listed as such on the Operators page, is no operator, and once revoked there gets nothing
// from the cluster endpoints at once — not even with a challenge and proof it obtained before —
// and is listed in the management CA's CRL that other nodes load with --crl.
func TestSecurityRevokedNodeCertificate(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	cli := s.api(t, admin.cert)
	code, body := cli.json("POST", "/api/v1/cluster/nodes", cluster.NodeRequest{Name: "node-b"}, approval(t, admin, operator.ActionOperatorsManage, url.Values{"name": {"node-b"}}))
	var nb cluster.NodeBundle
	if code != http.StatusOK || json.Unmarshal(body, &nb) != nil {
		t.Fatalf("issue node: %d %s", code, body)
	}
	_, node, err := cluster.ParseJoin(cluster.JoinRequest{Peer: s.url(""), NodeP12: nb.P12, NodePassword: nb.Password})
	if err != nil {
		t.Fatal(err)
	}
	serial := operator.SerialHex(node.TLSCertificate().Leaf)
	ncli := s.api(t, node.TLSCertificate())
	mbk := make([]byte, 32)
	rand.Read(mbk)
	if err := s.hsm.LoadBackupKey(context.Background(), mbk); err != nil {
		t.Fatal(err)
	}
	clear(mbk)

	page := admin.get("/operators", http.StatusOK)
	if !strings.Contains(page, `data-testid="node-cert-`+serial+`"`) {
		t.Errorf("the Operators page does not mark %s as a node certificate: %s", serial, excerpt(page))
	}
	if ops, _ := s.srv.auth.Operators().List(); len(ops) != 2 { // the first administrator and Alice
		t.Errorf("the node certificate became an operator: %+v", ops)
	}
	code, body = ncli.json("GET", cluster.ChallengePath, nil, nil)
	var ch cluster.Challenge
	if code != http.StatusOK || json.Unmarshal(body, &ch) != nil {
		t.Fatalf("challenge before the revocation: %d %s", code, body)
	}
	proof, err := cluster.Prove(context.Background(), s.hsm, ch, node.TLSCertificate().Leaf)
	if err != nil {
		t.Fatal(err)
	}

	admin.post("/operators/revoke", url.Values{"serial": {serial}}, http.StatusSeeOther)
	// The same client (its connection reused): refused at once, for the challenge and the state.
	if code, body := ncli.json("GET", cluster.ChallengePath, nil, nil); code != http.StatusForbidden || problemCode(t, body) != web.CodeRevoked {
		t.Errorf("challenge of a revoked node: %d %s", code, body)
	}
	code, data, header := ncli.call("GET", cluster.StatePath, "", nil, map[string]string{cluster.ChallengeHeader: ch.Challenge, cluster.ProofHeader: proof})
	if code != http.StatusForbidden || problemCode(t, data) != web.CodeRevoked || header.Get(cluster.KeyIDHeader) != "" {
		t.Errorf("state to a revoked node with a valid proof: %d %s", code, data)
	}
	if es := auditEvents(t, s, cluster.AuditClusterStateSent); len(es) != 0 {
		t.Errorf("state sent to a revoked node: %+v", es)
	}
	if es := auditEvents(t, s, operator.AuditCertRevoked); len(es) != 1 || !strings.Contains(es[0].Message, "cluster node certificate serial "+serial) {
		t.Errorf("revocation audit: %+v", es)
	}
	resp, err := s.client(nil).Get(s.url("/crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	crlPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	list, err := operator.ParseCRL(crlPEM)
	if err != nil || list.CheckSignatureFrom(s.pki.CA) != nil || len(list.RevokedCertificateEntries) != 1 ||
		operator.SerialHex(&x509.Certificate{SerialNumber: list.RevokedCertificateEntries[0].SerialNumber}) != serial {
		t.Errorf("the management CA's CRL does not list the node: %v %+v", err, list)
	}
}

// TestSecurityCSRFTokenRotates (issue 20 point 9): the CSRF token of a certificate is not
// forever: it changes every csrfPeriod under a key of that period, is accepted in its own period
// and the next, and refused after; a refused old token says the page must be reloaded.
func TestSecurityCSRFTokenRotates(t *testing.T) {
	g := newCSRFGuard([]byte("0123456789abcdef0123456789abcdef"))
	ca := newTestCA(t)
	cert, other := ca.Leaf, newTestCA(t).Leaf
	period := int64(csrfPeriod / time.Second)
	t0 := time.Unix((time.Now().Unix()/period)*period+1, 0) // the start of a period
	tok := g.token(cert, t0)
	for _, c := range []struct {
		name string
		at   time.Time
		want bool
	}{
		{"its own period", t0, true},
		{"the end of its period", t0.Add(csrfPeriod - 2*time.Second), true},
		{"the next period", t0.Add(csrfPeriod), true},
		{"two periods on", t0.Add(2 * csrfPeriod), false},
		{"a period before it was made", t0.Add(-csrfPeriod), false},
	} {
		if got := g.valid(tok, cert, c.at); got != c.want {
			t.Errorf("%s: valid %v, want %v", c.name, got, c.want)
		}
	}
	if g.token(cert, t0.Add(csrfPeriod)) == tok {
		t.Error("the token did not change with the period")
	}
	if g.token(other, t0) == tok || g.valid(tok, other, t0) {
		t.Error("one certificate's token is another's")
	}
	if newCSRFGuard([]byte("another key, another appliance..")).valid(tok, cert, t0) {
		t.Error("a token of another key accepted")
	}

	// Through the server: the page carries the current token; one of two periods ago is
	// refused with the advice to reload, one of the period before is still accepted.
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	now := time.Now()
	if admin.csrf != s.srv.csrf.token(admin.cert.Leaf, now) && admin.csrf != s.srv.csrf.token(admin.cert.Leaf, now.Add(-csrfPeriod)) {
		t.Fatal("the page does not carry the current token")
	}
	_, body := admin.postRaw("/sim/cards", url.Values{csrfField: {s.srv.csrf.token(admin.cert.Leaf, now.Add(-2*csrfPeriod))}}, http.StatusForbidden)
	if !strings.Contains(body, "expired") || !strings.Contains(body, "reload the page") {
		t.Errorf("an expired token's refusal: %s", excerpt(body))
	}
	admin.postRaw("/sim/cards", url.Values{csrfField: {s.srv.csrf.token(admin.cert.Leaf, now.Add(-csrfPeriod))}}, http.StatusSeeOther)
}

// attestationCA is a security key vendor's attestation root and an attestation certificate
// under it for a model (packed attestation's certificate requirements, WebAuthn §8.2.1).
func attestationCA(t *testing.T, cn string, aaguid []byte) (root *x509.Certificate, leafDER []byte, leafKey *ecdsa.PrivateKey) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(rootDER)
	leafKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ext, _ := asn1.Marshal(aaguid)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject:   pkix.Name{Country: []string{"SE"}, Organization: []string{"Test Vendor"}, OrganizationalUnit: []string{"Authenticator Attestation"}, CommonName: cn + " key"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 45724, 1, 1, 4}, Value: ext}}}
	leafDER, err = x509.CreateCertificate(rand.Reader, leafTmpl, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return root, leafDER, leafKey
}

// tryRegister registers k for b's operator and returns the finish's status and body.
func (b *browser) tryRegister(k *softKey, name string) (int, string) {
	b.t.Helper()
	resp, body := b.script("/webauthn/register/begin", "application/x-www-form-urlencoded", url.Values{"name": {name}}.Encode(), nil)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, body
	}
	var o options
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		b.t.Fatal(err)
	}
	resp, body = b.script("/webauthn/register/finish?session="+url.QueryEscape(o.Session), "application/json", string(k.create(o, b.s.origin())), nil)
	return resp.StatusCode, body
}

// TestSecurityAttestationPolicy (issue 20 point 8): registration can be restricted to allowed
// authenticator models (AAGUIDs) proven by a vendor's attestation root, or to attestation
// formats. The default requires none, and the account page says so. A key that sends no
// attestation, attests itself, is of another model, chains to another root or whose packed
// attestation signature does not verify is refused with a clear message, and nothing is
// registered.
func TestSecurityAttestationPolicy(t *testing.T) {
	allowed := []byte{0xcb, 0x69, 0x48, 0x1e, 0x8f, 0xf7, 0x40, 0x39, 0x93, 0xec, 0x0a, 0x27, 0x29, 0xa1, 0x54, 0xa8}
	other := []byte{0xee, 0x88, 0x28, 0x79, 0x72, 0x1c, 0x49, 0x13, 0x97, 0x75, 0x3d, 0xfc, 0xce, 0x97, 0x07, 0x2a}
	vendor, vendorLeaf, vendorKey := attestationCA(t, "Test Vendor Attestation Root", allowed)
	_, otherLeaf, otherKey := attestationCA(t, "Other Vendor Attestation Root", allowed)
	_, vendorOtherModel, vendorOtherKey := attestationCA(t, "Test Vendor Attestation Root 2", other)

	// The default: no attestation required, and the page says so.
	s := startService(t, t.TempDir(), serviceOptions{})
	alice := s.browserAs("Alice Admin", operator.RoleAdmin, false)
	if page := alice.get("/account", http.StatusOK); !strings.Contains(page, "No attestation is required") {
		t.Errorf("the account page does not state the default policy: %s", excerpt(page))
	}
	if code, body := alice.tryRegister(newSoftKey(t), "plain"); code != http.StatusOK {
		t.Fatalf("a key without attestation under the default policy: %d %s", code, body)
	}
	s.stop()

	policy, err := operator.ParseAAGUIDs("CB69481E-8FF7-4039-93EC-0A2729A154A8")
	if err != nil {
		t.Fatal(err)
	}
	s = startService(t, t.TempDir(), serviceOptions{attest: operator.AttestationPolicy{AAGUIDs: policy, Roots: []*x509.Certificate{vendor}}})
	bob := s.browserAs("Bob Admin", operator.RoleAdmin, false)
	if page := bob.get("/account", http.StatusOK); !strings.Contains(page, "only these authenticator models (AAGUID): cb69481e-8ff7-4039-93ec-0a2729a154a8") ||
		!strings.Contains(page, "Test Vendor Attestation Root") {
		t.Errorf("the account page does not state the policy: %s", excerpt(page))
	}
	key := func(attest string, aaguid []byte, leaf []byte, lk *ecdsa.PrivateKey) *softKey {
		k := newSoftKey(t)
		k.attest, k.aaguid, k.attKey = attest, aaguid, lk
		if leaf != nil {
			k.x5c = [][]byte{leaf}
		}
		return k
	}
	badSig := key("basic", allowed, vendorLeaf, vendorKey)
	badSig.badSig = true
	for _, c := range []struct {
		name string
		k    *softKey
		says string
	}{
		{"no attestation", key("", nil, nil, nil), "sent no attestation"},
		{"no attestation, an allowed AAGUID claimed", key("", allowed, nil, nil), "sent no attestation"},
		{"self attestation of the allowed model", key("self", allowed, nil, nil), "attests itself"},
		{"another vendor's root", key("basic", allowed, otherLeaf, otherKey), "does not chain to an allowed vendor root"},
		{"another model of the vendor", key("basic", other, vendorOtherModel, vendorOtherKey), "its model is not one of the allowed"},
		{"a packed signature that does not verify", badSig, "Signature validation error"},
	} {
		code, body := bob.tryRegister(c.k, c.name)
		if code != http.StatusForbidden && code != http.StatusBadRequest || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s", c.name, code, body)
		}
	}
	if rec, _ := s.ops.Get(bob.id.ID); len(rec.Keys) != 0 {
		t.Fatalf("refused keys were registered: %+v", rec.Keys)
	}
	good := key("basic", allowed, vendorLeaf, vendorKey)
	if code, body := bob.tryRegister(good, "allowed model"); code != http.StatusOK {
		t.Fatalf("a key of the allowed model with the vendor's attestation: %d %s", code, body)
	}
	if rec, _ := s.ops.Get(bob.id.ID); len(rec.Keys) != 1 || rec.Keys[0].Credential.AttestationFormat != "packed" {
		t.Fatalf("the allowed key: %+v", rec.Keys)
	}
	s.stop()

	// Formats only: a packed self attestation passes, "none" does not.
	s = startService(t, t.TempDir(), serviceOptions{attest: operator.AttestationPolicy{Formats: []string{"packed"}}})
	carol := s.browserAs("Carol Admin", operator.RoleAdmin, false)
	if code, body := carol.tryRegister(key("", nil, nil, nil), "none"); code != http.StatusForbidden || !strings.Contains(body, "attestation format is not one of packed") {
		t.Errorf("format none under a packed-only policy: %d %s", code, body)
	}
	if code, body := carol.tryRegister(key("self", other, nil, nil), "self"); code != http.StatusOK {
		t.Errorf("packed self attestation under a packed-only policy: %d %s", code, body)
	}
}
