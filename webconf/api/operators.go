package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// OperatorJSON is an operator as the API lists it.
type OperatorJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	UPN       string    `json:"upn,omitempty"`
	Email     string    `json:"email,omitempty"`
	Role      string    `json:"role"`
	Keys      int       `json:"security_keys"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	RoleBy    string    `json:"role_by,omitempty"`
	RoleSince time.Time `json:"role_since,omitzero"`
}

func operatorJSON(o operator.Operator) OperatorJSON {
	return OperatorJSON{ID: o.ID, Name: o.Name(), Subject: o.Subject, Issuer: o.Issuer, UPN: o.UPN, Email: o.Email,
		Role: o.Role.String(), Keys: len(o.Keys), LastSeen: o.LastSeen, RoleBy: o.RoleBy, RoleSince: o.RoleAt}
}

// operators is GET /api/v1/operators: the operator list.
func (a *Handlers) operators(w http.ResponseWriter, r *http.Request) {
	ops, err := a.cfg.Auth.Operators().List()
	if err != nil {
		a.problem(w, r, web.For(err, ""))
		return
	}
	out := make([]OperatorJSON, 0, len(ops))
	for _, o := range ops {
		out = append(out, operatorJSON(o))
	}
	web.WriteJSON(w, map[string]any{"operators": out})
}

// RoleRequest is the body of POST /api/v1/operators/role.
type RoleRequest struct {
	ID   string `json:"id"`
	Role string `json:"role"`
}

// setRole is POST /api/v1/operators/role: an approval (ApprovalHeader) for "manage
// operators" is required, as on the Operators page; the change is audited the same way.
func (a *Handlers) setRole(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	var req RoleRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.problem(w, r, web.BadForm(fmt.Sprintf("The body must be JSON like {\"id\": \"…\", \"role\": \"auditor\"}: %v.", err)))
		return
	}
	role, err := operator.ParseRole(req.Role)
	if err != nil {
		a.problem(w, r, web.BadForm(err.Error()))
		return
	}
	target, old, err := a.cfg.Auth.Operators().SetRole(req.ID, role, op.Name, time.Now())
	if err != nil {
		a.problem(w, r, web.ForAuth(err, ""))
		return
	}
	if old != role {
		msg := fmt.Sprintf("%s: role changed from %s to %s by %s (command line)", target.Name(), old, role, op.Name)
		if err := a.cfg.Auth.Record(op.Name, operator.AuditOperatorRole, msg); err != nil {
			a.problem(w, r, web.ForAuth(err, ""))
			return
		}
	}
	web.WriteJSON(w, operatorJSON(target))
}
