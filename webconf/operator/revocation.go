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

// CRLSet holds the configured CRLs of the bundle's CAs (--crl). Each file is bound, by key, to
// the CA that validly signed it at start; it is read again when it changes (checked at most every
// crlRecheck, when a certificate of that CA comes in), so an administrator can drop in a fresh
// CRL without a restart. Every reload checks the signature against the bound CA and that the CRL
// is not older than the last one seen (its CRL number and thisUpdate never go back). It fails
// closed: while a CA's CRL is unusable — unreadable, signed by another CA (a swapped file), older
// than the last one, or past its next update — that CA's certificates are refused. The last CRL
// seen of each CA (its number and thisUpdate) is remembered in a [CRLMemory] (the operator
// list), so that a restart with an older file is refused too.
type CRLSet struct {
	cas   []*x509.Certificate // the CAs a CRL may be signed by
	mem   CRLMemory           // nil: remembered for the life of the process only
	mu    sync.Mutex
	files []*crlFile
}

// CRLSeen is the last CRL accepted of a CA: what a later one must not go back from.
type CRLSeen struct {
	Number     string    `json:"number,omitempty"` // decimal; "" for a CRL without a number
	ThisUpdate time.Time `json:"this_update"`
	Path       string    `json:"path,omitempty"` // where it was read, for the administrator
}

// CRLMemory keeps the last CRL seen of each CA across restarts, by the CA's key hash ([CAKey]);
// *Operators implements it.
type CRLMemory interface {
	LastCRL(caKey string) (CRLSeen, bool, error)
	SeenCRL(caKey string, seen CRLSeen) error
}

// CRLRecheck is how often a configured CRL file is looked at for a change.
const CRLRecheck = 5 * time.Second

type crlFile struct {
	path    string
	mod     time.Time
	size    int64
	checked time.Time
	ca      *x509.Certificate // the CA the file is bound to (its first valid signer)
	caKey   string            // CAKey(ca)
	number  *big.Int          // the CRL number of the last CRL accepted (nil: none had one)
	this    time.Time         // its thisUpdate
	// recalled is set once the last CRL remembered of the bound CA (CRLMemory) was read.
	recalled bool
	revoked  map[string]bool
	next     time.Time
	err      error
}

// LoadCRLs reads the configured CRL files. A file that cannot be used at start is an error:
// the service would refuse every certificate of that CA — among them a CRL older than the last
// one mem remembers of its CA. mem nil remembers only for the life of the process.
func LoadCRLs(paths []string, cas []*x509.Certificate, mem CRLMemory, now time.Time) (*CRLSet, error) {
	s := &CRLSet{cas: cas, mem: mem}
	for _, p := range paths {
		f := &crlFile{path: p}
		f.load(cas, mem, now)
		if f.err != nil {
			return nil, f.err
		}
		for _, other := range s.files {
			if other.caKey == f.caKey {
				return nil, &CRLError{Path: p, Problem: "a second CRL of the same CA (" + f.ca.Subject.String() + "): give each CA's CRL once"}
			}
		}
		s.files = append(s.files, f)
	}
	return s, nil
}

func (f *crlFile) load(cas []*x509.Certificate, mem CRLMemory, now time.Time) {
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
	if f.ca == nil {
		for _, ca := range cas {
			if bytes.Equal(ca.RawSubject, list.RawIssuer) && list.CheckSignatureFrom(ca) == nil {
				f.ca, f.caKey = ca, CAKey(ca)
				break
			}
		}
		if f.ca == nil {
			f.err = &CRLError{Path: f.path, Problem: "not signed by the management CA or a CA of --ca-bundle (issuer " + list.Issuer.String() + ")"}
			return
		}
	} else if !bytes.Equal(f.ca.RawSubject, list.RawIssuer) || list.CheckSignatureFrom(f.ca) != nil {
		f.err = &CRLError{Path: f.path, Problem: "not signed by the CA it belongs to (" + f.ca.Subject.String() + ", by its key): the file was replaced by another CA's CRL; install a current CRL of " + f.ca.Subject.String()}
		return
	}
	if mem != nil && !f.recalled {
		last, ok, err := mem.LastCRL(f.caKey)
		if err != nil {
			f.err = &CRLError{Path: f.path, Problem: "the last CRL seen of its CA cannot be read from the operator list: " + err.Error()}
			return
		}
		if ok {
			if last.Number != "" {
				n, good := new(big.Int).SetString(last.Number, 10)
				if !good {
					f.err = &CRLError{Path: f.path, Problem: fmt.Sprintf("the operator list remembers an unreadable CRL number %q of its CA", last.Number)}
					return
				}
				f.number = n
			}
			f.this = last.ThisUpdate
		}
		f.recalled = true
	}
	if f.number != nil && (list.Number == nil || list.Number.Cmp(f.number) < 0) {
		f.err = &CRLError{Path: f.path, Problem: fmt.Sprintf("older than the CRL seen before (CRL number %v, last seen %v, remembered across restarts): install a current CRL of %s", list.Number, f.number, f.ca.Subject.String())}
		return
	}
	if !f.this.IsZero() && list.ThisUpdate.Before(f.this) {
		f.err = &CRLError{Path: f.path, Problem: fmt.Sprintf("older than the CRL seen before (issued %s, last seen %s): install a current CRL of %s",
			list.ThisUpdate.UTC().Format(time.RFC3339), f.this.UTC().Format(time.RFC3339), f.ca.Subject.String())}
		return
	}
	revoked := make(map[string]bool, len(list.RevokedCertificateEntries))
	for _, e := range list.RevokedCertificateEntries {
		revoked[strings.ToUpper(e.SerialNumber.Text(16))] = true
	}
	advanced := !list.ThisUpdate.Equal(f.this) || (list.Number != nil && (f.number == nil || list.Number.Cmp(f.number) != 0))
	if mem != nil && advanced {
		seen := CRLSeen{ThisUpdate: list.ThisUpdate.UTC(), Path: f.path}
		if list.Number != nil {
			seen.Number = list.Number.String()
		}
		// Remembered before it is used: a CRL that cannot be remembered could be rolled back
		// by the next restart, so it is not used (fail closed).
		if err := mem.SeenCRL(f.caKey, seen); err != nil {
			f.err = &CRLError{Path: f.path, Problem: "the CRL cannot be remembered in the operator list: " + err.Error()}
			return
		}
	}
	f.mod, f.size, f.revoked, f.next, f.err = fi.ModTime(), fi.Size(), revoked, list.NextUpdate, nil
	f.number, f.this = list.Number, list.ThisUpdate
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
// CRL is unusable or out of date. A CA without a configured CRL is not checked here. The CA is
// the one whose key signed cert; [CRLSet.CheckIssued] names it by key instead.
func (s *CRLSet) Check(cert *x509.Certificate, now time.Time) error {
	if s == nil {
		return nil
	}
	for _, f := range s.files {
		if bytes.Equal(f.ca.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(f.ca) == nil {
			return s.CheckIssued(cert, f.caKey, now)
		}
	}
	return nil
}

// CheckIssued is Check for a certificate whose chain was verified against the CA with key hash
// caKey ([CAKey]): the CRL bound to that CA decides, whatever any CRL file says of its issuer.
func (s *CRLSet) CheckIssued(cert *x509.Certificate, caKey string, now time.Time) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		if f.caKey != caKey {
			continue
		}
		if now.Sub(f.checked) >= CRLRecheck {
			f.load(s.cas, s.mem, now)
		}
		if f.err != nil {
			return f.err
		}
		if !f.next.IsZero() && now.After(f.next) {
			return &CRLError{Path: f.path, Problem: fmt.Sprintf("out of date since %s (its next update): install a current CRL of %s", f.next.UTC().Format("2006-01-02 15:04:05 UTC"), f.ca.Subject.String())}
		}
		if f.revoked[SerialHex(cert)] {
			return ErrCertRevoked
		}
		return nil
	}
	return nil
}
