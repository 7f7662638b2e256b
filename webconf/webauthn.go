package webconf

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
)

// Lifetimes of the WebAuthn state WebConf keeps in memory.
const (
	webauthnTimeout = 2 * time.Minute // a begun registration or assertion
	pageGrantTTL    = 2 * time.Minute // a page's token, from the assertion to the form it sends
	cliGrantTTL     = 5 * time.Minute // a command-line approval, from the page to the command
	maxPending      = 256             // begun ceremonies and unused tokens, all operators together
)

// Conditions of the step-up tokens; their texts end up on the refusal page.
var (
	errNoToken      = errors.New("the request carries no security key confirmation")
	errBadToken     = errors.New("the confirmation is unknown, used already or expired")
	errTokenOther   = errors.New("the confirmation was made by another operator")
	errTokenAction  = errors.New("the confirmation was made for another action")
	errTooMany      = errors.New("too many security key confirmations are pending: wait two minutes and try again")
	errNoSession    = errors.New("the security key request is unknown or expired: start again")
	errNotVerified  = errors.New("the security key did not verify you (PIN or fingerprint)")
	errCloneWarning = errors.New("the security key's signature counter went back: it may have been cloned")
)

// stepUps keeps the WebAuthn ceremonies under way and the tokens their assertions earned. A
// token is bound to one operator and one action, used once, and expires; only its hash is kept.
type stepUps struct {
	mu      sync.Mutex
	pending map[string]*pendingWebAuthn
	grants  map[string]*grant
}

type pendingWebAuthn struct {
	op       string
	register bool
	action   Action
	cli      bool
	keyName  string
	session  webauthn.SessionData
	expires  time.Time
}

type grant struct {
	op      string
	action  Action
	expires time.Time
}

func newStepUps() *stepUps {
	return &stepUps{pending: map[string]*pendingWebAuthn{}, grants: map[string]*grant{}}
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func tokenKey(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// purge drops what expired; s.mu is held.
func (s *stepUps) purge(now time.Time) {
	for k, p := range s.pending {
		if now.After(p.expires) {
			delete(s.pending, k)
		}
	}
	for k, g := range s.grants {
		if now.After(g.expires) {
			delete(s.grants, k)
		}
	}
}

func (s *stepUps) begin(p *pendingWebAuthn, now time.Time) (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	if len(s.pending) >= maxPending {
		return "", errTooMany
	}
	p.expires = now.Add(webauthnTimeout)
	s.pending[id] = p
	return id, nil
}

// take removes and returns a begun ceremony of operator op.
func (s *stepUps) take(id, op string, register bool, now time.Time) (*pendingWebAuthn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[id]
	if !ok || now.After(p.expires) || p.op != op || p.register != register {
		return nil, errNoSession
	}
	delete(s.pending, id)
	return p, nil
}

// grant mints a token for op and action.
func (s *stepUps) grant(op string, a Action, ttl time.Duration, now time.Time) (string, error) {
	tok, err := randomToken()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	if len(s.grants) >= maxPending {
		return "", errTooMany
	}
	s.grants[tokenKey(tok)] = &grant{op: op, action: a, expires: now.Add(ttl)}
	return tok, nil
}

// consume uses up a token: it must be of operator op, for action a, and unexpired. A token
// presented by another operator or for another action is burnt too.
func (s *stepUps) consume(tok, op string, a Action, now time.Time) error {
	if tok == "" {
		return errNoToken
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := tokenKey(tok)
	g, ok := s.grants[k]
	if !ok || now.After(g.expires) {
		return errBadToken
	}
	delete(s.grants, k)
	if subtle.ConstantTimeCompare([]byte(g.op), []byte(op)) != 1 {
		return errTokenOther
	}
	if g.action != a {
		return errTokenAction
	}
	return nil
}

// downloads keeps a PKCS#12 file issued from the Operators page until its one download.
type downloads struct {
	mu sync.Mutex
	m  map[string]*download
}

type download struct {
	op      string
	name    string
	data    []byte
	expires time.Time
}

const downloadTTL = 10 * time.Minute

func newDownloads() *downloads { return &downloads{m: map[string]*download{}} }

func (d *downloads) put(op, name string, data []byte, now time.Time) (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range d.m {
		if now.After(v.expires) {
			clear(v.data)
			delete(d.m, k)
		}
	}
	if len(d.m) >= maxPending {
		return "", errTooMany
	}
	d.m[id] = &download{op: op, name: name, data: data, expires: now.Add(downloadTTL)}
	return id, nil
}

func (d *downloads) take(id, op string, now time.Time) (*download, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.m[id]
	if !ok || v.op != op {
		return nil, false
	}
	delete(d.m, id)
	if now.After(v.expires) {
		clear(v.data)
		return nil, false
	}
	return v, true
}

// relyingParty is the WebAuthn relying party for a request, bound to the origin the page was
// opened at. WebAuthn works only over HTTPS at the configured host name (the relying party ID)
// and the port WebConf listens on; anything else gets a page that says where to go.
func (a *auth) relyingParty(r *http.Request) (*webauthn.WebAuthn, string, *problem) {
	localPort := ""
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		_, localPort, _ = net.SplitHostPort(la.String())
	}
	want := "https://" + a.rpID
	if localPort != "" && localPort != "443" {
		want += ":" + localPort
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "443"
	}
	if r.TLS == nil || !strings.EqualFold(host, a.rpID) || (localPort != "" && port != localPort) {
		p := problem{Status: http.StatusMisdirectedRequest, Title: "Security keys work only at " + want,
			What: fmt.Sprintf("Security keys (WebAuthn) are bound to the host name %s, and a browser offers them only to a page opened over HTTPS at that name. This page was opened at https://%s.", a.rpID, r.Host),
			Todo: fmt.Sprintf("Open %s/ in this browser (the server certificate covers that name) and try again. If that name does not reach the appliance, the appliance must be started with --host set to the name operators use.", want),
			Back: "/account"}
		return nil, "", &p
	}
	origin := "https://" + strings.ToLower(r.Host)
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          a.rpID,
		RPDisplayName: "Keyquorum WebConf",
		RPOrigins:     []string{origin},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: webauthnTimeout},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: webauthnTimeout},
		},
	})
	if err != nil {
		p := problem{Status: http.StatusInternalServerError, Title: "Security keys unavailable",
			What: "WebConf's WebAuthn configuration is not valid: " + err.Error(),
			Todo: "Start the service with --host set to a DNS name (not an IP address) that operators open WebConf at."}
		return nil, "", &p
	}
	return wa, origin, nil
}

// webauthnHandlers register security keys and make the assertions that dangerous actions need.
type webauthnHandlers struct {
	auth *auth
	// actionFor is the action a form sent to path (POST) would be checked for.
	actionFor func(path string, form url.Values) (Action, bool)
	rd        *renderer
	log       *slog.Logger
}

// writeJSON answers a script request.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// webauthnProblem explains a failed WebAuthn step without the library's internals.
func webauthnProblem(title string, err error) problem {
	what := err.Error()
	var perr *protocol.Error
	if errors.As(err, &perr) {
		what = perr.Details
		if perr.DevInfo != "" {
			what += ": " + perr.DevInfo
		}
	}
	return problem{Status: http.StatusBadRequest, Title: title, What: what,
		Todo: "Try again with your security key. If it keeps failing, check that the page is opened at the appliance's host name and that the key has a PIN or fingerprint set.",
		Back: "/account"}
}

// current re-reads the request's operator from the operator list (keys change).
func (h *webauthnHandlers) current(w http.ResponseWriter, r *http.Request) (operator, *Operator, bool) {
	op, _ := operatorFrom(r.Context())
	rec, err := h.auth.ops.Get(op.ID)
	if err != nil {
		h.rd.problem(w, r, problem{Status: http.StatusConflict, Title: "Not in the operator list",
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
	wa, origin, p := h.auth.relyingParty(r)
	if p != nil {
		h.rd.problem(w, r, *p)
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" {
		name = fmt.Sprintf("security key %d", len(rec.Keys)+1)
	}
	if !printable(name, 64) {
		h.rd.problem(w, r, problemBadForm("The name of the security key may have at most 64 printable characters."))
		return
	}
	user := webauthnUser{rec}
	creation, session, err := wa.BeginRegistration(user,
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementDiscouraged,
			UserVerification: protocol.VerificationRequired,
		}),
		webauthn.WithExclusions(webauthn.Credentials(user.WebAuthnCredentials()).CredentialDescriptors()),
		webauthn.WithConveyancePreference(protocol.PreferNoAttestation),
		webauthn.WithRegistrationOrigin(origin))
	if err != nil {
		h.rd.problem(w, r, webauthnProblem("Security key registration could not start", err))
		return
	}
	now := time.Now()
	id, err := h.auth.steps.begin(&pendingWebAuthn{op: op.ID, register: true, keyName: name, session: *session}, now)
	if err != nil {
		h.rd.problem(w, r, problem{Status: http.StatusServiceUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then try again."})
		return
	}
	writeJSON(w, map[string]any{"session": id, "publicKey": creation.Response})
}

func (h *webauthnHandlers) registerFinish(w http.ResponseWriter, r *http.Request) {
	op, rec, ok := h.current(w, r)
	if !ok {
		return
	}
	now := time.Now()
	pend, err := h.auth.steps.take(r.URL.Query().Get("session"), op.ID, true, now)
	if err != nil {
		h.rd.problem(w, r, webauthnProblem("Security key not registered", err))
		return
	}
	wa, _, p := h.auth.relyingParty(r)
	if p != nil {
		h.rd.problem(w, r, *p)
		return
	}
	cred, err := wa.FinishRegistration(webauthnUser{rec}, pend.session, r)
	if err != nil {
		h.log.Info("security key registration refused", "operator", op.Name, "err", err)
		h.rd.problem(w, r, webauthnProblem("Security key not registered", err))
		return
	}
	if !cred.Flags.UserVerified {
		h.rd.problem(w, r, webauthnProblem("Security key not registered", errNotVerified))
		return
	}
	if err := h.auth.ops.AddKey(op.ID, SecurityKey{Name: pend.keyName, Added: now.UTC(), Credential: *cred}); err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/account"))
		return
	}
	if err := h.auth.record(op.Name, AuditOperatorKeyAdded, fmt.Sprintf("security key %q registered for %s", pend.keyName, op.Name)); err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/account"))
		return
	}
	h.log.Info("security key registered", "operator", op.Name, "key", pend.keyName)
	writeJSON(w, map[string]any{"ok": true})
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
	var a Action
	if cli {
		a = Action(form.Get("_action"))
		_, listed := rules[a]
		kind, isStart := strings.CutPrefix(string(a), "ceremony.")
		if !listed && isStart { // a ceremony kind the rule table does not name yet
			listed = kind != "" && len(kind) <= 32 && strings.Trim(kind, "abcdefghijklmnopqrstuvwxyz-") == ""
		}
		if !listed || !ruleOf(a).fresh || a == ActionKeyAdd || a == ActionKeyRemove {
			h.rd.problem(w, r, problemBadForm(fmt.Sprintf("%q is not an action that needs an approval.", a)))
			return
		}
	} else {
		path := form.Get("_path")
		if u, err := url.Parse(path); err != nil || !strings.HasPrefix(path, "/") {
			h.rd.problem(w, r, problemBadForm("The form to confirm has no path on this server."))
			return
		} else {
			path = u.Path
		}
		var known bool
		if a, known = h.actionFor(path, form); !known {
			h.rd.problem(w, r, problemNotFound())
			return
		}
	}
	if !Allowed(op.Role, a) {
		if op.Role == RoleNone {
			h.rd.problem(w, r, problemNoRole(op))
		} else {
			h.rd.problem(w, r, problemNotAllowed(op, a))
		}
		return
	}
	if !cli && !needsFresh(a, rec) {
		writeJSON(w, map[string]any{"needed": false})
		return
	}
	if len(rec.Keys) == 0 {
		h.rd.problem(w, r, problemRegisterKey(op, a, h.auth.rpID))
		return
	}
	wa, origin, p := h.auth.relyingParty(r)
	if p != nil {
		h.rd.problem(w, r, *p)
		return
	}
	assertion, session, err := wa.BeginLogin(webauthnUser{rec},
		webauthn.WithUserVerification(protocol.VerificationRequired),
		webauthn.WithLoginOrigin(origin))
	if err != nil {
		h.rd.problem(w, r, webauthnProblem("Security key confirmation could not start", err))
		return
	}
	id, err := h.auth.steps.begin(&pendingWebAuthn{op: op.ID, action: a, cli: cli, session: *session}, time.Now())
	if err != nil {
		h.rd.problem(w, r, problem{Status: http.StatusServiceUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then try again."})
		return
	}
	writeJSON(w, map[string]any{"needed": true, "session": id, "action": a, "what": ruleOf(a).what, "publicKey": assertion.Response})
}

// assertFinish checks the assertion and answers with the token it earned.
func (h *webauthnHandlers) assertFinish(w http.ResponseWriter, r *http.Request) {
	op, rec, ok := h.current(w, r)
	if !ok {
		return
	}
	now := time.Now()
	pend, err := h.auth.steps.take(r.URL.Query().Get("session"), op.ID, false, now)
	if err != nil {
		h.rd.problem(w, r, webauthnProblem("Security key not accepted", err))
		return
	}
	wa, _, p := h.auth.relyingParty(r)
	if p != nil {
		h.rd.problem(w, r, *p)
		return
	}
	cred, err := wa.FinishLogin(webauthnUser{rec}, pend.session, r)
	if err != nil {
		h.log.Info("assertion refused", "operator", op.Name, "err", err)
		h.rd.problem(w, r, webauthnProblem("Security key not accepted", err))
		return
	}
	if !cred.Flags.UserVerified {
		h.rd.problem(w, r, webauthnProblem("Security key not accepted", errNotVerified))
		return
	}
	if cred.Authenticator.CloneWarning {
		h.auth.record(op.Name, AuditOperatorKeyClone, fmt.Sprintf("assertion of %s refused: the security key's signature counter went back (a cloned key?)", op.Name))
		h.rd.problem(w, r, webauthnProblem("Security key not accepted", errCloneWarning))
		return
	}
	if err := h.auth.ops.KeyUsed(op.ID, *cred, now); err != nil {
		h.rd.problem(w, r, problemForAuth(err, "/account"))
		return
	}
	ttl := pageGrantTTL
	if pend.cli {
		ttl = cliGrantTTL
	}
	tok, err := h.auth.steps.grant(op.ID, pend.action, ttl, now)
	if err != nil {
		h.rd.problem(w, r, problem{Status: http.StatusServiceUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then try again."})
		return
	}
	if pend.cli {
		if err := h.auth.record(op.Name, AuditOperatorApproval, fmt.Sprintf("%s approved a command-line action with a security key: %s (valid %s, once)", op.Name, ruleOf(pend.action).what, minutes(cliGrantTTL))); err != nil {
			h.rd.problem(w, r, problemForAuth(err, "/account"))
			return
		}
	}
	writeJSON(w, map[string]any{"token": tok, "action": pend.action, "expires": now.Add(ttl).UTC().Format(time.RFC3339)})
}
