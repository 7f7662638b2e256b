package operator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// sanWithUPNOp is a subjectAltName with a UPN otherName and an rfc822Name.
func sanWithUPNOp(upn, email string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidUPN)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(upn)) })
			})
		})
		b.AddASN1(cbasn1.Tag(1).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(email)) })
	})
	return b.BytesOrPanic()
}

// selfCAOp makes a CA that is not the management CA, and a client certificate it signed.
func selfCAOp(t *testing.T, cn string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corporate PIV CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: []string{"Corp"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return ca, tlsCertOp(cert, key)
}

func tlsCertOp(cert *x509.Certificate, key *ecdsa.PrivateKey) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p, err := LoadPKI(dir, []string{"appliance.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !p.AdminCreated {
		t.Error("first start did not report the administrator certificate as created")
	}
	for name, want := range map[string]os.FileMode{caKeyFile: 0o600, serverKeyFile: 0o600, AdminP12File: 0o600, AdminPasswordFile: 0o600, csrfKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if _, ok := p.CA.PublicKey.(*ecdsa.PublicKey); !ok || !p.CA.IsCA {
		t.Errorf("CA is not an ECDSA CA: %T", p.CA.PublicKey)
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "appliance.example"} {
		if err := p.Server.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("server certificate does not cover %s: %v", h, err)
		}
	}

	// The PKCS#12 opens with the password from its file and holds a client certificate of the CA.
	pw, err := os.ReadFile(p.AdminPasswordPath())
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := os.ReadFile(p.AdminP12Path())
	if err != nil {
		t.Fatal(err)
	}
	key, cert, chain, err := pkcs12.DecodeChain(pfx, strings.TrimSpace(string(pw)))
	if err != nil {
		t.Fatalf("decode admin.p12 with its password: %v", err)
	}
	if _, ok := key.(*ecdsa.PrivateKey); !ok {
		t.Errorf("admin key is %T", key)
	}
	if len(chain) != 1 || !chain[0].Equal(p.CA) {
		t.Error("admin.p12 does not carry the CA certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.ClientCAs(nil), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate does not verify as a client certificate of the CA: %v", err)
	}
	if got := operatorOf(cert); got != "CN=Keyquorum administrator,O=Keyquorum" {
		t.Errorf("admin operator identity %q", got)
	}
	if _, _, _, err := pkcs12.DecodeChain(pfx, "wrong"); err == nil {
		t.Error("admin.p12 opened with a wrong password")
	}

	// A restart keeps everything; a new host name makes a new server certificate of the same CA.
	p2, err := LoadPKI(dir, []string{"appliance.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if p2.AdminCreated || !p2.CA.Equal(p.CA) || !bytes.Equal(p2.Server.Certificate[0], p.Server.Certificate[0]) {
		t.Error("restart changed the PKI")
	}
	p3, err := LoadPKI(dir, []string{"other.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !p3.CA.Equal(p.CA) || bytes.Equal(p3.Server.Certificate[0], p.Server.Certificate[0]) || p3.Server.Leaf.VerifyHostname("other.example") != nil {
		t.Error("a new host name did not give a new server certificate of the same CA")
	}
	// Near its end the server certificate is replaced.
	p4, err := LoadPKI(dir, []string{"other.example"}, now.Add(serverLifetime-serverRenewal/2))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(p4.Server.Certificate[0], p3.Server.Certificate[0]) {
		t.Error("a server certificate near its end was kept")
	}

	// A CA key that does not match its certificate is refused, naming the file.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := writeKey(filepath.Join(dir, caKeyFile), other); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPKI(dir, nil, now); err == nil || !strings.Contains(err.Error(), caKeyFile) {
		t.Errorf("mismatched CA key: %v", err)
	}
}

func TestLoadCABundle(t *testing.T) {
	dir := t.TempDir()
	ca, _ := selfCAOp(t, "x")
	good := filepath.Join(dir, "bundle.pem")
	os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644)
	certs, err := LoadCABundle(good)
	if err != nil || len(certs) != 1 || !certs[0].Equal(ca) {
		t.Errorf("bundle: %v, %d certs", err, len(certs))
	}
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o644)
	if _, err := LoadCABundle(empty); err == nil {
		t.Error("a bundle without a certificate was accepted")
	}
}

func TestParseUPN(t *testing.T) {
	if upn, err := parseUPN(sanWithUPNOp("bob@corp.example", "b@c.d")); err != nil || upn != "bob@corp.example" {
		t.Errorf("parseUPN = %q, %v", upn, err)
	}
	if _, err := parseUPN(sanWithUPNOp("two\nlines", "b@c.d")); err == nil {
		t.Error("a UPN with a control character was accepted")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte("host.example")) })
	})
	if _, err := parseUPN(b.BytesOrPanic()); !errors.Is(err, errNoUPN) {
		t.Errorf("SAN without a UPN: %v", err)
	}
	if _, err := parseUPN([]byte{0x30, 0x05, 0xa0}); err == nil {
		t.Error("truncated SAN accepted")
	}
}

// TestOperatorsSchema: the operator list's only migration creates its buckets and the version;
// a file of a newer schema is refused.
func TestOperatorsSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), OperatorsFile)
	o, err := OpenOperators(path)
	if err != nil {
		t.Fatal(err)
	}
	o.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketOpMeta, bucketOps, bucketCerts, bucketCRLs} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		if v := tx.Bucket(bucketOpMeta).Get(keyOpSchema); !bytes.Equal(v, []byte{0, 0, 0, 3}) {
			t.Errorf("schema %x", v)
		}
		return nil
	})
	o.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOpMeta).Put(keyOpSchema, []byte{0, 0, 0, 99}) })
	o.Close()
	if _, err := OpenOperators(path); !errors.Is(err, ErrOperatorsSchema) {
		t.Errorf("newer schema: %v", err)
	}
}

// FuzzParseUPN feeds the subjectAltName decoder with what a client certificate of a bundle CA
// may carry: a UPN comes out printable, or an error.
func FuzzParseUPN(f *testing.F) {
	f.Add(sanWithUPNOp("alice@corp.example", "alice@corp.example"))
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x05, 0xa0, 0x03, 0x06, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		upn, err := parseUPN(der)
		if err != nil {
			if upn != "" {
				t.Fatalf("error %v with upn %q", err, upn)
			}
			return
		}
		if !utf8.ValidString(upn) || !Printable(upn, 256) {
			t.Fatalf("accepted upn %q", upn)
		}
	})
}

// FuzzParseCRL feeds the --crl decoder (PEM or DER): a list or an error, never a panic.
func FuzzParseCRL(f *testing.F) {
	f.Add([]byte("-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseCRL(data)
		if (err == nil) == (list == nil) {
			t.Fatalf("list %v with error %v", list, err)
		}
	})
}

// FuzzParseCABundle feeds the --ca-bundle decoder.
func FuzzParseCABundle(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("not pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := parseCABundle(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
	})
}

// TestOperatorsMigration3: a file of schema 2 gets the bucket of the last CRLs seen; its
// operators and certificates stay.
func TestOperatorsMigration3(t *testing.T) {
	path := filepath.Join(t.TempDir(), OperatorsFile)
	o, err := OpenOperators(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.RecordIssued(IssuedCert{Serial: "0A", Subject: "CN=x"}, Identity{ID: "x"}, RoleNone, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	o.db.Update(func(tx *bolt.Tx) error { // as schema 2 left it
		if err := tx.DeleteBucket(bucketCRLs); err != nil {
			return err
		}
		return tx.Bucket(bucketOpMeta).Put(keyOpSchema, []byte{0, 0, 0, 2})
	})
	o.Close()
	o, err = OpenOperators(path)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	o.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketCRLs) == nil || !bytes.Equal(tx.Bucket(bucketOpMeta).Get(keyOpSchema), []byte{0, 0, 0, 3}) {
			t.Error("schema 3 not reached")
		}
		return nil
	})
	if certs, _ := o.Certs(); len(certs) != 1 {
		t.Errorf("certificates after the migration: %+v", certs)
	}
	if err := o.SeenCRL("ca", CRLSeen{Number: "7", ThisUpdate: time.Unix(1, 0).UTC()}); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := o.LastCRL("ca"); err != nil || !ok || got.Number != "7" {
		t.Errorf("last crl: %+v %v %v", got, ok, err)
	}
}
