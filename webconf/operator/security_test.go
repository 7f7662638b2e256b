package operator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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

	"github.com/go-webauthn/webauthn/webauthn"
	bolt "go.etcd.io/bbolt"
)

// testCA is a CA made by a test, with its key.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newTestCA makes a CA with the given subject (any name: the attack uses the management CA's).
func newTestCA(t *testing.T, subject pkix.Name) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key}
}

func (ca testCA) issue(t *testing.T, subject pkix.Name) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// verifiedChain verifies cert as the TLS layer does, against the management CA and the bundle.
func verifiedChain(t *testing.T, p *PKI, bundle []*x509.Certificate, cert *x509.Certificate) []*x509.Certificate {
	t.Helper()
	chains, err := cert.Verify(x509.VerifyOptions{Roots: p.ClientCAs(bundle), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("verify %s: %v", cert.Subject, err)
	}
	return chains[0]
}

func adminCert(t *testing.T, p *PKI) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(p.path(AdminCertFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCertPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestAuth(t *testing.T, p *PKI, ops *Operators, bundle []*x509.Certificate) *Auth {
	t.Helper()
	a, err := NewAuth(AuthConfig{PKI: p, Operators: ops, CABundle: bundle, Recorder: discardRecorder{}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSecuritySameNamedCAIsNotAdmin: a CA in --ca-bundle with the management CA's name (another
// appliance's, or one made for the attack) issues "CN=Keyquorum administrator": it is a new
// operator without a role, not the administrator, and shares none of its security keys. An
// administrator who revokes its serial cuts it off although the management CA did not issue it.
func TestSecuritySameNamedCAIsNotAdmin(t *testing.T) {
	dir := t.TempDir()
	p, err := LoadPKI(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ops, err := OpenOperators(filepath.Join(dir, OperatorsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	foreign := newTestCA(t, p.CA.Subject)
	bundle := []*x509.Certificate{foreign.cert}
	a := newTestAuth(t, p, ops, bundle)

	admin, err := a.Admit(verifiedChain(t, p, bundle, adminCert(t, p)), "/", time.Now())
	if err != nil || admin.Role != RoleAdmin || !admin.Ident.Management {
		t.Fatalf("the real administrator: %+v, %v", admin, err)
	}
	if err := ops.AddKey(admin.ID, SecurityKey{Name: "admin key", Credential: webauthn.Credential{ID: []byte("admin-credential")}}); err != nil {
		t.Fatal(err)
	}

	forged := foreign.issue(t, AdminSubject)
	chain := verifiedChain(t, p, bundle, forged)
	got, err := a.Admit(chain, "/", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != RoleNone || got.Ident.Management || got.ID == admin.ID || len(got.Rec.Keys) != 0 {
		t.Fatalf("a same-named foreign CA's administrator certificate: role %q, management %v, same operator %v, keys %d",
			got.Role, got.Ident.Management, got.ID == admin.ID, len(got.Rec.Keys))
	}
	if got.Ident.CA != CAKey(foreign.cert) {
		t.Errorf("bound to CA %s, want the foreign CA's key", got.Ident.CA)
	}

	// Revocation on the Operators page holds for a bundle CA's certificate too.
	if _, _, err := ops.Revoke(got.Ident.Serial, admin.Name, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Admit(chain, "/", time.Now()); !errors.As(err, new(*RevokedError)) {
		t.Fatalf("the revoked foreign certificate: %v", err)
	}
	if _, err := a.Admit(verifiedChain(t, p, bundle, adminCert(t, p)), "/", time.Now()); err != nil {
		t.Fatalf("the administrator after the foreign serial was revoked: %v", err)
	}
}

// TestSecurityOperatorMigration: an operator list of schema 1 (keyed by issuer name and subject)
// keeps its first administrator, with role and security keys, when the administrator comes back
// with the management CA's certificate; a same-named bundle CA's certificate does not take the
// entry over, whether it comes first or after. An entry of a bundle CA whose name no other
// configured CA has is re-bound on first sight; of two same-named bundle CAs, neither gets it.
func TestSecurityOperatorMigration(t *testing.T) {
	dir := t.TempDir()
	p, err := LoadPKI(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign := newTestCA(t, p.CA.Subject)
	corp := newTestCA(t, pkix.Name{CommonName: "Corporate PIV CA"})
	twinA := newTestCA(t, pkix.Name{CommonName: "Twin CA"})
	twinB := newTestCA(t, pkix.Name{CommonName: "Twin CA"})
	admin := adminCert(t, p)
	alice := corp.issue(t, pkix.Name{CommonName: "Alice"})
	bob := twinA.issue(t, pkix.Name{CommonName: "Bob"})

	// An operator list as schema 1 wrote it.
	path := filepath.Join(dir, OperatorsFile)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	legacy := func(c *x509.Certificate, role Role, key string) *Operator {
		return &Operator{ID: legacyOperatorID(c.RawIssuer, c.RawSubject), Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			Role: role, WebAuthnID: []byte("handle-" + key), Keys: []SecurityKey{{Name: key, Credential: webauthn.Credential{ID: []byte(key)}}}}
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := operatorMigrations[0](tx); err != nil {
			return err
		}
		tx.Bucket(bucketOpMeta).Put(keyOpSchema, []byte{0, 0, 0, 1})
		for _, op := range []*Operator{legacy(admin, RoleAdmin, "admin-key"), legacy(alice, RoleCustodian, "alice-key"), legacy(bob, RoleAuditor, "bob-key")} {
			if err := putOperator(tx, op); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	ops, err := OpenOperators(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	bundle := []*x509.Certificate{foreign.cert, corp.cert, twinA.cert, twinB.cert}
	a := newTestAuth(t, p, ops, bundle)

	// The forged administrator comes first: it does not get the entry.
	forged, err := a.Admit(verifiedChain(t, p, bundle, foreign.issue(t, AdminSubject)), "/", time.Now())
	if err != nil || forged.Role != RoleNone || len(forged.Rec.Keys) != 0 {
		t.Fatalf("forged administrator before the real one: role %q keys %d err %v", forged.Role, len(forged.Rec.Keys), err)
	}
	got, err := a.Admit(verifiedChain(t, p, bundle, admin), "/", time.Now())
	if err != nil || got.Role != RoleAdmin || len(got.Rec.Keys) != 1 || got.Rec.CA != CAKey(p.CA) {
		t.Fatalf("first administrator after the migration: role %q keys %d ca %q err %v", got.Role, len(got.Rec.Keys), got.Rec.CA, err)
	}
	if _, err := ops.Get(legacyOperatorID(admin.RawIssuer, admin.RawSubject)); !errors.Is(err, ErrNoSuchOperator) {
		t.Errorf("the entry of schema 1 is still there after it was bound: %v", err)
	}
	forged, _ = a.Admit(verifiedChain(t, p, bundle, foreign.issue(t, AdminSubject)), "/", time.Now())
	if forged.Role != RoleNone || forged.ID == got.ID {
		t.Fatalf("forged administrator after the real one: role %q", forged.Role)
	}

	al, err := a.Admit(verifiedChain(t, p, bundle, alice), "/", time.Now())
	if err != nil || al.Role != RoleCustodian || len(al.Rec.Keys) != 1 {
		t.Fatalf("operator of a uniquely named bundle CA: role %q keys %d err %v", al.Role, len(al.Rec.Keys), err)
	}
	bo, err := a.Admit(verifiedChain(t, p, bundle, bob), "/", time.Now())
	if err != nil || bo.Role != RoleNone || len(bo.Rec.Keys) != 0 {
		t.Fatalf("operator of one of two same-named bundle CAs: role %q keys %d err %v", bo.Role, len(bo.Rec.Keys), err)
	}
	if _, err := ops.Get(legacyOperatorID(bob.RawIssuer, bob.RawSubject)); err != nil {
		t.Errorf("the unbound entry of schema 1 was lost: %v", err)
	}
}

func (ca testCA) crl(t *testing.T, number int64, this time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	l := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: this, NextUpdate: time.Now().Add(24 * time.Hour)}
	for _, c := range revoked {
		l.RevokedCertificateEntries = append(l.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, l, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestSecurityCRLSwapAndRollback: a CRL file is bound to the CA that signed it at start, by key.
// Replaced by another trusted CA's CRL (one with the same name, even), or by an older CRL of its
// own CA that does not list the revoked certificate yet, it lets no revoked certificate in: the
// CA's certificates are refused until a current CRL of that CA is back, and then the revoked one
// is still refused.
func TestSecurityCRLSwapAndRollback(t *testing.T) {
	corp := newTestCA(t, pkix.Name{CommonName: "Corp PIV CA"})
	twin := newTestCA(t, pkix.Name{CommonName: "Corp PIV CA"}) // a trusted CA of the same name
	revoked := corp.issue(t, pkix.Name{CommonName: "Revoked"})
	good := corp.issue(t, pkix.Name{CommonName: "Good"})
	path := filepath.Join(t.TempDir(), "corp.crl")
	now := time.Now()
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		now = now.Add(CRLRecheck)
		os.Chtimes(path, now, now)
	}
	write(corp.crl(t, 10, now.Add(-time.Hour), revoked))
	set, err := LoadCRLs([]string{path}, []*x509.Certificate{corp.cert, twin.cert}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	key := CAKey(corp.cert)
	expect := func(what string, c *x509.Certificate, wantRevoked, wantCRLError bool) {
		t.Helper()
		for _, err := range []error{set.CheckIssued(c, key, now), set.Check(c, now)} {
			var ce *CRLError
			switch {
			case wantRevoked && !errors.Is(err, ErrCertRevoked):
				t.Errorf("%s: %v, want revoked", what, err)
			case wantCRLError && !errors.As(err, &ce):
				t.Errorf("%s: %v, want an unusable CRL", what, err)
			case !wantRevoked && !wantCRLError && err != nil:
				t.Errorf("%s: %v", what, err)
			}
		}
	}
	expect("revoked, the right CRL", revoked, true, false)
	expect("good, the right CRL", good, false, false)

	write(twin.crl(t, 99, now))
	expect("revoked, the file swapped for the same-named CA's CRL", revoked, false, true)
	expect("good, the file swapped", good, false, true)

	write(corp.crl(t, 11, now.Add(-30*time.Minute), revoked))
	expect("revoked, the right CRL back", revoked, true, false)
	expect("good, the right CRL back", good, false, false)

	write(corp.crl(t, 5, now.Add(-2*time.Hour))) // older, still valid, without the revoked serial
	expect("revoked, an older CRL", revoked, false, true)
	write(corp.crl(t, 12, now.Add(-3*time.Hour))) // a newer number but an older thisUpdate
	expect("revoked, a CRL issued before the last one", revoked, false, true)

	write(corp.crl(t, 12, now.Add(-time.Minute), revoked))
	expect("revoked, a current CRL", revoked, true, false)
	expect("good, a current CRL", good, false, false)
}

// TestSecurityCRLRollbackAcrossRestart: the last CRL seen of a CA is remembered in the operator
// list, so a restart with an older CRL file (still valid, without the revoked serial) is
// refused as a running service refuses it; without that memory the same file would load.
func TestSecurityCRLRollbackAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	p, err := LoadPKI(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	corp := newTestCA(t, pkix.Name{CommonName: "Corp PIV CA"})
	revoked := corp.issue(t, pkix.Name{CommonName: "Revoked"})
	crlPath := filepath.Join(dir, "corp.crl")
	now := time.Now()
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(crlPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		now = now.Add(CRLRecheck)
		os.Chtimes(crlPath, now, now)
	}
	older := corp.crl(t, 5, now.Add(-2*time.Hour)) // valid, but before the revocation
	write(corp.crl(t, 10, now.Add(-time.Hour), revoked))
	opsPath := filepath.Join(dir, OperatorsFile)
	start := func() (*Auth, *Operators, error) {
		t.Helper()
		ops, err := OpenOperators(opsPath)
		if err != nil {
			t.Fatal(err)
		}
		a, err := NewAuth(AuthConfig{PKI: p, Operators: ops, CABundle: []*x509.Certificate{corp.cert}, CRLFiles: []string{crlPath}, Recorder: discardRecorder{}}, now)
		if err != nil {
			ops.Close()
		}
		return a, ops, err
	}
	a, ops, err := start()
	if err != nil {
		t.Fatal(err)
	}
	chain := verifiedChain(t, p, []*x509.Certificate{corp.cert}, revoked)
	var re *RevokedError
	if _, err := a.Admit(chain, "/", now); !errors.As(err, &re) {
		t.Fatalf("revoked certificate with the current CRL: %v", err)
	}
	// A newer CRL dropped in while running is remembered too.
	write(corp.crl(t, 11, now.Add(-30*time.Minute), revoked))
	if _, err := a.Admit(chain, "/", now); !errors.As(err, &re) {
		t.Fatalf("revoked certificate with the newer CRL: %v", err)
	}
	if last, ok, err := ops.LastCRL(CAKey(corp.cert)); err != nil || !ok || last.Number != "11" {
		t.Fatalf("remembered CRL: %+v %v %v", last, ok, err)
	}
	ops.Close()

	// The restart: the file was put back to an older CRL.
	write(older)
	var ce *CRLError
	if _, _, err := start(); !errors.As(err, &ce) || !strings.Contains(ce.Problem, "older than the CRL seen before") || !strings.Contains(ce.Problem, "last seen 11") {
		t.Fatalf("start with an older CRL: %v", err)
	}
	// Without the memory (the attack as it was) the same file loads: the memory refuses it.
	if _, err := LoadCRLs([]string{crlPath}, []*x509.Certificate{corp.cert}, nil, now); err != nil {
		t.Fatalf("the older CRL without memory: %v", err)
	}
	// A current CRL back: the service starts and the revoked certificate stays out.
	write(corp.crl(t, 12, now.Add(-time.Minute), revoked))
	a, ops, err = start()
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	if _, err := a.Admit(chain, "/", now); !errors.As(err, &re) {
		t.Fatalf("revoked certificate after the restart: %v", err)
	}
	// Rolled back while running after the restart: refused as well.
	write(older)
	if _, err := a.Admit(chain, "/", now); !errors.As(err, &ce) {
		t.Fatalf("older CRL while running: %v", err)
	}
}
