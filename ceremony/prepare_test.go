package ceremony

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

func (e *env) shapedCard(o vcard.Options) string {
	e.t.Helper()
	s, err := e.pad.NewShapedCard(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// choosePIN has the operator choose pin as the first PIN of serial, and use it after.
func (e *env) choosePIN(serial, pin string) {
	e.op.with(func(o *operator) {
		o.newPINs[serial] = pin
		o.pins[serial] = pin
	})
}

// TestPrepareCards prepares two unpersonalised cards in each shipped profile, the first PINs
// typed on the pad, then generates and loads a key on them.
func TestPrepareCards(t *testing.T) {
	for _, p := range tcos.Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			e := newEnv(t, withProfile(p))
			cards := []string{e.shapedCard(vcard.Options{Creatable: true}), e.shapedCard(vcard.Options{Creatable: true})}
			for _, c := range cards {
				e.choosePIN(c, "24681357")
			}
			e.op.use(cards...)
			j := e.mustSucceed(e.start("CN=admin", Request{Kind: KindPrepareCards, N: 2}))
			got := j.CardsWith(RolePrepared, CardDone)
			if len(got) != 2 {
				t.Fatalf("prepared %+v", j.Cards)
			}
			for _, c := range got {
				if c.Profile != p.Name || !strings.Contains(c.Note, "created") {
					t.Errorf("journal entry %+v", c)
				}
			}
			if countOf(e.auditEvents(j.ID), AuditPINChanged) != 4 {
				t.Errorf("audit %v: want 4 first PINs", e.auditEvents(j.ID))
			}
			for serial, pins := range e.pinsOf(cards) {
				if len(pins) != 2 {
					t.Fatalf("card %s PINs %+v", serial, pins)
				}
				for _, pin := range pins {
					if pin.Null || pin.DF != p.DFPath() || pin.Tries != 3 {
						t.Errorf("card %s PIN %+v", serial, pin)
					}
				}
			}
			// The prepared cards take a key.
			e.op.use(cards...)
			e.op.use(cards[:1]...)
			gen := e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 2}))
			e.reset()
			e.pad.Remove()
			e.op.use(cards[1], cards[0])
			if l := e.mustSucceed(e.start("CN=dr", Request{Kind: KindLoad})); l.KeyID != gen.KeyID {
				t.Fatalf("loaded %s, generated %s", l.KeyID, gen.KeyID)
			}
		})
	}
}

// TestPrepareCardsRefusedCard: a card that does not let files be created is refused with what
// the survey found and what to order instead, and left as it was; the next card is prepared.
func TestPrepareCardsRefusedCard(t *testing.T) {
	e := newEnv(t, withProfile(tcos.NetKeyDF01()))
	locked := e.shapedCard(vcard.Options{})
	open := e.shapedCard(vcard.Options{Creatable: true})
	e.choosePIN(open, "13572468")
	path := filepath.Join(e.padDir, locked+".card")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e.op.use(locked, open)
	j := e.mustSucceed(e.start("CN=admin", Request{Kind: KindPrepareCards, N: 1}))
	if !slices.ContainsFunc(j.Cards, func(c CardEntry) bool {
		return c.Serial == locked && c.Role == RoleRefused && strings.Contains(c.Note, "cannot be prepared") && strings.Contains(c.Note, "DF 3F00/DF01")
	}) {
		t.Errorf("locked card not refused with findings: %+v", j.Cards)
	}
	if !e.problemWith("order cards personalised") {
		t.Errorf("problems %q", e.events.problems())
	}
	if d := j.CardsWith(RolePrepared, CardDone); len(d) != 1 || d[0].Serial != open {
		t.Errorf("prepared %+v", d)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the refused card was changed")
	}
}

// TestPrepareCardsNullPIN: cards still in their transport state get their first PIN on the
// pad when a Generate first asks for it, then the Generate and a Load go on.
func TestPrepareCardsNullPIN(t *testing.T) {
	nk := tcos.NetKeyDF01()
	e := newEnv(t, withProfile(nk))
	cards := []string{e.shapedCard(vcard.Options{Profile: nk, NullPIN: true}), e.shapedCard(vcard.Options{Profile: nk, NullPIN: true})}
	for _, c := range cards {
		e.choosePIN(c, "86420975")
	}
	e.op.use(cards...)
	e.op.use(cards[:1]...)
	gen := e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 2}))
	if n := countOf(e.auditEvents(gen.ID), AuditPINChanged); n != 2 {
		t.Errorf("%d first PINs set, want 2", n)
	}
	for serial, pins := range e.pinsOf(cards) {
		for _, pin := range pins {
			if pin.Ref == nk.Share.PINRef && (pin.Null || pin.Tries != 3) {
				t.Errorf("card %s share PIN %+v", serial, pin)
			}
		}
	}
	e.reset()
	e.pad.Remove()
	e.op.use(cards[1], cards[0])
	if l := e.mustSucceed(e.start("CN=dr", Request{Kind: KindLoad})); l.KeyID != gen.KeyID {
		t.Fatalf("loaded %s", l.KeyID)
	}
}

// TestLoadInAnotherProfileSaysWhich: cards written in one card profile and read in another are
// refused with the profile the set was written in, and the card set registry keeps it.
func TestLoadInAnotherProfileSaysWhich(t *testing.T) {
	mf, nk := tcos.KeyquorumMF(), tcos.NetKeyDF01()
	e, cards, _ := loadEnv(t, 2, 2, withProfile(mf))
	cs := e.currentSet()
	for _, sh := range cs.Shares {
		if sh.Profile != mf.Name {
			t.Fatalf("share %d registered with profile %q", sh.Index, sh.Profile)
		}
	}
	// The appliance now reads cards as NetKey-shaped.
	old, oldOp := e.pad, e.op
	oldOp.stop()
	other, err := sim.Open(e.padDir, sim.WithProfile(nk))
	if err != nil {
		t.Fatal(err)
	}
	e.pad, e.hook.Pad, e.op = other, other, newOperator(t, other)
	defer func() {
		e.op.stop()
		e.pad, e.hook.Pad, e.op = old, old, newOperator(t, old)
	}()
	e.op.use(cards[0])
	h := e.start("CN=dr", Request{Kind: KindLoad})
	e.events.waitFor(t, "the refusal", func(ev Event) bool {
		return ev.Type == EventProblem && strings.Contains(ev.Hint, "--card-profile keyquorum-mf")
	})
	if err := e.m.Cancel("CN=dr"); err != nil {
		t.Fatal(err)
	}
	e.wait(h)
}
