package monitor

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm"
)

type fakeHSM struct{ err error }

func (f *fakeHSM) BackupKeyID(context.Context) (hsm.KeyID, error) {
	if f.err != nil {
		return hsm.KeyID{}, f.err
	}
	return hsm.KeyID{1, 2, 3, 4, 5, 6, 7, 8}, nil
}

type fakePad struct{ present bool }

func (p *fakePad) Present(context.Context) bool { return p.present }

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestMetricsFromAudit(t *testing.T) {
	h := &fakeHSM{err: hsm.ErrNoBackupKey}
	pad := &fakePad{present: true}
	m := New(Probes{DataDir: t.TempDir(), HSM: h, Pad: pad})
	out := scrape(t, m)
	for _, want := range []string{
		`keyquorum_ceremonies_ended_total{kind="generate",outcome="done"} 0`,
		"keyquorum_key_loaded 0", "keyquorum_hsm_reachable 1", "keyquorum_pinpad_present 1",
		"keyquorum_revoked_certificate_refusals_total 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fresh exposition lacks %q", want)
		}
	}
	serial := "ab12cd34ef56"
	for _, e := range []ceremony.AuditEntry{
		{Event: ceremony.AuditCeremonyStarted, Kind: ceremony.KindGenerate, Ceremony: 1},
		{Event: ceremony.AuditCardWritten, Kind: ceremony.KindGenerate, Ceremony: 1, Serials: []string{serial}, Message: "card " + serial + " written"},
		{Event: ceremony.AuditCeremonyStalled, Kind: ceremony.KindGenerate, Ceremony: 1},
		{Event: ceremony.AuditCeremonyDone, Kind: ceremony.KindGenerate, Ceremony: 1},
		{Event: ceremony.AuditCeremonyAborted, Kind: ceremony.KindLoad, Ceremony: 2},
		{Event: "operator.role", Message: "CN=bob given the role admin"},
	} {
		m.ObserveAudit(e)
	}
	h.err = nil
	pad.present = false
	m.ObserveRequest("GET /status", 200, 3*time.Millisecond)
	m.ObserveRequest("", 404, time.Millisecond)
	m.ObserveTransfer("backup", time.Second, nil)
	m.ObserveTransfer("restore", time.Second, errors.New("foreign key"))
	m.RevokedRefused()
	out = scrape(t, m)
	for _, want := range []string{
		`keyquorum_ceremonies_started_total{kind="generate"} 1`,
		`keyquorum_ceremonies_ended_total{kind="generate",outcome="done"} 1`,
		`keyquorum_ceremonies_ended_total{kind="load",outcome="aborted"} 1`,
		`keyquorum_ceremony_stalls_total{kind="generate"} 1`,
		"keyquorum_key_loaded 1", "keyquorum_pinpad_present 0",
		`keyquorum_http_request_duration_seconds_count{code="200",route="GET /status"} 1`,
		`keyquorum_http_request_duration_seconds_count{code="404",route="unmatched"} 1`,
		`keyquorum_hsm_transfers_total{operation="backup",outcome="ok"} 1`,
		`keyquorum_hsm_transfers_total{operation="restore",outcome="failed"} 1`,
		"keyquorum_revoked_certificate_refusals_total 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(out, serial) || strings.Contains(out, "bob") {
		t.Error("a card serial or an operator reached the metrics")
	}
	h.err = errors.New("token removed")
	if out := scrape(t, m); !strings.Contains(out, "keyquorum_hsm_reachable 0") {
		t.Error("an HSM that fails is reported reachable")
	}
}

func TestHandshakeReasons(t *testing.T) {
	m := New(Probes{DataDir: t.TempDir()})
	var passed []string
	l := log.New(m.ErrorLogWriter(func(s string) { passed = append(passed, s) }), "", 0)
	l.Print("http: TLS handshake error from 127.0.0.1:5555: tls: certificate signed by unknown authority")
	l.Print("http: TLS handshake error from 127.0.0.1:5556: remote error: tls: bad certificate")
	l.Print("http: TLS handshake error from 127.0.0.1:5557: EOF")
	l.Print("http: TLS handshake error from 10.1.1.1:1: tls: client offered only unsupported versions: [303]; some version")
	l.Print("http: superfluous response.WriteHeader call")
	out := scrape(t, m)
	for _, want := range []string{
		`keyquorum_tls_handshake_failures_total{reason="unknown_ca"} 1`,
		`keyquorum_tls_handshake_failures_total{reason="bad_certificate"} 1`,
		`keyquorum_tls_handshake_failures_total{reason="eof"} 1`,
		`keyquorum_tls_handshake_failures_total{reason="other"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if len(passed) != 5 {
		t.Errorf("lines handed on: %d", len(passed))
	}
	if strings.Contains(out, "127.0.0.1") {
		t.Error("a client address became a label")
	}
}

func TestHealth(t *testing.T) {
	dir := t.TempDir()
	h := &fakeHSM{err: hsm.ErrNoBackupKey}
	pad := &fakePad{present: true}
	m := New(Probes{DataDir: dir, HSM: h, Pad: pad})
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		m.Health().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	if code, body := get(); code != http.StatusOK || body != "up\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	pad.present = false
	if code, body := get(); code != http.StatusServiceUnavailable || body != "degraded\n" {
		t.Errorf("no pad: %d %q", code, body)
	}
	pad.present = true
	h.err = errors.New("session closed")
	if code, _ := get(); code != http.StatusServiceUnavailable {
		t.Errorf("HSM unreachable: %d", code)
	}
	h.err = nil
	if os.Geteuid() != 0 { // root writes anywhere: a read-only dir does not fail for it
		os.Chmod(dir, 0o500)
		if code, _ := get(); code != http.StatusServiceUnavailable {
			t.Errorf("read-only data dir: %d", code)
		}
		os.Chmod(dir, 0o700)
	}
	os.RemoveAll(dir)
	if code, _ := get(); code != http.StatusServiceUnavailable {
		t.Errorf("data dir gone: %d", code)
	}
	os.MkdirAll(dir, 0o700)
	if code, _ := get(); code != http.StatusOK {
		t.Errorf("recovered: %d", code)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".healthz-*")); len(left) != 0 {
		t.Errorf("health left files: %v", left)
	}
}
