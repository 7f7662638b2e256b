package webconf

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// service is a whole Keyquorum service for tests, wired as `keyquorum serve` wires it: the
// simulator pad, the soft HSM, the ceremony manager and WebConf over real TLS on 127.0.0.1.
type service struct {
	t    testing.TB
	dir  string
	addr string
	pki  *operator.PKI
	pad  *sim.Pad
	hsm  *soft.HSM
	mgr  *ceremony.Manager
	ops  *operator.Operators
	srv  *Server

	cancel context.CancelFunc
	done   chan error
}

type serviceOptions struct {
	listen    string // "" = 127.0.0.1:0
	maxUpload int64
	bundle    []*x509.Certificate
	timeouts  ceremony.Timeouts
	noOKKey   bool // the pad cannot report OK/Cancel, like a cyberJack through PC/SC
	crls      []string
	recover   bool // Config.RecoverAdmin
	padStatus web.PadStatus
	maxConns  int // Config.MaxConnections
	// remoteRack: the simulator's Watch reports no card added to the rack, as the virtual
	// cyberJack's panel (whose cards are files of another process) does not.
	remoteRack bool
	attest     operator.AttestationPolicy // Config.Attestation
}

// remoteRackSim is the simulator seen as through the virtual cyberJack's panel: Watch sends
// the pad's state once and then only when the pad itself changes, never for a new card.
type remoteRackSim struct{ *sim.Pad }

func (p remoteRackSim) Watch(ctx context.Context) <-chan sim.State {
	ch := make(chan sim.State, 1)
	ch <- p.State()
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// noOKKeyPad is the simulator pad behaving like a PC/SC pad: questions go to the screen.
type noOKKeyPad struct{ *sim.Pad }

func (noOKKeyPad) WaitForOK(context.Context, string, time.Duration) error { return pinpad.ErrNoOKKey }

func startService(t testing.TB, dir string, o serviceOptions) *service {
	t.Helper()
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	s := &service{t: t, dir: dir}
	var err error
	if s.pki, err = operator.LoadPKI(filepath.Join(dir, "webconf"), nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if s.pad, err = sim.Open(filepath.Join(dir, "sim")); err != nil {
		t.Fatal(err)
	}
	if s.hsm, err = soft.Open(filepath.Join(dir, "hsm")); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var pad ceremony.Pad = s.pad
	if o.noOKKey {
		pad = noOKKeyPad{s.pad}
	}
	if s.mgr, err = ceremony.Open(ctx, ceremony.Config{Dir: dir, Pad: pad, HSM: s.hsm, Logger: log, Timeouts: o.timeouts}); err != nil {
		t.Fatal(err)
	}
	if s.ops, err = operator.OpenOperators(filepath.Join(s.pki.Dir, operator.OperatorsFile)); err != nil {
		t.Fatal(err)
	}
	var simulator simpanel.Simulator = s.pad
	if o.remoteRack {
		simulator = remoteRackSim{s.pad}
	}
	s.srv, err = New(Config{PKI: s.pki, CABundle: o.bundle, Runner: s.mgr, Records: s.mgr, Audit: s.mgr, HSM: s.hsm, Sim: simulator, Surveyor: s.pad,
		MaxUpload: o.maxUpload, Logger: log, Appliance: web.Appliance{PadName: "SIMULATOR", Pad: o.padStatus,
			PadTimeouts: cmp.Or(o.timeouts, ceremony.DefaultTimeouts), HSMName: "soft (test)", DataDir: dir},
		Operators: s.ops, CRLFiles: o.crls, RPID: "localhost", RecoverAdmin: o.recover, MaxConnections: o.maxConns, Attestation: o.attest})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for range 50 { // a restart may find the port in TIME_WAIT for a moment
		if ln, err = net.Listen("tcp", o.listen); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.done = make(chan error, 1)
	go func() { s.done <- s.srv.Serve(ctx, ln) }()
	t.Cleanup(s.stop)
	return s
}

// stop shuts the service down as SIGTERM does; it may be called more than once.
func (s *service) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		s.t.Error("serve did not return within 15 s of its context ending")
	}
	s.mgr.Close()
	s.ops.Close()
	s.hsm.Close()
	s.pad.Close()
}

// url is a page of the service, at the name security keys are bound to (localhost).
func (s *service) url(path string) string {
	_, port, _ := net.SplitHostPort(s.addr)
	return "https://localhost:" + port + path
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// client is an HTTP client that trusts the management CA and presents cert (nil: none). It
// does not follow redirects, so tests see the 303s.
func (s *service) client(cert *tls.Certificate) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(s.pki.CA)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// operatorCert issues a client certificate of the management CA.
func (s *service) operatorCert(cn string) tls.Certificate {
	s.t.Helper()
	cert, key, err := s.pki.IssueClient(pkixName(cn), time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	return tlsCert(cert, key)
}

func tlsCert(cert *x509.Certificate, key *ecdsa.PrivateKey) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// browser is an operator's session: a client with a certificate, the page's CSRF token and,
// when registered, a security key that confirms dangerous actions as the page script does.
type browser struct {
	t    testing.TB
	s    *service
	c    *http.Client
	cert tls.Certificate
	id   operator.Identity
	csrf string
	key  *softKey
}

// browser is an administrator with a registered security key (what most tests need).
func (s *service) browser(cn string) *browser {
	return s.browserAs(cn, operator.RoleAdmin, true)
}

// browserAs is an operator with a new certificate of the management CA, given role directly
// in the operator list, with a registered security key if withKey.
func (s *service) browserAs(cn string, role operator.Role, withKey bool) *browser {
	s.t.Helper()
	return s.browserWith(s.operatorCert(cn), role, withKey)
}

func (s *service) browserWith(cert tls.Certificate, role operator.Role, withKey bool) *browser {
	s.t.Helper()
	chains, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: s.pki.ClientCAs(s.srv.cfg.CABundle), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		s.t.Fatal(err)
	}
	b := &browser{t: s.t, s: s, c: s.client(&cert), cert: cert, id: operator.ChainIdentity(chains[0], s.pki.CA)}
	if role != operator.RoleNone {
		if _, err := s.ops.Seen(b.id, time.Now()); err != nil {
			s.t.Fatal(err)
		}
		if _, _, err := s.ops.SetRole(b.id.ID, role, "test", time.Now()); err != nil {
			s.t.Fatal(err)
		}
	}
	body := b.get("/account", http.StatusOK)
	m := regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		s.t.Fatal("no csrf token in the account page")
	}
	b.csrf = m[1]
	if withKey {
		// A certificate of the same name again (a renewal) is the same operator: its old
		// browser's keys are not in this one, so they go.
		if _, err := s.ops.RemoveKey(b.id.ID, ""); err != nil {
			s.t.Fatal(err)
		}
		b.registerKey(newSoftKey(s.t), "test key")
	}
	return b
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, string(body)
}

// get fetches a page and checks its status; want 0 accepts any.
func (b *browser) get(path string, want int) string {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.s.url(path), nil)
	resp, body := b.do(req)
	if want != 0 && resp.StatusCode != want {
		b.t.Fatalf("GET %s: status %d, want %d\n%s", path, resp.StatusCode, want, excerpt(body))
	}
	return body
}

// post sends a form with the CSRF token, confirmed with the browser's security key when the
// form needs it (as the page script does), and checks the status.
func (b *browser) post(path string, form url.Values, want int) (*http.Response, string) {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if b.key != nil && form.Get(stepUpField) == "" {
		// A refusal here (a role that may not) is left to the request itself to show.
		if tok, _ := b.tryStepUp(path, form, ""); tok != "" {
			form.Set(stepUpField, tok)
		}
	}
	return b.postRaw(path, form, want)
}

// postRaw sends a form as it is, with the CSRF token but without a security key confirmation.
func (b *browser) postRaw(path string, form url.Values, want int) (*http.Response, string) {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get(csrfField) == "" {
		form.Set(csrfField, b.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, b.s.url(path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, body := b.do(req)
	if want != 0 && resp.StatusCode != want {
		b.t.Fatalf("POST %s: status %d, want %d\n%s", path, resp.StatusCode, want, excerpt(body))
	}
	return resp, body
}

// excerpt is the readable part of an error page, for failure messages.
func excerpt(body string) string {
	if i := strings.Index(body, "<main>"); i >= 0 {
		body = body[i:]
	}
	body = regexp.MustCompile(`<[^>]+>`).ReplaceAllString(body, " ")
	if len(body) > 800 {
		body = body[:800]
	}
	return body
}

// padActor is what the ceremony driver does to the virtual pad: through HTTP, or by clicking
// in a browser.
type padActor interface {
	pressOK()
	insert(serial string)
	remove()
	typeDigits(d string)
}

// httpActor operates the simulator panel's endpoints, as the panel's script does.
type httpActor struct{ b *browser }

func (a httpActor) send(path string, form url.Values) {
	a.b.t.Helper()
	form.Set(csrfField, a.b.csrf)
	req, _ := http.NewRequest(http.MethodPost, a.b.s.url(path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(web.FetchHeader, "1")
	resp, body := a.b.do(req)
	if resp.StatusCode != http.StatusNoContent {
		a.b.t.Fatalf("POST %s %v: status %d: %s", path, form, resp.StatusCode, body)
	}
}

func (a httpActor) pressOK()             { a.send("/sim/key", url.Values{"key": {"ok"}}) }
func (a httpActor) insert(serial string) { a.send("/sim/insert", url.Values{"serial": {serial}}) }
func (a httpActor) remove()              { a.send("/sim/remove", url.Values{}) }
func (a httpActor) typeDigits(d string) {
	for _, c := range d {
		a.send("/sim/key", url.Values{"key": {string(c)}})
	}
}

// driveCeremony plays the custodians of a ceremony on the virtual pad until it ends: OK to
// every confirmation, the next card of cards (in turn) whenever one is asked for, PIN 123456,
// the card out when asked. observe, if set, is called at every new wait (to look at pages
// while the ceremony runs). It returns the ceremony's final journal.
func driveCeremony(t *testing.T, ctx context.Context, s *service, act padActor, cards []string, observe func(sim.State)) ceremony.Journal {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	sub := s.mgr.Subscribe()
	defer sub.Close()
	states := s.pad.Watch(ctx)
	next := 0
	type waitKey struct {
		w sim.Wait
		d time.Time
	}
	var done waitKey // the wait acted on last: act once per wait
	var last ceremony.Event
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("ceremony did not end: last event %+v, pad %+v", last, s.pad.State())
		case ev := <-sub.C():
			last = ev
			if ev.Status.Ended() && ev.Seq > 0 && ev.Type == ceremony.EventOutcome {
				j, err := s.mgr.Ceremony(ev.Ceremony)
				if err != nil {
					t.Fatal(err)
				}
				return j
			}
		case st, ok := <-states:
			if !ok {
				t.Fatal("pad watch ended")
			}
			k := waitKey{st.Waiting, st.Deadline}
			if st.Waiting == sim.WaitNone || k == done {
				continue
			}
			done = k
			if observe != nil {
				observe(st)
			}
			switch st.Waiting {
			case sim.WaitOK:
				act.pressOK()
			case sim.WaitCard:
				if st.Inserted == "" {
					act.insert(cards[next%len(cards)])
					next++
				}
				act.pressOK()
			case sim.WaitPIN:
				act.typeDigits("123456")
				act.pressOK()
			case sim.WaitRemoval:
				act.remove()
			}
		}
	}
}

func newCards(t *testing.T, pad *sim.Pad, n int) []string {
	t.Helper()
	var out []string
	for range n {
		s, err := pad.NewCard()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func requireRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s needs root, and CI=true", what)
		}
		t.Skipf("%s needs root", what)
	}
}

var errNoMatch = errors.New("no match")

func mustFind(t *testing.T, re, body string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%v: %s in %s", errNoMatch, re, excerpt(body))
	}
	return m[1]
}

var _ = fmt.Sprintf
