package operator

import (
	"slices"
	"strings"

	"github.com/keyquorum/keyquorum/ceremony"
)

// Action is what a request does, as the role rules see it.
type Action string

// The actions. Ceremony starts are "ceremony." and the ceremony kind ([ActionForKind]).
const (
	ActionAccount Action = "account"        // one's own account page: any trusted certificate
	ActionView    Action = "view"           // status, key setup, live view, HSM and card pages
	ActionAudit   Action = "audit"          // audit log, export, protocols
	ActionSteer   Action = "ceremony.steer" // retry, answer on the screen, cancel
	// ActionAnswerDestructive is OK to an on-screen question whose OK destroys data on a card
	// (an overwrite, the last PIN try): a fresh assertion, as for starting a ceremony.
	ActionAnswerDestructive Action = "ceremony.answer-destructive"
	ActionSimulator         Action = "simulator"        // the simulator's virtual pad and cards
	ActionResume            Action = "ceremony.resume"  // resume an interrupted ceremony
	ActionBackup            Action = "backup"           // download a backup
	ActionRestore           Action = "restore"          // upload a backup into the HSM
	ActionHSMObjects        Action = "hsm.objects"      // create or import objects in the HSM
	ActionClusterJoin       Action = "cluster.join"     // take over a peer's state
	ActionOperatorsView     Action = "operators.view"   // the operator list
	ActionOperatorsManage   Action = "operators.manage" // roles, certificates, others' security keys
	ActionKeyAdd            Action = "key.add"          // register a security key (another one: fresh)
	ActionKeyRemove         Action = "key.remove"       // remove one of one's own security keys
	ActionCardSurvey        Action = "card.survey"      // read the card in the reader without a PIN
)

// ActionForKind is the action of starting a ceremony of kind k.
func ActionForKind(k ceremony.Kind) Action { return Action("ceremony." + string(k)) }

// Rule says which roles may do an action, and whether it needs a fresh WebAuthn assertion.
type Rule struct {
	Roles []Role
	Fresh bool
	What  string // for pages: "start a key generation"
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
var rules = map[Action]Rule{
	ActionAccount:           {Roles: anyOperator, What: "see your account"},
	ActionView:              {Roles: everyRole, What: "see this page"},
	ActionAudit:             {Roles: []Role{RoleAdmin, RoleAuditor}, What: "read the audit log and the ceremony protocols"},
	ActionSteer:             {Roles: cardHolders, What: "steer the running ceremony"},
	ActionAnswerDestructive: {Roles: cardHolders, Fresh: true, What: "answer OK to a question that destroys data on a card (overwrite, last PIN try)"},
	ActionSimulator:         {Roles: cardHolders, What: "operate the simulator's PIN pad and cards"},
	ActionResume:            {Roles: adminOnly, Fresh: true, What: "resume an interrupted ceremony"},
	ActionBackup:            {Roles: adminOnly, What: "download a backup"},
	ActionRestore:           {Roles: adminOnly, Fresh: true, What: "restore a backup"},
	ActionHSMObjects:        {Roles: adminOnly, Fresh: true, What: "create or import objects in the HSM"},
	ActionClusterJoin:       {Roles: adminOnly, Fresh: true, What: "join a cluster"},
	ActionOperatorsView:     {Roles: adminOnly, What: "see the operator list"},
	ActionOperatorsManage:   {Roles: adminOnly, Fresh: true, What: "manage operators (roles, certificates, security keys)"},
	// Registering a key needs a role: an administrator's decision about the certificate. A
	// trusted certificate without one (any certificate of a bundle CA, seen once) cannot tie a
	// key to itself, nor fill the table of begun registrations.
	ActionKeyAdd:    {Roles: everyRole, Fresh: true, What: "register a security key"},
	ActionKeyRemove: {Roles: anyOperator, Fresh: true, What: "remove a security key"},

	ActionForKind(ceremony.KindGenerate):     {Roles: adminOnly, Fresh: true, What: "start a key generation"},
	ActionForKind(ceremony.KindLoad):         {Roles: adminOnly, Fresh: true, What: "start a key load"},
	ActionForKind(ceremony.KindFactoryReset): {Roles: adminOnly, Fresh: true, What: "start a factory reset"},
	ActionForKind(ceremony.KindSlotUserCard): {Roles: adminOnly, Fresh: true, What: "write a slot user card"},
	ActionForKind(ceremony.KindActivateSlot): {Roles: adminOnly, Fresh: true, What: "activate a PKCS#11 slot"},
	ActionForKind(ceremony.KindCopyCard):     {Roles: cardHolders, Fresh: true, What: "copy a share card"},
	ActionForKind(ceremony.KindChangePIN):    {Roles: cardHolders, Fresh: true, What: "change a card's PIN"},
	ActionForKind(ceremony.KindReissue):      {Roles: adminOnly, Fresh: true, What: "re-issue the card set"},
	ActionForKind(ceremony.KindCardCheck):    {Roles: cardHolders, Fresh: true, What: "check a card"},
	ActionForKind(ceremony.KindPrepareCards): {Roles: adminOnly, Fresh: true, What: "prepare cards"},
	ActionCardSurvey:                         {Roles: cardHolders, What: "survey the card in the reader"},
}

// RuleOf is the rule of an action; an unknown ceremony kind or action is an administrator's,
// with a fresh assertion.
func RuleOf(a Action) Rule {
	r := ruleOf(a)
	r.Roles = slices.Clone(r.Roles) // the caller's copy: the role table cannot be changed through it
	return r
}

func ruleOf(a Action) Rule {
	if r, ok := rules[a]; ok {
		return r
	}
	what := "do this"
	if k, ok := strings.CutPrefix(string(a), "ceremony."); ok {
		what = "start a " + ceremony.Kind(k).Title()
	}
	return Rule{Roles: adminOnly, Fresh: true, What: what}
}

// Allowed reports whether role may do action.
func Allowed(role Role, a Action) bool { return slices.Contains(ruleOf(a).Roles, role) }

// NeedsFresh reports whether an action needs a fresh assertion from this operator. Registering
// the first security key needs none (there is nothing to assert with: that is the bootstrap);
// every further key needs an assertion with one already registered, so a stolen certificate
// cannot add its thief's key.
func NeedsFresh(a Action, op *Operator) bool {
	if a == ActionKeyAdd {
		return len(op.Keys) > 0
	}
	return ruleOf(a).Fresh
}

// Listed reports whether the role table names action a.
func Listed(a Action) bool {
	_, ok := rules[a]
	return ok
}

// ApprovableActions are the dangerous actions the command line can be approved for.
func ApprovableActions() []Action {
	var out []Action
	for a, rl := range rules {
		if rl.Fresh && a != ActionKeyAdd && a != ActionKeyRemove {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}
