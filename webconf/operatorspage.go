package webconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// authRoutes adds the account, security key and operator management routes.
func (s *Server) authRoutes(mux *http.ServeMux) {
	actionFor := func(path string, form url.Values) (Action, bool) {
		req := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: "webconf"}
		_, pattern := mux.Handler(req)
		return actionOf(pattern, form)
	}
	wa := &webauthnHandlers{auth: s.auth, actionFor: actionFor, rd: s.rd, log: s.log}
	op := &operatorHandlers{auth: s.auth, rd: s.rd, log: s.log}

	mux.HandleFunc("GET /crl.pem", op.crl)
	mux.HandleFunc("GET /account", op.account)
	mux.HandleFunc("POST /account/keys/remove", op.removeOwnKey)
	mux.HandleFunc("POST /webauthn/register/begin", wa.registerBegin)
	mux.HandleFunc("POST /webauthn/register/finish", wa.registerFinish)
	mux.HandleFunc("POST /webauthn/assert/begin", wa.assertBegin)
	mux.HandleFunc("POST /webauthn/assert/finish", wa.assertFinish)
	mux.HandleFunc("GET /operators", op.list)
	mux.HandleFunc("POST /operators/role", op.setRole)
	mux.HandleFunc("POST /operators/issue", op.issue)
	mux.HandleFunc("GET /operators/issued/{id}", op.download)
	mux.HandleFunc("POST /operators/revoke", op.revoke)
	mux.HandleFunc("POST /operators/keys/remove", op.removeKeys)
	mux.HandleFunc("GET /api/v1/operators", op.apiOperators)
	mux.HandleFunc("POST /api/v1/operators/role", op.apiSetRole)
}

// operatorHandlers serve the account page and the administrators' operator management.
type operatorHandlers struct {
	auth *auth
	rd   *renderer
	log  *slog.Logger
}

// crl serves the management CA's CRL, to every client (like /ca.pem).
func (h *operatorHandlers) crl(w http.ResponseWriter, r *http.Request) {
	h.auth.crlMu.Lock()
	b := h.auth.crlPEM
	h.auth.crlMu.Unlock()
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Content-Disposition", `attachment; filename="keyquorum-management-ca.crl.pem"`)
	w.Write(b)
}

// accountView is the account page.
type accountView struct {
	Op         operator
	Rec        Operator
	Want       string // the origin security keys work at
	RightHost  bool
	Approvable []Action // the dangerous actions this operator may approve for the command line
}

func (h *operatorHandlers) account(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	rec, err := h.auth.ops.Get(op.ID)
	if err != nil && !errors.Is(err, ErrNoSuchOperator) {
		h.rd.problem(w, r, problemFor(err, "/"))
		return
	}
	if errors.Is(err, ErrNoSuchOperator) {
		rec = op.Rec
	}
	v := accountView{Op: op, Rec: rec, Want: h.auth.keyOrigin(r)}
	_, _, p := h.auth.relyingParty(r)
	v.RightHost = p == nil
	for _, a := range approvableActions() {
		if Allowed(op.Role, a) {
			v.Approvable = append(v.Approvable, a)
		}
	}
	h.rd.html(w, r, http.StatusOK, accountPage(h.rd.page(r, "Your account", "account"), v))
}

// approvableActions are the dangerous actions the command line can be approved for.
func approvableActions() []Action {
	var out []Action
	for a, rl := range rules {
		if rl.fresh && a != ActionKeyAdd && a != ActionKeyRemove {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

func (h *operatorHandlers) removeOwnKey(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	names, err := h.auth.ops.RemoveKey(op.ID, r.PostFormValue("key"))
	if err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/account"))
		return
	}
	if err := h.auth.record(op.Name, AuditOperatorKeyRemoved, fmt.Sprintf("%s removed their security key %q", op.Name, strings.Join(names, ", "))); err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/account"))
		return
	}
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// operatorsView is the Operators page.
type operatorsView struct {
	Operators []Operator
	Certs     []IssuedCert
	Me        string // the viewer's operator ID
	MySerial  string // the serial of the certificate the viewer uses
}

func (h *operatorHandlers) list(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	ops, err := h.auth.ops.List()
	if err != nil {
		h.rd.problem(w, r, problemFor(err, "/"))
		return
	}
	certs, err := h.auth.ops.Certs()
	if err != nil {
		h.rd.problem(w, r, problemFor(err, "/"))
		return
	}
	v := operatorsView{Operators: ops, Certs: certs, Me: op.ID}
	if op.Ident.Management {
		v.MySerial = op.Ident.Serial
	}
	h.rd.html(w, r, http.StatusOK, operatorsPage(h.rd.page(r, "Operators", "operators"), v))
}

func (h *operatorHandlers) setRole(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	role, err := ParseRole(r.PostFormValue("role"))
	if err != nil {
		h.rd.problem(w, r, problemBadForm(err.Error()))
		return
	}
	target, old, err := h.auth.ops.SetRole(r.PostFormValue("id"), role, op.Name, time.Now())
	if err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	if old != role {
		msg := fmt.Sprintf("%s: role changed from %s to %s by %s", target.Name(), old, role, op.Name)
		if err := h.auth.record(op.Name, AuditOperatorRole, msg); err != nil {
			h.rd.problem(w, r, problemForAuth(err, "/operators"))
			return
		}
		h.log.Info("operator role changed", "operator", target.Name(), "from", old.String(), "to", role.String(), "by", op.Name)
	}
	http.Redirect(w, r, "/operators", http.StatusSeeOther)
}

func (h *operatorHandlers) removeKeys(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	id := r.PostFormValue("id")
	target, err := h.auth.ops.Get(id)
	if err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	names, err := h.auth.ops.RemoveKey(id, "")
	if err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	msg := fmt.Sprintf("every security key of %s removed by %s (%s): they register a new one with their certificate", target.Name(), op.Name, strings.Join(names, ", "))
	if err := h.auth.record(op.Name, AuditOperatorKeyRemoved, msg); err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	http.Redirect(w, r, "/operators", http.StatusSeeOther)
}

// issuedView is the page after issuing a certificate.
type issuedView struct {
	Subject  string
	Serial   string
	Role     Role
	NotAfter time.Time
	Password string
	Download string
}

// issue makes an operator certificate with a new key as a PKCS#12 file under a one-time
// password; the file waits in memory for its one download and is never written to disk.
func (h *operatorHandlers) issue(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	cn := strings.TrimSpace(r.PostFormValue("cn"))
	email := strings.TrimSpace(r.PostFormValue("email"))
	role, err := ParseRole(r.PostFormValue("role"))
	switch {
	case err != nil:
		h.rd.problem(w, r, problemBadForm(err.Error()))
		return
	case !printable(cn, 64) || strings.ContainsAny(cn, `,+"\<>;=`):
		h.rd.problem(w, r, problemBadForm("The name (CN) must be 1 to 64 printable characters without , + \" \\ < > ; ="))
		return
	}
	if email != "" {
		if a, err := mail.ParseAddress(email); err != nil || a.Address != email || len(email) > 254 {
			h.rd.problem(w, r, problemBadForm("The e-mail address is not a plain address like name@example.org."))
			return
		}
	}
	now := time.Now()
	cert, p12, password, err := issueOperatorCert(h.auth.pki, pkix.Name{CommonName: cn, Organization: []string{"Keyquorum operators"}}, email, now)
	if err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	id := identityOf(cert, h.auth.pki.CA)
	rec := IssuedCert{Serial: id.Serial, Subject: id.Subject, Issued: now.UTC(), NotAfter: cert.NotAfter.UTC(), By: op.Name}
	if err := h.auth.ops.RecordIssued(rec, id, role, op.Name, now); err != nil {
		clear(p12)
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	msg := fmt.Sprintf("certificate %s (serial %s) issued by %s with the role %s", id.Name(), id.Serial, op.Name, role)
	if err := h.auth.record(op.Name, AuditCertIssued, msg); err != nil {
		clear(p12)
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	if role != RoleNone {
		h.auth.record(op.Name, AuditOperatorRole, fmt.Sprintf("%s: role %s given by %s with a new certificate", id.Name(), role, op.Name))
	}
	dl, err := h.auth.issued.put(op.ID, cn, p12, now)
	if err != nil {
		clear(p12)
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	h.log.Info("operator certificate issued", "operator", id.Subject, "serial", id.Serial, "by", op.Name)
	h.rd.html(w, r, http.StatusOK, issuedPage(h.rd.page(r, "Certificate issued", "operators"),
		issuedView{Subject: id.Name(), Serial: id.Serial, Role: role, NotAfter: cert.NotAfter, Password: password, Download: dl}))
}

// issueOperatorCert makes a client certificate of the management CA for subject (and e-mail
// address, if any) with a new P-256 key, and its PKCS#12 file under a new password.
func issueOperatorCert(p *PKI, subject pkix.Name, email string, now time.Time) (*x509.Certificate, []byte, string, error) {
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

// download hands out an issued PKCS#12 file once, to the administrator who issued it.
func (h *operatorHandlers) download(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	d, ok := h.auth.issued.take(r.PathValue("id"), op.ID, time.Now())
	if !ok {
		h.rd.problem(w, r, problem{Status: http.StatusGone, Title: "Download no longer available",
			What: "An issued certificate file can be downloaded once, by the administrator who issued it, within ten minutes.",
			Todo: "Revoke the certificate on the Operators page if its file may have gone astray, and issue a new one.", Back: "/operators"})
		return
	}
	defer clear(d.data)
	name := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '-'
	}, d.name)
	w.Header().Set("Content-Type", "application/x-pkcs12")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": "keyquorum-" + name + ".p12"}))
	w.Write(d.data)
}

func (h *operatorHandlers) revoke(w http.ResponseWriter, r *http.Request) {
	op, _ := operatorFrom(r.Context())
	serial := strings.ToUpper(strings.TrimSpace(r.PostFormValue("serial")))
	if op.Ident.Management && serial == op.Ident.Serial {
		h.rd.problem(w, r, problem{Status: http.StatusConflict, Title: "That is the certificate you use now",
			What: "Revoking the certificate of this browser session would lock you out at once.",
			Todo: "Sign in with another administrator's certificate to revoke this one.", Back: "/operators"})
		return
	}
	now := time.Now()
	c, was, err := h.auth.ops.Revoke(serial, op.Name, now)
	if err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/operators"))
		return
	}
	if !was {
		if err := h.auth.refreshCRL(now); err != nil {
			h.log.Error("management crl not rewritten", "err", err)
		}
		subject := c.Subject
		if subject == "" {
			subject = "a certificate WebConf did not issue"
		}
		if err := h.auth.record(op.Name, AuditCertRevoked, fmt.Sprintf("certificate serial %s (%s) revoked by %s", c.Serial, subject, op.Name)); err != nil {
			h.rd.problem(w, r, problemForAuth(err, "/operators"))
			return
		}
		h.log.Info("certificate revoked", "serial", c.Serial, "by", op.Name)
	}
	http.Redirect(w, r, "/operators", http.StatusSeeOther)
}
