package webconf

import (
	"net/url"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// routeActions maps each route pattern to the action of a request to it. Every route must be
// here: a pattern without an entry is refused (fail closed), so a new page cannot be reached
// before someone decides who may use it. A handler that learns its action only from the body
// (a JSON request) maps to actionInHandler and calls [Server.authorize] itself.
var routeActions = map[string]func(form url.Values) operator.Action{
	"GET /{$}":                      fixed(operator.ActionView),
	"GET /setup":                    fixed(operator.ActionView),
	"GET /setup/confirm":            fixed(operator.ActionView),
	"POST /ceremonies":              ceremonyFormAction,
	"GET /ceremony":                 fixed(operator.ActionView),
	"POST /ceremony/retry":          fixed(operator.ActionSteer),
	"POST /ceremony/answer":         answerFormAction,
	"POST /ceremony/cancel":         fixed(operator.ActionSteer),
	"POST /ceremony/resume":         fixed(operator.ActionResume),
	"GET /cards":                    fixed(operator.ActionView),
	"GET /cards/reissue":            fixed(operator.ActionView),
	"GET /cards/reissue/confirm":    fixed(operator.ActionView),
	"POST /cards/reissue":           fixed(operator.ActionForKind(ceremony.KindReissue)),
	"GET /cards/check":              fixed(operator.ActionView),
	"POST /cards/check":             fixed(operator.ActionForKind(ceremony.KindCardCheck)),
	"POST /cards/survey":            fixed(operator.ActionCardSurvey),
	"GET /reset":                    fixed(operator.ActionView),
	"POST /reset":                   fixed(operator.ActionForKind(ceremony.KindFactoryReset)),
	"GET /events":                   fixed(operator.ActionView),
	"GET /hsm":                      fixed(operator.ActionView),
	"GET /hsm/backup":               fixed(operator.ActionBackup),
	"POST /hsm/restore":             fixed(operator.ActionRestore),
	"POST /hsm/restore/preview":     fixed(operator.ActionBackup), // reads a backup, changes nothing
	"POST /hsm/objects":             fixed(operator.ActionHSMObjects),
	"POST /hsm/objects/import":      fixed(operator.ActionHSMObjects),
	"GET /audit":                    fixed(operator.ActionAudit),
	"GET /audit/export":             fixed(operator.ActionAudit),
	"GET /audit/checkpoint":         fixed(operator.ActionAudit),
	"GET /ceremonies/{id}/protocol": fixed(operator.ActionAudit),
	"POST /sim/key":                 fixed(operator.ActionSimulator),
	"POST /sim/insert":              fixed(operator.ActionSimulator),
	"POST /sim/remove":              fixed(operator.ActionSimulator),
	"POST /sim/cards":               fixed(operator.ActionSimulator),
	"GET /sim/rack":                 fixed(operator.ActionView),
	"/":                             fixed(operator.ActionAccount), // the "page not found" page

	"GET /account":                   fixed(operator.ActionAccount),
	"POST /account/keys/remove":      fixed(operator.ActionKeyRemove),
	"POST /webauthn/register/begin":  fixed(operator.ActionKeyAdd),
	"POST /webauthn/register/finish": fixed(operator.ActionAccount), // completes a begin that was checked
	"POST /webauthn/assert/begin":    fixed(operator.ActionAccount), // checks the role for its target itself
	"POST /webauthn/assert/finish":   fixed(operator.ActionAccount),
	"GET /operators":                 fixed(operator.ActionOperatorsView),
	"POST /operators/role":           fixed(operator.ActionOperatorsManage),
	"POST /operators/issue":          fixed(operator.ActionOperatorsManage),
	"GET /operators/issued/{id}":     fixed(operator.ActionOperatorsView), // the one-time download of what was issued
	"POST /operators/revoke":         fixed(operator.ActionOperatorsManage),
	"POST /operators/keys/remove":    fixed(operator.ActionOperatorsManage),
	"POST /api/v1/card/survey":       fixed(operator.ActionCardSurvey),
	"GET /api/v1/operators":          fixed(operator.ActionOperatorsView),
	"POST /api/v1/operators/role":    fixed(operator.ActionOperatorsManage),

	// The command line's API (webconf/api).
	"GET /api/v1/status":              fixed(operator.ActionView),
	"GET /api/v1/ceremony":            fixed(operator.ActionView),
	"POST /api/v1/ceremony/start":     fixed(actionInHandler), // the kind in the body
	"POST /api/v1/ceremony/cancel":    fixed(operator.ActionSteer),
	"POST /api/v1/ceremony/retry":     fixed(operator.ActionSteer),
	"POST /api/v1/ceremony/answer":    fixed(actionInHandler), // destructive or not: the question decides
	"POST /api/v1/ceremony/resume":    fixed(operator.ActionResume),
	"GET /api/v1/ceremony/events":     fixed(operator.ActionView),
	"GET /api/v1/backup":              fixed(operator.ActionBackup),
	"POST /api/v1/restore":            fixed(operator.ActionRestore),
	"POST /api/v1/restore/preview":    fixed(operator.ActionBackup), // reads a backup, changes nothing
	"GET /api/v1/hsm/objects":         fixed(operator.ActionView),
	"POST /api/v1/hsm/objects":        fixed(operator.ActionHSMObjects),
	"POST /api/v1/hsm/objects/import": fixed(operator.ActionHSMObjects),
	"GET /api/v1/audit/verify":        fixed(operator.ActionAudit),
	"GET /api/v1/audit/export":        fixed(operator.ActionAudit),
	"GET /api/v1/audit/checkpoint":    fixed(operator.ActionAudit),
	"GET /api/v1/card":                fixed(operator.ActionView),
	"POST /api/v1/cluster/nodes":      fixed(operator.ActionOperatorsManage),
	"GET /api/v1/cluster/state":       fixed(actionInHandler), // node certificates only, checked there
	"GET /api/v1/cluster/challenge":   fixed(actionInHandler), // node certificates only, checked there
	"POST /api/v1/cluster/join":       fixed(operator.ActionClusterJoin),
	"GET /api/v1/cluster/summary":     fixed(actionInHandler),            // node certificates only, checked there
	"POST /api/v1/cluster/sync":       fixed(operator.ActionClusterJoin), // changes the key database as a join does
	"GET /api/v1/cluster/status":      fixed(operator.ActionView),
	"POST /api/v1/cluster/offer":      fixed(actionInHandler), // public: a version only (isPublic), the sync it starts authenticates the peer
	"POST /cluster/sync":              fixed(operator.ActionClusterJoin),
	"GET /cluster":                    fixed(operator.ActionView),
	"POST /cluster/nodes":             fixed(operator.ActionOperatorsManage),
	"POST /cluster/join":              fixed(operator.ActionClusterJoin),
}

// actionInHandler marks a route whose handler calls [Server.authorize] with the action it reads
// from the request body; the middleware lets it through to the handler.
const actionInHandler operator.Action = "(checked by the handler)"

func fixed(a operator.Action) func(url.Values) operator.Action {
	return func(url.Values) operator.Action { return a }
}

// ceremonyFormAction is the action of the start form: the kind it names. An unknown kind is
// an administrator's action (the handler then refuses the kind itself).
func ceremonyFormAction(form url.Values) operator.Action {
	return operator.ActionForKind(ceremony.Kind(form.Get("kind")))
}

// actionOf is the action of a request to pattern with form values form; ok is false for a
// pattern without an entry.
func actionOf(pattern string, form url.Values) (operator.Action, bool) {
	f, ok := routeActions[pattern]
	if !ok {
		return "", false
	}
	return f(form), true
}

// answerFormAction is the action of an answer on the live view: OK to a question the page
// declares destructive needs a fresh assertion. The handler checks the declaration against the
// question actually asked and refuses an undeclared destructive OK, so a page cannot skip the
// security key by leaving the declaration out.
func answerFormAction(form url.Values) operator.Action {
	if form.Get("answer") == "ok" && form.Get("destructive") == "1" {
		return operator.ActionAnswerDestructive
	}
	return operator.ActionSteer
}
