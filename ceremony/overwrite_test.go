package ceremony

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/sharing"
)

// answerPad answers the pad's overwrite questions: ok or cancel; it records the texts asked.
func answerPad(e *env, answer string) *[]string {
	var asked []string
	e.op.addRule(func(o *operator, s sim.State) bool {
		if s.Waiting == sim.WaitOK && (strings.HasPrefix(s.Display, "Overwrite share") || strings.HasPrefix(s.Display, "Card not empty")) {
			asked = append(asked, s.Display)
			if answer == "ok" {
				o.pad.PressOK()
			} else {
				o.pad.PressCancel()
			}
			return true
		}
		return false
	})
	return &asked
}

func shareIndexOn(t *testing.T, e *env, serial string) int {
	t.Helper()
	data := e.readSlot(context.Background(), serial, pinpad.SlotShare)
	rec, err := sharing.Unmarshal(data)
	if err != nil {
		t.Fatalf("card %s: %v", serial, err)
	}
	defer rec.Zero()
	return rec.Index
}

// A copy never overwrites a share of the current set on the Overwrite box alone: the operator
// is told which share of which set is lost, how many of the set's shares remain and whether
// the quorum is still reachable, and must say OK to that; the OK is audited.
func TestCopyNeverSilentlyOverwritesCurrentSet(t *testing.T) {
	t.Run("cancel keeps the share", func(t *testing.T) {
		e := newEnv(t)
		cards, gen := e.generate(2, 3)
		e.pad.Remove()
		asked := answerPad(e, "cancel")
		blank := e.newCards(1)[0]
		e.op.use(cards[1], cards[0], blank)
		j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard, Overwrite: true}))
		if len(*asked) != 1 || (*asked)[0] != "Overwrite share 1 of set in use? OK/Cancel" {
			t.Fatalf("pad asked %q", *asked)
		}
		if !e.problemWith(cards[0], "share 1 of the current set "+gen.SetID[:8], "(2 of 3)", "loses share 1",
			"hold 2 of its 3 shares", "quorum of 2 is still reachable") {
			t.Fatalf("problems %q", e.events.problems())
		}
		if !strings.Contains(j.Outcome, blank) {
			t.Fatalf("outcome %q", j.Outcome)
		}
		if got := shareIndexOn(t, e, cards[0]); got != 1 {
			t.Fatalf("card %s holds share %d after Cancel", cards[0], got)
		}
		if countOf(e.auditEvents(j.ID), AuditShareOverwrite) != 0 {
			t.Fatalf("audit %v", e.auditEvents(j.ID))
		}
	})
	t.Run("ok loses it, audited; a second loss makes the quorum unreachable", func(t *testing.T) {
		e := newEnv(t)
		cards, gen := e.generate(2, 3)
		e.pad.Remove()
		answerPad(e, "ok")
		e.op.use(cards[1], cards[0])
		j := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard, Overwrite: true}))
		if got := shareIndexOn(t, e, cards[0]); got != 2 {
			t.Fatalf("card %s holds share %d", cards[0], got)
		}
		audit, _ := e.m.AuditLog(j.ID)
		i := slices.IndexFunc(audit, func(a AuditEntry) bool { return a.Event == AuditShareOverwrite })
		if i < 0 || audit[i].Operator != "CN=custodian" || !slices.Equal(audit[i].Indexes, []int{1}) || !slices.Equal(audit[i].Serials, []string{cards[0]}) ||
			audit[i].SetID != gen.SetID || !strings.Contains(audit[i].Message, "loses share 1") || !strings.Contains(audit[i].Message, "still reachable") {
			t.Fatalf("audit %+v", audit)
		}
		// Shares 2 (twice) and 3 remain; overwriting share 3 with share 2 leaves one share.
		e.pad.Remove()
		e.op.use(cards[1], cards[2])
		e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard, Overwrite: true}))
		if !e.problemWith(cards[2], "share 3 of the current set", "hold 1 of its 3 shares (3 cards)", "quorum of 2 is NOT reachable") {
			t.Fatalf("problems %q", e.events.problems())
		}
		e.verifyAudit()
	})
	t.Run("another set's share: the box covers it", func(t *testing.T) {
		e := newEnv(t)
		cards, _ := e.generate(2, 2)
		e.pad.Remove()
		alien := foreignSet(t, e)
		asked := answerPad(e, "cancel")
		e.op.use(cards[0], alien)
		e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard, Overwrite: true}))
		if len(*asked) != 0 {
			t.Fatalf("asked %q although the box was ticked", *asked)
		}
	})
	t.Run("a generation asks too, for the set current before a factory reset", func(t *testing.T) {
		e := newEnv(t)
		old, _ := e.generate(2, 2)
		e.reset()
		e.pad.Remove()
		asked := answerPad(e, "cancel")
		fresh := e.newCards(2)
		e.op.with(func(o *operator) { o.queue = []string{old[0], fresh[0], fresh[1], fresh[0]} })
		e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 2}))
		if len(*asked) != 1 || !strings.HasPrefix((*asked)[0], "Overwrite share 1") || !e.problemWith(old[0], "share 1 of the current set", "NOT reachable") {
			t.Fatalf("asked %q, problems %q", *asked, e.events.problems())
		}
	})
	t.Run("on the screen: destructive, needs the security key", func(t *testing.T) {
		e := newEnv(t, withPad(func(p Pad) Pad { return noOKKeyPad{p} }))
		sub := e.m.Subscribe()
		defer sub.Close()
		cards, _ := e.generateOnScreen(sub, 2, 3)
		e.pad.Remove()
		e.op.use(cards[1], cards[0])
		h := e.start("CN=custodian", Request{Kind: KindCopyCard, Overwrite: true})
		q := waitQuestion(t, sub, "Overwrite share 1")
		if !q.Destructive || !strings.Contains(q.Detail, "loses share 1") {
			t.Fatalf("question %+v", q)
		}
		if err := e.m.Answer("CN=custodian", Answer{Question: q.ID, OK: true}); !errors.Is(err, ErrStepUpRequired) {
			t.Fatalf("OK without the security key: %v", err)
		}
		if err := e.m.Answer("CN=custodian", Answer{Question: q.ID, OK: true, SteppedUp: true}); err != nil {
			t.Fatal(err)
		}
		j := e.mustSucceed(h)
		audit, _ := e.m.AuditLog(j.ID)
		if !slices.ContainsFunc(audit, func(a AuditEntry) bool {
			return a.Event == AuditCeremonyConfirmed && strings.Contains(a.Message, q.ID) && strings.Contains(a.Message, "Overwrite share 1") && strings.Contains(a.Message, "security key")
		}) || !slices.ContainsFunc(audit, func(a AuditEntry) bool { return a.Event == AuditShareOverwrite }) {
			t.Fatalf("audit %+v", audit)
		}
		after := e.readSlot(context.Background(), cards[0], pinpad.SlotShare)
		before := e.readSlot(context.Background(), cards[1], pinpad.SlotShare)
		if !bytes.Equal(after, before) {
			t.Fatal("copy not written after the confirmed OK")
		}
	})
}

// generateOnScreen runs a generation on a pad without OK key, answering every question OK.
func (e *env) generateOnScreen(sub *Subscription, k, n int) ([]string, Journal) {
	e.t.Helper()
	cards := e.newCards(n)
	e.op.use(cards...)
	e.op.use(cards[:k-1]...)
	h := e.start("CN=alice", Request{Kind: KindGenerate, K: k, N: n})
	for {
		select {
		case <-h.Done():
			return cards, e.mustSucceed(h)
		case ev := <-sub.C():
			if ev.Ceremony == h.ID() && ev.Question != nil && ev.Question.ID != "" {
				e.m.Answer("CN=alice", Answer{Question: ev.Question.ID, OK: true, SteppedUp: true})
			}
		}
	}
}

// waitQuestion waits for an on-screen question whose text starts with prefix.
func waitQuestion(t *testing.T, sub *Subscription, prefix string) Question {
	t.Helper()
	for ev := range sub.C() {
		if ev.Question != nil && ev.Question.ID != "" && strings.HasPrefix(ev.Question.Text, prefix) {
			return *ev.Question
		}
	}
	t.Fatalf("no question %q", prefix)
	return Question{}
}
