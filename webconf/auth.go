package webconf

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
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

	AuditBackup         = "hsm.backup"          // a backup downloaded
	AuditRestore        = "hsm.restore"         // a backup restored into the HSM
	AuditRestoreRefused = "hsm.restore.refused" // a restore refused (nothing changed)
)

// ApprovalHeader carries an approval token: the proof of a fresh WebAuthn assertion that a
// dangerous action needs. Pages put it into a form field; the command line sends it here.
const ApprovalHeader = "X-Keyquorum-Approval"

// stepUpField is the form field (and URL query parameter, for an upload) of the same token.
const stepUpField = "webauthn"

// DefaultRPID is the WebAuthn relying party ID without a configured host name.
const DefaultRPID = "localhost"

// auth is WebConf's authentication and authorization: who a certificate is, whether it is
// revoked, what its role allows, and the fresh WebAuthn assertions of dangerous actions.
type auth struct {
	ops    *Operators
	pki    *PKI
	crls   *crlSet
	audit  AuditRecorder
	rpID   string
	log    *slog.Logger
	steps  *stepUps
	issued *downloads

	crlMu  sync.Mutex
	crlPEM []byte
}

func newAuth(cfg Config, log *slog.Logger, now time.Time) (*auth, error) {
	if cfg.Operators == nil {
		return nil, errors.New("new webconf: the operator list is required (OpenOperators)")
	}
	rec := cfg.Recorder
	if rec == nil {
		rec, _ = cfg.Audit.(AuditRecorder)
	}
	if rec == nil {
		return nil, errors.New("new webconf: an audit recorder is required (the ceremony manager)")
	}
	rpID := cfg.RPID
	if rpID == "" {
		rpID = DefaultRPID
	}
	crls, err := loadCRLs(cfg.CRLFiles, append([]*x509.Certificate{cfg.PKI.CA}, cfg.CABundle...), now)
	if err != nil {
		return nil, fmt.Errorf("new webconf: %w", err)
	}
	a := &auth{ops: cfg.Operators, pki: cfg.PKI, crls: crls, audit: rec, rpID: rpID, log: log,
		steps: newStepUps(), issued: newDownloads()}
	if err := a.bootstrap(now); err != nil {
		return nil, err
	}
	if cfg.RecoverAdmin {
		if err := a.recoverAdmin(now); err != nil {
			return nil, err
		}
	}
	if err := a.refreshCRL(now); err != nil {
		return nil, err
	}
	return a, nil
}

// bootstrap makes the first administrator's certificate (made by LoadPKI) an administrator
// while the operator list has none.
func (a *auth) bootstrap(now time.Time) error {
	pemBytes, err := os.ReadFile(a.pki.path(adminCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a PKI made before admin.pem was kept: an administrator is made by hand
	}
	if err != nil {
		return &PKIError{Path: a.pki.path(adminCertFile), Err: err}
	}
	cert, err := parseCertPEM(pemBytes)
	if err != nil {
		return &PKIError{Path: a.pki.path(adminCertFile), Err: err}
	}
	op, made, err := a.ops.Bootstrap(cert, a.pki.CA, now)
	if err != nil {
		return fmt.Errorf("new webconf: %w", err)
	}
	if made {
		a.log.Info("first administrator given the admin role", "operator", op.Name())
		return a.record("keyquorum", AuditOperatorRole, fmt.Sprintf("%s given the role admin: the first administrator's certificate (%s)", op.Name(), AdminP12File))
	}
	return nil
}

// recoverAdmin gives the first administrator's certificate the admin role and removes its
// security keys (see Config.RecoverAdmin).
func (a *auth) recoverAdmin(now time.Time) error {
	pemBytes, err := os.ReadFile(a.pki.path(adminCertFile))
	if err != nil {
		return &PKIError{Path: a.pki.path(adminCertFile), Err: err}
	}
	cert, err := parseCertPEM(pemBytes)
	if err != nil {
		return &PKIError{Path: a.pki.path(adminCertFile), Err: err}
	}
	if a.ops.Revoked(serialHex(cert)) {
		return fmt.Errorf("recover administrator: the first administrator's certificate is revoked: move %s and %s aside, start once to make a new one, then recover", AdminP12File, adminCertFile)
	}
	id := identityOf(cert, a.pki.CA)
	if _, err := a.ops.Seen(id, now); err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	const by = "keyquorum (administrator recovery at start)"
	op, _, err := a.ops.SetRole(id.ID, RoleAdmin, by, now)
	if err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	removed, err := a.ops.RemoveKey(id.ID, "")
	if err != nil {
		return fmt.Errorf("recover administrator: %w", err)
	}
	a.log.Warn("first administrator recovered: admin role, security keys removed", "operator", op.Name(), "keys_removed", len(removed))
	return a.record("keyquorum", AuditOperatorRecovery, fmt.Sprintf("administrator recovery at start: %s given the role admin and its %d security keys removed; it registers a new one with its certificate (%s)", op.Name(), len(removed), AdminP12File))
}

// record writes an audit entry; a failure is the caller's failure (nothing unaudited happens).
func (a *auth) record(operator, event, message string) error {
	if err := a.audit.RecordAudit(operator, event, message); err != nil {
		a.log.Error("audit entry not recorded", "event", event, "err", err)
		return fmt.Errorf("record audit entry: %w", err)
	}
	return nil
}

// refreshCRL signs and stores the management CA's CRL with every revoked serial.
func (a *auth) refreshCRL(now time.Time) error {
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

// admit identifies the operator of a verified client certificate: refused when revoked (by the
// management CA or a configured CRL), recorded in the operator list on first sight.
func (a *auth) admit(w http.ResponseWriter, r *http.Request, rd *renderer, chain []*x509.Certificate, csrf string) (operator, bool) {
	now := time.Now()
	leaf := chain[0]
	id := identityOfChain(chain, a.pki.CA)
	if id.Management && a.ops.Revoked(id.Serial) {
		a.log.Warn("revoked certificate refused", "operator", id.Subject, "serial", id.Serial, "path", r.URL.Path)
		rd.problem(w, r, problemRevoked(id, "the management CA"))
		return operator{}, false
	}
	if !id.Management {
		if err := a.crls.check(leaf, now); err != nil {
			a.log.Warn("certificate refused by its CRL", "operator", id.Subject, "serial", id.Serial, "err", err)
			var ce *CRLError
			if errors.As(err, &ce) {
				rd.problem(w, r, problem{Status: http.StatusForbidden, Title: "Revocation list unusable",
					What: fmt.Sprintf("Certificates of %s are checked against the revocation list %s, which cannot be used: %s.", id.Issuer, ce.Path, ce.Problem),
					Todo: "Ask the appliance's administrator to install a current CRL of your CA at that path (replace the file; WebConf reads it again by itself). Until then certificates of your CA are refused."})
				return operator{}, false
			}
			rd.problem(w, r, problemRevoked(id, id.Issuer))
			return operator{}, false
		}
	}
	name := id.Name()
	if !printable(name, 256) {
		rd.problem(w, r, problem{Status: http.StatusForbidden, Title: "Certificate subject not usable",
			What: "The client certificate's subject is empty, not printable, or longer than 256 characters, so it cannot name you in the audit log.",
			Todo: "Use a client certificate with a subject that names you (issued by the management CA or your organisation's CA)."})
		return operator{}, false
	}
	rec, err := a.ops.Seen(id, now)
	if err != nil {
		a.log.Error("operator list", "err", err)
		rd.problem(w, r, problem{Status: http.StatusInternalServerError, Title: "Operator list unavailable",
			What: "WebConf could not read its operator list: " + err.Error(),
			Todo: "Check the service log and the data directory's disk, then reload."})
		return operator{}, false
	}
	return operator{Name: name, CSRF: csrf, ID: id.ID, Role: rec.Role, Ident: id, Rec: rec}, true
}

func problemRevoked(id Identity, by string) problem {
	return problem{Status: http.StatusForbidden, Code: CodeRevoked, Title: "Certificate revoked",
		What: fmt.Sprintf("The client certificate %s (serial %s) was revoked by %s; WebConf no longer accepts it.", id.Subject, id.Serial, by),
		Todo: "Remove this certificate from your browser or card and ask a WebConf administrator for a new one."}
}

// authorizeRoutes is the middleware between the CSRF checks and the routes: it finds the
// request's route, its action, and lets it through only if the operator's role allows the
// action and, for a dangerous one, the request carries a fresh assertion's token.
func (s *Server) authorizeRoutes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isPublic(r.URL.Path) {
			mux.ServeHTTP(w, r)
			return
		}
		_, pattern := mux.Handler(r)
		a, ok := actionOf(pattern, formOf(r))
		if !ok {
			s.log.Error("route without an access rule refused: add it to routeActions in roles.go", "pattern", pattern, "path", r.URL.Path)
			s.rd.problem(w, r, problem{Status: http.StatusForbidden, Title: "No access rule for this page",
				What: "This page has no rule that says which roles may use it, so nobody may.",
				Todo: "This is a defect of this WebConf build: note the address and report it."})
			return
		}
		if a != actionInHandler && !s.authorize(w, r, a) {
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// formOf is the request's urlencoded form (the CSRF check has parsed it, or parses it now);
// other bodies are not read here.
func formOf(r *http.Request) url.Values {
	if r.Method != http.MethodPost {
		return nil
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return nil
	}
	return r.PostForm
}

// authorize checks that the request's operator may do a, and for a dangerous action consumes
// the token of a fresh WebAuthn assertion made for a (the ApprovalHeader, the form field or
// the URL query parameter "webauthn"). When it returns false it has answered the request. The
// handlers of the JSON API that learn their action from the body call it themselves.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, a Action) bool {
	op, ok := operatorFrom(r.Context())
	if !ok {
		s.rd.problem(w, r, problemNoCertificate(s.cfg.PKI))
		return false
	}
	if !Allowed(op.Role, a) {
		s.log.Info("action refused for the operator's role", "operator", op.Name, "role", op.Role.String(), "action", a)
		if op.Role == RoleNone {
			s.rd.problem(w, r, problemNoRole(op))
		} else {
			s.rd.problem(w, r, problemNotAllowed(op, a))
		}
		return false
	}
	if !needsFresh(a, &op.Rec) {
		return true
	}
	if len(op.Rec.Keys) == 0 {
		s.rd.problem(w, r, problemRegisterKey(op, a, s.auth.rpID))
		return false
	}
	if err := s.auth.steps.consume(stepUpToken(r), op.ID, a, time.Now()); err != nil {
		s.log.Info("dangerous action refused without a fresh assertion", "operator", op.Name, "action", a, "err", err)
		s.rd.problem(w, r, problemNeedAssertion(a, err))
		return false
	}
	s.log.Info("fresh assertion accepted", "operator", op.Name, "action", a)
	return true
}

func stepUpToken(r *http.Request) string {
	if t := r.Header.Get(ApprovalHeader); t != "" {
		return t
	}
	if t := r.URL.Query().Get(stepUpField); t != "" {
		return t
	}
	if f := formOf(r); f != nil {
		return f.Get(stepUpField)
	}
	return ""
}

func problemRegisterKey(op operator, a Action, rpID string) problem {
	return problem{Status: http.StatusForbidden, Code: CodeRegisterKey, Title: "Register a security key first",
		What: fmt.Sprintf("To %s WebConf needs, besides your certificate, a confirmation with your security key (WebAuthn), and you have registered none yet.", ruleOf(a).what),
		Todo: fmt.Sprintf("Open your account page, register your security key (a FIDO2 key with a PIN or fingerprint), then try again. The page must be opened at https://%s — the name WebConf's security keys are bound to.", rpID),
		Back: "/account"}
}

func problemNeedAssertion(a Action, err error) problem {
	return problem{Status: http.StatusForbidden, Code: CodeApprovalRequired, Title: "Security key confirmation required",
		What: fmt.Sprintf("To %s WebConf needs a fresh confirmation with your security key, made for this very action: %v.", ruleOf(a).what, err),
		Todo: "Go back and press the button again: your browser then asks for your security key and its PIN or fingerprint. From the command line, pass an approval made on your account page (it is valid for 5 minutes, for one action)."}
}

// keyOrigin is the origin security keys work at: the relying party ID and the port this
// request came in on.
func (a *auth) keyOrigin(r *http.Request) string {
	o := "https://" + a.rpID
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, _ := net.SplitHostPort(la.String()); port != "" && port != "443" {
			o += ":" + port
		}
	}
	return o
}

// minutes says a duration in words for a page.
func minutes(d time.Duration) string {
	if m := int(d / time.Minute); m != 1 {
		return fmt.Sprintf("%d minutes", m)
	}
	return "1 minute"
}

// operatorContext puts an admitted operator into a request's context.
func operatorContext(ctx context.Context, op operator) context.Context {
	return context.WithValue(ctx, operatorKey, op)
}

// problemForAuth explains an error of the operator list, or any other as problemFor does.
func problemForAuth(err error, back string) problem {
	p := problem{Status: http.StatusConflict, What: err.Error(), Back: back}
	switch {
	case errors.Is(err, ErrLastAdmin):
		p.Title, p.Todo = "The last administrator keeps the admin role", "Give another operator the admin role first; then this one can lose it."
	case errors.Is(err, ErrNoSuchOperator):
		p.Status, p.Title, p.Todo = http.StatusNotFound, "No such operator", "Reload the Operators page: an operator appears there once their certificate has opened WebConf."
	case errors.Is(err, ErrNoSuchKey):
		p.Status, p.Title, p.Todo = http.StatusNotFound, "No such security key", "Reload the page and choose a key from the list."
	case errors.Is(err, ErrKeyRegistered):
		p.Title, p.Todo = "Security key registered already", "This key is registered already (for you or another operator). Use another key, or remove it there first."
	case errors.Is(err, ErrNoSuchCert):
		p.Status, p.Title, p.Todo = http.StatusBadRequest, "No such certificate", "Give the serial number in hexadecimal, as the Operators page lists it."
	default:
		return problemFor(err, back)
	}
	return p
}
