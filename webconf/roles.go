package webconf

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/keyquorum/keyquorum/ceremony"
)

// Action is what a request does, as the role rules see it.
type Action string

// The actions. Ceremony starts are "ceremony." and the ceremony kind ([ActionForKind]).
const (
	ActionAccount         Action = "account"          // one's own account page: any trusted certificate
	ActionView            Action = "view"             // status, key setup, live view, HSM and card pages
	ActionAudit           Action = "audit"            // audit log, export, protocols
	ActionSteer           Action = "ceremony.steer"   // retry, answer on the screen, cancel
	ActionSimulator       Action = "simulator"        // the simulator's virtual pad and cards
	ActionResume          Action = "ceremony.resume"  // resume an interrupted ceremony
	ActionBackup          Action = "backup"           // download a backup
	ActionRestore         Action = "restore"          // upload a backup into the HSM
	ActionClusterJoin     Action = "cluster.join"     // take over a peer's state
	ActionOperatorsView   Action = "operators.view"   // the operator list
	ActionOperatorsManage Action = "operators.manage" // roles, certificates, others' security keys
	ActionKeyAdd          Action = "key.add"          // register a security key (another one: fresh)
	ActionKeyRemove       Action = "key.remove"       // remove one of one's own security keys
)

// ActionForKind is the action of starting a ceremony of kind k.
func ActionForKind(k ceremony.Kind) Action { return Action("ceremony." + string(k)) }

// rule says which roles may do an action, and whether it needs a fresh WebAuthn assertion.
type rule struct {
	roles []Role
	fresh bool
	what  string // for pages: "start a key generation"
}

var (
	everyRole   = []Role{RoleAdmin, RoleCustodian, RoleAuditor}
	adminOnly   = []Role{RoleAdmin}
	cardHolders = []Role{RoleAdmin, RoleCustodian}
	// anyOperator: every trusted certificate, with or without a role (their own account).
	anyOperator = []Role{RoleAdmin, RoleCustodian, RoleAuditor, RoleNone}
)

// rules is the role table. A ceremony kind not listed here is an administrator's, with a fresh
// assertion: a new kind is safe before anyone thinks about it.
var rules = map[Action]rule{
	ActionAccount:         {roles: anyOperator, what: "see your account"},
	ActionView:            {roles: everyRole, what: "see this page"},
	ActionAudit:           {roles: []Role{RoleAdmin, RoleAuditor}, what: "read the audit log and the ceremony protocols"},
	ActionSteer:           {roles: cardHolders, what: "steer the running ceremony"},
	ActionSimulator:       {roles: cardHolders, what: "operate the simulator's PIN pad and cards"},
	ActionResume:          {roles: adminOnly, fresh: true, what: "resume an interrupted ceremony"},
	ActionBackup:          {roles: adminOnly, what: "download a backup"},
	ActionRestore:         {roles: adminOnly, fresh: true, what: "restore a backup"},
	ActionClusterJoin:     {roles: adminOnly, fresh: true, what: "join a cluster"},
	ActionOperatorsView:   {roles: adminOnly, what: "see the operator list"},
	ActionOperatorsManage: {roles: adminOnly, fresh: true, what: "manage operators (roles, certificates, security keys)"},
	ActionKeyAdd:          {roles: anyOperator, fresh: true, what: "register a security key"},
	ActionKeyRemove:       {roles: anyOperator, fresh: true, what: "remove a security key"},

	ActionForKind(ceremony.KindGenerate):     {roles: adminOnly, fresh: true, what: "start a key generation"},
	ActionForKind(ceremony.KindLoad):         {roles: adminOnly, fresh: true, what: "start a key load"},
	ActionForKind(ceremony.KindFactoryReset): {roles: adminOnly, fresh: true, what: "start a factory reset"},
	ActionForKind(ceremony.KindSlotUserCard): {roles: adminOnly, fresh: true, what: "write a slot user card"},
	ActionForKind(ceremony.KindActivateSlot): {roles: adminOnly, fresh: true, what: "activate a PKCS#11 slot"},
	ActionForKind(ceremony.KindCopyCard):     {roles: cardHolders, fresh: true, what: "copy a share card"},
	ActionForKind(ceremony.KindChangePIN):    {roles: cardHolders, fresh: true, what: "change a card's PIN"},
	ActionForKind(ceremony.KindReissue):      {roles: adminOnly, fresh: true, what: "re-issue the card set"},
	ActionForKind(ceremony.KindCardCheck):    {roles: cardHolders, fresh: true, what: "check a card"},
}

// ruleOf is the rule of an action; an unknown ceremony kind or action is an administrator's,
// with a fresh assertion.
func ruleOf(a Action) rule {
	if r, ok := rules[a]; ok {
		return r
	}
	what := "do this"
	if k, ok := strings.CutPrefix(string(a), "ceremony."); ok {
		what = "start a " + ceremony.Kind(k).Title()
	}
	return rule{roles: adminOnly, fresh: true, what: what}
}

// Allowed reports whether role may do action.
func Allowed(role Role, a Action) bool { return slices.Contains(ruleOf(a).roles, role) }

// needsFresh reports whether an action needs a fresh assertion from this operator. Registering
// the first security key needs none (there is nothing to assert with: that is the bootstrap);
// every further key needs an assertion with one already registered, so a stolen certificate
// cannot add its thief's key.
func needsFresh(a Action, op *Operator) bool {
	if a == ActionKeyAdd {
		return len(op.Keys) > 0
	}
	return ruleOf(a).fresh
}

// routeActions maps each route pattern to the action of a request to it. Every route must be
// here: a pattern without an entry is refused (fail closed), so a new page cannot be reached
// before someone decides who may use it. A handler that learns its action only from the body
// (a JSON request) maps to actionInHandler and calls [Server.authorize] itself.
var routeActions = map[string]func(form url.Values) Action{
	"GET /{$}":                      fixed(ActionView),
	"GET /setup":                    fixed(ActionView),
	"GET /setup/confirm":            fixed(ActionView),
	"POST /ceremonies":              ceremonyFormAction,
	"GET /ceremony":                 fixed(ActionView),
	"POST /ceremony/retry":          fixed(ActionSteer),
	"POST /ceremony/answer":         fixed(ActionSteer),
	"POST /ceremony/cancel":         fixed(ActionSteer),
	"POST /ceremony/resume":         fixed(ActionResume),
	"GET /cards":                    fixed(ActionView),
	"GET /cards/reissue":            fixed(ActionView),
	"GET /cards/reissue/confirm":    fixed(ActionView),
	"POST /cards/reissue":           fixed(ActionForKind(ceremony.KindReissue)),
	"GET /cards/check":              fixed(ActionView),
	"POST /cards/check":             fixed(ActionForKind(ceremony.KindCardCheck)),
	"GET /reset":                    fixed(ActionView),
	"POST /reset":                   fixed(ActionForKind(ceremony.KindFactoryReset)),
	"GET /events":                   fixed(ActionView),
	"GET /hsm":                      fixed(ActionView),
	"GET /hsm/backup":               fixed(ActionBackup),
	"POST /hsm/restore":             fixed(ActionRestore),
	"GET /audit":                    fixed(ActionAudit),
	"GET /audit/export":             fixed(ActionAudit),
	"GET /ceremonies/{id}/protocol": fixed(ActionAudit),
	"POST /sim/key":                 fixed(ActionSimulator),
	"POST /sim/insert":              fixed(ActionSimulator),
	"POST /sim/remove":              fixed(ActionSimulator),
	"POST /sim/cards":               fixed(ActionSimulator),
	"GET /sim/rack":                 fixed(ActionView),
	"/":                             fixed(ActionAccount), // the "page not found" page

	"GET /account":                   fixed(ActionAccount),
	"POST /account/keys/remove":      fixed(ActionKeyRemove),
	"POST /webauthn/register/begin":  fixed(ActionKeyAdd),
	"POST /webauthn/register/finish": fixed(ActionAccount), // completes a begin that was checked
	"POST /webauthn/assert/begin":    fixed(ActionAccount), // checks the role for its target itself
	"POST /webauthn/assert/finish":   fixed(ActionAccount),
	"GET /operators":                 fixed(ActionOperatorsView),
	"POST /operators/role":           fixed(ActionOperatorsManage),
	"POST /operators/issue":          fixed(ActionOperatorsManage),
	"GET /operators/issued/{id}":     fixed(ActionOperatorsView), // the one-time download of what was issued
	"POST /operators/revoke":         fixed(ActionOperatorsManage),
	"POST /operators/keys/remove":    fixed(ActionOperatorsManage),
	"GET /api/v1/operators":          fixed(ActionOperatorsView),
	"POST /api/v1/operators/role":    fixed(ActionOperatorsManage),

	// The command line's API (api.go, cluster.go).
	"GET /api/v1/status":           fixed(ActionView),
	"GET /api/v1/ceremony":         fixed(ActionView),
	"POST /api/v1/ceremony/start":  fixed(actionInHandler), // the kind in the body
	"POST /api/v1/ceremony/cancel": fixed(ActionSteer),
	"POST /api/v1/ceremony/retry":  fixed(ActionSteer),
	"POST /api/v1/ceremony/answer": fixed(ActionSteer),
	"POST /api/v1/ceremony/resume": fixed(ActionResume),
	"GET /api/v1/ceremony/events":  fixed(ActionView),
	"GET /api/v1/backup":           fixed(ActionBackup),
	"POST /api/v1/restore":         fixed(ActionRestore),
	"GET /api/v1/audit/verify":     fixed(ActionAudit),
	"GET /api/v1/audit/export":     fixed(ActionAudit),
	"GET /api/v1/card":             fixed(ActionView),
	"POST /api/v1/cluster/nodes":   fixed(ActionOperatorsManage),
	"GET /api/v1/cluster/state":    fixed(actionInHandler), // node certificates only, checked there
	"POST /api/v1/cluster/join":    fixed(ActionClusterJoin),
	"GET /cluster":                 fixed(ActionView),
	"POST /cluster/nodes":          fixed(ActionOperatorsManage),
	"POST /cluster/join":           fixed(ActionClusterJoin),
}

// actionInHandler marks a route whose handler calls [Server.authorize] with the action it reads
// from the request body; the middleware lets it through to the handler.
const actionInHandler Action = "(checked by the handler)"

func fixed(a Action) func(url.Values) Action { return func(url.Values) Action { return a } }

// ceremonyFormAction is the action of the start form: the kind it names. An unknown kind is
// an administrator's action (the handler then refuses the kind itself).
func ceremonyFormAction(form url.Values) Action {
	return ActionForKind(ceremony.Kind(form.Get("kind")))
}

// actionOf is the action of a request to pattern with form values form; ok is false for a
// pattern without an entry.
func actionOf(pattern string, form url.Values) (Action, bool) {
	f, ok := routeActions[pattern]
	if !ok {
		return "", false
	}
	return f(form), true
}

// problemNoRole is the page of a trusted certificate no administrator has given a role yet.
func problemNoRole(op operator) problem {
	who := op.Name
	if op.Ident.Issuer != "" {
		who += ", issued by " + op.Ident.Issuer
	}
	return problem{Status: http.StatusForbidden, Code: CodeNoRole, Title: "No role yet",
		What: fmt.Sprintf("Your certificate is trusted, but no WebConf administrator has given it a role, so WebConf shows you nothing but your account page. You are %s (operator ID %s).", who, op.ID),
		Todo: "Ask a WebConf administrator to give you a role (admin, custodian or auditor) on the Operators page, where you are listed under this name. Meanwhile you can register your security key on your account page.",
		Back: "/account"}
}

// problemNotAllowed is the page of an operator whose role does not allow an action.
func problemNotAllowed(op operator, a Action) problem {
	r := ruleOf(a)
	var who []string
	for _, role := range r.roles {
		who = append(who, role.String())
	}
	return problem{Status: http.StatusForbidden, Title: "Not allowed for your role",
		What: fmt.Sprintf("Your role is %s; only the role %s may %s.", op.Role, strings.Join(who, " or "), r.what),
		Todo: "Ask a WebConf administrator if your role should change. Administrators run the ceremonies, restores, cluster joins and factory resets; custodians use the smart card tools on their own cards; auditors read the audit log and the protocols."}
}
