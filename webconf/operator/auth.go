package operator

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// AuditRecorder appends operator events to the audit log; *ceremony.Manager implements it.
type AuditRecorder interface {
	RecordAudit(operator, event, message string) error
}

// Audit event keys of WebConf's operator management. They are stable: auditors filter on them.
const (
	AuditOperatorRole       = "operator.role"        // a role given or taken away
	AuditOperatorKeyAdded   = "operator.key.added"   // a security key registered
	AuditOperatorKeyRemoved = "operator.key.removed" // security keys removed
	AuditOperatorKeyClone   = "operator.key.clone"   // an assertion with a signature counter that went back
	AuditOperatorApproval   = "operator.approval"    // a command-line approval minted after an assertion
	AuditOperatorRecovery   = "operator.recovery"    // the first administrator recovered at a start
	AuditCertIssued         = "operator.cert.issued" // an operator certificate issued
	AuditCertRevoked        = "operator.cert.revoked"
)

// ApprovalHeader carries an approval token: the proof of a fresh WebAuthn assertion that a
// dangerous action needs. Pages put it into a form field; the command line sends it here.
const ApprovalHeader = "X-Keyquorum-Approval"

// ContentDigestHeader carries the SHA-256 (hex) of an API upload's body (a backup to restore,
// an object to import): the approval binds it, and WebConf refuses the upload when the body
// turns out to be another file.
const ContentDigestHeader = "X-Keyquorum-Content-SHA256"

// DefaultRPID is the WebAuthn relying party ID without a configured host name.
const DefaultRPID = "localhost"

// Auth is WebConf's authentication and authorization: who a certificate is, whether it is
// revoked, what its role allows, and the fresh WebAuthn assertions of dangerous actions.
type Auth struct {
	ops    *Operators
	pki    *PKI
	crls   *CRLSet
	bundle []*x509.Certificate
	audit  AuditRecorder
	rpID   string
	log    *slog.Logger
	steps  *StepUps
	issued *Downloads
	attest AttestationPolicy

	crlMu  sync.Mutex
	crlPEM []byte

	// recoveryCode is the one-time code of a pending administrator recovery ("" without one):
	// made at every start while one is pending, printed on the console (RecoveryCode).
	recoveryCode string
}

// AuthConfig is what an auth is built from. PKI, Operators and Recorder are required.
type AuthConfig struct {
	PKI       *PKI
	Operators *Operators
	// CABundle are further CAs whose client certificates are accepted; CRLFiles their CRLs.
	CABundle []*x509.Certificate
	CRLFiles []string
	// Recorder writes operator events to the audit log.
	Recorder AuditRecorder
	// RPID is the WebAuthn relying party ID; "" means DefaultRPID.
	RPID string
	// RecoverAdmin gives the first administrator's certificate the admin role again and
	// removes its security keys (serve --recover-admin).
	RecoverAdmin bool
	// Attestation restricts which security keys may be registered; the zero policy requires
	// no attestation.
	Attestation AttestationPolicy
	// Logger receives operational logs (never secrets); nil discards.
	Logger *slog.Logger
}

// NewAuth builds the operator security from cfg: it loads the configured CRLs, makes the first
// administrator an administrator while there is none, recovers it when asked, and writes the
// management CA's CRL.
func NewAuth(cfg AuthConfig, now time.Time) (*Auth, error) {
	if cfg.PKI == nil || cfg.Operators == nil || cfg.Recorder == nil {
		return nil, errors.New("new webconf: the management pki, the operator list and an audit recorder are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rpID := cfg.RPID
	if rpID == "" {
		rpID = DefaultRPID
	}
	crls, err := LoadCRLs(cfg.CRLFiles, append([]*x509.Certificate{cfg.PKI.CA}, cfg.CABundle...), cfg.Operators, now)
	if err != nil {
		return nil, fmt.Errorf("new webconf: %w", err)
	}
	a := &Auth{ops: cfg.Operators, pki: cfg.PKI, crls: crls, bundle: cfg.CABundle, audit: cfg.Recorder, rpID: rpID, log: log,
		steps: newStepUps(), issued: newDownloads(), attest: cfg.Attestation}
	if err := a.bootstrap(now); err != nil {
		return nil, err
	}
	if cfg.RecoverAdmin {
		if err := a.recoverAdmin(now); err != nil {
			return nil, err
		}
	}
	pending, err := a.ops.RecoveryPending()
	if err != nil {
		return nil, err
	}
	if pending {
		b := make([]byte, 10)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		a.recoveryCode = base32.StdEncoding.EncodeToString(b) // 16 characters, 80 bits
	}
	if err := a.RefreshCRL(now); err != nil {
		return nil, err
	}
	return a, nil
}

// bootstrap makes the first administrator's certificate (made by LoadPKI) an administrator
// while the operator list has none.
func (a *Auth) bootstrap(now time.Time) error {
	pemBytes, err := os.ReadFile(a.pki.path(AdminCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a PKI made before admin.pem was kept: an administrator is made by hand
	}
	if err != nil {
		return &PKIError{Path: a.pki.path(AdminCertFile), Err: err}
	}
	cert, err := ParseCertPEM(pemBytes)
	if err != nil {
		return &PKIError{Path: a.pki.path(AdminCertFile), Err: err}
	}
	op, made, err := a.ops.Bootstrap(cert, a.pki.CA, now)
	if err != nil {
		return fmt.Errorf("new webconf: %w", err)
	}
	if made {
		a.log.Info("first administrator given the admin role", "operator", op.Name())
		return a.Record("keyquorum", AuditOperatorRole, fmt.Sprintf("%s given the role admin: the first administrator's certificate (%s)", op.Name(), AdminP12File))
	}
	return nil
}

// recoverAdmin gives the first administrator's certificate the admin role and removes its
// security keys (see [AuthConfig].RecoverAdmin).
func (a *Auth) recoverAdmin(now time.Time) error {
	pemBytes, err := os.ReadFile(a.pki.path(AdminCertFile))
	if err != nil {
		return &PKIError{Path: a.pki.path(AdminCertFile), Err: err}
	}
	cert, err := ParseCertPEM(pemBytes)
	if err != nil {
		return &PKIError{Path: a.pki.path(AdminCertFile), Err: err}
	}
	if a.ops.Revoked(SerialHex(cert)) {
		return fmt.Errorf("recover administrator: the first administrator's certificate is revoked: move %s and %s aside, start once to make a new one, then recover", AdminP12File, AdminCertFile)
	}
	id := IdentityOf(cert, a.pki.CA)
	if _, err := a.ops.Seen(id, now); err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	const by = "keyquorum (administrator recovery at start)"
	// The certificates this one replaces (an admin.p12 moved aside, an older one of the same
	// name) are the same operator: they are revoked, or they would be the administrator too.
	replaced, err := a.ops.ReplaceCerts(cert, by, now)
	if err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	if len(replaced) > 0 {
		if err := a.Record("keyquorum", AuditCertRevoked, fmt.Sprintf("administrator recovery at start: the certificates %s of %s replaced by %s (serial %s) revoked", strings.Join(replaced, ", "), id.Subject, AdminP12File, id.Serial)); err != nil {
			return err
		}
	}
	if err := a.ops.SetRecoveryPending(id.ID, true); err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	op, _, err := a.ops.SetRole(id.ID, RoleAdmin, by, now)
	if err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	removed, err := a.ops.RemoveKey(id.ID, "")
	if err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	a.log.Warn("first administrator recovered: admin role, security keys removed", "operator", op.Name(), "keys_removed", len(removed))
	return a.Record("keyquorum", AuditOperatorRecovery, fmt.Sprintf("administrator recovery at start: %s given the role admin and its %d security keys removed; it registers a new one with its certificate (%s) and the one-time code on the appliance's console", op.Name(), len(removed), AdminP12File))
}

// RecoveryCode is the one-time code the next security key of a recovered administrator needs,
// "" when no recovery is pending. serve prints it on the appliance's console, nowhere else.
func (a *Auth) RecoveryCode() string { return a.recoveryCode }

// CheckRecoveryCode reports whether code is the pending recovery's code (spaces and case do
// not matter).
func (a *Auth) CheckRecoveryCode(code string) bool {
	code = strings.ToUpper(strings.Join(strings.Fields(code), ""))
	return a.recoveryCode != "" && subtle.ConstantTimeCompare([]byte(code), []byte(a.recoveryCode)) == 1
}

// Record writes an audit entry; a failure is the caller's failure (nothing unaudited happens).
func (a *Auth) Record(operator, event, message string) error {
	if err := a.audit.RecordAudit(operator, event, message); err != nil {
		a.log.Error("audit entry not recorded", "event", event, "err", err)
		return fmt.Errorf("record audit entry: %w", err)
	}
	return nil
}

// RefreshCRL signs and stores the management CA's CRL with every revoked serial.
func (a *Auth) RefreshCRL(now time.Time) error {
	certs, err := a.ops.Certs()
	if err != nil {
		return err
	}
	out, err := a.pki.writeCRL(certs, now)
	if err != nil {
		return err
	}
	a.crlMu.Lock()
	a.crlPEM = out
	a.crlMu.Unlock()
	return nil
}

// Operators is the operator list.
func (a *Auth) Operators() *Operators { return a.ops }

// Attestation is the policy on which security keys may be registered.
func (a *Auth) Attestation() AttestationPolicy { return a.attest }

// PKI is the management PKI.
func (a *Auth) PKI() *PKI { return a.pki }

// RPID is the WebAuthn relying party ID: the host name security keys are bound to.
func (a *Auth) RPID() string { return a.rpID }

// Steps are the WebAuthn ceremonies under way and the approval tokens they earned.
func (a *Auth) Steps() *StepUps { return a.steps }

// Issued keeps issued PKCS#12 files until their one download.
func (a *Auth) Issued() *Downloads { return a.issued }

// CRL is the PEM of the management CA's current CRL (what /crl.pem serves).
func (a *Auth) CRL() []byte {
	a.crlMu.Lock()
	defer a.crlMu.Unlock()
	return a.crlPEM
}

// RevokedError is a certificate refused because it is revoked; By names who revoked it: the
// management CA, or the issuer whose CRL lists it.
type RevokedError struct {
	ID Identity
	By string
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("the client certificate %s (serial %s) was revoked by %s", e.ID.Subject, e.ID.Serial, e.By)
}

// ErrSubjectUnusable is a certificate whose subject cannot name an operator in the audit log.
var ErrSubjectUnusable = errors.New("the client certificate's subject is empty, not printable, or longer than 256 characters")

// Admit identifies the operator of a verified client certificate chain: refused when revoked
// (by the management CA or a configured CRL), recorded in the operator list on first sight.
// On a refusal the returned operator carries the certificate's identity, and the error is a
// *RevokedError, a *CRLError (the certificate's CA has an unusable CRL), ErrSubjectUnusable, or
// an error of the operator list. path is the request's, for the log.
func (a *Auth) Admit(chain []*x509.Certificate, path string, now time.Time) (Caller, error) {
	leaf := chain[0]
	id := identityOfChain(chain, a.pki.CA, a.bundle)
	refused := Caller{Ident: id}
	if a.ops.Revoked(id.Serial) {
		// The operator list's revocations hold for every trusted CA: an administrator can cut
		// off a bundle CA's certificate by its serial without waiting for that CA's CRL.
		a.log.Warn("revoked certificate refused", "operator", id.Subject, "serial", id.Serial, "path", path)
		by := "the management CA"
		if !id.Management {
			by = "an administrator of this appliance"
		}
		return refused, &RevokedError{ID: id, By: by}
	}
	if !id.Management {
		if err := a.crls.CheckIssued(leaf, id.CA, now); err != nil {
			a.log.Warn("certificate refused by its CRL", "operator", id.Subject, "serial", id.Serial, "err", err)
			var ce *CRLError
			if errors.As(err, &ce) {
				return refused, ce
			}
			return refused, &RevokedError{ID: id, By: id.Issuer}
		}
	}
	name := id.Name()
	if !Printable(name, 256) {
		return refused, ErrSubjectUnusable
	}
	rec, err := a.ops.Seen(id, now)
	if err != nil {
		a.log.Error("operator list", "err", err)
		return refused, err
	}
	return Caller{Name: name, ID: id.ID, Role: rec.Role, Ident: id, Rec: rec}, nil
}

// AdmitNode identifies a node certificate (a cluster node's, see package cluster) of a verified
// chain: refused when revoked, otherwise a caller marked Node, without a role and never recorded
// in the operator list. A node certificate is not an operator: it may only fetch the state.
func (a *Auth) AdmitNode(chain []*x509.Certificate, path string) (Caller, error) {
	id := identityOfChain(chain, a.pki.CA, a.bundle)
	refused := Caller{Ident: id, Node: true}
	if !id.Management {
		return refused, errors.New("admit node: not a certificate of the management CA")
	}
	if a.ops.Revoked(id.Serial) {
		a.log.Warn("revoked node certificate refused", "node", id.Subject, "serial", id.Serial, "path", path)
		return refused, &RevokedError{ID: id, By: "the management CA"}
	}
	if !Printable(id.Name(), 256) {
		return refused, ErrSubjectUnusable
	}
	return Caller{Name: id.Name(), Ident: id, Node: true}, nil
}

// KeyOrigin is the origin security keys work at: the relying party ID and the port this
// request came in on.
func (a *Auth) KeyOrigin(r *http.Request) string {
	o := "https://" + a.rpID
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, _ := net.SplitHostPort(la.String()); port != "" && port != "443" {
			o += ":" + port
		}
	}
	return o
}

// NewContext puts an admitted operator into a request's context.
func NewContext(ctx context.Context, op Caller) context.Context {
	return context.WithValue(ctx, operatorKey, op)
}

type ctxKey int

const operatorKey ctxKey = iota

// Caller is the identity of a request's verified client certificate.
type Caller struct {
	Name  string // the certificate subject (and UPN or e-mail), as the journal records it
	CSRF  string // the CSRF token bound to this certificate
	ID    string // the operator list's key (see Identity.ID)
	Role  Role
	Ident Identity
	Rec   Operator // the operator list's entry as it was when the request came in
	// Node is a cluster node's certificate (AdmitNode): not an operator, no ID, no entry.
	Node bool
}

// FromContext is the operator the middleware admitted for a request.
func FromContext(ctx context.Context) (Caller, bool) {
	op, ok := ctx.Value(operatorKey).(Caller)
	return op, ok
}

// NameOf is the name of the request's operator; the middleware guarantees one on every
// route that calls this.
func NameOf(r *http.Request) string {
	op, _ := FromContext(r.Context())
	return op.Name
}

// IssueRecorded issues a client certificate of the management CA for subject (and e-mail
// address, if any) with a new P-256 key, records it in the operator list as issued by by (and
// its operator, with role, when that operator is new), and returns it with the identity it
// names and its PKCS#12 file under a new one-time password. Nothing of it is written to disk.
func (a *Auth) IssueRecorded(subject pkix.Name, email string, role Role, by string, now time.Time) (*x509.Certificate, Identity, []byte, string, error) {
	return a.issueRecorded(subject, email, role, by, false, now)
}

func (a *Auth) issueRecorded(subject pkix.Name, email string, role Role, by string, node bool, now time.Time) (*x509.Certificate, Identity, []byte, string, error) {
	cert, p12, password, err := IssuePKCS12(a.pki, subject, email, now)
	if err != nil {
		return nil, Identity{}, nil, "", err
	}
	id := IdentityOf(cert, a.pki.CA)
	rec := IssuedCert{Serial: id.Serial, Subject: id.Subject, Issued: now.UTC(), NotAfter: cert.NotAfter.UTC(), By: by, Node: node}
	if err := a.ops.RecordIssued(rec, id, role, by, now); err != nil {
		clear(p12)
		return nil, Identity{}, nil, "", err
	}
	return cert, id, p12, password, nil
}

// IssueNode issues and records a node certificate for cluster onboarding (cluster.Issuer):
// listed (marked as a node's) and revocable on the Operators page like every certificate issued
// here, but no operator. A revoked node certificate is refused at once ([Auth.AdmitNode]) and
// listed in the management CA's CRL, which other nodes load with --crl.
func (a *Auth) IssueNode(subject pkix.Name, by string, now time.Time) (*x509.Certificate, []byte, string, error) {
	cert, _, p12, password, err := a.issueRecorded(subject, "", RoleNone, by, true, now)
	return cert, p12, password, err
}

// Fingerprint is the SHA-256 of the management CA certificate (see [PKI.Fingerprint]).
func (a *Auth) Fingerprint() string { return a.pki.Fingerprint() }
