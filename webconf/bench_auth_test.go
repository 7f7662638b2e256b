package webconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// BenchmarkStepUp is one fresh assertion as a dangerous action needs it, through the handlers
// (begin, the authenticator's signature, finish and its verification, the token consumed),
// without TLS: what a security key confirmation costs the appliance.
func BenchmarkStepUp(b *testing.B) {
	s := startService(b, b.TempDir(), serviceOptions{})
	admin := s.browser("Bench Admin")
	h := s.srv.Handler()
	send := func(path, ct, body string) (int, string) {
		req := httptest.NewRequest("POST", "https://localhost"+path, strings.NewReader(body))
		req.Host = "localhost"
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{admin.cert.Leaf, s.pki.CA}}}
		req.Header.Set("Content-Type", ct)
		req.Header.Set(csrfHeader, admin.csrf)
		req.Header.Set(web.FetchHeader, "1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	form := url.Values{"_path": {"/ceremonies"}, "kind": {"load"}}.Encode()
	loadDetails := operator.NewDetails(operator.ActionForKind("load"), url.Values{"kind": {"load"}})
	b.ReportAllocs()
	for b.Loop() {
		code, body := send("/webauthn/assert/begin", "application/x-www-form-urlencoded", form)
		var o options
		if code != 200 || json.Unmarshal([]byte(body), &o) != nil {
			b.Fatalf("begin: %d %s", code, body)
		}
		code, body = send("/webauthn/assert/finish?session="+url.QueryEscape(o.Session), "application/json", string(admin.key.get(o, "https://localhost")))
		var f struct{ Token string }
		if code != 200 || json.Unmarshal([]byte(body), &f) != nil {
			b.Fatalf("finish: %d %s", code, body)
		}
		if err := s.srv.auth.Steps().Consume(f.Token, admin.id.ID, operator.ActionForKind("load"), &loadDetails, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
