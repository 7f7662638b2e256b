package operator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Names of the files the management PKI keeps in its directory (DataDir/webconf).
const (
	CACertFile        = "ca.pem"
	caKeyFile         = "ca-key.pem"
	serverCertFile    = "server.pem"
	serverKeyFile     = "server-key.pem"
	AdminP12File      = "admin.p12"
	AdminPasswordFile = "admin.p12.password"
	AdminCertFile     = "admin.pem"
	csrfKeyFile       = "csrf.key"
)

// Lifetimes of the certificates the management CA makes.
const (
	caLifetime     = 10 * 365 * 24 * time.Hour
	serverLifetime = 397 * 24 * time.Hour // what browsers accept for a server certificate
	clientLifetime = 2 * 365 * 24 * time.Hour
	// serverRenewal: a server certificate this close to its end is replaced at start.
	serverRenewal = 30 * 24 * time.Hour
)

// AdminSubject is the subject of the first administrator's client certificate; as an operator
// identity it reads "CN=Keyquorum administrator,O=Keyquorum".
var AdminSubject = pkix.Name{CommonName: "Keyquorum administrator", Organization: []string{"Keyquorum"}}

// PKI is WebConf's management PKI: a CA made on first start, the server certificate it signs,
// and the first administrator's client certificate.
type PKI struct {
	// Dir holds the files; the private keys and the PKCS#12 password are 0600.
	Dir string
	// CA is the management CA certificate; CAPEM its PEM encoding (what /ca.pem serves).
	CA    *x509.Certificate
	CAPEM []byte
	// Server is the TLS server certificate (chain: server, CA).
	Server tls.Certificate
	// AdminCreated is true when this start created the administrator's PKCS#12 file.
	AdminCreated bool
	// csrfKey keys the CSRF tokens; kept in the directory so that pages open in a browser stay
	// usable across a restart of the service.
	csrfKey []byte

	caKey *ecdsa.PrivateKey
}

// CACertPath, AdminP12Path and AdminPasswordPath are where an operator finds the files.
func (p *PKI) CACertPath() string        { return filepath.Join(p.Dir, CACertFile) }
func (p *PKI) AdminP12Path() string      { return filepath.Join(p.Dir, AdminP12File) }
func (p *PKI) AdminPasswordPath() string { return filepath.Join(p.Dir, AdminPasswordFile) }

// PKIError is a problem with the management PKI files; it names the file and what to do.
type PKIError struct {
	Path string
	Err  error
}

func (e *PKIError) Error() string {
	return fmt.Sprintf("management pki: %s: %v (move the webconf directory aside to create a new CA; every operator then needs a new client certificate)", e.Path, e.Err)
}

func (e *PKIError) Unwrap() error { return e.Err }

// LoadPKI opens the management PKI in dir, creating what is missing: the CA (ECDSA P-256) on
// first start, a server certificate for 127.0.0.1, ::1, localhost and hosts (replaced when it
// does not cover them, is near its end or was not made by this CA), and the administrator's
// client certificate as PKCS#12 with a random password in a 0600 file beside it.
//
// The administrator's files are made once; deleting admin.p12 makes a new certificate at the
// next start (the old one stays valid until it expires).
func LoadPKI(dir string, hosts []string, now time.Time) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &PKIError{Path: dir, Err: err}
	}
	p := &PKI{Dir: dir}
	if err := p.loadOrCreateCA(now); err != nil {
		return nil, err
	}
	if err := p.loadOrCreateServer(hosts, now); err != nil {
		return nil, err
	}
	if err := p.ensureAdmin(now); err != nil {
		return nil, err
	}
	if err := p.loadOrCreateCSRFKey(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *PKI) loadOrCreateCSRFKey() error {
	path := p.path(csrfKeyFile)
	key, err := os.ReadFile(path)
	switch {
	case err == nil && len(key) == 32:
		p.csrfKey = key
		return nil
	case err == nil:
		return &PKIError{Path: path, Err: errors.New("not a 32-byte key")}
	case !errors.Is(err, os.ErrNotExist):
		return &PKIError{Path: path, Err: err}
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("create csrf key: %w", err)
	}
	if err := writeFileAtomic(path, key, 0o600); err != nil {
		return err
	}
	p.csrfKey = key
	return nil
}

// CSRFKey is the key of WebConf's CSRF tokens, kept beside the PKI so that pages open in a
// browser stay usable across a restart; nil for a PKI not made by LoadPKI.
func (p *PKI) CSRFKey() []byte { return p.csrfKey }

func (p *PKI) path(name string) string { return filepath.Join(p.Dir, name) }

func (p *PKI) loadOrCreateCA(now time.Time) error {
	certPEM, certErr := os.ReadFile(p.path(CACertFile))
	keyPEM, keyErr := os.ReadFile(p.path(caKeyFile))
	switch {
	case certErr == nil && keyErr == nil:
		cert, err := ParseCertPEM(certPEM)
		if err != nil {
			return &PKIError{Path: p.path(CACertFile), Err: err}
		}
		key, err := parseKeyPEM(keyPEM)
		if err != nil {
			return &PKIError{Path: p.path(caKeyFile), Err: err}
		}
		if !publicKeyMatches(cert, key) {
			return &PKIError{Path: p.path(caKeyFile), Err: errors.New("the key does not belong to the CA certificate")}
		}
		p.CA, p.CAPEM, p.caKey = cert, certPEM, key
		return nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return &PKIError{Path: p.path(CACertFile), Err: certErr}
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return &PKIError{Path: p.path(caKeyFile), Err: keyErr}
	default:
		return &PKIError{Path: p.Dir, Err: errors.New("only one of the CA certificate and its key is present")}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("create management ca: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Keyquorum management CA " + shortHost(host), Organization: []string{"Keyquorum"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create management ca: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeKey(p.path(caKeyFile), key); err != nil {
		return err
	}
	if err := writeFileAtomic(p.path(CACertFile), certPEM, 0o644); err != nil {
		return err
	}
	p.CA, p.CAPEM, p.caKey = cert, certPEM, key
	return nil
}

// ServerNames are the names the server certificate always covers, besides configured hosts.
var ServerNames = []string{"127.0.0.1", "::1", "localhost"}

func (p *PKI) loadOrCreateServer(hosts []string, now time.Time) error {
	want := serverNames(hosts)
	if cert, err := tls.LoadX509KeyPair(p.path(serverCertFile), p.path(serverKeyFile)); err == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err == nil && leaf.CheckSignatureFrom(p.CA) == nil && now.Before(leaf.NotAfter.Add(-serverRenewal)) && covers(leaf, want) {
			cert.Leaf = leaf
			p.Server = cert
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: want[0], Organization: []string{"Keyquorum"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range want {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	if err := writeKey(p.path(serverKeyFile), key); err != nil {
		return err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), p.CAPEM...)
	if err := writeFileAtomic(p.path(serverCertFile), chain, 0o644); err != nil {
		return err
	}
	leaf, _ := x509.ParseCertificate(der)
	p.Server = tls.Certificate{Certificate: [][]byte{der, p.CA.Raw}, PrivateKey: key, Leaf: leaf}
	return nil
}

// serverNames is the sorted, de-duplicated list of names the server certificate must cover.
func serverNames(hosts []string) []string {
	names := slices.Clone(ServerNames)
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	return names
}

func covers(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func (p *PKI) ensureAdmin(now time.Time) error {
	if _, err := os.Stat(p.path(AdminP12File)); err == nil {
		if _, err := os.Stat(p.path(AdminPasswordFile)); err != nil {
			return &PKIError{Path: p.path(AdminPasswordFile), Err: errors.New("missing: delete admin.p12 too to make a new administrator certificate")}
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return &PKIError{Path: p.path(AdminP12File), Err: err}
	}
	cert, key, err := p.IssueClient(AdminSubject, now)
	if err != nil {
		return err
	}
	password := newPassword()
	pfx, err := pkcs12.Modern2023.Encode(key, cert, []*x509.Certificate{p.CA}, password)
	if err != nil {
		return fmt.Errorf("encode administrator pkcs#12: %w", err)
	}
	// The password file first: a PKCS#12 without its password would be useless.
	if err := writeFileAtomic(p.path(AdminPasswordFile), []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(p.path(AdminP12File), pfx, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(p.path(AdminCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return err
	}
	p.AdminCreated = true
	return nil
}

// IssueClient makes a client certificate of the management CA for subject, with a new ECDSA
// P-256 key.
func (p *PKI) IssueClient(subject pkix.Name, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(clientLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	return cert, key, nil
}

// ClientCAs is the pool client certificates are verified against: the management CA and the
// certificates of an optional bundle (e.g. the corporate CA that issues operators' PIV cards).
func (p *PKI) ClientCAs(bundle []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	for _, c := range bundle {
		pool.AddCert(c)
	}
	return pool
}

// Fingerprint is the SHA-256 of the CA certificate, as operators compare it before trusting it.
func (p *PKI) Fingerprint() string {
	sum := sha256.Sum256(p.CA.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// LoadCABundle reads a PEM file of CA certificates. A file without one certificate is refused:
// an empty bundle is most likely the wrong file.
func LoadCABundle(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ca bundle: %w", err)
	}
	certs, err := parseCABundle(data)
	if err != nil {
		return nil, fmt.Errorf("read ca bundle %s: %w", path, err)
	}
	return certs, nil
}

// parseCABundle decodes the CERTIFICATE blocks of a PEM bundle, skipping other blocks.
func parseCABundle(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return certs, nil
}

// ParseCertPEM decodes one PEM certificate.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return ek, nil
}

func publicKeyMatches(cert *x509.Certificate, key *ecdsa.PrivateKey) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(&key.PublicKey)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeFileAtomic writes a file so that a crash leaves either the old or the new content, with
// mode set before any byte is written.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return &PKIError{Path: path, Err: err}
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return &PKIError{Path: path, Err: err}
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return &PKIError{Path: path, Err: err}
	}
	return nil
}

func randomSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

// newPassword is 26 characters of base32 (130 bits): typed by hand into an import dialog if
// need be, so no symbols that keyboards disagree on.
func newPassword() string {
	b := make([]byte, 16)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

func shortHost(h string) string {
	h, _, _ = strings.Cut(h, ".")
	if h == "" {
		return "appliance"
	}
	return h
}

// operatorOf is the operator identity of a verified client certificate: its subject in RFC 2253
// form, as the ceremony journal and the audit log record it.
func operatorOf(cert *x509.Certificate) string {
	return cert.Subject.String()
}

// IssuePKCS12 makes a client certificate of the management CA for subject (and e-mail
// address, if any) with a new P-256 key, and its PKCS#12 file under a new password.
func IssuePKCS12(p *PKI, subject pkix.Name, email string, now time.Time) (*x509.Certificate, []byte, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", fmt.Errorf("issue operator certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(clientLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if email != "" {
		tmpl.EmailAddresses = []string{email}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, nil, "", fmt.Errorf("issue operator certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, "", fmt.Errorf("issue operator certificate: %w", err)
	}
	password := newPassword()
	pfx, err := pkcs12.Modern2023.Encode(key, cert, []*x509.Certificate{p.CA}, password)
	if err != nil {
		return nil, nil, "", fmt.Errorf("encode operator pkcs#12: %w", err)
	}
	return cert, pfx, password, nil
}
