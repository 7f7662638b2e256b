package webconf

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"testing"
)

// BenchmarkPages renders the status page and the live view through the whole middleware chain
// (headers, certificate, CSRF token) without TLS: the cost of a page on the appliance.
func BenchmarkPages(b *testing.B) {
	s := startService(b, b.TempDir(), serviceOptions{})
	cert := s.operatorCert("Bench")
	h := s.srv.Handler()
	for _, path := range []string{"/", "/ceremony", "/audit"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("GET", path, nil)
				req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert.Leaf}}}
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("GET %s: %d", path, rec.Code)
				}
			}
		})
	}
}
