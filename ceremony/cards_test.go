package ceremony

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/sharing"
)

// A forged card (right set and key ID, wrong share, valid checksum) is found by reading one more
// card, named, and set aside.
func TestLoadFindsForgedCard(t *testing.T) {
	e, cards, gen := loadEnv(t, 2, 3)
	data := e.readSlot(context.Background(), cards[0], pinpad.SlotShare)
	rec, err := sharing.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	rec.Share[0] ^= 0x5a
	forged, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.writeSlot(cards[0], pinpad.SlotShare, forged)
	e.op.use(cards[0], cards[1], cards[2])
	j := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if e.backupKeyID() != gen.KeyID {
		t.Fatal("key not loaded")
	}
	if !e.problemWith("do not reconstruct") || !e.problemWith("card 1 holds a damaged share") {
		t.Fatalf("problems %q", e.events.problems())
	}
	if !slices.ContainsFunc(j.Cards, func(c CardEntry) bool { return c.Serial == cards[0] && c.State == CardRefused }) {
		t.Fatalf("forged card not set aside: %+v", j.Cards)
	}
}

func TestCopyCard(t *testing.T) {
	e := newEnv(t)
	cards, gen := e.generate(2, 3)
	e.pad.Remove()
	target := e.newCards(1)[0]
	e.op.use(cards[1], target)
	j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard}))
	if j.SetID != gen.SetID || !strings.Contains(j.Outcome, target) || !strings.Contains(j.Outcome, "share 2") {
		t.Fatalf("journal %+v", j)
	}
	src := e.readSlot(context.Background(), cards[1], pinpad.SlotShare)
	dst := e.readSlot(context.Background(), target, pinpad.SlotShare)
	if !bytes.Equal(src, dst) {
		t.Fatal("copy differs from the source")
	}
	// The copy is one-to-one: in a load it stands for share 2 and is refused beside the original.
	e.reset()
	e.op.use(cards[1], target, cards[0])
	j = e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if !e.problemWith("share 2 was already read from card "+cards[1], "copy") {
		t.Fatalf("problems %q", e.events.problems())
	}
}

func TestCopyCardRefusals(t *testing.T) {
	t.Run("source without a share (a slot user card)", func(t *testing.T) {
		e := newEnv(t)
		cards, _ := e.generate(2, 2)
		e.pad.Remove()
		blank := e.newCards(2)
		e.op.use(blank[0], cards[0], blank[1])
		j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard}))
		if !e.problemWith(blank[0], "holds no backup key share", "cannot be copied") {
			t.Fatalf("problems %q", e.events.problems())
		}
		if !strings.Contains(j.Outcome, blank[1]) {
			t.Fatalf("outcome %q", j.Outcome)
		}
	})
	t.Run("target is the source", func(t *testing.T) {
		e := newEnv(t)
		cards, _ := e.generate(2, 2)
		e.pad.Remove()
		blank := e.newCards(1)[0]
		e.op.use(cards[0], cards[0], blank)
		e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard}))
		if !e.problemWith("this is the source card") {
			t.Fatalf("problems %q", e.events.problems())
		}
	})
	for _, answer := range []string{"ok", "cancel"} {
		t.Run("target holds a share of another set: "+answer, func(t *testing.T) {
			e := newEnv(t)
			cards, _ := e.generate(2, 2)
			e.pad.Remove()
			alien := foreignSet(t, e)
			before := e.readSlot(context.Background(), alien, pinpad.SlotShare)
			blank := e.newCards(1)[0]
			e.op.addRule(func(o *operator, s sim.State) bool {
				if s.Waiting == sim.WaitOK && strings.HasPrefix(s.Display, "Card not empty") {
					if answer == "ok" {
						o.pad.PressOK()
					} else {
						o.pad.PressCancel()
					}
					return true
				}
				return false
			})
			e.op.use(cards[0], alien, blank)
			j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard}))
			if !e.problemWith(alien, "another key set") {
				t.Fatalf("problems %q", e.events.problems())
			}
			after := e.readSlot(context.Background(), alien, pinpad.SlotShare)
			if bytes.Equal(before, after) != (answer == "cancel") {
				t.Fatalf("alien card overwritten=%v after %s", !bytes.Equal(before, after), answer)
			}
			if answer == "cancel" && !strings.Contains(j.Outcome, blank) {
				t.Fatalf("outcome %q", j.Outcome)
			}
		})
	}
}

func TestChangePIN(t *testing.T) {
	for _, slot := range []pinpad.Slot{pinpad.SlotShare, pinpad.SlotUser} {
		t.Run(slot.String(), func(t *testing.T) {
			e := newEnv(t)
			card := e.newCards(1)[0]
			e.op.with(func(o *operator) {
				o.newPINs[card] = "246802"
				o.typed[card] = []string{"999999"} // a wrong old PIN first
			})
			e.op.use(card)
			j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindChangePIN, Slot: slot}))
			if !strings.Contains(j.Outcome, card) || countOf(e.auditEvents(j.ID), AuditPINChanged) != 1 {
				t.Fatalf("outcome %q audit %v", j.Outcome, e.auditEvents(j.ID))
			}
			if !e.problemWith("wrong PIN: 2 tries left") {
				t.Fatalf("problems %q", e.events.problems())
			}
			// The new PIN opens the slot; the old one no longer does.
			e.op.with(func(o *operator) { o.pins[fmt.Sprintf("%s/%d", card, slot)] = "246802" })
			e.pad.Remove()
			e.readSlot(context.Background(), card, slot)
		})
	}
	t.Run("new PINs differ, asked again", func(t *testing.T) {
		e := newEnv(t)
		card := e.newCards(1)[0]
		first := true
		e.op.with(func(o *operator) { o.newPINs[card] = "135799" })
		e.op.addRule(func(o *operator, s sim.State) bool {
			if first && s.Waiting == sim.WaitPIN && strings.HasPrefix(s.Display, "Confirm new PIN") {
				first = false
				o.pad.TypeDigits("975319")
				o.pad.PressOK()
				return true
			}
			return false
		})
		e.op.use(card)
		e.mustSucceed(e.start("CN=custodian", Request{Kind: KindChangePIN, Slot: pinpad.SlotShare}))
		if !e.problemWith("differ") {
			t.Fatalf("problems %q", e.events.problems())
		}
		e.op.with(func(o *operator) { o.pins[fmt.Sprintf("%s/%d", card, pinpad.SlotShare)] = "135799" })
	})
	t.Run("blocked card refused", func(t *testing.T) {
		e := newEnv(t)
		cards := e.newCards(2)
		e.op.with(func(o *operator) { o.typed[cards[0]] = []string{"111111", "222222", "333333"} })
		// Block it outside the ceremony, as three wrong tries elsewhere would.
		ctx := context.Background()
		e.op.use(cards[0])
		c, err := e.pad.WaitForCard(ctx, "x", testTimeouts.Card)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			c.VerifyPIN(ctx, pinpad.SlotShare, testTimeouts.PIN)
		}
		c.Close()
		e.pad.Remove()
		e.op.with(func(o *operator) { o.newPINs[cards[1]] = "112233" })
		e.op.use(cards[0], cards[1])
		e.mustSucceed(e.start("CN=custodian", Request{Kind: KindChangePIN, Slot: pinpad.SlotShare}))
		if !e.problemWith(cards[0], "blocked") {
			t.Fatalf("problems %q", e.events.problems())
		}
		e.op.with(func(o *operator) { o.pins[fmt.Sprintf("%s/%d", cards[1], pinpad.SlotShare)] = "112233" })
	})
}

func TestSlotUserCard(t *testing.T) {
	e := newEnv(t)
	cards := e.newCards(2)
	e.op.use(cards[0])
	j := e.mustSucceed(e.start("CN=hsm-admin", Request{Kind: KindSlotUserCard, PKCS11Slot: 3}))
	if !strings.Contains(j.Outcome, "slot 3") {
		t.Fatalf("outcome %q", j.Outcome)
	}
	e.pad.Remove()
	cred := e.readSlot(context.Background(), cards[0], pinpad.SlotUser)
	if len(cred) == 0 {
		t.Fatal("no credential on the card")
	}
	e.op.use(cards[0])
	j = e.mustSucceed(e.start("CN=hsm-admin", Request{Kind: KindActivateSlot, PKCS11Slot: 3}))
	if countOf(e.auditEvents(j.ID), AuditSlotActivated) != 1 {
		t.Fatalf("audit %v", e.auditEvents(j.ID))
	}

	// A byte-for-byte copy on another card does not activate the slot: refused, naming why;
	// then the right card does.
	e.pad.Remove()
	e.writeSlot(cards[1], pinpad.SlotUser, cred)
	e.op.use(cards[1], cards[0])
	e.mustSucceed(e.start("CN=hsm-admin", Request{Kind: KindActivateSlot, PKCS11Slot: 3}))
	if !e.problemWith(cards[1], "issued to card "+cards[0]) {
		t.Fatalf("problems %q", e.events.problems())
	}
	// A copy card-copy refuses a slot user card as its source.
	e.pad.Remove()
	e.op.use(cards[0])
	e.op.addRule(func(o *operator, s sim.State) bool {
		if s.Waiting == sim.WaitCard && s.Inserted == "" && len(o.queue) == 0 {
			o.pad.PressCancel()
			return true
		}
		return false
	})
	_, err := e.wait(e.start("CN=custodian", Request{Kind: KindCopyCard}))
	if !errors.Is(err, pinpad.ErrCancelled) || !e.problemWith(cards[0], "cannot be copied") {
		t.Fatalf("err %v problems %q", err, e.events.problems())
	}
}

func TestFactoryReset(t *testing.T) {
	e := newEnv(t)
	_, gen := e.generate(2, 3)
	before, _ := e.m.VerifyAudit()
	e.reset()
	if e.backupKeyID() != "" {
		t.Fatal("the key survived the reset")
	}
	o, err := e.m.Overview(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if o.KeySet != nil || o.Pending != nil || o.BackupKeyID != "" {
		t.Fatalf("overview after reset %+v", o)
	}
	after, err := e.m.VerifyAudit()
	if err != nil || after.Entries <= before.Entries {
		t.Fatalf("audit after reset %+v (before %+v), %v", after, before, err)
	}
	all, _ := e.m.AuditLog(0)
	if !slices.ContainsFunc(all, func(a AuditEntry) bool { return a.Event == AuditFactoryReset && a.Operator == "CN=admin" }) {
		t.Fatal("reset not in the audit log")
	}
	if _, err := e.m.Ceremony(gen.ID); err != nil {
		t.Fatalf("journal of the generation lost: %v", err)
	}
	// A new key generation is possible again.
	e.pad.Remove()
	e.generate(2, 3)
}
