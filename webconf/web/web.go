package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/sharing"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// API error codes: stable identifiers a script may test. The HTTP status goes with them.
const (
	CodeNoCertificate    = "no_certificate"          // 401: no client certificate
	CodeRevoked          = "revoked"                 // 403: the certificate was revoked
	CodeNoRole           = "no_role"                 // 403: trusted, but no role yet
	CodeNotAllowed       = "not_allowed"             // 403: the role may not do this
	CodeApprovalRequired = "approval_required"       // 403: a dangerous action without a valid approval
	CodeRegisterKey      = "register_key"            // 403: the operator has no security key yet
	CodeCSRF             = "csrf"                    // 403: the request failed a CSRF check
	CodeNotNode          = "not_node"                // 403: the cluster state is for node certificates only
	CodeBadRequest       = "bad_request"             // 400: the body or parameters are not acceptable
	CodeNotFound         = "not_found"               // 404
	CodeTooLarge         = "too_large"               // 413: the upload is over the limit
	CodeBusy             = "busy"                    // 409: a ceremony is running
	CodePending          = "pending"                 // 409: an interrupted ceremony needs resume or reset
	CodeKeyLoaded        = "key_loaded"              // 409: the HSM holds a master backup key already
	CodeNoBackupKey      = "no_backup_key"           // 409: no master backup key is loaded
	CodeNotRunning       = "not_running"             // 409: no ceremony runs
	CodeNotStalled       = "not_stalled"             // 409: the ceremony does not wait for a retry
	CodeNotAsking        = "not_asking"              // 409: the ceremony asks no question
	CodeNothingToResume  = "nothing_to_resume"       // 409
	CodeForeignKey       = cluster.ProblemForeignKey // 422: a backup or peer of another master backup key
	CodeBadBackup        = "bad_backup"              // 422: damaged, truncated or not a backup; nothing changed
	CodeAuditBroken      = "audit_broken"            // 409: the audit chain does not verify
	CodePeer             = "peer"                    // 502: the cluster peer could not be reached or refused
	CodeNotAvailable     = "not_available"           // 501: not possible with this appliance's pad
	CodeStopping         = "stopping"                // 503: the service is shutting down
	CodeInternal         = "internal"                // 500
)

// APIProblem is the body of every API error.
type APIProblem struct {
	Code  string `json:"code"`
	Title string `json:"title"`
	What  string `json:"what"`
	Todo  string `json:"todo"`
}

func (p *APIProblem) Error() string {
	if p.What != "" {
		return p.Title + ": " + p.What
	}
	return p.Title
}

// CodeOf is a problem's API code: the one it names, else one that follows from its status.
func CodeOf(p Problem) string {
	if p.Code != "" {
		return p.Code
	}
	switch p.Status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeNoCertificate
	case http.StatusForbidden:
		return CodeNotAllowed
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusServiceUnavailable:
		return CodeStopping
	}
	return CodeInternal
}

// APIPrefix is where the JSON API for the command line lives. A POST there with a JSON body
// needs no CSRF token (a browser cannot send one from another site without a CORS preflight,
// which WebConf never grants; the Origin and Sec-Fetch-Site checks still apply), and its
// problems are answered as JSON.
const APIPrefix = "/api/"

// IsAPI reports whether a request goes to the JSON API.
func IsAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, APIPrefix) }

// WriteJSON answers a script request.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// RedirectBack answers a form POST: 204 for the page script (it updates the page itself), a 303
// to back for a plain form.
func RedirectBack(w http.ResponseWriter, r *http.Request, back string) {
	if r.Header.Get(FetchHeader) != "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// LocalPath accepts only a path on this server as a redirect target.
func LocalPath(p, fallback string) string {
	if len(p) > 0 && p[0] == '/' && (len(p) == 1 || (p[1] != '/' && p[1] != '\\')) {
		return p
	}
	return fallback
}

func FormatTime(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func FormatRFC3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Quorum is the wizard's form: a preset or a custom k-of-n, and the label on the cards.
type Quorum struct {
	Preset string // "2-3", "3-5" or "custom"
	K, N   int
	Label  string
}

// ParseQuorum reads the wizard's choice from a form or query.
func ParseQuorum(get func(string) string) (Quorum, error) {
	c := Quorum{Preset: get("quorum"), Label: strings.TrimSpace(get("label"))}
	switch c.Preset {
	case "2-3":
		c.K, c.N = 2, 3
	case "3-5":
		c.K, c.N = 3, 5
	case "custom":
		var err1, err2 error
		c.K, err1 = strconv.Atoi(strings.TrimSpace(get("k")))
		c.N, err2 = strconv.Atoi(strings.TrimSpace(get("n")))
		if err1 != nil || err2 != nil {
			return c, fmt.Errorf("a custom quorum needs two whole numbers: k cards needed out of n cards written")
		}
	default:
		return c, fmt.Errorf("choose 2 of 3, 3 of 5 or a custom quorum")
	}
	if err := sharing.ValidateQuorum(c.K, c.N); err != nil {
		return c, fmt.Errorf("%d of %d is not a possible quorum: %v (at least 2 cards needed, at most 255 written, and no more needed than written)", c.K, c.N, err)
	}
	if err := ValidLabel(c.Label); err != nil {
		return c, err
	}
	return c, nil
}

func ValidLabel(l string) error {
	if len(l) > sharing.MaxLabelSize || !utf8.ValidString(l) {
		return fmt.Errorf("the label may have at most %d characters", sharing.MaxLabelSize)
	}
	for _, c := range l {
		if unicode.IsControl(c) {
			return fmt.Errorf("the label may not contain control characters")
		}
	}
	return nil
}

// ResetPhrase is what an operator types to confirm a factory reset.
const ResetPhrase = "FACTORY RESET"

func Revoked(id operator.Identity, by string) Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeRevoked, Title: "Certificate revoked",
		What: fmt.Sprintf("The client certificate %s (serial %s) was revoked by %s; WebConf no longer accepts it.", id.Subject, id.Serial, by),
		Todo: "Remove this certificate from your browser or card and ask a WebConf administrator for a new one."}
}

func RegisterKey(op operator.Caller, a operator.Action, rpID string) Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeRegisterKey, Title: "Register a security key first",
		What: fmt.Sprintf("To %s WebConf needs, besides your certificate, a confirmation with your security key (WebAuthn), and you have registered none yet.", operator.RuleOf(a).What),
		Todo: fmt.Sprintf("Open your account page, register your security key (a FIDO2 key with a PIN or fingerprint), then try again. The page must be opened at https://%s — the name WebConf's security keys are bound to.", rpID),
		Back: "/account"}
}

func NeedAssertion(a operator.Action, err error) Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeApprovalRequired, Title: "Security key confirmation required",
		What: fmt.Sprintf("To %s WebConf needs a fresh confirmation with your security key, made for this very action: %v.", operator.RuleOf(a).What, err),
		Todo: "Go back and press the button again: your browser then asks for your security key and its PIN or fingerprint. From the command line, pass an approval made on your account page (it is valid for 5 minutes, for one action)."}
}

// ForAuth explains an error of the operator list, or any other as problemFor does.
func ForAuth(err error, back string) Problem {
	p := Problem{Status: http.StatusConflict, What: err.Error(), Back: back}
	switch {
	case errors.Is(err, operator.ErrLastAdmin):
		p.Title, p.Todo = "The last administrator keeps the admin role", "Give another operator the admin role first; then this one can lose it."
	case errors.Is(err, operator.ErrNoSuchOperator):
		p.Status, p.Title, p.Todo = http.StatusNotFound, "No such operator", "Reload the Operators page: an operator appears there once their certificate has opened WebConf."
	case errors.Is(err, operator.ErrNoSuchKey):
		p.Status, p.Title, p.Todo = http.StatusNotFound, "No such security key", "Reload the page and choose a key from the list."
	case errors.Is(err, operator.ErrKeyRegistered):
		p.Title, p.Todo = "Security key registered already", "This key is registered already (for you or another operator). Use another key, or remove it there first."
	case errors.Is(err, operator.ErrNoSuchCert):
		p.Status, p.Title, p.Todo = http.StatusBadRequest, "No such certificate", "Give the serial number in hexadecimal, as the Operators page lists it."
	default:
		return For(err, back)
	}
	return p
}

// NoRole is the page of a trusted certificate no administrator has given a role yet.
func NoRole(op operator.Caller) Problem {
	who := op.Name
	if op.Ident.Issuer != "" {
		who += ", issued by " + op.Ident.Issuer
	}
	return Problem{Status: http.StatusForbidden, Code: CodeNoRole, Title: "No role yet",
		What: fmt.Sprintf("Your certificate is trusted, but no WebConf administrator has given it a role, so WebConf shows you nothing but your account page. You are %s (operator ID %s).", who, op.ID),
		Todo: "Ask a WebConf administrator to give you a role (admin, custodian or auditor) on the Operators page, where you are listed under this name. Meanwhile you can register your security key on your account page.",
		Back: "/account"}
}

// NotAllowed is the page of an operator whose role does not allow an action.
func NotAllowed(op operator.Caller, a operator.Action) Problem {
	r := operator.RuleOf(a)
	var who []string
	for _, role := range r.Roles {
		who = append(who, role.String())
	}
	return Problem{Status: http.StatusForbidden, Title: "Not allowed for your role",
		What: fmt.Sprintf("Your role is %s; only the role %s may %s.", op.Role, strings.Join(who, " or "), r.What),
		Todo: "Ask a WebConf administrator if your role should change. Administrators run the ceremonies, restores, cluster joins and factory resets; custodians use the smart card tools on their own cards; auditors read the audit log and the protocols."}
}

// ForJoin explains a failed join.
func ForJoin(err error, back string) Problem {
	var pe *cluster.PeerError
	if errors.As(err, &pe) {
		p := Problem{Status: http.StatusBadGateway, Code: CodePeer, Title: pe.Title, What: pe.What, Todo: pe.Todo, Back: back}
		if pe.ForeignKey {
			p.Status, p.Code = http.StatusUnprocessableEntity, CodeForeignKey
		}
		return p
	}
	return For(err, back)
}

// CeremonyRunner starts ceremonies and follows them; *ceremony.Manager implements it.
type CeremonyRunner interface {
	Start(ctx context.Context, operator string, req ceremony.Request) (*ceremony.Handle, error)
	Resume(ctx context.Context, operator string) (*ceremony.Handle, error)
	Retry(operator string) error
	Confirm(operator string, ok bool) error
	Cancel(operator string) error
	Subscribe() *ceremony.Subscription
}

// CeremonyRecords reads what ceremonies left behind; *ceremony.Manager implements it.
type CeremonyRecords interface {
	Overview(ctx context.Context) (ceremony.Overview, error)
	Ceremonies(limit int) ([]ceremony.Journal, error)
	Protocol(id uint64) (*ceremony.Protocol, error)
}

// AuditReader reads and verifies the audit log; *ceremony.Manager implements it.
type AuditReader interface {
	VerifyAudit() (ceremony.AuditSummary, error)
	ExportAudit(w io.Writer) error
	AuditLog(ceremony uint64) ([]ceremony.AuditEntry, error)
}

// BackupHSM is what the HSM page needs of the HSM; every hsm.HSM implements it.
type BackupHSM interface {
	BackupKeyID(ctx context.Context) (hsm.KeyID, error)
	Backup(ctx context.Context, w io.Writer) error
	Restore(ctx context.Context, r io.Reader) error
}

// Appliance describes the service for the status page.
type Appliance struct {
	PadName string // "simulator" or the reader's name
	HSMName string // "soft (embedded)" or the PKCS#11 module and slot
	DataDir string
}

// Minutes says a duration in words for a page.
func Minutes(d time.Duration) string {
	if m := int(d / time.Minute); m != 1 {
		return fmt.Sprintf("%d minutes", m)
	}
	return "1 minute"
}
