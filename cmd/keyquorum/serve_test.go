package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"golang.org/x/sys/unix"
)

func TestServeFlags(t *testing.T) {
	pinFile := filepath.Join(t.TempDir(), "pin")
	os.WriteFile(pinFile, []byte("1234\n"), 0o600)
	badProfile := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(badProfile, []byte(`{"name": "ours", "df": "3F00/DF01", "tries": ["verify"],
		"share": {"file": "4B01", "size": 1024, "pin": "81"}, "user": {"file": "4B02", "size": 1024, "pin": "82"},
		"atrs": [{"value": "3BBF96008131FE5D00640411030131C073F701D00090007D"}]}`), 0o600)
	cases := []struct {
		args []string
		ok   bool
		says string
	}{
		{nil, true, ""},
		{[]string{"--data", "/tmp/x", "--listen", "0.0.0.0:9443", "--host", "kq.example,kq2.example"}, true, ""},
		{[]string{"--pinpad", "pcsc", "--reader", "REINER"}, false, "--hsm soft with a real PIN pad is refused"},
		{[]string{"--pinpad", "pcsc", "--reader", "REINER", "--allow-soft-hsm-with-real-cards"}, true, ""},
		{[]string{"--pinpad", "pcsc", "--hsm", "pkcs11", "--pkcs11-module", "/lib/x.so", "--slot", "kq", "--pin-file", pinFile}, true, ""},
		{[]string{"--reader", "REINER"}, false, "needs --pinpad pcsc"},
		{[]string{"--pinpad", "pcsc", "--virtual-reader", "/run/kq/pad.sock"}, true, ""},
		{[]string{"--virtual-reader", "/run/kq/pad.sock"}, false, "needs --pinpad pcsc"},
		{[]string{"--pinpad", "pcsc", "--virtual-reader", "/s", "--hsm", "pkcs11", "--pkcs11-module", "/lib/x.so", "--slot", "kq", "--pin-file", pinFile}, false, "cannot be used with a real HSM"},
		{[]string{"--pinpad", "usb"}, false, "--pinpad must be sim or pcsc"},
		{[]string{"--hsm", "tpm"}, false, "--hsm must be soft or pkcs11"},
		{[]string{"--slot", "kq"}, false, "--slot configures a PKCS#11 HSM"},
		{[]string{"--pin-file", pinFile}, false, "--pin-file configures a PKCS#11 HSM"},
		{[]string{"--pinpad", "pcsc", "--hsm", "pkcs11", "--slot", "kq"}, false, "needs --pkcs11-module, --slot and --pin-file"},
		{[]string{"--hsm", "pkcs11", "--pkcs11-module", "/lib/x.so", "--slot", "kq", "--pin-file", pinFile}, false, "simulator PIN pad cannot be used with a real HSM"},
		{[]string{"--listen", "8443"}, false, "--listen must be host:port"},
		{[]string{"--max-upload", "0"}, false, "--max-upload must be"},
		{[]string{"--cluster-address", "http://node-a:8443"}, false, "--cluster-address must be"},
		{[]string{"--cluster-offer-interval", "-1s"}, false, "--cluster-offer-interval must not be negative"},
		{[]string{"--pin", "123456"}, false, "flag provided but not defined"},
		{[]string{"extra"}, false, "unexpected argument"},
		{[]string{"--ca-bundle", "/etc/piv-ca.pem", "--crl", "/etc/piv.crl,/etc/piv2.crl"}, true, ""},
		{[]string{"--crl", "/etc/piv.crl"}, false, "--crl lists revoked certificates of a --ca-bundle CA"},
		{[]string{"--timeout-ok", "30s", "--timeout-card", "5m", "--timeout-pin", "2m", "--timeout-removal", "1m"}, true, ""},
		{[]string{"--timeout-pin", "5m"}, false, "--timeout-pin must be at most 255s"},
		{[]string{"--timeout-card", "0s"}, false, "--timeout-card must be at least 1s"},
		{[]string{"--card-profile", "netkey-df01"}, true, ""},
		{[]string{"--card-profile", "netkey"}, false, "no shipped profile \"netkey\" (shipped: keyquorum-mf, netkey-df01"},
		{[]string{"--card-profile", badProfile}, false, "tries: verify spends a try on some cards"},
		{[]string{"--card-profile", "/nonexistent/p.json"}, false, "read card profile"},
	}
	if got := relyingPartyID([]string{"10.0.0.7", "KQ.example", "kq2.example"}); got != "kq.example" {
		t.Errorf("relying party of hosts: %q", got)
	}
	if got := relyingPartyID([]string{"10.0.0.7"}); got != "localhost" {
		t.Errorf("relying party without a DNS name: %q", got)
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		cfg, err := parseServe(c.args, &stderr)
		if c.ok != (err == nil) {
			t.Errorf("%v: err %v, stderr %s", c.args, err, stderr.String())
			continue
		}
		if !c.ok && !strings.Contains(stderr.String(), c.says) {
			t.Errorf("%v: stderr %q does not say %q", c.args, stderr.String(), c.says)
		}
		if c.ok && len(c.args) == 0 && (cfg.dataDir != "keyquorum-data" || cfg.listen != "127.0.0.1:8443" || cfg.pinpad != "sim" || cfg.hsm != "soft" ||
			cfg.timeouts != ceremony.DefaultTimeouts || cfg.timeouts.PIN != 90*time.Second || cfg.profile.Name != "keyquorum-mf") {
			t.Errorf("defaults: %+v", cfg)
		}
		if c.ok && slices.Contains(c.args, "--timeout-pin") && cfg.timeouts != (ceremony.Timeouts{OK: 30 * time.Second, Card: 5 * time.Minute, PIN: 2 * time.Minute, Removal: time.Minute}) {
			t.Errorf("timeouts: %+v", cfg.timeouts)
		}
	}
	var stderr bytes.Buffer
	if _, err := parseServe([]string{"--help"}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	for _, f := range []string{"--data", "--listen", "--pinpad", "--reader", "--hsm", "--pkcs11-module", "--slot", "--pin-file", "--ca-bundle", "--crl", "--host", "--max-upload", "--recover-admin", "--timeout-ok", "--timeout-card", "--timeout-pin", "--timeout-removal", "--card-profile", "--node-name", "--cluster-address", "--cluster-offer-interval"} {
		if !strings.Contains(stderr.String(), "  "+f+" ") && !strings.Contains(stderr.String(), "  "+f+"\n") {
			t.Errorf("--help does not explain %s", f)
		}
	}
}

func TestReadPINFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	os.WriteFile(good, []byte("87654321\r\n"), 0o600)
	pin, err := readPINFile(good)
	if err != nil || string(pin) != "87654321" {
		t.Errorf("pin file: %q, %v", pin, err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("1"), 0o644)
	if _, err := readPINFile(open); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable pin file: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := readPINFile(empty); err == nil {
		t.Error("empty pin file accepted")
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeStartsAndStops runs serve with its defaults but a temporary data dir and a free
// port: it prints where the certificates are, serves HTTPS with client certificates, and
// returns cleanly when its context ends (what SIGINT/SIGTERM do).
func TestServeStartsAndStops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg, err := parseServe([]string{"--data", dir, "--listen", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, &out, slog.New(slog.DiscardHandler)) }()

	var url string
	re := regexp.MustCompile(`Keyquorum WebConf: (https://localhost:\d+/)`)
	for deadline := time.Now().Add(10 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no URL: %s", out.String())
		}
	}
	for _, f := range []string{"admin.p12", "admin.p12.password", "ca.pem"} {
		p := filepath.Join(dir, "webconf", f)
		if !strings.Contains(out.String(), p) {
			t.Errorf("serve does not say where %s is:\n%s", f, out.String())
		}
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(out.String(), "SIMULATOR") || !strings.Contains(out.String(), "(created now)") {
		t.Errorf("output: %s", out.String())
	}

	caPEM, err := os.ReadFile(filepath.Join(dir, "webconf", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET / without certificate: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15 s of its context ending")
	}
	// A second start reuses the PKI and says the certificate was not created now.
	ctx2, cancel2 := context.WithCancel(context.Background())
	var out2 syncBuffer
	done2 := make(chan error, 1)
	go func() { done2 <- serve(ctx2, cfg, &out2, slog.New(slog.DiscardHandler)) }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out2.String(), "Its password"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("second start printed: %s", out2.String())
		}
	}
	if strings.Contains(out2.String(), "created now") {
		t.Error("second start made a new administrator certificate")
	}
	cancel2()
	if err := <-done2; err != nil {
		t.Errorf("second serve: %v", err)
	}
}

func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", `# an appliance
data = /var/lib/keyquorum
listen = 0.0.0.0:9443
host = kq1.example
host = kq1
log-format = json
v = true
`)
	var stderr bytes.Buffer
	c, err := parseServe([]string{"--config", good}, &stderr)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if c.dataDir != "/var/lib/keyquorum" || c.listen != "0.0.0.0:9443" || strings.Join(c.hosts, ",") != "kq1.example,kq1" || c.logFormat != "json" || !c.verbose {
		t.Errorf("from the file: %+v", c)
	}
	// The command line wins, for the whole flag.
	c, err = parseServe([]string{"--config", good, "--listen", "127.0.0.1:8443", "--host", "other.example"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.listen != "127.0.0.1:8443" || strings.Join(c.hosts, ",") != "other.example" || c.dataDir != "/var/lib/keyquorum" {
		t.Errorf("command line over the file: %+v", c)
	}
	// The file's settings pass the same checks as flags.
	bad := []struct{ text, says string }{
		{"listen 0.0.0.0:9443\n", `good.conf:1`},
		{"# x\npin = 123456\n", `:2: "pin" is not a serve flag`},
		{"recover-admin = true\n", "recover-admin cannot be set in the file"},
		{"config = /etc/other.conf\n", "config cannot be set in the file"},
		{"max-upload = lots\n", "max-upload"},
		{"reader = REINER\n", "--reader names a PC/SC reader: it needs --pinpad pcsc"},
		{"log-format = xml\n", "--log-format must be text or json"},
	}
	for i, b := range bad {
		p := write("good.conf", b.text)
		if i > 0 {
			p = write(fmt.Sprintf("bad%d.conf", i), b.text)
			b.says = strings.ReplaceAll(b.says, "good.conf", fmt.Sprintf("bad%d.conf", i))
		}
		stderr.Reset()
		if _, err := parseServe([]string{"--config", p}, &stderr); !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), b.says) {
			t.Errorf("%q: err %v, stderr %q, want %q", b.text, err, stderr.String(), b.says)
		}
	}
	stderr.Reset()
	if _, err := parseServe([]string{"--config", filepath.Join(dir, "missing.conf")}, &stderr); err == nil || !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("a missing file: %v %q", err, stderr.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "keyquorum ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("version: %d %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"version", "--json"}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"platform": "`) {
		t.Errorf("version --json: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"version", "extra"}, &out, &errb); code != 2 {
		t.Errorf("version extra: exit %d", code)
	}
}

func TestServeCheck(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "kq.conf")
	os.WriteFile(conf, []byte("pinpad = pcsc\nallow-soft-hsm-with-real-cards = true\nhost = kq1.example\nhost = kq1\nlisten = 0.0.0.0:8443\n"+
		"webauthn-aaguids = CB69481E-8FF7-4039-93EC-0A2729A154A8\nwebauthn-attestation-formats = packed\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--config", conf, "--check", "--data", t.TempDir() + "/never"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"configuration is valid", "  pinpad = pcsc\n", "  host = kq1.example,kq1\n", "  listen = 0.0.0.0:8443\n",
		"  webauthn-aaguids = cb69481e-8ff7-4039-93ec-0a2729a154a8\n", "  webauthn-attestation-formats = packed\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--check output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(conf), "never")); !os.IsNotExist(err) {
		t.Error("--check created the data directory")
	}
	for _, bad := range []string{"pinpad = usb\n", "webauthn-aaguids = yubikey\n", "webauthn-attestation-formats = x509\n"} {
		os.WriteFile(conf, []byte(bad), 0o644)
		out.Reset()
		if code := run(context.Background(), []string{"serve", "--config", conf, "--check"}, &out, &errb); code != 2 || out.Len() != 0 {
			t.Errorf("a bad file %q: exit %d, out %q", bad, code, out.String())
		}
	}
}

// TestSecuritySoftHSMWithRealCards: serve refuses the soft HSM (whose master backup key opens
// from the data directory alone) with a real PIN pad, unless the loud flag says it is meant;
// the virtual cyberJack (virtual cards) and the simulator stay allowed.
func TestSecuritySoftHSMWithRealCards(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--pinpad", "pcsc"}, false},
		{[]string{"--pinpad", "pcsc", "--hsm", "soft", "--reader", "REINER SCT cyberJack"}, false},
		{[]string{"--pinpad", "pcsc", "--allow-soft-hsm-with-real-cards"}, true},
		{[]string{"--pinpad", "pcsc", "--virtual-reader", "/run/kq/pad.sock"}, true},
		{[]string{"--pinpad", "sim"}, true},
	} {
		var stderr bytes.Buffer
		_, err := parseServe(c.args, &stderr)
		if c.ok != (err == nil) {
			t.Errorf("%v: err %v, stderr %s", c.args, err, stderr.String())
		}
		if !c.ok && !strings.Contains(stderr.String(), "--allow-soft-hsm-with-real-cards") {
			t.Errorf("%v: the refusal does not name the way out: %s", c.args, stderr.String())
		}
	}
}

// TestSecurityLockMemory: memory is locked only under an unlimited memory-lock limit (a smaller
// one with MCL_FUTURE would make allocations fail), and a refusal of mlockall is reported, not
// fatal.
func TestSecurityLockMemory(t *testing.T) {
	called := false
	mlock := func() error { called = true; return nil }
	if ok, why := lockMemoryWith(func() (uint64, error) { return 8 << 20, nil }, mlock); ok || called || !strings.Contains(why, "not unlimited") {
		t.Errorf("under an 8 MiB limit: locked %v, mlockall called %v, %q", ok, called, why)
	}
	if ok, _ := lockMemoryWith(func() (uint64, error) { return unix.RLIM_INFINITY, nil }, mlock); !ok || !called {
		t.Errorf("under no limit: locked %v, mlockall called %v", ok, called)
	}
	if ok, why := lockMemoryWith(func() (uint64, error) { return unix.RLIM_INFINITY, nil }, func() error { return unix.ENOMEM }); ok || !strings.Contains(why, "mlockall") {
		t.Errorf("mlockall refused: locked %v, %q", ok, why)
	}
}
