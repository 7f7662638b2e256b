package operator

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
)

// Lifetimes of the WebAuthn state WebConf keeps in memory.
const (
	webauthnTimeout = 2 * time.Minute // a begun registration or assertion
	PageGrantTTL    = 2 * time.Minute // a page's token, from the assertion to the form it sends
	CLIGrantTTL     = 5 * time.Minute // a command-line approval, from the page to the command
	maxPending      = 256             // begun ceremonies and unused tokens, all operators together
	// maxPendingPerOp bounds one operator's begun ceremonies and unused tokens: a further one
	// replaces that operator's oldest, so one certificate can neither fill the table for
	// everybody nor lock itself out.
	maxPendingPerOp = 4
)

// Conditions of the step-up tokens; their texts end up on the refusal page.
var (
	errNoToken      = errors.New("the request carries no security key confirmation")
	errBadToken     = errors.New("the confirmation is unknown, used already or expired")
	errTokenOther   = errors.New("the confirmation was made by another operator")
	errTokenAction  = errors.New("the confirmation was made for another action")
	errTooMany      = errors.New("too many security key confirmations are pending: wait two minutes and try again")
	errNoSession    = errors.New("the security key request is unknown or expired: start again")
	ErrNotVerified  = errors.New("the security key did not verify you (PIN or fingerprint)")
	ErrCloneWarning = errors.New("the security key's signature counter went back: it may have been cloned")
)

// StepUps keeps the WebAuthn ceremonies under way, the tokens their assertions earned and the
// command-line requests waiting for an approval. A token is bound to one operator, one action
// and its details ([Details]), used once, and expires; only its hash is kept.
type StepUps struct {
	mu       sync.Mutex
	pending  map[string]*PendingWebAuthn
	grants   map[string]*grant
	requests map[string]*PendingRequest
}

// PendingWebAuthn is a begun registration or assertion of an operator, until it is finished.
type PendingWebAuthn struct {
	Op       string
	Register bool
	Action   Action
	Details  Details // what the assertion approves: the action and its parameters
	CLI      bool
	KeyName  string
	Recovery bool // a registration that used the recovery code: it clears the pending recovery
	Session  webauthn.SessionData
	expires  time.Time
}

type grant struct {
	op      string
	action  Action
	digest  string // of the approved Details
	summary string // the approved request in words, for a refusal
	expires time.Time
}

func newStepUps() *StepUps {
	return &StepUps{pending: map[string]*PendingWebAuthn{}, grants: map[string]*grant{}, requests: map[string]*PendingRequest{}}
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
func (s *StepUps) purge(now time.Time) {
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
	for k, p := range s.requests {
		if now.After(p.Expires) {
			delete(s.requests, k)
		}
	}
}

// Begin keeps a begun registration or assertion and returns its session ID.
func (s *StepUps) Begin(p *PendingWebAuthn, now time.Time) (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	oldest, mine := "", 0
	for k, q := range s.pending {
		if q.Op == p.Op {
			mine++
			if oldest == "" || q.expires.Before(s.pending[oldest].expires) {
				oldest = k
			}
		}
	}
	if mine >= maxPendingPerOp {
		delete(s.pending, oldest)
	} else if len(s.pending) >= maxPending {
		return "", errTooMany
	}
	p.expires = now.Add(webauthnTimeout)
	s.pending[id] = p
	return id, nil
}

// Take removes and returns a begun ceremony of operator op.
func (s *StepUps) Take(id, op string, register bool, now time.Time) (*PendingWebAuthn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[id]
	if !ok || now.After(p.expires) || p.Op != op || p.Register != register {
		return nil, errNoSession
	}
	delete(s.pending, id)
	return p, nil
}

// Grant mints a token for op and the request d; a pending command-line request of op with those
// details is approved by it and no longer pending.
func (s *StepUps) Grant(op string, d Details, ttl time.Duration, now time.Time) (string, error) {
	tok, err := randomToken()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	oldest, mine := "", 0
	for k, g := range s.grants {
		if g.op == op {
			mine++
			if oldest == "" || g.expires.Before(s.grants[oldest].expires) {
				oldest = k
			}
		}
	}
	if mine >= maxPendingPerOp {
		delete(s.grants, oldest)
	} else if len(s.grants) >= maxPending {
		return "", errTooMany
	}
	digest := d.Digest()
	s.grants[tokenKey(tok)] = &grant{op: op, action: d.Action, digest: digest, summary: d.Summary(), expires: now.Add(ttl)}
	for k, p := range s.requests {
		if p.Op == op && p.Details.Digest() == digest {
			delete(s.requests, k)
		}
	}
	return tok, nil
}

// Consume uses up a token: it must be of operator op, for action a, for the request's details
// d, and unexpired. d nil is a request whose details cannot be told before its handler reads
// the body (a page's upload): the action is checked alone. A token presented by another
// operator, for another action or other details is burnt too; other details are a
// *[DetailsError] that says what was approved and what was asked.
func (s *StepUps) Consume(tok, op string, a Action, d *Details, now time.Time) error {
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
	if d != nil && subtle.ConstantTimeCompare([]byte(g.digest), []byte(d.Digest())) != 1 {
		return &DetailsError{Approved: g.summary, Requested: d.Summary()}
	}
	return nil
}

// Downloads keeps a PKCS#12 file issued from the Operators page until its one download.
type Downloads struct {
	mu sync.Mutex
	m  map[string]*Download
}

// Download is an issued PKCS#12 file waiting for its one download.
type Download struct {
	op      string
	Name    string
	Data    []byte
	expires time.Time
}

// DownloadTTL is how long an issued file waits for its download.
const DownloadTTL = 10 * time.Minute

func newDownloads() *Downloads { return &Downloads{m: map[string]*Download{}} }

// Put keeps data for one download by operator op and returns the download's ID.
func (d *Downloads) Put(op, name string, data []byte, now time.Time) (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range d.m {
		if now.After(v.expires) {
			clear(v.Data)
			delete(d.m, k)
		}
	}
	if len(d.m) >= maxPending {
		return "", errTooMany
	}
	d.m[id] = &Download{op: op, Name: name, Data: data, expires: now.Add(DownloadTTL)}
	return id, nil
}

// Take hands out a file once, to the operator who issued it, within DownloadTTL.
func (d *Downloads) Take(id, op string, now time.Time) (*Download, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.m[id]
	if !ok || v.op != op {
		return nil, false
	}
	delete(d.m, id)
	if now.After(v.expires) {
		clear(v.Data)
		return nil, false
	}
	return v, true
}

// OriginError is a WebAuthn request at a page opened at another name or port than the one
// security keys are bound to: Want is where to open it instead.
type OriginError struct {
	Want string // https://relying-party-ID[:port]
	RPID string
	Host string // the host the page was opened at
}

func (e *OriginError) Error() string {
	return fmt.Sprintf("security keys work only at %s, not at https://%s", e.Want, e.Host)
}

// RPConfigError is a WebAuthn configuration the library refuses (e.g. an IP address as the
// relying party ID).
type RPConfigError struct{ Err error }

func (e *RPConfigError) Error() string { return "webauthn configuration: " + e.Err.Error() }
func (e *RPConfigError) Unwrap() error { return e.Err }

// RelyingParty is the WebAuthn relying party for a request, bound to the origin the page was
// opened at. WebAuthn works only over HTTPS at the configured host name (the relying party ID)
// and the port WebConf listens on; anything else is an *OriginError that says where to go.
func (a *Auth) RelyingParty(r *http.Request) (*webauthn.WebAuthn, string, error) {
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
		return nil, "", &OriginError{Want: want, RPID: a.rpID, Host: r.Host}
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
		return nil, "", &RPConfigError{Err: err}
	}
	return wa, origin, nil
}
