package account

import (
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// accountConfig is what the account pages are built from.
type Config struct {
	// Auth is the operator security: identities, roles, security keys, certificates.
	Auth *operator.Auth
	// DetailsFor is the action (the route table's) and the details a form sent to path would
	// be checked for: what the page script asks before it sends a form that may need a
	// security key. With path "" it is a command-line request's details stated as form
	// fields: the JSON body's fields by name ("a.b" when nested), query parameters as "?name".
	DetailsFor func(path string, form url.Values) (operator.Details, bool)
	Log        *slog.Logger
}

// accountPages are the account page, the security key endpoints of the page script and the
// administrators' operator management.
type Account struct {
	wa *webauthnHandlers
	op *operatorHandlers
}

// newAccountPages builds the account pages; rd frames them.
func New(cfg Config, rd *pages.Renderer) *Account {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Account{wa: &webauthnHandlers{auth: cfg.Auth, detailsFor: cfg.DetailsFor, rd: rd, log: log},
		op: &operatorHandlers{auth: cfg.Auth, rd: rd, log: log}}
}

// register adds the account pages' routes to mux; each has its entry in the server's route
// table.
func (a *Account) Register(mux *http.ServeMux) {
	wa, op := a.wa, a.op
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
}

// operatorHandlers serve the account page and the administrators' operator management.
type operatorHandlers struct {
	auth *operator.Auth
	rd   *pages.Renderer
	log  *slog.Logger
}

// crl serves the management CA's CRL, to every client (like /ca.pem).
func (h *operatorHandlers) crl(w http.ResponseWriter, r *http.Request) {
	b := h.auth.CRL()
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Content-Disposition", `attachment; filename="keyquorum-management-ca.crl.pem"`)
	w.Write(b)
}

// isNodeCert reports whether an issued certificate is a cluster node's: marked so since issue
// 19, or (issued before) by the node organisation in its subject.
func isNodeCert(c operator.IssuedCert) bool {
	return c.Node || strings.HasSuffix(c.Subject, ",O="+cluster.NodeOrganization)
}

// accountView is the account page.
type accountView struct {
	Op         operator.Caller
	Rec        operator.Operator
	Want       string // the origin security keys work at
	RightHost  bool
	Approvable []operator.Action // the dangerous actions this operator may approve for the command line
	// Requests are this operator's command-line requests waiting for an approval.
	Requests []operator.PendingRequest
	// Attestation says which security keys may be registered here.
	Attestation string
}

func (h *operatorHandlers) account(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	rec, err := h.auth.Operators().Get(op.ID)
	if err != nil && !errors.Is(err, operator.ErrNoSuchOperator) {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	if errors.Is(err, operator.ErrNoSuchOperator) {
		rec = op.Rec
	}
	v := accountView{Op: op, Rec: rec, Want: h.auth.KeyOrigin(r), Attestation: h.auth.Attestation().Describe()}
	_, _, rpErr := h.auth.RelyingParty(r)
	v.RightHost = rpErr == nil
	for _, a := range operator.ApprovableActions() {
		if operator.Allowed(op.Role, a) {
			v.Approvable = append(v.Approvable, a)
		}
	}
	v.Requests = h.auth.Steps().Requests(op.ID, time.Now())
	h.rd.HTML(w, r, http.StatusOK, accountPage(h.rd.Page(r, "Your account", "account"), v))
}

func (h *operatorHandlers) removeOwnKey(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	names, err := h.auth.Operators().RemoveKey(op.ID, r.PostFormValue("key"))
	if err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/account"))
		return
	}
	if err := h.auth.Record(op.Name, operator.AuditOperatorKeyRemoved, fmt.Sprintf("%s removed their security key %q", op.Name, strings.Join(names, ", "))); err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/account"))
		return
	}
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// shortKey is the start of a CA key hash, enough to tell two CAs of the same name apart.
func shortKey(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

// operatorsView is the Operators page.
type operatorsView struct {
	Operators []operator.Operator
	Certs     []operator.IssuedCert
	Me        string // the viewer's operator ID
	MySerial  string // the serial of the certificate the viewer uses
}

func (h *operatorHandlers) list(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	ops, err := h.auth.Operators().List()
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	certs, err := h.auth.Operators().Certs()
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v := operatorsView{Operators: ops, Certs: certs, Me: op.ID, MySerial: op.Ident.Serial}
	h.rd.HTML(w, r, http.StatusOK, operatorsPage(h.rd.Page(r, "Operators", "operators"), v))
}

func (h *operatorHandlers) setRole(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	role, err := operator.ParseRole(r.PostFormValue("role"))
	if err != nil {
		h.rd.Problem(w, r, web.BadForm(err.Error()))
		return
	}
	target, old, err := h.auth.Operators().SetRole(r.PostFormValue("id"), role, op.Name, time.Now())
	if err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	if old != role {
		msg := fmt.Sprintf("%s: role changed from %s to %s by %s", target.Name(), old, role, op.Name)
		if err := h.auth.Record(op.Name, operator.AuditOperatorRole, msg); err != nil {
			h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
			return
		}
		h.log.Info("operator role changed", "operator", target.Name(), "from", old.String(), "to", role.String(), "by", op.Name)
	}
	http.Redirect(w, r, "/operators", http.StatusSeeOther)
}

func (h *operatorHandlers) removeKeys(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	id := r.PostFormValue("id")
	target, err := h.auth.Operators().Get(id)
	if err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	names, err := h.auth.Operators().RemoveKey(id, "")
	if err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	msg := fmt.Sprintf("every security key of %s removed by %s (%s): they register a new one with their certificate", target.Name(), op.Name, strings.Join(names, ", "))
	if err := h.auth.Record(op.Name, operator.AuditOperatorKeyRemoved, msg); err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	http.Redirect(w, r, "/operators", http.StatusSeeOther)
}

// issuedView is the page after issuing a certificate.
type issuedView struct {
	Subject  string
	Serial   string
	Role     operator.Role
	NotAfter time.Time
	Password string
	Download string
}

// issue makes an operator certificate with a new key as a PKCS#12 file under a one-time
// password; the file waits in memory for its one download and is never written to disk.
func (h *operatorHandlers) issue(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	cn := strings.TrimSpace(r.PostFormValue("cn"))
	email := strings.TrimSpace(r.PostFormValue("email"))
	role, err := operator.ParseRole(r.PostFormValue("role"))
	switch {
	case err != nil:
		h.rd.Problem(w, r, web.BadForm(err.Error()))
		return
	case !operator.Printable(cn, 64) || strings.ContainsAny(cn, `,+"\<>;=`):
		h.rd.Problem(w, r, web.BadForm("The name (CN) must be 1 to 64 printable characters without , + \" \\ < > ; ="))
		return
	}
	if email != "" {
		if a, err := mail.ParseAddress(email); err != nil || a.Address != email || len(email) > 254 {
			h.rd.Problem(w, r, web.BadForm("The e-mail address is not a plain address like name@example.org."))
			return
		}
	}
	now := time.Now()
	cert, id, p12, password, err := h.auth.IssueRecorded(pkix.Name{CommonName: cn, Organization: []string{"Keyquorum operators"}}, email, role, op.Name, now)
	if err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	msg := fmt.Sprintf("certificate %s (serial %s) issued by %s with the role %s", id.Name(), id.Serial, op.Name, role)
	if err := h.auth.Record(op.Name, operator.AuditCertIssued, msg); err != nil {
		clear(p12)
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	if role != operator.RoleNone {
		h.auth.Record(op.Name, operator.AuditOperatorRole, fmt.Sprintf("%s: role %s given by %s with a new certificate", id.Name(), role, op.Name))
	}
	dl, err := h.auth.Issued().Put(op.ID, cn, p12, now)
	if err != nil {
		clear(p12)
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	h.log.Info("operator certificate issued", "operator", id.Subject, "serial", id.Serial, "by", op.Name)
	h.rd.HTML(w, r, http.StatusOK, issuedPage(h.rd.Page(r, "Certificate issued", "operators"),
		issuedView{Subject: id.Name(), Serial: id.Serial, Role: role, NotAfter: cert.NotAfter, Password: password, Download: dl}))
}

// download hands out an issued PKCS#12 file once, to the administrator who issued it.
func (h *operatorHandlers) download(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	d, ok := h.auth.Issued().Take(r.PathValue("id"), op.ID, time.Now())
	if !ok {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusGone, Title: "Download no longer available",
			What: "An issued certificate file can be downloaded once, by the administrator who issued it, within ten minutes.",
			Todo: "Revoke the certificate on the Operators page if its file may have gone astray, and issue a new one.", Back: "/operators"})
		return
	}
	defer clear(d.Data)
	name := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '-'
	}, d.Name)
	w.Header().Set("Content-Type", "application/x-pkcs12")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": "keyquorum-" + name + ".p12"}))
	w.Write(d.Data)
}

func (h *operatorHandlers) revoke(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	serial := strings.ToUpper(strings.TrimSpace(r.PostFormValue("serial")))
	if serial == op.Ident.Serial { // revocations hold for every trusted CA
		h.rd.Problem(w, r, web.Problem{Status: http.StatusConflict, Title: "That is the certificate you use now",
			What: "Revoking the certificate of this browser session would lock you out at once.",
			Todo: "Sign in with another administrator's certificate to revoke this one.", Back: "/operators"})
		return
	}
	now := time.Now()
	c, was, err := h.auth.Operators().Revoke(serial, op.Name, now)
	if err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
		return
	}
	if !was {
		if err := h.auth.RefreshCRL(now); err != nil {
			h.log.Error("management crl not rewritten", "err", err)
		}
		subject := c.Subject
		if subject == "" {
			subject = "a certificate WebConf did not issue"
		}
		what := "certificate"
		if isNodeCert(c) {
			what = "cluster node certificate"
		}
		if err := h.auth.Record(op.Name, operator.AuditCertRevoked, fmt.Sprintf("%s serial %s (%s) revoked by %s", what, c.Serial, subject, op.Name)); err != nil {
			h.rd.Problem(w, r, web.ForAuth(err, "/operators"))
			return
		}
		h.log.Info("certificate revoked", "serial", c.Serial, "by", op.Name)
	}
	http.Redirect(w, r, "/operators", http.StatusSeeOther)
}
