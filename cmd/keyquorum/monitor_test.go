package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMetrics runs keyquorum serve with --metrics-listen, takes a 2-of-3 generation through the
// CLI and reads the exposition before and after: the ceremony counters and the key gauge move,
// and no card serial, no operator name and no key ID appears in it.
func TestMetrics(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	n, err := startNode("a", dir, "--metrics-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("--- log:\n%s", n.log)
		}
	})
	m := regexp.MustCompile(`Metrics: +(http://\S+/metrics)`).FindStringSubmatch(n.log.String())
	if m == nil {
		t.Fatalf("serve did not print the metrics address:\n%s", n.log)
	}
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("metrics: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	before := scrape()
	for _, want := range []string{
		`keyquorum_ceremonies_ended_total{kind="generate",outcome="done"} 0`,
		"keyquorum_key_loaded 0", "keyquorum_hsm_reachable 1", "keyquorum_pinpad_present 1",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(before, want) {
			t.Errorf("before: the exposition lacks %q", want)
		}
	}
	if err := n.registerKey(); err != nil {
		t.Fatal(err)
	}
	cards, err := n.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mustCeremony(t, ctx, n, []string{cards[0], cards[1], cards[2], cards[0], cards[1]}, "generate", "-k", "2", "-n", "3")
	st := mustStatus(t, n)

	after := scrape()
	for _, want := range []string{
		`keyquorum_ceremonies_started_total{kind="generate"} 1`,
		`keyquorum_ceremonies_ended_total{kind="generate",outcome="done"} 1`,
		"keyquorum_key_loaded 1",
	} {
		if !strings.Contains(after, want) {
			t.Errorf("after a generation: the exposition lacks %q", want)
		}
	}
	for _, secretish := range append(cards, st.BackupKeyID, "administrator", "Keyquorum administrator") {
		if secretish != "" && strings.Contains(after, secretish) {
			t.Errorf("the exposition holds %q", secretish)
		}
	}
	// /healthz is served beside the metrics, without a certificate.
	resp, err := http.Get(strings.TrimSuffix(m[1], "/metrics") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "up\n" {
		t.Errorf("healthz on the metrics listener: %d %q", resp.StatusCode, b)
	}
}

// TestHealthz asks /healthz on WebConf's own address without a client certificate: "up" while
// the data directory, the HSM and the pad are fine, "degraded" once the data directory is gone,
// and nothing else. A handshake with a certificate of an unknown CA is counted by reason, and
// requests by route pattern.
func TestHealthz(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	n, err := startNode("a", dir, "--metrics-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("--- log:\n%s", n.log)
		}
	})
	caPEM, err := os.ReadFile(filepath.Join(dir, "webconf", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	get := func() (int, string) {
		t.Helper()
		resp, err := anon.Get(n.url("/healthz"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || body != "up\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	// The data directory's journal stays open; what health asks is whether a file can be made.
	hidden := dir + ".away"
	if err := os.Rename(dir, hidden); err != nil {
		t.Fatal(err)
	}
	code, body := get()
	os.Rename(hidden, dir)
	if code != http.StatusServiceUnavailable || body != "degraded\n" {
		t.Errorf("data directory gone: %d %q", code, body)
	}
	if code, body := get(); code != 200 || body != "up\n" {
		t.Errorf("data directory back: %d %q", code, body)
	}
	// Everything else still needs a certificate.
	resp, err := anon.Get(n.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET / without a certificate: %d", resp.StatusCode)
	}

	// A client certificate of a CA WebConf does not know fails the handshake, counted.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "stranger"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	// GetClientCertificate sends it whatever CAs the server names (Certificates would not).
	strangerCert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	stranger := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return strangerCert, nil }}}, Timeout: 10 * time.Second}
	if resp, err := stranger.Get(n.url("/")); err == nil {
		resp.Body.Close()
		t.Error("a certificate of an unknown CA was accepted")
	}
	if _, _, err := n.do("GET", "/", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Metrics: +(http://\S+/metrics)`).FindStringSubmatch(n.log.String())
	if m == nil {
		t.Fatalf("no metrics address:\n%s", n.log)
	}
	var out string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = string(b)
		if strings.Contains(out, "keyquorum_tls_handshake_failures_total{reason=") || time.Now().After(deadline) {
			break
		}
	}
	if !regexp.MustCompile(`keyquorum_tls_handshake_failures_total\{reason="(unknown_ca|bad_certificate)"\} [1-9]`).MatchString(out) {
		t.Errorf("the refused handshake is not counted:\n%s", grepLines(out, "handshake"))
	}
	if !regexp.MustCompile(`keyquorum_http_request_duration_seconds_count\{code="200",route="GET /\{\$\}"\} [1-9]`).MatchString(out) {
		t.Errorf("the status page request is not counted by its route:\n%s", grepLines(out, "request_duration_seconds_count"))
	}
	if strings.Contains(out, "/healthz") || strings.Contains(out, "stranger") {
		t.Error("a raw path or a certificate name became a label")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
