package webconf

import (
	"net/url"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// FuzzCeremonyFormAction: whatever a start form names, starting it is never allowed to an
// auditor or an operator without a role, and always needs a fresh assertion.
func FuzzCeremonyFormAction(f *testing.F) {
	f.Add("kind=generate&quorum=2-3")
	f.Add("kind=change-pin&slot=share")
	f.Add("kind=")
	f.Add("kind=..%2Fview")
	f.Fuzz(func(t *testing.T, query string) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		a, ok := actionOf("POST /ceremonies", v)
		if !ok {
			t.Fatal("no rule for the start form")
		}
		op := &operator.Operator{}
		if operator.Allowed(operator.RoleAuditor, a) || operator.Allowed(operator.RoleNone, a) || !operator.NeedsFresh(a, op) {
			t.Fatalf("start form %q: action %q open to auditors or without an assertion", query, a)
		}
		if k := ceremony.Kind(v.Get("kind")); k != ceremony.KindCopyCard && k != ceremony.KindChangePIN && operator.Allowed(operator.RoleCustodian, a) {
			t.Fatalf("start form %q: custodians may %q", query, a)
		}
	})
}
