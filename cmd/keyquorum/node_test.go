package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// The end-to-end tests run `keyquorum serve` as separate processes on loopback (random ports,
// temporary data directories, the simulator PIN pad) and the CLI as the operator runs it. The
// binary is built once, in TestMain.

var kqBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyquorum-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kqBin = filepath.Join(dir, "keyquorum")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	}
	build := exec.Command(goTool, "build", "-o", kqBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build keyquorum: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one running `keyquorum serve` and an administrator's view of it: the first
// administrator's certificate, the page's CSRF token (for the simulator panel and the security
// key endpoints, which are the browser's) and a software security key that makes approvals.
type node struct {
	name string
	dir  string
	args []string // serve's further flags
	port string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
	hc   *http.Client
	csrf string
	key  *softKey
}

// startNode runs keyquorum serve on 127.0.0.1:0 with its data in dir.
func startNode(name, dir string, extra ...string) (*node, error) {
	n := &node{name: name, dir: dir, args: extra, log: &syncBuffer{}, done: make(chan error, 1)}
	args := append([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0"}, extra...)
	n.cmd = exec.Command(kqBin, args...)
	n.cmd.Stderr = n.log
	out, err := n.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		re := regexp.MustCompile(`Keyquorum WebConf: https://[^/]+:(\d+)/`)
		for sc.Scan() {
			n.log.Write(append(sc.Bytes(), '\n'))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	go func() { n.done <- n.cmd.Wait() }()
	select {
	case n.port = <-urls:
	case err := <-n.done:
		return nil, fmt.Errorf("serve %s exited: %v\n%s", name, err, n.log)
	case <-time.After(30 * time.Second):
		n.stop()
		return nil, fmt.Errorf("serve %s did not start in 30 s\n%s", name, n.log)
	}
	if err := n.connect(); err != nil {
		n.stop()
		return nil, err
	}
	return n, nil
}

// stop ends the service as SIGTERM does.
func (n *node) stop() {
	if n.cmd.ProcessState != nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

func (n *node) url(path string) string { return "https://localhost:" + n.port + path }

func (n *node) webconfDir() string { return filepath.Join(n.dir, "webconf") }

// env is the CLI's environment for this node's administrator.
func (n *node) env() []string {
	return []string{
		"KEYQUORUM_ADDR=" + n.url(""),
		"KEYQUORUM_P12=" + filepath.Join(n.webconfDir(), operator.AdminP12File),
		"KEYQUORUM_CA=" + filepath.Join(n.webconfDir(), operator.CACertFile),
	}
}

// connect makes the administrator's HTTP client and reads the page's CSRF token.
func (n *node) connect() error {
	pw, err := os.ReadFile(filepath.Join(n.webconfDir(), operator.AdminPasswordFile))
	if err != nil {
		return err
	}
	der, err := os.ReadFile(filepath.Join(n.webconfDir(), operator.AdminP12File))
	if err != nil {
		return err
	}
	key, cert, _, err := pkcs12.DecodeChain(der, strings.TrimSpace(string(pw)))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(n.webconfDir(), operator.CACertFile))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	n.hc = &http.Client{Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}}}
	body, status, err := n.do(http.MethodGet, "/account", "", nil, nil)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("account page: %d %v", status, err)
	}
	m := regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		return errors.New("no csrf token in the account page")
	}
	n.csrf = string(m[1])
	return nil
}

// do sends a request as the page script does (CSRF header and fetch marker on a POST).
func (n *node) do(method, path, ctype string, body io.Reader, header map[string]string) ([]byte, int, error) {
	req, err := http.NewRequest(method, n.url(path), body)
	if err != nil {
		return nil, 0, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if method == http.MethodPost {
		req.Header.Set("X-CSRF-Token", n.csrf)
		req.Header.Set("X-Keyquorum-Fetch", "1")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

func (n *node) form(path string, form url.Values) ([]byte, error) {
	b, status, err := n.do(http.MethodPost, path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), nil)
	if err == nil && status/100 != 2 {
		err = fmt.Errorf("POST %s: %d %s", path, status, b)
	}
	return b, err
}

func (n *node) getJSON(path string, v any) error {
	b, status, err := n.do(http.MethodGet, path, "", nil, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, status, b)
	}
	return json.Unmarshal(b, v)
}

// registerKey registers a new software security key for the administrator (the first key
// needs only the certificate).
func (n *node) registerKey() error {
	n.key = newSoftKey()
	b, err := n.form("/webauthn/register/begin", url.Values{"name": {"test key"}})
	if err != nil {
		return err
	}
	var o webauthnOptions
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	_, status, err := n.do(http.MethodPost, "/webauthn/register/finish?session="+url.QueryEscape(o.Session), "application/json",
		bytes.NewReader(n.key.create(o, n.url(""))), nil)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("register finish: %d", status)
	}
	return err
}

// approveRequest approves the pending command-line request id, as its Approve button on the
// account page does with a security key, and returns the token and the request's action.
func (n *node) approveRequest(id string) (string, string, error) {
	if n.key == nil {
		if err := n.registerKey(); err != nil {
			return "", "", fmt.Errorf("register security key: %w", err)
		}
	}
	b, err := n.form("/webauthn/assert/begin", url.Values{"_purpose": {"cli"}, "_request": {id}})
	if err != nil {
		return "", "", err
	}
	var o webauthnOptions
	if err := json.Unmarshal(b, &o); err != nil {
		return "", "", err
	}
	b, status, err := n.do(http.MethodPost, "/webauthn/assert/finish?session="+url.QueryEscape(o.Session), "application/json",
		bytes.NewReader(n.key.get(o, n.url(""))), nil)
	if err != nil || status != http.StatusOK {
		return "", "", fmt.Errorf("assert finish: %d %v %s", status, err, b)
	}
	var f struct{ Token, Action string }
	if err := json.Unmarshal(b, &f); err != nil || f.Token == "" {
		return "", "", fmt.Errorf("no approval token: %s", b)
	}
	return f.Token, f.Action, nil
}

// approve makes a command-line approval of action for a request stated field by field (the
// JSON body's fields and "?name" query parameters, as name=value), as a script may without
// running the command first; a request without fields (an empty body) needs none. Most tests
// use cliApproved, the operator's way.
func (n *node) approve(action string, fields ...string) (string, error) {
	if n.key == nil {
		if err := n.registerKey(); err != nil {
			return "", fmt.Errorf("register security key: %w", err)
		}
	}
	form := url.Values{"_purpose": {"cli"}, "_action": {action}}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		form.Add(k, v)
	}
	b, err := n.form("/webauthn/assert/begin", form)
	if err != nil {
		return "", err
	}
	var o webauthnOptions
	if err := json.Unmarshal(b, &o); err != nil {
		return "", err
	}
	b, status, err := n.do(http.MethodPost, "/webauthn/assert/finish?session="+url.QueryEscape(o.Session), "application/json",
		bytes.NewReader(n.key.get(o, n.url(""))), nil)
	if err != nil || status != http.StatusOK {
		return "", fmt.Errorf("assert finish: %d %v %s", status, err, b)
	}
	var f struct{ Token string }
	if err := json.Unmarshal(b, &f); err != nil || f.Token == "" {
		return "", fmt.Errorf("no approval token: %s", b)
	}
	return f.Token, nil
}

// requestRE finds the pending request a command refused for want of an approval names.
var requestRE = regexp.MustCompile(`Approval required: request ([A-Z2-7]{4}-[A-Z2-7]{4})`)

// cliApproved runs a dangerous command as an operator at 5 a.m. does: once without an
// approval (refused, naming a pending request), then approves that request (which must be of
// action) with the security key, and runs the same command again with the token.
func (n *node) cliApproved(ctx context.Context, action string, args ...string) (string, string, int) {
	if n.key == nil {
		if err := n.registerKey(); err != nil {
			return "", "register security key: " + err.Error(), -1
		}
	}
	out, errOut, code := cli(ctx, n.env(), args...)
	m := requestRE.FindStringSubmatch(errOut)
	if code != exitDenied || m == nil {
		return out, errOut, code // refused before the approval (bad arguments), or not dangerous
	}
	tok, got, err := n.approveRequest(m[1])
	if err != nil {
		return "", "approve " + m[1] + ": " + err.Error(), -1
	}
	if got != action {
		return "", fmt.Sprintf("request %s is for %s, not %s", m[1], got, action), -1
	}
	return cli(ctx, append(n.env(), "KEYQUORUM_APPROVAL="+tok), args...)
}

// newCards makes n blank virtual cards through the simulator panel and returns their serials.
func (n *node) newCards(count int) ([]string, error) {
	var before api.CardJSON
	if err := n.getJSON("/api/v1/card", &before); err != nil {
		return nil, err
	}
	for range count {
		if _, err := n.form("/sim/cards", url.Values{}); err != nil {
			return nil, err
		}
	}
	var after api.CardJSON
	if err := n.getJSON("/api/v1/card", &after); err != nil {
		return nil, err
	}
	had := map[string]bool{}
	for _, c := range before.Cards {
		had[c.Serial] = true
	}
	var out []string
	for _, c := range after.Cards {
		if !had[c.Serial] {
			out = append(out, c.Serial)
		}
	}
	if len(out) != count {
		return nil, fmt.Errorf("made %d cards, found %d new ones", count, len(out))
	}
	return out, nil
}

// drive plays the custodians on the simulator pad until ctx ends: OK to every confirmation,
// the next card of cards (in turn) whenever one is asked for, PIN 123456, the card out when
// asked. It acts once per wait (a wait is known by its kind and deadline).
func (n *node) drive(ctx context.Context, cards []string) error {
	next := 0
	var done, lastInserted string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(25 * time.Millisecond):
		}
		var st api.CardJSON
		if err := n.getJSON("/api/v1/card", &st); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		k := st.Waiting + "|" + st.Deadline
		if st.Waiting == "" || k == done {
			continue
		}
		done = k
		var err error
		key := func(k string) {
			if err == nil {
				_, err = n.form("/sim/key", url.Values{"key": {k}})
			}
		}
		switch st.Waiting {
		case "ok":
			key("ok")
		case "card":
			if st.Inserted != nil && st.Inserted.Serial != lastInserted {
				// A card left in the slot by an earlier ceremony: not one this drive offers.
				if _, err = n.form("/sim/remove", url.Values{}); err != nil {
					return err
				}
				st.Inserted = nil
			}
			if st.Inserted == nil {
				if next >= len(cards) {
					return fmt.Errorf("the pad asks for card %d, the test has %d", next+1, len(cards))
				}
				_, err = n.form("/sim/insert", url.Values{"serial": {cards[next]}})
				lastInserted = cards[next]
				next++
			}
			key("ok")
		case "pin":
			for _, d := range "123456" {
				key(string(d))
			}
			key("ok")
		case "removal":
			_, err = n.form("/sim/remove", url.Values{})
		}
		if err != nil {
			return err
		}
	}
}

// cli runs the keyquorum binary with the node's administrator environment (and env) and
// returns its stdout, stderr and exit status.
func cli(ctx context.Context, env []string, args ...string) (string, string, int) {
	cmd := exec.CommandContext(ctx, kqBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		stderr.WriteString(err.Error())
	}
	return stdout.String(), stderr.String(), code
}

// ceremony starts a ceremony of kind with the CLI (approved as cliApproved does) and drives the
// pad with cards until `--watch` reports the end; it returns the CLI's output and status.
func (n *node) ceremony(ctx context.Context, cards []string, kind string, args ...string) (string, int, error) {
	dctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var derr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		derr = n.drive(dctx, cards)
	}()
	out, errOut, code := n.cliApproved(ctx, "ceremony."+kind, append([]string{"ceremony", "start", kind, "--watch"}, args...)...)
	cancel()
	wg.Wait()
	if derr != nil {
		return out + errOut, code, fmt.Errorf("drive the pad: %w", derr)
	}
	return out + errOut, code, nil
}

// createKeys puts application keys into a soft HSM data dir before its service starts: what
// the appliance's applications would have made through PKCS#11.
func createKeys(dir string, labels ...string) error {
	h, err := soft.Open(filepath.Join(dir, "hsm"))
	if err != nil {
		return err
	}
	defer h.Close()
	for _, l := range labels {
		if _, err := h.CreateKey(context.Background(), l); err != nil {
			return err
		}
	}
	return nil
}

// copyCards carries virtual cards from one appliance to another: the simulator's cards are
// files, so carrying a card is copying its file (before the other appliance's service starts,
// which loads its cards at start).
func copyCards(fromDir, toDir string, serials ...string) error {
	if err := os.MkdirAll(filepath.Join(toDir, "sim"), 0o700); err != nil {
		return err
	}
	for _, s := range serials {
		b, err := os.ReadFile(filepath.Join(fromDir, "sim", s+".card"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(toDir, "sim", s+".card"), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) status() (api.StatusJSON, error) {
	var st api.StatusJSON
	err := n.getJSON("/api/v1/status", &st)
	return st, err
}

// ---- a FIDO2 security key in software

// softKey answers WebAuthn registrations ("none" attestation) and assertions with user
// verification, as a browser with a security key would.
type softKey struct {
	key     *ecdsa.PrivateKey
	id      []byte
	counter uint32
}

type webauthnOptions struct {
	Session   string `json:"session"`
	PublicKey struct {
		Challenge string `json:"challenge"`
		RPID      string `json:"rpId"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
	} `json:"publicKey"`
}

func newSoftKey() *softKey {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := make([]byte, 16)
	rand.Read(id)
	return &softKey{key: key, id: id}
}

var b64 = base64.RawURLEncoding

func (k *softKey) authData(rpID string, withCred bool) []byte {
	rp := sha256.Sum256([]byte(rpID))
	flags := byte(0x01 | 0x04) // user present, user verified
	if withCred {
		flags |= 0x40
	}
	k.counter++
	out := binary.BigEndian.AppendUint32(append(rp[:], flags), k.counter)
	if withCred {
		out = append(out, make([]byte, 16)...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(k.id)))
		out = append(out, k.id...)
		enc, _ := cbor.CTAP2EncOptions().EncMode()
		pub, _ := k.key.PublicKey.ECDH()
		raw := pub.Bytes() // 0x04 || X || Y
		cose, _ := enc.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: raw[1:33], -3: raw[33:]})
		out = append(out, cose...)
	}
	return out
}

func clientDataJSON(typ, challenge, origin string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false})
	return b
}

func (k *softKey) create(o webauthnOptions, origin string) []byte {
	cd := clientDataJSON("webauthn.create", o.PublicKey.Challenge, strings.TrimSuffix(origin, "/"))
	enc, _ := cbor.CTAP2EncOptions().EncMode()
	att, _ := enc.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": k.authData(o.PublicKey.RP.ID, true)})
	b, _ := json.Marshal(map[string]any{"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64.EncodeToString(cd), "attestationObject": b64.EncodeToString(att)}})
	return b
}

func (k *softKey) get(o webauthnOptions, origin string) []byte {
	cd := clientDataJSON("webauthn.get", o.PublicKey.Challenge, strings.TrimSuffix(origin, "/"))
	ad := k.authData(o.PublicKey.RPID, false)
	h := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, _ := ecdsa.SignASN1(rand.Reader, k.key, digest[:])
	b, _ := json.Marshal(map[string]any{"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64.EncodeToString(cd), "authenticatorData": b64.EncodeToString(ad), "signature": b64.EncodeToString(sig)}})
	return b
}

// nodeT starts a node for a Go test and stops it at the end, printing its log on failure.
func nodeT(t *testing.T, name, dir string, extra ...string) *node {
	t.Helper()
	n, err := startNode(name, dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("--- %s log:\n%s", name, n.log)
		}
	})
	return n
}
