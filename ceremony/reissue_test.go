package ceremony

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/pinpad"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// reissue re-issues the current set of e: the operator reads the given old cards, then writes
// the new set to fresh cards, which it returns in share order.
func (e *env) reissue(k, n int, old ...string) ([]string, Journal) {
	e.t.Helper()
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	fresh := e.newCards(n)
	e.op.use(old...)
	e.op.use(fresh...)
	j := e.mustSucceed(e.start("CN=alice", Request{Kind: KindReissue, K: k, N: n}))
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	return fresh, j
}

func (e *env) currentSet() *CardSet {
	e.t.Helper()
	cs, err := e.m.CurrentSet()
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

func (e *env) setStatus(id string) SetStatus {
	e.t.Helper()
	sets, err := e.m.CardSets()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range sets {
		if s.SetID == id {
			return s.Status
		}
	}
	return ""
}

// TestReissue is the story: a 2-of-3 set re-issued as 3-of-5 without changing the key;
// a backup made before the re-issue restores on a freshly reset HSM loaded from 3 new cards; an
// old card is refused by Load and Copy with the retired-set message.
func TestReissue(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	old, gen := e.generate(2, 3)
	if cs := e.currentSet(); cs == nil || cs.SetID != gen.SetID || cs.Origin != OriginGenerate || len(cs.Shares) != 3 {
		t.Fatalf("set after the generation: %+v", cs)
	}
	for _, label := range []string{"signing", "tls"} {
		if _, err := e.hsm.CreateKey(ctx, label); err != nil {
			t.Fatal(err)
		}
	}
	keysBefore, _ := e.hsm.Keys(ctx)
	var backup bytes.Buffer
	if err := e.hsm.Backup(ctx, &backup); err != nil {
		t.Fatal(err)
	}

	fresh, j := e.reissue(3, 5, old[2], old[0])
	if j.Kind != KindReissue || j.K != 3 || j.N != 5 || j.FromSetID != gen.SetID || j.FromK != 2 || j.FromN != 3 ||
		j.SetID == gen.SetID || j.KeyID != gen.KeyID {
		t.Fatalf("journal %+v", j)
	}
	if e.backupKeyID() != gen.KeyID {
		t.Fatalf("the key changed: %s", e.backupKeyID())
	}
	for _, want := range []string{"set " + j.SetID[:8], "(3 of 5)", "retired", "did not change", "every backup stays restorable"} {
		if !strings.Contains(j.Outcome, want) {
			t.Errorf("outcome %q lacks %q", j.Outcome, want)
		}
	}
	cs := e.currentSet()
	if cs == nil || cs.SetID != j.SetID || cs.K != 3 || cs.N != 5 || cs.Origin != OriginReissue || cs.Label != "appliance-1" || len(cs.Shares) != 5 {
		t.Fatalf("current set %+v", cs)
	}
	for i, sh := range cs.Shares {
		if sh.Index != i+1 || sh.Serial != fresh[i] || sh.Authenticator == "" || sh.Written.IsZero() {
			t.Fatalf("share %d: %+v", i+1, sh)
		}
	}
	if got := e.setStatus(gen.SetID); got != SetRetired {
		t.Fatalf("old set is %q", got)
	}
	o, _ := e.m.Overview(ctx)
	if o.KeySet == nil || o.KeySet.SetID != j.SetID || o.KeySet.K != 3 || len(o.KeySet.Cards) != 5 {
		t.Fatalf("key set %+v", o.KeySet)
	}
	events := e.auditEvents(j.ID)
	for ev, n := range map[string]int{AuditCardRead: 2, AuditSetSplit: 1, AuditCardWritten: 5, AuditSetRetired: 1, AuditCeremonyDone: 1} {
		if got := countOf(events, ev); got != n {
			t.Errorf("audit has %d %s, want %d: %v", got, ev, n, events)
		}
	}
	p, err := e.m.Protocol(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	p.WriteText(&text)
	for _, want := range []string{"card set re-issue", "Replaces set  " + gen.SetID, "Quorum        3 of 5", fresh[4], old[2]} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("protocol lacks %q:\n%s", want, text.String())
		}
	}

	// Disaster recovery with the new set: a freshly reset HSM, 3 new cards, the old backup.
	e.reset()
	if e.backupKeyID() != "" {
		t.Fatal("reset left the key")
	}
	e.pad.Remove()
	e.op.use(old[1], fresh[4], fresh[0], fresh[2])
	l := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if l.SetID != j.SetID || e.backupKeyID() != gen.KeyID {
		t.Fatalf("load: %+v", l)
	}
	if !e.problemWith(old[1], "this card belongs to a retired set", "retired by re-issue #") {
		t.Fatalf("old card not refused as retired: %q", e.events.problems())
	}
	if err := e.hsm.Restore(ctx, bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatalf("restore the backup made before the re-issue: %v", err)
	}
	if keys, _ := e.hsm.Keys(ctx); !slices.Equal(keys, keysBefore) {
		t.Fatalf("restored keys %v, want %v", keys, keysBefore)
	}
	if cs := e.currentSet(); cs == nil || cs.SetID != j.SetID {
		t.Fatalf("current set after the load %+v", cs)
	}

	// A copy of an old card is refused too.
	e.pad.Remove()
	target := e.newCards(1)[0]
	e.op.use(old[0], fresh[1], target)
	c := e.mustSucceed(e.start("CN=custodian", Request{Kind: KindCopyCard}))
	if !e.problemWith(old[0], "this card belongs to a retired set") || !strings.Contains(c.Outcome, "share 2") {
		t.Fatalf("copy: %q; problems %q", c.Outcome, e.events.problems())
	}
	e.verifyAudit()
}

// The cards of the current set cannot receive the new shares: an interrupted re-issue must
// leave the old set whole.
func TestReissueRefusesCardsOfTheCurrentSetAsTargets(t *testing.T) {
	e := newEnv(t)
	old, gen := e.generate(2, 3)
	e.pad.Remove()
	fresh := e.newCards(2)
	e.op.use(old[0], old[1], old[2], fresh[0], fresh[1])
	j := e.mustSucceed(e.start("CN=alice", Request{Kind: KindReissue, K: 2, N: 2}))
	if !e.problemWith(old[2], "holds share 3 of the current set", "must stay whole") {
		t.Fatalf("problems %q", e.events.problems())
	}
	if got := e.readSlot(context.Background(), old[2], pinpad.SlotShare); len(got) == 0 {
		t.Fatal("old card emptied")
	}
	if e.setStatus(gen.SetID) != SetRetired || e.currentSet().SetID != j.SetID {
		t.Fatal("set statuses")
	}
}

func TestReissueRefusals(t *testing.T) {
	t.Run("no key in the HSM", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.m.Start(context.Background(), "CN=alice", Request{Kind: KindReissue, K: 2, N: 3})
		if !errors.Is(err, ErrNoKey) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("bad quorum", func(t *testing.T) {
		e := newEnv(t)
		e.generate(2, 2)
		for _, q := range [][2]int{{1, 3}, {4, 3}, {2, 256}} {
			_, err := e.m.Start(context.Background(), "CN=alice", Request{Kind: KindReissue, K: q[0], N: q[1]})
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("%v: %v", q, err)
			}
		}
	})
	t.Run("cards of another set and of another key", func(t *testing.T) {
		e := newEnv(t)
		old, gen := e.generate(2, 3)
		e.pad.Remove()
		alien := foreignSet(t, e)
		fresh := e.newCards(2)
		e.op.use(alien, old[1], old[0], fresh[0], fresh[1])
		j := e.mustSucceed(e.start("CN=alice", Request{Kind: KindReissue, K: 2, N: 2}))
		if !e.problemWith(alien, "not of set "+gen.SetID[:8]) {
			t.Fatalf("problems %q", e.events.problems())
		}
		if j.FromSetID != gen.SetID {
			t.Fatalf("journal %+v", j)
		}
	})
	t.Run("a card of a retired set", func(t *testing.T) {
		e := newEnv(t)
		old, _ := e.generate(2, 3)
		fresh, second := e.reissue(2, 2, old[0], old[1])
		newer := e.newCards(2)
		e.op.use(old[2], fresh[0], fresh[1], newer[0], newer[1])
		third := e.mustSucceed(e.start("CN=alice", Request{Kind: KindReissue, K: 2, N: 2}))
		if !e.problemWith(old[2], "this card belongs to a retired set") {
			t.Fatalf("problems %q", e.events.problems())
		}
		if third.FromSetID != second.SetID || e.setStatus(second.SetID) != SetRetired {
			t.Fatalf("third %+v", third)
		}
	})
}

// A re-issue cancelled while writing the new cards leaves the old set current and whole; the
// new cards written are of an abandoned set and refused.
func TestReissueCancelWhileWriting(t *testing.T) {
	e := newEnv(t)
	old, gen := e.generate(2, 3)
	e.pad.Remove()
	fresh := e.newCards(3)
	e.op.use(old[0], old[1], fresh[0], fresh[1])
	h := e.start("CN=alice", Request{Kind: KindReissue, K: 2, N: 3})
	e.events.waitFor(t, "third new card asked for", func(ev Event) bool {
		return ev.Ceremony == h.ID() && ev.Phase == PhaseWriting && ev.Display == "Insert 3. card press OK/Cancel"
	})
	e.m.Cancel("CN=alice")
	j, err := e.wait(h)
	var ce *CancelledError
	if !errors.As(err, &ce) || j.Status != StatusAborted || j.Next != NextNone {
		t.Fatalf("status %s next %q err %v", j.Status, j.Next, err)
	}
	for _, want := range []string{"2 of 3 written", "set " + gen.SetID[:8] + "… stays current", fresh[0], fresh[1], "abandoned"} {
		if !strings.Contains(j.Outcome, want) {
			t.Errorf("outcome %q lacks %q", j.Outcome, want)
		}
	}
	if !slices.Equal(j.Unusable, []string{fresh[0], fresh[1]}) {
		t.Fatalf("unusable %v", j.Unusable)
	}
	if cs := e.currentSet(); cs == nil || cs.SetID != gen.SetID || e.setStatus(j.SetID) != SetAbandoned {
		t.Fatalf("current %+v, new set %q", cs, e.setStatus(j.SetID))
	}
	o, _ := e.m.Overview(context.Background())
	if o.KeySet.SetID != gen.SetID || o.Pending != nil {
		t.Fatalf("overview %+v", o)
	}
	// The old cards still load; a card of the abandoned set is refused.
	e.reset()
	e.pad.Remove()
	e.op.use(fresh[0], old[2], old[1])
	e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if !e.problemWith(fresh[0], "this card belongs to a retired set", "never became current") {
		t.Fatalf("problems %q", e.events.problems())
	}
	if e.backupKeyID() != gen.KeyID {
		t.Fatal("key not loaded from the old cards")
	}
	// A new re-issue may overwrite the abandoned cards.
	e.pad.Remove()
	e.op.use(old[0], old[1], fresh[0], fresh[1], fresh[2])
	j2 := e.mustSucceed(e.start("CN=alice", Request{Kind: KindReissue, K: 2, N: 3}))
	if e.currentSet().SetID != j2.SetID || !e.problemWith(fresh[0], "another key set") {
		t.Fatalf("second re-issue %+v; problems %q", j2, e.events.problems())
	}
}

// A set the appliance has no record of (a journal from before the registry, without a key set)
// is learnt from the cards a re-issue reads, and retired like any other: its cards are refused.
func TestReissueOfAnUnrecordedSet(t *testing.T) {
	e := newEnv(t)
	old, gen := e.generate(2, 3)
	if err := e.m.h.St.Update(func(tx *bolt.Tx) error {
		k, _ := journal.SetKey(gen.SetID)
		return tx.Bucket(journal.BucketSets).Delete(k)
	}); err != nil {
		t.Fatal(err)
	}
	if e.currentSet() != nil {
		t.Fatal("set still recorded")
	}
	fresh, j := e.reissue(2, 2, old[0], old[1])
	if j.FromSetID != gen.SetID || j.FromK != 2 || j.FromN != 3 {
		t.Fatalf("journal %+v", j)
	}
	if e.setStatus(gen.SetID) != SetRetired || e.currentSet().SetID != j.SetID {
		t.Fatalf("old set %q, current %+v", e.setStatus(gen.SetID), e.currentSet())
	}
	e.op.use(old[2], fresh[1], fresh[0])
	e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if !e.problemWith(old[2], "this card belongs to a retired set") {
		t.Fatalf("problems %q", e.events.problems())
	}
}
