package account

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// webauthnHandlers register security keys and make the assertions that dangerous actions need.
type webauthnHandlers struct {
	auth *operator.Auth
	// detailsFor is the action and details a form sent to path (POST) would be checked for
	// (see Config.DetailsFor).
	detailsFor func(path string, form url.Values) (operator.Details, bool)
	rd         *pages.Renderer
	log        *slog.Logger
}

// relyingPartyProblem explains why security keys cannot be used at this page.
func relyingPartyProblem(err error) web.Problem {
	var oe *operator.OriginError
	if errors.As(err, &oe) {
		return web.Problem{Status: http.StatusMisdirectedRequest, Title: "Security keys work only at " + oe.Want,
			What: fmt.Sprintf("Security keys (WebAuthn) are bound to the host name %s, and a browser offers them only to a page opened over HTTPS at that name. This page was opened at https://%s.", oe.RPID, oe.Host),
			Todo: fmt.Sprintf("Open %s/ in this browser (the server certificate covers that name) and try again. If that name does not reach the appliance, the appliance must be started with --host set to the name operators use.", oe.Want),
			Back: "/account"}
	}
	what := err.Error()
	var ce *operator.RPConfigError
	if errors.As(err, &ce) {
		what = ce.Err.Error()
	}
	return web.Problem{Status: http.StatusInternalServerError, Title: "Security keys unavailable",
		What: "WebConf's WebAuthn configuration is not valid: " + what,
		Todo: "Start the service with --host set to a DNS name (not an IP address) that operators open WebConf at."}
}

// webauthnProblem explains a failed WebAuthn step without the library's internals.
func webauthnProblem(title string, err error) web.Problem {
	what := err.Error()
	var perr *protocol.Error
	if errors.As(err, &perr) {
		what = perr.Details
		if perr.DevInfo != "" {
			what += ": " + perr.DevInfo
		}
	}
	return web.Problem{Status: http.StatusBadRequest, Title: title, What: what,
		Todo: "Try again with your security key. If it keeps failing, check that the page is opened at the appliance's host name and that the key has a PIN or fingerprint set.",
		Back: "/account"}
}

// current re-reads the request's operator from the operator list (keys change).
func (h *webauthnHandlers) current(w http.ResponseWriter, r *http.Request) (operator.Caller, *operator.Operator, bool) {
	op, _ := operator.FromContext(r.Context())
	rec, err := h.auth.Operators().Get(op.ID)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusConflict, Title: "Not in the operator list",
			What: "Your certificate is not in WebConf's operator list (the list may be full): " + err.Error(),
			Todo: "Ask a WebConf administrator to give you a role; that records you."})
		return op, nil, false
	}
	return op, &rec, true
}

func (h *webauthnHandlers) registerBegin(w http.ResponseWriter, r *http.Request) {
	op, rec, ok := h.current(w, r)
	if !ok {
		return
	}
	wa, origin, err := h.auth.RelyingParty(r)
	if err != nil {
		h.rd.Problem(w, r, relyingPartyProblem(err))
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" {
		name = fmt.Sprintf("security key %d", len(rec.Keys)+1)
	}
	if !operator.Printable(name, 64) {
		h.rd.Problem(w, r, web.BadForm("The name of the security key may have at most 64 printable characters."))
		return
	}
	if rec.RecoveryPending && !h.auth.CheckRecoveryCode(r.PostFormValue("recovery_code")) {
		// After serve --recover-admin the certificate alone is not enough: whoever registers
		// the key must also read the appliance's console.
		h.log.Warn("security key registration after a recovery refused: wrong or missing recovery code", "operator", op.Name)
		h.rd.Problem(w, r, web.Problem{Status: http.StatusForbidden, Code: web.CodeRecoveryCode, Title: "Recovery code required",
			What: "This administrator was recovered at the appliance (serve --recover-admin): the first security key after a recovery needs the one-time code the appliance printed on its console when it started.",
			Todo: "Read the code from the console (or the service's output) of the appliance and enter it with the key's name, then register again.", Back: "/account"})
		return
	}
	user := operator.WebAuthnUser{Op: rec}
	conveyance := protocol.PreferNoAttestation
	if h.auth.Attestation().Required() {
		// The policy checks the key's model and attestation: ask the browser for them.
		conveyance = protocol.PreferDirectAttestation
	}
	creation, session, err := wa.BeginRegistration(user,
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementDiscouraged,
			UserVerification: protocol.VerificationRequired,
		}),
		webauthn.WithExclusions(webauthn.Credentials(user.WebAuthnCredentials()).CredentialDescriptors()),
		webauthn.WithConveyancePreference(conveyance),
		webauthn.WithRegistrationOrigin(origin))
	if err != nil {
		h.rd.Problem(w, r, webauthnProblem("Security key registration could not start", err))
		return
	}
	now := time.Now()
	id, err := h.auth.Steps().Begin(&operator.PendingWebAuthn{Op: op.ID, Register: true, KeyName: name, Recovery: rec.RecoveryPending, Session: *session}, now)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusServiceUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then try again."})
		return
	}
	web.WriteJSON(w, map[string]any{"session": id, "publicKey": creation.Response})
}

func (h *webauthnHandlers) registerFinish(w http.ResponseWriter, r *http.Request) {
	op, rec, ok := h.current(w, r)
	if !ok {
		return
	}
	now := time.Now()
	pend, err := h.auth.Steps().Take(r.URL.Query().Get("session"), op.ID, true, now)
	if err != nil {
		h.rd.Problem(w, r, webauthnProblem("Security key not registered", err))
		return
	}
	wa, _, err := h.auth.RelyingParty(r)
	if err != nil {
		h.rd.Problem(w, r, relyingPartyProblem(err))
		return
	}
	cred, err := wa.FinishRegistration(operator.WebAuthnUser{Op: rec}, pend.Session, r)
	if err != nil {
		h.log.Info("security key registration refused", "operator", op.Name, "err", err)
		h.rd.Problem(w, r, webauthnProblem("Security key not registered", err))
		return
	}
	if !cred.Flags.UserVerified {
		h.rd.Problem(w, r, webauthnProblem("Security key not registered", operator.ErrNotVerified))
		return
	}
	if err := h.auth.Attestation().Check(cred, now); err != nil {
		h.log.Info("security key registration refused by the attestation policy", "operator", op.Name, "err", err)
		h.rd.Problem(w, r, web.Problem{Status: http.StatusForbidden, Code: web.CodeKeyNotAllowed, Title: "Security key not allowed here",
			What: "This appliance accepts only some security keys (" + h.auth.Attestation().Describe() + ") and " + err.Error() + ".",
			Todo: "Register one of the allowed security keys, and let the browser share the key's make and model when it asks. If this key should be allowed, ask the appliance's administrator (serve --webauthn-aaguids, --webauthn-attestation-formats, --webauthn-attestation-roots).",
			Back: "/account"})
		return
	}
	if err := h.auth.Operators().AddKey(op.ID, operator.SecurityKey{Name: pend.KeyName, Added: now.UTC(), Credential: *cred}); err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/account"))
		return
	}
	if pend.Recovery {
		if err := h.auth.Operators().SetRecoveryPending(op.ID, false); err != nil {
			h.rd.Problem(w, r, web.ForAuth(err, "/account"))
			return
		}
	}
	if err := h.auth.Record(op.Name, operator.AuditOperatorKeyAdded, fmt.Sprintf("security key %q registered for %s", pend.KeyName, op.Name)); err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/account"))
		return
	}
	h.log.Info("security key registered", "operator", op.Name, "key", pend.KeyName)
	web.WriteJSON(w, map[string]any{"ok": true})
}

// assertBegin starts the assertion a dangerous action needs. The page script sends the form it
// is about to send (its path and fields, never a file) and learns whether an assertion is
// needed; the account page asks for a command-line approval of a chosen action.
func (h *webauthnHandlers) assertBegin(w http.ResponseWriter, r *http.Request) {
	op, rec, ok := h.current(w, r)
	if !ok {
		return
	}
	form := r.PostForm
	cli := form.Get("_purpose") == "cli"
	var d operator.Details
	if cli {
		now := time.Now()
		if id := form.Get("_request"); id != "" {
			// A command-line request that was refused for want of an approval: the approval
			// is for exactly it.
			pr, err := h.auth.Steps().Request(id, op.ID, now)
			if err != nil {
				h.rd.Problem(w, r, web.Problem{Status: http.StatusNotFound, Code: web.CodeNotFound, Title: "No such command-line request",
					What: err.Error() + ".", Todo: "Run the command again: it names a new request, which then appears on this page.", Back: "/account"})
				return
			}
			d = pr.Details
		} else {
			// A request stated field by field (scripts): the fields of its JSON body.
			d, _ = h.detailsFor("", form)
		}
		a := d.Action
		listed := operator.Listed(a)
		kind, isStart := strings.CutPrefix(string(a), "ceremony.")
		if !listed && isStart { // a ceremony kind the rule table does not name yet
			listed = kind != "" && len(kind) <= 32 && strings.Trim(kind, "abcdefghijklmnopqrstuvwxyz-") == ""
		}
		if !listed || !operator.RuleOf(a).Fresh || a == operator.ActionKeyAdd || a == operator.ActionKeyRemove {
			h.rd.Problem(w, r, web.BadForm(fmt.Sprintf("%q is not an action that needs an approval.", a)))
			return
		}
	} else {
		path := form.Get("_path")
		if u, err := url.Parse(path); err != nil || !strings.HasPrefix(path, "/") {
			h.rd.Problem(w, r, web.BadForm("The form to confirm has no path on this server."))
			return
		} else {
			path = u.Path
		}
		var known bool
		if d, known = h.detailsFor(path, form); !known {
			h.rd.Problem(w, r, web.NotFound())
			return
		}
	}
	a := d.Action
	if !operator.Allowed(op.Role, a) {
		if op.Role == operator.RoleNone {
			h.rd.Problem(w, r, web.NoRole(op))
		} else {
			h.rd.Problem(w, r, web.NotAllowed(op, a))
		}
		return
	}
	if !cli && !operator.NeedsFresh(a, rec) {
		web.WriteJSON(w, map[string]any{"needed": false})
		return
	}
	if len(rec.Keys) == 0 {
		h.rd.Problem(w, r, web.RegisterKey(op, a, h.auth.RPID()))
		return
	}
	wa, origin, err := h.auth.RelyingParty(r)
	if err != nil {
		h.rd.Problem(w, r, relyingPartyProblem(err))
		return
	}
	assertion, session, err := wa.BeginLogin(operator.WebAuthnUser{Op: rec},
		webauthn.WithUserVerification(protocol.VerificationRequired),
		webauthn.WithLoginOrigin(origin))
	if err != nil {
		h.rd.Problem(w, r, webauthnProblem("Security key confirmation could not start", err))
		return
	}
	id, err := h.auth.Steps().Begin(&operator.PendingWebAuthn{Op: op.ID, Action: a, Details: d, CLI: cli, Session: *session}, time.Now())
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusServiceUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then try again."})
		return
	}
	web.WriteJSON(w, map[string]any{"needed": true, "session": id, "action": a, "what": operator.RuleOf(a).What, "request": d.Summary(), "publicKey": assertion.Response})
}

// assertFinish checks the assertion and answers with the token it earned.
func (h *webauthnHandlers) assertFinish(w http.ResponseWriter, r *http.Request) {
	op, rec, ok := h.current(w, r)
	if !ok {
		return
	}
	now := time.Now()
	pend, err := h.auth.Steps().Take(r.URL.Query().Get("session"), op.ID, false, now)
	if err != nil {
		h.rd.Problem(w, r, webauthnProblem("Security key not accepted", err))
		return
	}
	wa, _, err := h.auth.RelyingParty(r)
	if err != nil {
		h.rd.Problem(w, r, relyingPartyProblem(err))
		return
	}
	cred, err := wa.FinishLogin(operator.WebAuthnUser{Op: rec}, pend.Session, r)
	if err != nil {
		h.log.Info("assertion refused", "operator", op.Name, "err", err)
		h.rd.Problem(w, r, webauthnProblem("Security key not accepted", err))
		return
	}
	if !cred.Flags.UserVerified {
		h.rd.Problem(w, r, webauthnProblem("Security key not accepted", operator.ErrNotVerified))
		return
	}
	if cred.Authenticator.CloneWarning {
		h.auth.Record(op.Name, operator.AuditOperatorKeyClone, fmt.Sprintf("assertion of %s refused: the security key's signature counter went back (a cloned key?)", op.Name))
		h.rd.Problem(w, r, webauthnProblem("Security key not accepted", operator.ErrCloneWarning))
		return
	}
	if err := h.auth.Operators().KeyUsed(op.ID, *cred, now); err != nil {
		h.rd.Problem(w, r, web.ForAuth(err, "/account"))
		return
	}
	ttl := operator.PageGrantTTL
	if pend.CLI {
		ttl = operator.CLIGrantTTL
	}
	tok, err := h.auth.Steps().Grant(op.ID, pend.Details, ttl, now)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusServiceUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then try again."})
		return
	}
	if pend.CLI {
		if err := h.auth.Record(op.Name, operator.AuditOperatorApproval, fmt.Sprintf("%s approved a command-line action with a security key: %s (valid %s, once)", op.Name, pend.Details.Summary(), web.Minutes(operator.CLIGrantTTL))); err != nil {
			h.rd.Problem(w, r, web.ForAuth(err, "/account"))
			return
		}
	}
	web.WriteJSON(w, map[string]any{"token": tok, "action": pend.Action, "request": pend.Details.Summary(), "expires": now.Add(ttl).UTC().Format(time.RFC3339)})
}
