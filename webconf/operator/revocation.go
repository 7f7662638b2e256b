package operator

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"
)

// CRLFile is the management CA's certificate revocation list in the PKI directory (also served
// at /crl.pem), rewritten at every revocation and at every start.
const CRLFile = "crl.pem"

// crlValidity is how long a CRL of the management CA is valid for outside consumers; WebConf
// itself checks the revoked serials it keeps, on every request.
const crlValidity = 30 * 24 * time.Hour

// ErrCertRevoked is a client certificate on a revocation list.
var ErrCertRevoked = errors.New("the client certificate is revoked")

// CRLError is a configured CRL that cannot be used: missing, unreadable, not signed by a CA of
// the bundle, or past its next update. Certificates of its CA are refused until it is fixed.
type CRLError struct {
	Path    string
	Problem string
}

func (e *CRLError) Error() string { return fmt.Sprintf("crl %s: %s", e.Path, e.Problem) }

// writeCRL signs the management CA's CRL listing every revoked certificate, writes it to the
// PKI directory and returns its PEM.
func (p *PKI) writeCRL(certs []IssuedCert, now time.Time) ([]byte, error) {
	list := &x509.RevocationList{
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(crlValidity),
	}
	for _, c := range certs {
		if c.Revoked.IsZero() {
			continue
		}
		n, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok {
			continue
		}
		list.RevokedCertificateEntries = append(list.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: n, RevocationTime: c.Revoked})
	}
	der, err := x509.CreateRevocationList(rand.Reader, list, p.CA, p.caKey)
	if err != nil {
		return nil, fmt.Errorf("sign management crl: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	if err := writeFileAtomic(p.path(CRLFile), out, 0o644); err != nil {
		return nil, err
	}
	return out, nil
}

// CRLSet holds the configured CRLs of the bundle's CAs (--crl). Each file is read again when it
// changes (checked at most every crlRecheck), so an administrator can drop in a fresh CRL
// without a restart. It fails closed: while a CA's CRL is unusable, that CA's certificates are
// refused.
type CRLSet struct {
	cas   []*x509.Certificate // the CAs a CRL may be signed by
	mu    sync.Mutex
	files []*crlFile
}

// CRLRecheck is how often a configured CRL file is looked at for a change.
const CRLRecheck = 5 * time.Second

type crlFile struct {
	path     string
	mod      time.Time
	size     int64
	checked  time.Time
	issuer   []byte // raw subject of the CA that signed it
	issuerDN string
	revoked  map[string]bool
	next     time.Time
	err      error
}

// LoadCRLs reads the configured CRL files. A file that cannot be used at start is an error:
// the service would refuse every certificate of that CA.
func LoadCRLs(paths []string, cas []*x509.Certificate, now time.Time) (*CRLSet, error) {
	s := &CRLSet{cas: cas}
	for _, p := range paths {
		f := &crlFile{path: p}
		f.load(cas, now)
		if f.err != nil {
			return nil, f.err
		}
		for _, other := range s.files {
			if bytes.Equal(other.issuer, f.issuer) {
				return nil, &CRLError{Path: p, Problem: "a second CRL of the same CA (" + f.issuerDN + "): give each CA's CRL once"}
			}
		}
		s.files = append(s.files, f)
	}
	return s, nil
}

func (f *crlFile) load(cas []*x509.Certificate, now time.Time) {
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		f.err = &CRLError{Path: f.path, Problem: "cannot be read: " + err.Error()}
		return
	}
	if f.err == nil && f.revoked != nil && fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		f.err = &CRLError{Path: f.path, Problem: "cannot be read: " + err.Error()}
		return
	}
	list, err := ParseCRL(data)
	if err != nil {
		f.err = &CRLError{Path: f.path, Problem: err.Error()}
		return
	}
	var signer *x509.Certificate
	for _, ca := range cas {
		if bytes.Equal(ca.RawSubject, list.RawIssuer) && list.CheckSignatureFrom(ca) == nil {
			signer = ca
			break
		}
	}
	if signer == nil {
		f.err = &CRLError{Path: f.path, Problem: "not signed by the management CA or a CA of --ca-bundle (issuer " + list.Issuer.String() + ")"}
		return
	}
	revoked := make(map[string]bool, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		revoked[strings.ToUpper(e.SerialNumber.Text(16))] = true
	}
	f.mod, f.size, f.issuer, f.issuerDN, f.revoked, f.next, f.err = fi.ModTime(), fi.Size(), signer.RawSubject, signer.Subject.String(), revoked, list.NextUpdate, nil
}

// ParseCRL decodes a CRL in PEM ("X509 CRL") or DER.
func ParseCRL(data []byte) (*x509.RevocationList, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("parse crl: a PEM block %q, not an X509 CRL", block.Type)
		}
		data = block.Bytes
	}
	list, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("parse crl: %w", err)
	}
	return list, nil
}

// Check refuses a certificate its CA's configured CRL lists, or any certificate of a CA whose
// CRL is unusable or out of date. A CA without a configured CRL is not checked here.
func (s *CRLSet) Check(cert *x509.Certificate, now time.Time) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		if !bytes.Equal(f.issuer, cert.RawIssuer) {
			continue
		}
		if now.Sub(f.checked) >= CRLRecheck {
			f.load(s.cas, now)
		}
		if f.err != nil {
			return f.err
		}
		if !f.next.IsZero() && now.After(f.next) {
			return &CRLError{Path: f.path, Problem: fmt.Sprintf("out of date since %s (its next update): install a current CRL of %s", f.next.UTC().Format("2006-01-02 15:04:05 UTC"), f.issuerDN)}
		}
		if f.revoked[SerialHex(cert)] {
			return ErrCertRevoked
		}
		return nil
	}
	return nil
}
