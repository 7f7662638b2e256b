package webconf

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/webconf/operator"
)

// BenchmarkPages renders the status page and the live view through the whole middleware chain
// (headers, certificate, revocation and role checks, CSRF token) without TLS: the cost of a
// page on the appliance.
func BenchmarkPages(b *testing.B) {
	s := startService(b, b.TempDir(), serviceOptions{})
	cert := s.operatorCert("Bench")
	id := operator.IdentityOf(cert.Leaf, s.pki.CA)
	s.ops.Seen(id, time.Now())
	if _, _, err := s.ops.SetRole(id.ID, operator.RoleAdmin, "bench", time.Now()); err != nil {
		b.Fatal(err)
	}
	h := s.srv.Handler()
	for _, path := range []string{"/", "/ceremony", "/audit"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("GET", path, nil)
				req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert.Leaf, s.pki.CA}}}
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("GET %s: %d", path, rec.Code)
				}
			}
		})
	}
}
