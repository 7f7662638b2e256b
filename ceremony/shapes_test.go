package ceremony

import (
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// pinsOf reads every PIN of the virtual cards: what they were spent and presented.
func (e *env) pinsOf(serials []string) map[string][]vcard.PINInfo {
	e.t.Helper()
	out := map[string][]vcard.PINInfo{}
	for _, s := range serials {
		c, ok := e.pad.VirtualCard(s)
		if !ok {
			e.t.Fatalf("no virtual card %s", s)
		}
		out[s] = c.PINs()
	}
	return out
}

// TestTriesNeverSpent runs a Generate and a Load on cards whose data-less VERIFY counts as a
// wrong try, with each shipped profile: no card loses a try. A profile that declares the query
// safe on such cards does lose them: the check can fail.
func TestTriesNeverSpent(t *testing.T) {
	spends := func(p *tcos.Profile) vcard.Options {
		return vcard.Options{Profile: p, VerifyQuery: vcard.QuerySpends, PINFiles: true}
	}
	for _, p := range tcos.Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			e, cards, gen := loadEnv(t, 2, 3, withProfile(p), withShape(spends(p)))
			e.op.use(cards[2], cards[0])
			j := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
			if j.KeyID != gen.KeyID {
				t.Fatalf("loaded %s, generated %s", j.KeyID, gen.KeyID)
			}
			for serial, pins := range e.pinsOf(cards) {
				for _, pin := range pins {
					if pin.Spent != 0 || pin.Tries != pin.Max {
						t.Errorf("card %s PIN %02X in %s: %d tries spent by queries, %d of %d left", serial, pin.Ref, pin.DF, pin.Spent, pin.Tries, pin.Max)
					}
				}
			}
			for _, c := range gen.Cards {
				if c.Role == RoleShare && c.Profile != p.Name {
					t.Errorf("share card %s journaled with profile %q, want %q", c.Serial, c.Profile, p.Name)
				}
			}
			if slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "PIN tries unknown") }) {
				t.Errorf("tries unknown on a card that tells them: %q", e.events.problems())
			}
		})
	}
	t.Run("control: a profile that trusts the query", func(t *testing.T) {
		trusting, err := tcos.ParseProfile([]byte(`{"name": "trusting", "df": "3F00", "tries": ["verify"], "verify_query_safe": true,
			"share": {"file": "4B01", "size": 1024, "pin": "81"}, "user": {"file": "4B02", "size": 1024, "pin": "82"},
			"atrs": [{"value": "3BBF00008131FE5D00640000000031C073F701D000900000", "mask": "FFFF00FFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFFFF00"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, withProfile(trusting), withShape(spends(tcos.KeyquorumMF())))
		cards, _ := e.generate(2, 2)
		spent := 0
		for _, pins := range e.pinsOf(cards) {
			for _, pin := range pins {
				spent += pin.Spent
			}
		}
		if spent == 0 {
			t.Fatal("the query was trusted on cards where it spends a try, and no try was spent: the check cannot fail")
		}
	})
}

// TestCardShapesCeremony runs a Generate and a Load on every virtual card shape the ceremony
// must survive: tries from EF_PWDD, from a PIN file's FCP, or not at all ("tries unknown", and
// the ceremony goes on), data-less VERIFY answered 67 00 / 6A 88, the 3B 9F ATR.
func TestCardShapesCeremony(t *testing.T) {
	mf, nk := tcos.KeyquorumMF(), tcos.NetKeyDF01()
	for _, c := range []struct {
		name    string
		profile *tcos.Profile
		shape   vcard.Options
		unknown bool // tries cannot be read
	}{
		{"keyquorum-mf", mf, vcard.Options{Profile: mf}, false},
		{"netkey-df01", nk, vcard.Options{Profile: nk}, false},
		{"netkey tries in PIN files", nk, vcard.Options{Profile: nk, NoPWDD: true, PINFiles: true}, false},
		{"no tries anywhere", mf, vcard.Options{Profile: mf, NoPWDD: true}, true},
		{"query answers 6700", mf, vcard.Options{Profile: mf, VerifyQuery: vcard.QueryWrongLength}, false},
		{"query answers 6A88", nk, vcard.Options{Profile: nk, VerifyQuery: vcard.QueryRefNotFound}, false},
		{"3B 9F ATR", nk, vcard.Options{Profile: nk, ATR: tcos.ATRNoTB1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, cards, gen := loadEnv(t, 2, 3, withProfile(c.profile), withShape(c.shape))
			e.op.use(cards[1], cards[2])
			j := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
			if j.KeyID != gen.KeyID {
				t.Fatalf("loaded %s, generated %s", j.KeyID, gen.KeyID)
			}
			unknown := slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "PIN tries unknown") })
			if unknown != c.unknown {
				t.Errorf("tries unknown said: %v, want %v (problems %q)", unknown, c.unknown, e.events.problems())
			}
			if !c.unknown && !e.events.any(func(ev Event) bool { return ev.Type == EventPINTries && ev.PINTries == 3 }) {
				t.Error("no event showed 3 tries")
			}
			for serial, pins := range e.pinsOf(cards) {
				for _, pin := range pins {
					if pin.Tries != pin.Max {
						t.Errorf("card %s PIN %02X: %d of %d tries", serial, pin.Ref, pin.Tries, pin.Max)
					}
				}
			}
		})
	}
}
