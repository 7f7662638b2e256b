package ceremony

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

// loadEnv is an appliance whose HSM was reset after a k-of-n generation: the cards hold the
// key, the HSM does not (disaster recovery).
func loadEnv(t *testing.T, k, n int, opts ...envOption) (*env, []string, Journal) {
	t.Helper()
	e := newEnv(t, opts...)
	cards, j := e.generate(k, n)
	e.reset()
	if e.backupKeyID() != "" {
		t.Fatal("reset left the key")
	}
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	return e, cards, j
}

func (e *env) problemWith(substrs ...string) bool {
	return slices.ContainsFunc(e.events.problems(), func(p string) bool {
		for _, s := range substrs {
			if !strings.Contains(p, s) {
				return false
			}
		}
		return true
	})
}

func TestLoad(t *testing.T) {
	e, cards, gen := loadEnv(t, 3, 5)
	// Any 3 of the 5, in any order.
	e.op.use(cards[4], cards[1], cards[2])
	j := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if j.KeyID != gen.KeyID || j.SetID != gen.SetID || j.K != 3 || j.N != 5 || e.backupKeyID() != gen.KeyID {
		t.Fatalf("journal %+v, hsm %s", j, e.backupKeyID())
	}
	var read []int
	for _, c := range j.CardsWith(RoleRead, CardRead) {
		read = append(read, c.Index)
	}
	if !slices.Equal(read, []int{5, 2, 3}) {
		t.Fatalf("shares read %v", read)
	}
	o, _ := e.m.Overview(context.Background())
	if o.KeySet == nil || o.KeySet.KeyID != gen.KeyID {
		t.Fatalf("key set %+v", o.KeySet)
	}
	// Loading the same key again (a cluster node that has it) is a no-op that succeeds.
	e.pad.Remove()
	e.op.use(cards[0], cards[3], cards[4])
	e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	e.verifyAudit()
}

// TestLoadFailures drives the failure table through a key load of a 2-of-3 set.
func TestLoadFailures(t *testing.T) {
	short := Timeouts{OK: 3 * time.Second, Card: 300 * time.Millisecond, PIN: 3 * time.Second, Removal: 3 * time.Second}
	tests := []struct {
		name  string
		opts  []envOption
		setup func(t *testing.T, e *env, cards []string)
		check func(t *testing.T, e *env, j Journal, cards []string)
	}{
		{
			name: "same card twice refused",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.use(cards[0], cards[0], cards[1])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith(cards[0], "already read") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "card of another set kept apart, not combined (TestLoadForeignFirstCard)",
			setup: func(t *testing.T, e *env, cards []string) {
				alien := foreignSet(t, e)
				e.op.use(cards[0], alien, cards[2])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !strings.Contains(j.Outcome, "set "+j.SetID[:8]+"…: 2 of 2, set ") || !strings.Contains(j.Outcome, ": 1 of 2 — done with set "+j.SetID[:8]) {
					t.Errorf("outcome %q", j.Outcome)
				}
			},
		},
		{
			name: "not a TCOS card refused",
			setup: func(t *testing.T, e *env, cards []string) {
				foreign, _ := e.pad.NewForeignCard()
				e.op.use(foreign, cards[1], cards[0])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith("not a card of this appliance") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "blank card refused",
			setup: func(t *testing.T, e *env, cards []string) {
				blank := e.newCards(1)[0]
				e.op.use(blank, cards[1], cards[0])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith("holds no backup key share") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "card pulled out while read is read again",
			setup: func(t *testing.T, e *env, cards []string) {
				e.hook.setHook(func(op string, c pinpad.Card) {
					if op == "read" && c.Serial() == cards[1] {
						e.hook.setHook(nil)
						e.pad.Remove()
					}
				})
				e.op.use(cards[1], cards[1], cards[2])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith(cards[1], "removed") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "wrong PIN then right",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.typed[cards[0]] = []string{"999999"} })
				e.op.use(cards[0], cards[1])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith("wrong PIN: 2 tries left") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "PIN of the wrong length asked again",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.typed[cards[0]] = []string{"12"} })
				e.op.use(cards[0], cards[1])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith("wrong number of digits") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "blocked card refused, another card of the set used",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.typed[cards[0]] = []string{"111111", "222222", "333333"} })
				e.op.use(cards[0], cards[1], cards[2])
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !e.problemWith(cards[0], "blocked") {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "too few cards: timeout says how many more, then retry",
			opts: []envOption{withTimeouts(short)},
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.use(cards[2])
				go func() {
					ev := e.events.waitFor(t, "stall", func(ev Event) bool { return ev.Type == EventStalled })
					if !strings.Contains(ev.Hint, "1 of the 2 cards needed were read: 1 more needed") {
						t.Errorf("stall hint %q", ev.Hint)
					}
					e.op.use(cards[0])
					e.m.Retry("CN=dr-team")
				}()
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, cards, gen := loadEnv(t, 2, 3, tc.opts...)
			tc.setup(t, e, cards)
			j := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
			if e.backupKeyID() != gen.KeyID {
				t.Fatal("key not loaded")
			}
			tc.check(t, e, j, cards)
			e.verifyAudit()
		})
	}
}

// foreignSet makes a 2-of-2 set of another key on fresh cards of e's pad, with a journal and
// HSM of its own (another appliance), and returns one of its cards.
func foreignSet(t *testing.T, e *env) string {
	t.Helper()
	other := &env{t: t, root: t.TempDir(), logs: e.logs, timeout: testTimeouts, pad: e.pad, hook: &hookPad{Pad: e.pad}, op: e.op}
	other.dir, other.hsmDir = other.root+"/ceremony", other.root+"/hsm"
	e.close() // one PIN pad, one manager at a time
	other.open()
	cards, _ := other.generate(2, 2)
	other.close()
	if other.pad.State().Inserted != "" {
		other.pad.Remove()
	}
	e.open()
	return cards[0]
}

func TestLoadRefusesCardOfAnotherKeyThanTheHSMs(t *testing.T) {
	e := newEnv(t)
	cards, gen := e.generate(2, 3)
	e.pad.Remove()
	alien := foreignSet(t, e)
	e.op.use(alien, cards[0], cards[1])
	j := e.mustSucceed(e.start("CN=node2", Request{Kind: KindLoad}))
	if !e.problemWith(alien, "the HSM holds key "+gen.KeyID) {
		t.Fatalf("problems %q", e.events.problems())
	}
	if j.KeyID != gen.KeyID {
		t.Fatalf("journal %+v", j)
	}
}

func TestLoadCancelSaysHowManyMore(t *testing.T) {
	e, cards, _ := loadEnv(t, 3, 5)
	e.op.use(cards[0], cards[1])
	h := e.start("CN=dr-team", Request{Kind: KindLoad})
	e.events.waitFor(t, "third prompt", func(ev Event) bool {
		return ev.Ceremony == h.ID() && ev.Display == "Insert 3. card press OK/Cancel"
	})
	e.m.Cancel("CN=dr-team")
	j, err := e.wait(h)
	var ce *CancelledError
	if !errors.As(err, &ce) || j.Status != StatusAborted || j.Next != NextNone {
		t.Fatalf("status %s next %q err %v", j.Status, j.Next, err)
	}
	if !strings.Contains(j.Outcome, "2 of the 3 cards needed were read: 1 more needed") {
		t.Fatalf("outcome %q", j.Outcome)
	}
	if e.backupKeyID() != "" {
		t.Fatal("key loaded")
	}
}

func TestLoadCancelOnPad(t *testing.T) {
	e, cards, _ := loadEnv(t, 2, 3)
	e.op.use(cards[0])
	e.op.addRule(func(o *operator, s sim.State) bool {
		if s.Waiting == sim.WaitCard && strings.HasPrefix(s.Display, "Insert 2.") {
			o.pad.PressCancel()
			return true
		}
		return false
	})
	j, err := e.wait(e.start("CN=dr-team", Request{Kind: KindLoad}))
	if !errors.Is(err, pinpad.ErrCancelled) || j.Status != StatusAborted || !strings.Contains(j.Outcome, "1 more needed") {
		t.Fatalf("status %s, outcome %q, err %v", j.Status, j.Outcome, err)
	}
	if got := e.auditEvents(j.ID); got[len(got)-1] != AuditCeremonyAborted {
		t.Fatalf("audit %v", got)
	}
}

// A card of another set inserted first does not decide the set: the read collects cards per
// set and finishes with the first set that reaches its quorum, saying what it holds of each.
func TestLoadForeignFirstCard(t *testing.T) {
	t.Run("no key in the HSM: the first set complete is loaded", func(t *testing.T) {
		e, cards, gen := loadEnv(t, 2, 3)
		alien := foreignSet(t, e) // a 2-of-2 set of another key
		e.op.use(alien, cards[0], cards[2])
		h := e.start("CN=dr-team", Request{Kind: KindLoad})
		j := e.mustSucceed(h)
		if e.backupKeyID() != gen.KeyID || j.SetID != gen.SetID || j.K != 2 || j.N != 3 {
			t.Fatalf("journal %+v, hsm %s", j, e.backupKeyID())
		}
		short := func(id string) string { return id[:8] + "…" }
		alienSet := ""
		for _, c := range j.Cards {
			if c.Serial == alien {
				alienSet = c.SetID
			}
		}
		want := "Cards read: set " + short(alienSet) + ": 1 of 2, set " + short(gen.SetID) + ": 2 of 2 — done with set " + short(gen.SetID)
		if alienSet == "" || !strings.Contains(j.Outcome, want) {
			t.Fatalf("outcome %q, want %q", j.Outcome, want)
		}
		if len(e.events.problems()) != 0 {
			t.Fatalf("problems %q", e.events.problems())
		}
		// The progress counted the leading set, and showed both while two were seen.
		if !e.events.any(func(ev Event) bool {
			return ev.Ceremony == h.ID() && len(ev.Sets) == 2 && ev.CardsDone == 1 && ev.CardsTotal == 2
		}) {
			t.Fatal("no event with both sets' progress")
		}
		o, _ := e.m.Overview(context.Background())
		if o.KeySet == nil || o.KeySet.SetID != gen.SetID || len(o.KeySet.Cards) != 2 || o.KeySet.Label != "appliance-1" {
			t.Fatalf("key set %+v", o.KeySet)
		}
		for _, c := range o.KeySet.Cards {
			if c.Serial == alien {
				t.Fatalf("the foreign card is listed in the key set: %+v", o.KeySet.Cards)
			}
		}
		cs, _ := e.m.CurrentSet()
		if cs == nil || cs.SetID != gen.SetID || cs.Label != "appliance-1" {
			t.Fatalf("current set %+v", cs)
		}
	})
	t.Run("hint counts the set closest to its quorum", func(t *testing.T) {
		e, cards, _ := loadEnv(t, 2, 3, withTimeouts(Timeouts{OK: 3 * time.Second, Card: 300 * time.Millisecond, PIN: 3 * time.Second, Removal: 3 * time.Second}))
		alien := foreignSet(t, e)
		e.op.use(alien, cards[1])
		h := e.start("CN=dr-team", Request{Kind: KindLoad})
		ev := e.events.waitFor(t, "stall", func(ev Event) bool { return ev.Ceremony == h.ID() && ev.Type == EventStalled })
		if !strings.Contains(ev.Hint, "1 of the 2 cards needed were read: 1 more needed") || !strings.Contains(ev.Hint, "cards read per set") {
			t.Fatalf("stall hint %q", ev.Hint)
		}
		e.op.use(cards[2])
		if err := e.m.Retry("CN=dr-team"); err != nil {
			t.Fatal(err)
		}
		e.mustSucceed(h)
	})
	t.Run("HSM names a key: cards of its sets are expected", func(t *testing.T) {
		e := newEnv(t)
		cards, gen := e.generate(2, 3)
		e.pad.Remove()
		alien := foreignSet(t, e)
		e.op.use(alien, cards[0], cards[1])
		j := e.mustSucceed(e.start("CN=node2", Request{Kind: KindLoad}))
		if !e.problemWith(alien, "the HSM holds key "+gen.KeyID) || j.SetID != gen.SetID {
			t.Fatalf("problems %q, journal %+v", e.events.problems(), j)
		}
	})
}
