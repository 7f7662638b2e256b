package ceremony

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"
)

// check runs a card check of one card and returns its verdict.
func (e *env) check(serial string) (*CardCheck, Journal) {
	e.t.Helper()
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	e.op.use(serial)
	j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCardCheck}))
	if j.Check == nil || j.Check.Serial != serial || j.Outcome != j.Check.Detail {
		e.t.Fatalf("card check of %s: %+v", serial, j)
	}
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	return j.Check, j
}

// alterShare rewrites a card's record with one byte of its share changed and a valid checksum:
// what only the authenticator can tell.
func (e *env) alterShare(serial string) {
	e.t.Helper()
	data := e.readSlot(context.Background(), serial, pinpad.SlotShare)
	rec, err := sharing.Unmarshal(data)
	if err != nil {
		e.t.Fatal(err)
	}
	rec.Share[3] ^= 0x01
	forged, err := rec.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	e.writeSlot(serial, pinpad.SlotShare, forged)
	e.secrets = append(e.secrets, forged, rec.Share) // searched for like the real shares
}

// TestCardCheck is the list: each good card accepted (index, set, when written), a card
// whose share was altered by one byte, a card of a retired set and one of a foreign set named.
func TestCardCheck(t *testing.T) {
	e := newEnv(t)
	old, gen := e.generate(2, 3)
	for i, serial := range old {
		c, j := e.check(serial)
		if c.Verdict != VerdictIntact || c.Index != i+1 || c.SetID != gen.SetID || c.K != 2 || c.N != 3 ||
			c.SetStatus != SetCurrent || c.Written.IsZero() || c.WrittenTo != serial {
			t.Fatalf("card %d: %+v", i+1, c)
		}
		for _, want := range []string{"intact share", "current set " + gen.SetID[:8], "written 20"} {
			if !strings.Contains(c.Detail, want) {
				t.Errorf("detail %q lacks %q", c.Detail, want)
			}
		}
		if got := e.auditEvents(j.ID); countOf(got, AuditCardChecked) != 1 {
			t.Fatalf("audit %v", got)
		}
	}

	// A re-issue retires the set: the new cards check intact, the old ones as retired.
	fresh, j := e.reissue(3, 5, old[0], old[1])
	for i, serial := range fresh {
		if c, _ := e.check(serial); c.Verdict != VerdictIntact || c.Index != i+1 || c.SetID != j.SetID || c.K != 3 || c.N != 5 {
			t.Fatalf("new card %d: %+v", i+1, c)
		}
	}
	c, _ := e.check(old[2])
	if c.Verdict != VerdictRetired || c.SetStatus != SetRetired || c.Index != 3 || c.SetID != gen.SetID ||
		!strings.Contains(c.Detail, "this card belongs to a retired set") || !strings.Contains(c.Detail, "current set is "+j.SetID[:8]) {
		t.Fatalf("retired card: %+v", c)
	}

	// One byte of the share altered, the record otherwise well-formed: only the authenticator
	// tells.
	e.alterShare(fresh[1])
	if c, _ := e.check(fresh[1]); c.Verdict != VerdictAltered || c.Index != 2 || !strings.Contains(c.Detail, "altered or forged") {
		t.Fatalf("altered share: %+v", c)
	}
	// One byte of the record flipped: the checksum finds it.
	raw := e.readSlot(context.Background(), fresh[2], pinpad.SlotShare)
	raw[len(raw)-12] ^= 0x80
	e.writeSlot(fresh[2], pinpad.SlotShare, raw)
	if c, _ := e.check(fresh[2]); c.Verdict != VerdictAltered || !strings.Contains(c.Detail, "checksum") {
		t.Fatalf("damaged record: %+v", c)
	}

	// A card of another appliance's set (another key).
	alien := foreignSet(t, e)
	if c, _ := e.check(alien); c.Verdict != VerdictForeign || c.SetStatus != "" || !strings.Contains(c.Detail, "another key than this HSM's") {
		t.Fatalf("foreign card: %+v", c)
	}
	// A blank card holds no share.
	blank := e.newCards(1)[0]
	if c, _ := e.check(blank); c.Verdict != VerdictNotShare || !strings.Contains(c.Detail, "not a share card") {
		t.Fatalf("blank card: %+v", c)
	}
	// Nothing was written to any card checked.
	if got := e.readSlot(context.Background(), old[0], pinpad.SlotShare); len(got) == 0 {
		t.Fatal("card 1 emptied")
	}
	e.verifyAudit()
}

// A copy made with Copy card is intact too, and says whose copy it is.
func TestCardCheckOfACopy(t *testing.T) {
	e := newEnv(t)
	cards, _ := e.generate(2, 3)
	e.pad.Remove()
	target := e.newCards(1)[0]
	e.op.use(cards[1], target)
	e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard}))
	c, _ := e.check(target)
	if c.Verdict != VerdictIntact || c.Index != 2 || c.WrittenTo != cards[1] || !strings.Contains(c.Detail, "this card is a copy of it") {
		t.Fatalf("copy: %+v", c)
	}
}

// What a card check can say without authenticators: a set learnt from a load on an appliance
// that never saw it written vouches for the cards that load read, and only for those.
func TestCardCheckAfterALoadElsewhere(t *testing.T) {
	e := newEnv(t)
	cards, gen := e.generate(2, 3)
	e.close()
	// A rebuilt appliance: the same cards, a new journal and HSM.
	dr := &env{t: t, root: t.TempDir(), logs: e.logs, timeout: testTimeouts, pad: e.pad, hook: &hookPad{Pad: e.pad}, op: e.op}
	dr.dir, dr.hsmDir = dr.root+"/ceremony", dr.root+"/hsm"
	dr.open()
	if dr.pad.State().Inserted != "" {
		dr.pad.Remove()
	}
	if c, _ := dr.check(cards[0]); c.Verdict != VerdictForeign || !strings.Contains(c.Detail, "unknown to this appliance") {
		t.Fatalf("before the load: %+v", c)
	}
	dr.op.use(cards[2], cards[0])
	l := dr.mustSucceed(dr.start("CN=dr-team", Request{Kind: KindLoad}))
	if l.SetID != gen.SetID {
		t.Fatalf("load %+v", l)
	}
	cs := dr.currentSet()
	if cs == nil || cs.Origin != OriginLoad || cs.Label != "appliance-1" || len(cs.Shares) != 2 {
		t.Fatalf("registered set %+v", cs)
	}
	for i, want := range []Verdict{VerdictIntact, VerdictUnverified, VerdictIntact} {
		c, _ := dr.check(cards[i])
		if c.Verdict != want {
			t.Fatalf("card %d: %+v", i+1, c)
		}
		if want == VerdictUnverified && !strings.Contains(c.Detail, "Re-issue the set") {
			t.Fatalf("detail %q", c.Detail)
		}
	}
	dr.close()
	dr.assertNoSecrets()
	e.open() // for the cleanup's search of the first appliance
}

// Without a key in the HSM the card's set is still named, but nothing is vouched for.
func TestCardCheckWithoutKey(t *testing.T) {
	e := newEnv(t)
	cards, gen := e.generate(2, 3)
	e.reset()
	c, _ := e.check(cards[0])
	if c.Verdict != VerdictUnverified || c.SetID != gen.SetID || !strings.Contains(c.Detail, "no master backup key") {
		t.Fatalf("%+v", c)
	}
}

// A card check with a wrong PIN on the pad counts the try like any other ceremony; a PIN
// blocked card is refused, and nothing about it is claimed.
func TestCardCheckWrongPIN(t *testing.T) {
	e := newEnv(t)
	cards, _ := e.generate(2, 3)
	e.pad.Remove()
	e.op.with(func(o *operator) { o.typed[cards[0]] = []string{"999999"} })
	c, j := e.check(cards[0])
	if c.Verdict != VerdictIntact || countOf(e.auditEvents(j.ID), AuditPINWrong) != 1 {
		t.Fatalf("%+v; audit %v", c, e.auditEvents(j.ID))
	}
}

func TestCardCheckCancel(t *testing.T) {
	e := newEnv(t)
	e.generate(2, 3)
	e.pad.Remove()
	h := e.start("CN=custodian", Request{Kind: KindCardCheck})
	e.events.waitFor(t, "card asked for", func(ev Event) bool { return ev.Ceremony == h.ID() && ev.Waiting == WaitCard })
	e.m.Cancel("CN=custodian")
	j, err := e.wait(h)
	var ce *CancelledError
	if !errors.As(err, &ce) || j.Status != StatusAborted || j.Check != nil || !strings.Contains(j.Outcome, "nothing on the card was changed") {
		t.Fatalf("%+v, %v", j, err)
	}
}
