package pages

import (
	"log/slog"
	"net/http"

	"github.com/a-h/templ"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// page is what the layout needs to frame every page.
type Page struct {
	Title     string
	Nav       string // the menu entry to highlight
	Operator  string // "" on pages for requests without a certificate
	CSRF      string
	Sim       bool // the simulator panel is shown
	SimView   simpanel.View
	Role      operator.Role
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
func navShown(key string, role operator.Role) bool {
	switch {
	case role == operator.RoleNone:
		return key == "account"
	case key == "operators":
		return role == operator.RoleAdmin
	}
	return true
}

// Renderer frames pages and error pages; every handler group gets one.
type Renderer struct {
	sim  simpanel.Simulator // nil without the simulator pad
	log  *slog.Logger
	auth *operator.Auth
}

// NewRenderer makes the renderer of every page; sim is nil without the simulator pad.
func NewRenderer(sim simpanel.Simulator, auth *operator.Auth, log *slog.Logger) *Renderer {
	return &Renderer{sim: sim, log: log, auth: auth}
}

// Page is the frame of a page for the request's operator: title, the menu entry nav to
// highlight, the CSRF token, and the simulator panel when the operator may use it.
func (rd *Renderer) Page(r *http.Request, title, nav string) Page {
	p := Page{Title: title, Nav: nav}
	if op, ok := operator.FromContext(r.Context()); ok {
		p.Operator, p.CSRF, p.Role = op.Name, op.CSRF, op.Role
		p.NoKey = op.Role != operator.RoleNone && len(op.Rec.Keys) == 0
		if rd.auth != nil {
			p.KeyOrigin = rd.auth.KeyOrigin(r)
		}
		if rd.sim != nil && operator.Allowed(op.Role, operator.ActionSimulator) {
			p.Sim = true
			p.SimView = simpanel.ViewOf(rd.sim)
		}
	}
	return p
}

// HTML renders a component as a page with the given status.
func (rd *Renderer) HTML(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil {
		rd.log.Debug("render page", "path", r.URL.Path, "err", err)
	}
}

// Problem answers with an error page, or with the JSON problem for the page script and the API.
func (rd *Renderer) Problem(w http.ResponseWriter, r *http.Request, p web.Problem) {
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	if r.Header.Get(web.FetchHeader) != "" || web.IsAPI(r) {
		web.WriteProblem(w, p)
		return
	}
	rd.HTML(w, r, p.Status, problemPage(rd.Page(r, p.Title, ""), p))
}
