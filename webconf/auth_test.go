package webconf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// auditEvents are the audit entries with event key ev.
func auditEvents(t *testing.T, s *service, ev string) []ceremony.AuditEntry {
	t.Helper()
	all, err := s.mgr.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	var out []ceremony.AuditEntry
	for _, e := range all {
		if e.Event == ev {
			out = append(out, e)
		}
	}
	return out
}

func ceremonyCount(t *testing.T, s *service) int {
	t.Helper()
	js, err := s.mgr.Ceremonies(0)
	if err != nil {
		t.Fatal(err)
	}
	return len(js)
}

// TestRoles: what each role may do, checked through the pages.
func TestRoles(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	auditor := s.browserAs("Ada Auditor", operator.RoleAuditor, true)
	custodian := s.browserAs("Carl Custodian", operator.RoleCustodian, true)
	nobody := s.browserAs("Nora Nobody", operator.RoleNone, false) // without a role it cannot register one

	t.Run("auditor cannot start a ceremony", func(t *testing.T) {
		for _, form := range []url.Values{
			{"kind": {"generate"}, "quorum": {"2-3"}},
			{"kind": {"load"}},
			{"kind": {"change-pin"}, "slot": {"share"}},
		} {
			_, body := auditor.post("/ceremonies", form, http.StatusForbidden)
			if !strings.Contains(body, "Not allowed for your role") || !strings.Contains(body, "Your role is auditor") {
				t.Errorf("auditor start %v: %s", form, excerpt(body))
			}
		}
		auditor.post("/reset", url.Values{"confirm": {web.ResetPhrase}}, http.StatusForbidden)
		auditor.post("/ceremony/resume", nil, http.StatusForbidden)
		auditor.get("/hsm/backup", http.StatusForbidden)
		auditor.get("/operators", http.StatusForbidden)
		if n := ceremonyCount(t, s); n != 0 {
			t.Fatalf("an auditor started %d ceremonies", n)
		}
		// What an auditor is for.
		auditor.get("/audit", http.StatusOK)
		auditor.get("/audit/export", http.StatusOK)
		if page := auditor.get("/", http.StatusOK); strings.Contains(page, `href="/operators"`) {
			t.Error("the menu offers the Operators page to an auditor")
		}
		// Even a command-line approval cannot be made for what the role does not allow.
		if _, refusal := auditor.tryStepUp("", nil, operator.ActionForKind(ceremony.KindGenerate)); !strings.Contains(refusal, "Not allowed for your role") {
			t.Errorf("auditor approval: %s", refusal)
		}
	})

	t.Run("custodian uses the card tools, nothing more", func(t *testing.T) {
		custodian.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}}, http.StatusForbidden)
		custodian.get("/audit", http.StatusForbidden)
		custodian.post("/ceremonies", url.Values{"kind": {"change-pin"}, "slot": {"share"}}, http.StatusSeeOther)
		j := waitRunning(t, s)
		if j.Kind != ceremony.KindChangePIN || j.Operator != "CN=Carl Custodian,O=Keyquorum test" {
			t.Errorf("custodian's ceremony: %s by %s", j.Kind, j.Operator)
		}
		custodian.post("/ceremony/cancel", nil, http.StatusSeeOther)
		waitEnded(t, s)
	})

	t.Run("no role", func(t *testing.T) {
		for _, p := range []string{"/", "/setup", "/hsm", "/audit", "/events"} {
			body := nobody.get(p, http.StatusForbidden)
			if !strings.Contains(body, "No role yet") || !strings.Contains(body, "CN=Nora Nobody") || !strings.Contains(body, nobody.id.ID) {
				t.Errorf("GET %s without a role: %s", p, excerpt(body))
			}
		}
		nobody.post("/ceremonies", url.Values{"kind": {"load"}}, http.StatusForbidden)
		if page := nobody.get("/account", http.StatusOK); !strings.Contains(page, `data-testid="account-no-role"`) {
			t.Error("the account page does not say that there is no role yet")
		}
	})
}

// waitRunning waits for a ceremony to run and returns its journal.
func waitRunning(t *testing.T, s *service) ceremony.Journal {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		js, err := s.mgr.Ceremonies(1)
		if err != nil {
			t.Fatal(err)
		}
		if len(js) == 1 {
			return js[0]
		}
	}
	t.Fatal("no ceremony started")
	return ceremony.Journal{}
}

// TestFreshAssertion: a dangerous action needs a token of a fresh assertion, made by the same
// operator for the same action, used once.
func TestFreshAssertion(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	other := s.browser("Bob Admin")
	load := url.Values{"kind": {"load"}}

	refused := func(b *browser, form url.Values, says string) {
		t.Helper()
		_, body := b.postRaw("/ceremonies", form, http.StatusForbidden)
		if !strings.Contains(body, "Security key confirmation required") || !strings.Contains(body, says) {
			t.Errorf("%v: %s", form, excerpt(body))
		}
	}
	refused(admin, url.Values{"kind": {"load"}}, "no security key confirmation")
	refused(admin, url.Values{"kind": {"load"}, stepUpField: {"not-a-token"}}, "unknown, used already or expired")
	tok := admin.stepUp("/ceremonies", url.Values{"kind": {"change-pin"}, "slot": {"share"}})
	refused(admin, url.Values{"kind": {"load"}, stepUpField: {tok}}, "made for another action")
	tok = other.stepUp("/ceremonies", url.Values{"kind": {"load"}})
	refused(admin, url.Values{"kind": {"load"}, stepUpField: {tok}}, "made by another operator")
	if n := ceremonyCount(t, s); n != 0 {
		t.Fatalf("%d ceremonies started without a valid confirmation", n)
	}

	tok = admin.stepUp("/ceremonies", url.Values{"kind": {"load"}})
	admin.postRaw("/ceremonies", url.Values{"kind": {"load"}, stepUpField: {tok}}, http.StatusSeeOther)
	waitRunning(t, s)
	admin.post("/ceremony/cancel", nil, http.StatusSeeOther) // steering needs no assertion
	waitEnded(t, s)
	refused(admin, url.Values{"kind": {"load"}, stepUpField: {tok}}, "used already")

	// An administrator without a security key is told to register one first.
	keyless := s.browserAs("Kim Keyless", operator.RoleAdmin, false)
	_, body := keyless.postRaw("/ceremonies", url.Values{"kind": {"load"}}, http.StatusForbidden)
	if !strings.Contains(body, "Register a security key first") || !strings.Contains(body, "https://localhost") {
		t.Errorf("admin without a key: %s", excerpt(body))
	}
	if page := keyless.get("/", http.StatusOK); !strings.Contains(page, `data-testid="register-key-banner"`) {
		t.Error("no page tells an administrator without a key to register one")
	}

	// A key that does not verify its user (no PIN, no fingerprint) earns nothing.
	admin.key.noUV = true
	if _, refusal := admin.tryStepUp("/ceremonies", load, ""); !strings.Contains(refusal, "Security key not accepted") {
		t.Errorf("assertion without user verification: %s", refusal)
	}
	admin.key.noUV = false
	// A key whose signature counter went back (a clone) earns nothing, and is audited.
	admin.key.counter = 0
	if _, refusal := admin.tryStepUp("/ceremonies", load, ""); !strings.Contains(refusal, "cloned") {
		t.Errorf("assertion of a cloned key: %s", refusal)
	}
	if len(auditEvents(t, s, operator.AuditOperatorKeyClone)) != 1 {
		t.Error("the clone warning is not in the audit log")
	}
}

// TestCommandLineApproval: the command line's dangerous action carries an approval made on the
// account page, in the approval header.
func TestCommandLineApproval(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	if page := admin.get("/account", http.StatusOK); !strings.Contains(page, `data-testid="no-requests"`) || !strings.Contains(page, "Command-line requests waiting for your approval") {
		t.Fatal("the account page offers no command-line approval")
	}
	tok, refusal := admin.tryStepUp("", url.Values{"kind": {"load"}}, operator.ActionForKind(ceremony.KindLoad))
	if refusal != "" {
		t.Fatal(refusal)
	}
	entries := auditEvents(t, s, operator.AuditOperatorApproval)
	if len(entries) != 1 || !strings.Contains(entries[0].Message, "start a key load") || entries[0].Operator != "CN=Alice Admin,O=Keyquorum test" {
		t.Fatalf("approval audit: %+v", entries)
	}
	if strings.Contains(entries[0].Message, tok) {
		t.Fatal("the approval token is in the audit log")
	}
	// The CLI: another client with another certificate of the same operator (a renewal).
	renewed := s.operatorCert("Alice Admin")
	cli := s.client(&renewed)
	send := func(tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, s.url("/ceremonies"), strings.NewReader(url.Values{"kind": {"load"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set(csrfHeader, s.srv.csrf.token(renewed.Leaf, time.Now()))
		req.Header.Set(web.FetchHeader, "1")
		if tok != "" {
			req.Header.Set(operator.ApprovalHeader, tok)
		}
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := send(""); code != http.StatusForbidden || !strings.Contains(body, "approval made on your account page") {
		t.Errorf("CLI without an approval: %d %s", code, body)
	}
	if code, body := send(tok); code != http.StatusSeeOther {
		t.Fatalf("CLI with the approval: %d %s", code, body)
	}
	waitRunning(t, s)
	admin.post("/ceremony/cancel", nil, http.StatusSeeOther)
	waitEnded(t, s)
	if code, _ := send(tok); code != http.StatusForbidden {
		t.Errorf("an approval used twice: %d", code)
	}
}

// TestRevokedCertificate: an administrator issues an operator certificate (PKCS#12 with a
// one-time password, one download), then revokes it: it is refused on the very next request,
// over the same connection, listed in the CRL, and still after a restart.
func TestRevokedCertificate(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	_, page := admin.post("/operators/issue", url.Values{"cn": {"Carol Custodian"}, "email": {"carol@example.org"}, "role": {"custodian"}}, http.StatusOK)
	password := mustFind(t, `data-testid="issued-password">([^<]+)<`, page)
	serial := mustFind(t, `data-testid="issued-serial">([^<]+)<`, page)
	download := mustFind(t, `href="(/operators/issued/[^"]+)"`, page)
	p12 := admin.get(download, http.StatusOK)
	if body := admin.get(download, http.StatusGone); !strings.Contains(body, "once") {
		t.Errorf("second download: %s", excerpt(body))
	}
	key, cert, _, err := pkcs12.DecodeChain([]byte(p12), password)
	if err != nil {
		t.Fatalf("open the issued PKCS#12 with its password: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.pki.Dir, "Carol Custodian.p12")); err == nil {
		t.Error("the issued file was written to disk")
	}
	if cert.EmailAddresses[0] != "carol@example.org" || operator.SerialHex(cert) != serial {
		t.Errorf("issued certificate: %v %s", cert.EmailAddresses, operator.SerialHex(cert))
	}
	carol := s.browserWith(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, operator.RoleNone, false)
	if page := carol.get("/account", http.StatusOK); !strings.Contains(page, "custodian") || !strings.Contains(page, "carol@example.org") {
		t.Errorf("the issued certificate's account: %s", excerpt(page))
	}
	carol.get("/cards", http.StatusOK)
	if len(auditEvents(t, s, operator.AuditCertIssued)) != 1 {
		t.Error("the issuance is not in the audit log")
	}

	// Its own certificate an administrator cannot revoke.
	admin.post("/operators/revoke", url.Values{"serial": {admin.id.Serial}}, http.StatusConflict)
	admin.post("/operators/revoke", url.Values{"serial": {serial}}, http.StatusSeeOther)
	body := carol.get("/cards", http.StatusForbidden) // the same client: the connection may be reused
	if !strings.Contains(body, "Certificate revoked") || !strings.Contains(body, serial) {
		t.Errorf("revoked certificate: %s", excerpt(body))
	}
	entries := auditEvents(t, s, operator.AuditCertRevoked)
	if len(entries) != 1 || !strings.Contains(entries[0].Message, serial) || entries[0].Operator != "CN=Alice Admin,O=Keyquorum test" {
		t.Errorf("revocation audit: %+v", entries)
	}

	// The CRL lists it, signed by the management CA.
	resp, err := s.client(nil).Get(s.url("/crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	crlPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	list, err := operator.ParseCRL(crlPEM)
	if err != nil || list.CheckSignatureFrom(s.pki.CA) != nil || len(list.RevokedCertificateEntries) != 1 ||
		operator.SerialHex(&x509.Certificate{SerialNumber: list.RevokedCertificateEntries[0].SerialNumber}) != serial {
		t.Errorf("crl: %v %+v", err, list)
	}

	s.stop()
	s = startService(t, s.dir, serviceOptions{})
	carol = &browser{t: t, s: s, c: s.client(&carol.cert)}
	if body := carol.get("/account", http.StatusForbidden); !strings.Contains(body, "Certificate revoked") {
		t.Errorf("revoked certificate after a restart: %s", excerpt(body))
	}
}

// TestUntrustedCARefusedAtTLS: a certificate of a CA that is neither the management CA nor in
// the bundle never gets an HTTP answer: the handshake fails.
func TestUntrustedCARefusedAtTLS(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	_, stranger := selfCA(t, "Mallory")
	roots := x509.NewCertPool()
	roots.AddCert(s.pki.CA)
	// Sent whatever CAs the server names as acceptable, as an attacker would.
	send := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger, nil }
	conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: roots, ServerName: "localhost", GetClientCertificate: send, MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3: the server's verdict on the client certificate arrives with the first read.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
		if err == nil {
			_, err = conn.Read(make([]byte, 1))
		}
		conn.Close()
	}
	var op *net.OpError
	if !errors.As(err, &op) || !strings.Contains(err.Error(), "remote error: tls: unknown certificate authority") {
		t.Fatalf("certificate of an unknown CA: %v (want the server's TLS alert: unknown certificate authority)", err)
	}
	t.Logf("refused at the TLS layer: %v", err)
}

// TestRoleChangesAudited: a role change is made with a fresh assertion and written to the
// audit log; the last administrator keeps the role.
func TestRoleChangesAudited(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	// The first start made the administrator's certificate an administrator, audited.
	boot := auditEvents(t, s, operator.AuditOperatorRole)
	if len(boot) != 1 || !strings.Contains(boot[0].Message, "CN=Keyquorum administrator,O=Keyquorum given the role admin") {
		t.Fatalf("bootstrap audit: %+v", boot)
	}
	admin := s.browser("Alice Admin")
	bob := s.browserAs("Bob Newcomer", operator.RoleNone, false)
	page := admin.get("/operators", http.StatusOK)
	if !strings.Contains(page, bob.id.ID) || !strings.Contains(page, "CN=Bob Newcomer") {
		t.Fatal("a certificate seen once is not on the Operators page")
	}
	admin.postRaw("/operators/role", url.Values{"id": {bob.id.ID}, "role": {"auditor"}}, http.StatusForbidden) // no assertion
	admin.post("/operators/role", url.Values{"id": {bob.id.ID}, "role": {"auditor"}}, http.StatusSeeOther)
	bob.get("/audit", http.StatusOK)
	admin.post("/operators/role", url.Values{"id": {bob.id.ID}, "role": {"custodian"}}, http.StatusSeeOther)
	bob.get("/audit", http.StatusForbidden)
	admin.post("/operators/role", url.Values{"id": {bob.id.ID}, "role": {"nonsense"}}, http.StatusBadRequest)

	entries := auditEvents(t, s, operator.AuditOperatorRole)[1:]
	if len(entries) != 2 {
		t.Fatalf("role change entries: %+v", entries)
	}
	for i, want := range []string{"from none to auditor", "from auditor to custodian"} {
		e := entries[i]
		if e.Operator != "CN=Alice Admin,O=Keyquorum test" || !strings.Contains(e.Message, "CN=Bob Newcomer") || !strings.Contains(e.Message, want) || e.Ceremony != 0 {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	if _, err := s.mgr.VerifyAudit(); err != nil {
		t.Fatal(err)
	}

	// The administrators demote each other until one is left; that one keeps the role.
	first := operator.IdentityOf(mustReadCert(t, filepath.Join(s.pki.Dir, operator.AdminCertFile)), s.pki.CA)
	admin.post("/operators/role", url.Values{"id": {first.ID}, "role": {"none"}}, http.StatusSeeOther)
	_, body := admin.post("/operators/role", url.Values{"id": {admin.id.ID}, "role": {"auditor"}}, http.StatusConflict)
	if !strings.Contains(body, "last administrator") {
		t.Errorf("demoting the last administrator: %s", excerpt(body))
	}
	if n := len(auditEvents(t, s, operator.AuditOperatorRole)); n != 4 {
		t.Errorf("%d role entries, want 4 (bootstrap, two changes, one demotion)", n)
	}

	// Registrations are audited too, and a second key needs the first.
	if n := len(auditEvents(t, s, operator.AuditOperatorKeyAdded)); n != 1 {
		t.Errorf("%d key registrations audited, want 1", n)
	}
	resp, _ := admin.script("/webauthn/register/begin", "application/x-www-form-urlencoded", "name=second", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("second key without an assertion: %d", resp.StatusCode)
	}
	admin.registerKey(newSoftKey(t), "second")
	rec, _ := s.ops.Get(admin.id.ID)
	if len(rec.Keys) != 2 || len(auditEvents(t, s, operator.AuditOperatorKeyAdded)) != 2 {
		t.Errorf("after a second registration: %d keys", len(rec.Keys))
	}
}

func mustReadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := operator.ParseCertPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWebAuthnWrongHost: security keys are bound to the relying party ID; a page opened at
// another name says where to go.
func TestWebAuthnWrongHost(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	_, port, _ := net.SplitHostPort(s.addr)
	req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+port+"/account", nil)
	resp, body := admin.do(req)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-testid="account-wrong-host"`) || !strings.Contains(body, "https://localhost:"+port) {
		t.Errorf("account page at an IP address: %d %s", resp.StatusCode, excerpt(body))
	}
	req, _ = http.NewRequest(http.MethodPost, "https://127.0.0.1:"+port+"/webauthn/assert/begin", strings.NewReader("_path=%2Fceremonies&kind=load"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(csrfHeader, admin.csrf)
	req.Header.Set(web.FetchHeader, "1")
	resp, body = admin.do(req)
	var p map[string]string
	json.Unmarshal([]byte(body), &p)
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(p["title"], "https://localhost:"+port) || !strings.Contains(p["todo"], "--host") {
		t.Errorf("assertion at an IP address: %d %s", resp.StatusCode, body)
	}
}

// bundleCRL signs a CRL of ca listing serials.
func bundleCRL(t *testing.T, ca *x509.Certificate, key *ecdsa.PrivateKey, next time.Time, serials ...*big.Int) []byte {
	t.Helper()
	l := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: next}
	for _, s := range serials {
		l.RevokedCertificateEntries = append(l.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, l, ca, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// corpCA is a bundle CA with its key, and certificates it signs.
type corpCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCorpCA(t *testing.T, cn string) corpCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return corpCA{cert: c, key: key}
}

// issue makes a PIV-like certificate: subject, UPN and e-mail in the subject alternative name.
func (ca corpCA) issue(t *testing.T, serial int64, cn, upn string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"Corp"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if upn != "" {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: sanWithUPN(upn, strings.ToLower(strings.ReplaceAll(cn, " ", "."))+"@corp.example")}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return tlsCert(c, key)
}

// sanWithUPN is a subjectAltName with a UPN otherName and an rfc822Name.
func sanWithUPN(upn, email string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}) // the Microsoft UPN otherName
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(upn)) })
			})
		})
		b.AddASN1(cbasn1.Tag(1).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(email)) })
	})
	return b.BytesOrPanic()
}

// TestBundleCRL: certificates of a bundle CA (a corporate PIV CA) carry their UPN into the
// operator's name and are checked against the configured CRL on every request; an unusable
// CRL refuses the CA's certificates, and a replaced file is read again.
func TestBundleCRL(t *testing.T) {
	dir := t.TempDir()
	corp := newCorpCA(t, "Corp PIV CA")
	alice := corp.issue(t, 10, "Alice Piv", "alice@corp.example")
	mallory := corp.issue(t, 11, "Mallory Piv", "")
	crlPath := filepath.Join(dir, "corp.crl")
	os.WriteFile(crlPath, bundleCRL(t, corp.cert, corp.key, time.Now().Add(24*time.Hour), big.NewInt(11)), 0o644)
	s := startService(t, dir, serviceOptions{bundle: []*x509.Certificate{corp.cert}, crls: []string{crlPath}})

	a := s.browserWith(alice, operator.RoleCustodian, false)
	if a.id.UPN != "alice@corp.example" || a.id.Name() != "CN=Alice Piv,O=Corp (alice@corp.example)" || a.id.Management {
		t.Errorf("identity of a PIV certificate: %+v / %q", a.id, a.id.Name())
	}
	if page := a.get("/account", http.StatusOK); !strings.Contains(page, `data-testid="account-upn">alice@corp.example<`) {
		t.Error("the account page does not show the UPN")
	}
	m := &browser{t: t, s: s, c: s.client(&mallory)}
	if body := m.get("/account", http.StatusForbidden); !strings.Contains(body, "Certificate revoked") || !strings.Contains(body, "Corp PIV CA") {
		t.Errorf("certificate on the CRL: %s", excerpt(body))
	}

	// The CRL check itself: a replaced file is read again; an out-of-date CRL refuses all.
	set, err := operator.LoadCRLs([]string{crlPath}, []*x509.Certificate{corp.cert}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := set.Check(mallory.Leaf, now); !errors.Is(err, operator.ErrCertRevoked) {
		t.Errorf("revoked: %v", err)
	}
	if err := set.Check(alice.Leaf, now); err != nil {
		t.Errorf("not revoked: %v", err)
	}
	os.WriteFile(crlPath, bundleCRL(t, corp.cert, corp.key, time.Now().Add(24*time.Hour), big.NewInt(10)), 0o644)
	os.Chtimes(crlPath, now.Add(time.Minute), now.Add(time.Minute))
	now = now.Add(operator.CRLRecheck)
	if err := set.Check(alice.Leaf, now); !errors.Is(err, operator.ErrCertRevoked) {
		t.Errorf("after the CRL was replaced, alice: %v", err)
	}
	if err := set.Check(mallory.Leaf, now); err != nil {
		t.Errorf("after the CRL was replaced, mallory: %v", err)
	}
	var ce *operator.CRLError
	if err := set.Check(mallory.Leaf, now.Add(48*time.Hour)); !errors.As(err, &ce) || !strings.Contains(ce.Problem, "out of date") {
		t.Errorf("out-of-date CRL: %v", err)
	}
	os.WriteFile(crlPath, []byte("garbage"), 0o644)
	os.Chtimes(crlPath, now.Add(2*time.Minute), now.Add(2*time.Minute))
	if err := set.Check(mallory.Leaf, now.Add(48*time.Hour+operator.CRLRecheck)); !errors.As(err, &ce) || !strings.Contains(ce.Problem, "parse crl") {
		t.Errorf("unreadable CRL: %v", err)
	}
	// A certificate of another CA is not its business.
	if err := set.Check(s.operatorCert("x").Leaf, now); err != nil {
		t.Errorf("management certificate checked against a bundle CRL: %v", err)
	}

	// A CRL signed by a CA WebConf does not trust is refused at start.
	other := newCorpCA(t, "Other CA")
	otherPath := filepath.Join(dir, "other.crl")
	os.WriteFile(otherPath, bundleCRL(t, other.cert, other.key, time.Now().Add(time.Hour)), 0o644)
	if _, err := operator.LoadCRLs([]string{otherPath}, []*x509.Certificate{corp.cert}, nil, time.Now()); !errors.As(err, &ce) || !strings.Contains(ce.Problem, "not signed") {
		t.Errorf("CRL of an untrusted CA: %v", err)
	}
}

// TestBackupRestoreAudited: downloads, restores and refused restores are in the audit log.
func TestBackupRestoreAudited(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	if err := s.hsm.LoadBackupKey(t.Context(), bytes.Repeat([]byte{5}, 32)); err != nil {
		t.Fatal(err)
	}
	admin := s.browser("Alice Admin")
	backup := admin.get("/hsm/backup", http.StatusOK)
	if resp, body := admin.upload(strings.NewReader(backup), -1); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Backup restored") {
		t.Fatalf("restore: %d %s", resp.StatusCode, excerpt(body))
	}
	if resp, _ := admin.upload(strings.NewReader("not a backup"), -1); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("restore of garbage: %d", resp.StatusCode)
	}
	for ev, want := range map[string]string{cluster.AuditBackup: "downloaded by CN=Alice Admin", cluster.AuditRestore: "restored into the HSM by CN=Alice Admin", cluster.AuditRestoreRefused: "nothing changed"} {
		es := auditEvents(t, s, ev)
		if len(es) != 1 || !strings.Contains(es[0].Message, want) || es[0].Operator != "CN=Alice Admin,O=Keyquorum test" {
			t.Errorf("%s: %+v", ev, es)
		}
	}
}

// TestOperatorsAPI: the command line lists operators and changes a role through the JSON API,
// with an approval made on the account page; the change is audited like one made on the page.
func TestOperatorsAPI(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	bob := s.browserAs("Bob Newcomer", operator.RoleNone, false)
	renewed := s.operatorCert("Alice Admin")
	cli := s.client(&renewed)
	call := func(method, path, body string, header map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.url(path), strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := call("GET", "/api/v1/operators", "", nil)
	var list struct{ Operators []api.OperatorJSON }
	if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil || len(list.Operators) != 3 {
		t.Fatalf("list: %d %v %s", code, err, body)
	}
	setBob := `{"id":"` + bob.id.ID + `","role":"auditor"}`
	code, body = call("POST", "/api/v1/operators/role", setBob, nil)
	if code != http.StatusForbidden || !strings.Contains(body, `"code":"approval_required"`) || !strings.Contains(body, `role \"auditor\"`) {
		t.Errorf("role change without an approval: %d %s", code, body)
	}
	request := mustFind(t, `Approval required: request ([A-Z2-7]{4}-[A-Z2-7]{4})`, body)
	code, _ = call("POST", "/api/v1/operators/role", setBob, map[string]string{"Origin": "https://evil.example"})
	if code != http.StatusForbidden {
		t.Errorf("cross-origin JSON: %d", code)
	}
	if page := admin.get("/account", http.StatusOK); !strings.Contains(page, request) || !strings.Contains(page, "manage operators (roles, certificates, security keys): id &#34;"+bob.id.ID) {
		t.Errorf("the account page does not show the pending request %s in words: %s", request, excerpt(page))
	}
	tok, refusal := admin.approveRequest(request)
	if refusal != "" {
		t.Fatal(refusal)
	}
	code, body = call("POST", "/api/v1/operators/role", setBob, map[string]string{operator.ApprovalHeader: tok})
	var got api.OperatorJSON
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil || got.Role != "auditor" || got.ID != bob.id.ID {
		t.Fatalf("role change with an approval: %d %s", code, body)
	}
	bob.get("/audit", http.StatusOK)
	es := auditEvents(t, s, operator.AuditOperatorRole)
	if last := es[len(es)-1]; !strings.Contains(last.Message, "from none to auditor by CN=Alice Admin,O=Keyquorum test (command line)") {
		t.Errorf("audit: %+v", last)
	}
	// A form-encoded POST to the API is a form like any other: it needs the CSRF token.
	req, _ := http.NewRequest("POST", s.url("/api/v1/operators/role"), strings.NewReader("id=x&role=admin"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := cli.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("form POST to the API without a CSRF token: %v %v", resp.StatusCode, err)
	}
}

// TestRecoverAdmin: when every administrator has lost their security key, a start with
// RecoverAdmin (serve --recover-admin) makes the first administrator's certificate an
// administrator without keys again, audited.
func TestRecoverAdmin(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	first := operator.IdentityOf(mustReadCert(t, filepath.Join(s.pki.Dir, operator.AdminCertFile)), s.pki.CA)
	alice := s.browser("Alice Admin")
	if _, _, err := s.ops.SetRole(first.ID, operator.RoleNone, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	s.stop()
	s = startService(t, s.dir, serviceOptions{recover: true})
	for _, id := range []string{first.ID, alice.id.ID} {
		op, err := s.ops.Get(id)
		if err != nil || op.Role != operator.RoleAdmin {
			t.Errorf("after recovery %s: %+v %v", id, op, err)
		}
	}
	if op, _ := s.ops.Get(first.ID); len(op.Keys) != 0 {
		t.Errorf("the recovered administrator kept %d keys", len(op.Keys))
	}
	if es := auditEvents(t, s, operator.AuditOperatorRecovery); len(es) != 1 || !strings.Contains(es[0].Message, "CN=Keyquorum administrator") {
		t.Errorf("recovery audit: %+v", es)
	}
}
