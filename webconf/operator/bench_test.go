package operator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type discardRecorder struct{}

func (discardRecorder) RecordAudit(string, string, string) error { return nil }

// BenchmarkOperatorsGrowth measures what every request and the Operators page cost with 10,
// 1 000 and 10 000 operators, revoked management-CA serials and revoked entries in a bundle
// CA's CRL: admitting a request's certificate (revocation, the CRL, the operator record) and
// listing the operators and certificates. Admitting must not grow; listing grows linearly with
// what it lists.
func BenchmarkOperatorsGrowth(b *testing.B) {
	for _, n := range []int{10, 1_000, 10_000} {
		dir := b.TempDir()
		now := time.Now()
		pki, err := LoadPKI(filepath.Join(dir, "pki"), nil, now)
		if err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(dir, "operators.db")
		ops, err := OpenOperators(path)
		if err != nil {
			b.Fatal(err)
		}
		err = ops.db.Update(func(tx *bolt.Tx) error {
			for i := range n {
				op, err := newOperator(Identity{ID: fmt.Sprintf("%064x", i), Subject: fmt.Sprintf("CN=operator %d", i), Issuer: "CN=bench"}, now)
				if err != nil {
					return err
				}
				op.Role = RoleCustodian
				if err := putOperator(tx, op); err != nil {
					return err
				}
				if err := putCert(tx, &IssuedCert{Serial: fmt.Sprintf("%X", 1_000_000+i), Subject: op.Subject, Issued: now, Revoked: now, RevokedBy: "bench"}); err != nil {
					return err
				}
			}
			return nil
		})
		ops.Close()
		if err != nil {
			b.Fatal(err)
		}
		if ops, err = OpenOperators(path); err != nil { // loads the revoked serials as at a start
			b.Fatal(err)
		}
		b.Cleanup(func() { ops.Close() })

		// A bundle CA whose CRL lists n serials, and a certificate of it that is not revoked.
		caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Bench PIV CA"}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		ca, _ := x509.ParseCertificate(caDER)
		entries := make([]x509.RevocationListEntry, n)
		for i := range entries {
			entries[i] = x509.RevocationListEntry{SerialNumber: big.NewInt(int64(10_000 + i)), RevocationTime: now}
		}
		crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Minute),
			NextUpdate: now.Add(24 * time.Hour), RevokedCertificateEntries: entries}, ca, caKey)
		if err != nil {
			b.Fatal(err)
		}
		crlPath := filepath.Join(dir, "bundle.crl")
		os.WriteFile(crlPath, crlDER, 0o644)
		auth, err := NewAuth(AuthConfig{PKI: pki, Operators: ops, CABundle: []*x509.Certificate{ca}, CRLFiles: []string{crlPath}, Recorder: discardRecorder{}}, now)
		if err != nil {
			b.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(5), Subject: pkix.Name{CommonName: "Bench operator"}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		leafDER, _ := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
		leaf, _ := x509.ParseCertificate(leafDER)
		mgmt, _, err := pki.IssueClient(pkix.Name{CommonName: "Bench management operator"}, now)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range []struct {
			name  string
			chain []*x509.Certificate
		}{{"admit-management-cert", []*x509.Certificate{mgmt, pki.CA}}, {"admit-bundle-cert-crl", []*x509.Certificate{leaf, ca}}} {
			b.Run(fmt.Sprintf("%s/size=%d", c.name, n), func(b *testing.B) {
				if _, err := auth.Admit(c.chain, "/", time.Now()); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := auth.Admit(c.chain, "/", time.Now()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("list-operators/size=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if l, err := ops.List(); err != nil || len(l) < n {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("list-certificates/size=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if l, err := ops.Certs(); err != nil || len(l) < n {
					b.Fatal(err)
				}
			}
		})
	}
}
