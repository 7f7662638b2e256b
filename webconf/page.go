package webconf

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/a-h/templ"
)

// page is what the layout needs to frame every page.
type page struct {
	Title     string
	Nav       string // the menu entry to highlight
	Operator  string // "" on pages for requests without a certificate
	CSRF      string
	Sim       bool // the simulator panel is shown
	SimView   simView
	Role      Role
	NoKey     bool   // the operator has a role but no security key yet: say what to do
	KeyOrigin string // where security keys work: https://relying-party-ID:port
}

// navItems is the menu, in order.
var navItems = []struct{ Key, Href, Label string }{
	{"status", "/", "Status"},
	{"setup", "/setup", "Key setup"},
	{"ceremony", "/ceremony", "Live ceremony"},
	{"hsm", "/hsm", "HSM"},
	{"cards", "/cards", "Smart cards"},
	{"audit", "/audit", "Audit log"},
	{"reset", "/reset", "Factory reset"},
	{"operators", "/operators", "Operators"},
	{"account", "/account", "Account"},
}

// navShown: the Operators entry is for administrators only; an operator without a role has
// only the account page.
func navShown(key string, role Role) bool {
	switch {
	case role == RoleNone:
		return key == "account"
	case key == "operators":
		return role == RoleAdmin
	}
	return true
}

// renderer frames pages and error pages; every handler group gets one.
type renderer struct {
	sim  Simulator // nil without the simulator pad
	pki  *PKI
	log  *slog.Logger
	auth *auth
}

func (rd *renderer) page(r *http.Request, title, nav string) page {
	p := page{Title: title, Nav: nav}
	if op, ok := operatorFrom(r.Context()); ok {
		p.Operator, p.CSRF, p.Role = op.Name, op.CSRF, op.Role
		p.NoKey = op.Role != RoleNone && len(op.Rec.Keys) == 0
		if rd.auth != nil {
			p.KeyOrigin = rd.auth.keyOrigin(r)
		}
		if rd.sim != nil && Allowed(op.Role, ActionSimulator) {
			p.Sim = true
			p.SimView = simViewOf(rd.sim)
		}
	}
	return p
}

// html renders a component as a page with the given status.
func (rd *renderer) html(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil {
		rd.log.Debug("render page", "path", r.URL.Path, "err", err)
	}
}

// operatorName is the identity of the request's certificate; the middleware guarantees one on
// every route that calls this.
func operatorName(r *http.Request) string {
	op, _ := operatorFrom(r.Context())
	return op.Name
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func formatRFC3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
