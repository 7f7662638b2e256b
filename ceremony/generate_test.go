package ceremony

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

// generate runs a k-of-n key generation with fresh cards, reading back the last written card
// (left in the reader, as the manual allows) and the first, and returns the cards in share
// order.
func (e *env) generate(k, n int) ([]string, Journal) {
	e.t.Helper()
	cards := e.newCards(n)
	e.op.use(cards...)
	e.op.use(cards[:k-1]...)
	h := e.start("CN=alice", Request{Kind: KindGenerate, K: k, N: n, Label: "appliance-1"})
	return cards, e.mustSucceed(h)
}

// reset runs a factory reset: the HSM forgets the key, the cards keep their shares.
func (e *env) reset() {
	e.t.Helper()
	e.mustSucceed(e.start("CN=admin", Request{Kind: KindFactoryReset}))
}

func (e *env) backupKeyID() string {
	id, err := e.hsm.BackupKeyID(context.Background())
	if errors.Is(err, hsm.ErrNoBackupKey) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return id.String()
}

func (e *env) auditEvents(ceremony uint64) []string {
	e.t.Helper()
	entries, err := e.m.AuditLog(ceremony)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, a := range entries {
		out = append(out, a.Event)
	}
	return out
}

func (e *env) verifyAudit() {
	e.t.Helper()
	if _, err := e.m.VerifyAudit(); err != nil {
		e.t.Fatalf("audit: %v", err)
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

func TestGenerate(t *testing.T) {
	for _, q := range []struct{ k, n int }{{2, 3}, {3, 5}, {2, 2}} {
		t.Run(fmt.Sprintf("%d of %d", q.k, q.n), func(t *testing.T) {
			e := newEnv(t)
			cards, j := e.generate(q.k, q.n)
			if j.K != q.k || j.N != q.n || j.SetID == "" || j.KeyID == "" || j.Phase != PhaseFinished {
				t.Fatalf("journal %+v", j)
			}
			// serial ↔ share index, in the order written.
			for i, serial := range cards {
				ok := slices.ContainsFunc(j.Cards, func(c CardEntry) bool {
					return c.Serial == serial && c.Index == i+1 && c.Role == RoleShare && c.State == CardWritten
				})
				if !ok {
					t.Errorf("card %s not journaled as share %d: %+v", serial, i+1, j.Cards)
				}
			}
			if got := len(j.CardsWith(RoleRead, CardRead)); got != q.k {
				t.Errorf("%d cards read back, want %d", got, q.k)
			}
			if got := e.backupKeyID(); got != j.KeyID {
				t.Fatalf("hsm holds key %q, journal says %q", got, j.KeyID)
			}
			o, err := e.m.Overview(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if o.BackupKeyID != j.KeyID || o.KeySet == nil || o.KeySet.SetID != j.SetID || o.Pending != nil || o.Running != nil || o.Last.ID != j.ID {
				t.Fatalf("overview %+v", o)
			}
			// The pad prompts of the manual, in order.
			var displays []string
			for _, ev := range e.events.all() {
				if ev.Type == EventPrompt && (len(displays) == 0 || displays[len(displays)-1] != ev.Display) {
					displays = append(displays, ev.Display)
				}
			}
			want := []string{"Write New Key press OK/Cancel", "Insert 1. card press OK/Cancel", "Enter PIN", "Remove card"}
			if !slices.Equal(displays[:4], want) || !slices.Contains(displays, "Read New Key press OK/Cancel") {
				t.Errorf("prompts %q", displays)
			}
			audit := e.auditEvents(j.ID)
			if countOf(audit, AuditCardWritten) != q.n || countOf(audit, AuditCardRead) != q.k || countOf(audit, AuditKeyLoaded) != 1 || countOf(audit, AuditCeremonyDone) != 1 {
				t.Errorf("audit %v", audit)
			}
			e.verifyAudit()
		})
	}
}

func TestGenerateEvents(t *testing.T) {
	e := newEnv(t)
	_, j := e.generate(2, 3)
	e.events.waitFor(t, "outcome", func(ev Event) bool { return ev.Type == EventOutcome })
	evs := e.events.all()
	var sawDeadline, sawTries, sawDone, sawOutcome bool
	for _, ev := range evs {
		if ev.Ceremony != j.ID && ev.Ceremony != 0 {
			t.Errorf("event of ceremony %d", ev.Ceremony)
		}
		if ev.Type == EventPrompt && ev.Waiting != WaitNone {
			if ev.Deadline.IsZero() || ev.Deadline.Before(ev.Time) || ev.Deadline.After(ev.Time.Add(testTimeouts.Card+time.Second)) {
				t.Errorf("prompt %q with deadline %v at %v", ev.Display, ev.Deadline, ev.Time)
			}
			sawDeadline = true
		}
		if ev.Type == EventPINTries && ev.PINTries == 3 {
			sawTries = true
		}
		if ev.CardsDone == 3 && ev.CardsTotal == 3 {
			sawDone = true
		}
		if ev.Type == EventOutcome {
			sawOutcome = ev.Status == StatusDone && strings.Contains(ev.Outcome, j.KeyID)
		}
	}
	if !sawDeadline || !sawTries || !sawDone || !sawOutcome {
		t.Fatalf("deadline %v, tries %v, cards done %v, outcome %v", sawDeadline, sawTries, sawDone, sawOutcome)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("events out of order: %d after %d", evs[i].Seq, evs[i-1].Seq)
		}
	}
}

func TestGenerateRefusedWhenKeyLoaded(t *testing.T) {
	e := newEnv(t)
	_, j := e.generate(2, 3)
	_, err := e.m.Start(context.Background(), "CN=bob", Request{Kind: KindGenerate, K: 2, N: 3})
	if !errors.Is(err, ErrKeyLoaded) || !strings.Contains(err.Error(), j.KeyID) {
		t.Fatalf("err = %v, want ErrKeyLoaded naming %s", err, j.KeyID)
	}
}

func TestStartValidates(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		op   string
		req  Request
		want error
	}{
		{"", Request{Kind: KindLoad}, ErrBadOperator},
		{"CN=a\nb", Request{Kind: KindLoad}, ErrBadOperator},
		{"CN=a", Request{Kind: "dance"}, ErrBadRequest},
		{"CN=a", Request{Kind: KindGenerate, K: 1, N: 3}, ErrBadRequest},
		{"CN=a", Request{Kind: KindGenerate, K: 4, N: 3}, ErrBadRequest},
		{"CN=a", Request{Kind: KindGenerate, K: 2, N: 3, Label: "bad\x00label"}, ErrBadRequest},
		{"CN=a", Request{Kind: KindChangePIN, Slot: 7}, ErrBadRequest},
	} {
		if _, err := e.m.Start(context.Background(), tc.op, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("Start(%q, %+v) = %v, want %v", tc.op, tc.req, err, tc.want)
		}
	}
}

func TestSecondStartRefusedNamingTheRunningCeremony(t *testing.T) {
	e := newEnv(t)
	cards := e.newCards(3)
	h := e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3})
	e.events.waitFor(t, "insert prompt", func(ev Event) bool { return ev.Step == StepInsertCard })
	_, err := e.m.Start(context.Background(), "CN=bob", Request{Kind: KindLoad})
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Operator != "CN=alice" || busy.Kind != KindGenerate || busy.ID != h.ID() {
		t.Fatalf("err = %v, want BusyError naming alice's key generation", err)
	}
	if !strings.Contains(err.Error(), "CN=alice") || !strings.Contains(err.Error(), "key generation") {
		t.Fatalf("message %q does not name who and what", err)
	}
	if _, err := e.m.Resume(context.Background(), "CN=bob"); !errors.As(err, &busy) {
		t.Fatalf("resume: %v", err)
	}
	e.op.use(cards...)
	e.op.use(cards[0])
	e.mustSucceed(h)
	if err := e.m.Cancel("CN=bob"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("cancel after the end: %v", err)
	}
}

// TestGenerateFailures drives the failure table through a key generation.
func TestGenerateFailures(t *testing.T) {
	short := Timeouts{OK: 3 * time.Second, Card: 300 * time.Millisecond, PIN: 3 * time.Second, Removal: 3 * time.Second}
	tests := []struct {
		name  string
		opts  []envOption
		setup func(t *testing.T, e *env, cards []string) // cards: 4 blank cards, 3 of them queued
		check func(t *testing.T, e *env, j Journal, cards []string)
	}{
		{
			name: "pad timeout then retry keeps finished cards",
			opts: []envOption{withTimeouts(short)},
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.queue = []string{cards[0]} }) // only one card at hand
				go func() {
					ev := e.events.waitFor(t, "stall", func(ev Event) bool { return ev.Type == EventStalled })
					if !strings.Contains(ev.Error, "timed out") || ev.Waiting != WaitRetry || !strings.Contains(ev.Hint, "Retry") {
						t.Errorf("stall event %+v", ev)
					}
					jj, _ := e.m.Ceremony(ev.Ceremony)
					if jj.Status != StatusStalled {
						t.Errorf("journal status %s while stalled", jj.Status)
					}
					e.op.use(cards[1], cards[2], cards[0])
					if err := e.m.Retry("CN=bob"); err != nil {
						t.Error(err)
					}
				}()
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				audit := e.auditEvents(j.ID)
				if countOf(audit, AuditCardWriting) != 3 || countOf(audit, AuditCeremonyStalled) != 1 || countOf(audit, AuditCeremonyRetried) != 1 {
					t.Errorf("card 1 rewritten or stall not journaled: %v", audit)
				}
				if !slices.ContainsFunc(j.Participants, func(p Participant) bool { return p.Operator == "CN=bob" && p.Action == "retry" }) {
					t.Errorf("retry not recorded: %+v", j.Participants)
				}
				if !e.events.any(func(ev Event) bool {
					return ev.Type == EventPrompt && ev.Display == "Insert 2. card press OK/Cancel" && !ev.Deadline.IsZero()
				}) {
					t.Error("no prompt with a deadline for card 2")
				}
			},
		},
		{
			name: "wrong PIN shows tries, confirmation before the last",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.typed[cards[1]] = []string{"000000", "111111"} })
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !slices.Contains(e.op.actions, `ok "Last PIN try press OK/Cancel"`) {
					t.Errorf("no confirmation before the last try: %v", e.op.actions)
				}
				if !e.events.any(func(ev Event) bool { return ev.Type == EventPINTries && ev.PINTries == 1 }) {
					t.Error("no event with 1 try left")
				}
				if !slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "2 tries left") }) {
					t.Errorf("problems %q", e.events.problems())
				}
				if countOf(e.auditEvents(j.ID), AuditPINWrong) != 2 {
					t.Errorf("audit %v", e.auditEvents(j.ID))
				}
			},
		},
		{
			name: "last try declined: another card for that share",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.typed[cards[1]] = []string{"000000", "111111"} })
				e.op.addRule(func(o *operator, s sim.State) bool {
					if s.Waiting == sim.WaitOK && strings.HasPrefix(s.Display, "Last PIN try") {
						o.pad.PressCancel()
						o.queue = append([]string{cards[3]}, o.queue...)
						return true
					}
					return false
				})
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !slices.ContainsFunc(j.Cards, func(c CardEntry) bool { return c.Serial == cards[3] && c.Index == 2 && c.State == CardWritten }) {
					t.Errorf("share 2 not on the replacement card: %+v", j.Cards)
				}
				if !slices.ContainsFunc(j.Cards, func(c CardEntry) bool { return c.Serial == cards[1] && c.Role == RoleRefused }) {
					t.Errorf("declined card not journaled: %+v", j.Cards)
				}
			},
		},
		{
			name: "card blocked: another blank card for that share",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) {
					o.typed[cards[1]] = []string{"000000", "111111", "222222"}
					o.queue = []string{cards[0], cards[1], cards[3], cards[2], cards[0]}
				})
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "blocked") }) {
					t.Errorf("problems %q", e.events.problems())
				}
				if !e.events.any(func(ev Event) bool { return strings.Contains(ev.Hint, "another blank card") }) {
					t.Error("no hint to use another blank card")
				}
				if !slices.ContainsFunc(j.Cards, func(c CardEntry) bool { return c.Serial == cards[3] && c.Index == 2 && c.State == CardWritten }) {
					t.Errorf("share 2 not on the replacement card: %+v", j.Cards)
				}
				if countOf(e.auditEvents(j.ID), AuditPINBlocked) != 1 {
					t.Errorf("audit %v", e.auditEvents(j.ID))
				}
				for _, c := range e.pad.Cards() {
					if c.Serial == cards[1] && !c.Blocked[pinpad.SlotShare] {
						t.Error("card not blocked")
					}
				}
			},
		},
		{
			name: "card pulled out between write and read-back is verified again",
			setup: func(t *testing.T, e *env, cards []string) {
				wrote := false
				e.hook.setHook(func(op string, c pinpad.Card) {
					if c.Serial() != cards[1] {
						return
					}
					if op == "write" {
						wrote = true
					}
					if op == "read" && wrote {
						wrote = false
						e.hook.setHook(nil)
						e.pad.Remove() // the write completed; the read-back finds the card gone
					}
				})
				e.op.with(func(o *operator) { o.queue = []string{cards[0], cards[1], cards[1], cards[2], cards[0]} })
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				audit, _ := e.m.AuditLog(j.ID)
				var removed, again bool
				for _, a := range audit {
					removed = removed || a.Event == AuditCardRemoved && slices.Contains(a.Serials, cards[1])
					again = again || a.Event == AuditCardWritten && strings.Contains(a.Message, "verified again")
				}
				if !removed || !again {
					t.Errorf("removal %v, verified again %v: %+v", removed, again, audit)
				}
				if !slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "removed") }) {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
		{
			name: "reader unplugged before a write: stall, plug in, retry",
			setup: func(t *testing.T, e *env, cards []string) {
				e.hook.setHook(func(op string, c pinpad.Card) {
					if op == "write" && c.Serial() == cards[1] {
						e.hook.setHook(nil)
						e.pad.Unplug()
					}
				})
				go func() {
					ev := e.events.waitFor(t, "stall", func(ev Event) bool { return ev.Type == EventStalled })
					if !strings.Contains(ev.Error, "disconnected") || !strings.Contains(ev.Hint, "plug") {
						t.Errorf("stall event %+v", ev)
					}
					e.pad.Plug()
					if err := e.m.Retry("CN=alice"); err != nil {
						t.Error(err)
					}
				}()
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if countOf(e.auditEvents(j.ID), AuditCeremonyRetried) != 1 {
					t.Errorf("audit %v", e.auditEvents(j.ID))
				}
			},
		},
		{
			name: "same card twice refused, nothing written",
			setup: func(t *testing.T, e *env, cards []string) {
				e.op.with(func(o *operator) { o.queue = []string{cards[0], cards[0], cards[1], cards[2], cards[0]} })
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !slices.ContainsFunc(e.events.problems(), func(p string) bool {
					return strings.Contains(p, cards[0]) && strings.Contains(p, "already holds share 1")
				}) {
					t.Errorf("problems %q", e.events.problems())
				}
				if countOf(e.auditEvents(j.ID), AuditCardWriting) != 3 {
					t.Errorf("audit %v", e.auditEvents(j.ID))
				}
			},
		},
		{
			name: "not a TCOS card refused",
			setup: func(t *testing.T, e *env, cards []string) {
				foreign, err := e.pad.NewForeignCard()
				if err != nil {
					t.Fatal(err)
				}
				e.op.with(func(o *operator) { o.queue = []string{foreign, cards[0], cards[1], cards[2], cards[0]} })
			},
			check: func(t *testing.T, e *env, j Journal, cards []string) {
				if !slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "not a card of this appliance") }) {
					t.Errorf("problems %q", e.events.problems())
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts...)
			cards := e.newCards(4)
			e.op.with(func(o *operator) { o.queue = []string{cards[0], cards[1], cards[2], cards[0]} })
			tc.setup(t, e, cards)
			j := e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}))
			if e.backupKeyID() != j.KeyID {
				t.Fatal("key not loaded")
			}
			tc.check(t, e, j, cards)
			e.verifyAudit()
		})
	}
}

// A card holding a share of another set: the custodian is asked; Cancel keeps it, OK overwrites.
// Here the other set is the one current before the factory reset, so the question names the
// share lost (TestCopyNeverSilentlyOverwritesCurrentSet).
func TestGenerateOverwriteQuestion(t *testing.T) {
	for _, answer := range []string{"cancel", "ok"} {
		t.Run(answer, func(t *testing.T) {
			e := newEnv(t)
			old, _ := e.generate(2, 2)
			e.reset()
			fresh := e.newCards(2)
			e.op.with(func(o *operator) {
				if answer == "cancel" {
					o.queue = []string{old[0], fresh[0], fresh[1], fresh[0]}
				} else {
					o.queue = []string{old[0], fresh[0], old[0]}
				}
			})
			e.op.addRule(func(o *operator, s sim.State) bool {
				if s.Waiting == sim.WaitOK && (strings.HasPrefix(s.Display, "Card not empty") || strings.HasPrefix(s.Display, "Overwrite share")) {
					if answer == "cancel" {
						o.pad.PressCancel()
					} else {
						o.pad.PressOK()
					}
					return true
				}
				return false
			})
			j := e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 2}))
			if !slices.ContainsFunc(e.events.problems(), func(p string) bool { return strings.Contains(p, "share 1 of the current set") }) {
				t.Errorf("problems %q", e.events.problems())
			}
			onOld := slices.ContainsFunc(j.Cards, func(c CardEntry) bool { return c.Serial == old[0] && c.State == CardWritten })
			if onOld != (answer == "ok") {
				t.Errorf("old card overwritten = %v after %s: %+v", onOld, answer, j.Cards)
			}
		})
	}
}

func TestGenerateCancel(t *testing.T) {
	t.Run("on the pad while writing", func(t *testing.T) {
		e := newEnv(t)
		cards := e.newCards(3)
		e.op.use(cards[0])
		fired := false
		e.op.addRule(func(o *operator, s sim.State) bool {
			if !fired && s.Waiting == sim.WaitCard && strings.HasPrefix(s.Display, "Insert 2.") {
				fired = true
				o.pad.PressCancel()
				return true
			}
			return false
		})
		j, err := e.wait(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}))
		if !errors.Is(err, pinpad.ErrCancelled) || j.Status != StatusAborted || j.Next != NextNone {
			t.Fatalf("status %s next %q err %v", j.Status, j.Next, err)
		}
		if !slices.Equal(j.Unusable, []string{cards[0]}) || !strings.Contains(j.Outcome, cards[0]) || !strings.Contains(j.Outcome, "unusable") {
			t.Fatalf("outcome %q unusable %v", j.Outcome, j.Unusable)
		}
		if e.backupKeyID() != "" {
			t.Fatal("a key was loaded")
		}
		if countOf(e.auditEvents(j.ID), AuditCeremonyAborted) != 1 {
			t.Fatalf("audit %v", e.auditEvents(j.ID))
		}
		// A clean abort: a new key generation may start at once.
		e.op.use(cards[1], cards[2], cards[0], cards[1])
		e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}))
	})
	t.Run("by an operator while reading: resume", func(t *testing.T) {
		e := newEnv(t)
		cards := e.newCards(3)
		e.op.use(cards...) // nothing for the second read
		h := e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3})
		e.events.waitFor(t, "second read prompt", func(ev Event) bool { return ev.Display == "Insert 2. card press OK/Cancel" && ev.Phase == PhaseReading })
		if err := e.m.Cancel("CN=bob"); err != nil {
			t.Fatal(err)
		}
		j, err := e.wait(h)
		var ce *CancelledError
		if !errors.As(err, &ce) || ce.Operator != "CN=bob" || j.Status != StatusAborted || j.Next != NextResume {
			t.Fatalf("status %s next %q err %v", j.Status, j.Next, err)
		}
		if !strings.Contains(j.Outcome, "Resume") || !strings.Contains(j.Outcome, "1 more needed") {
			t.Fatalf("outcome %q", j.Outcome)
		}
		audit, _ := e.m.AuditLog(j.ID)
		if last := audit[len(audit)-1]; last.Event != AuditCeremonyAborted || last.Operator != "CN=bob" {
			t.Fatalf("last audit entry %+v", last)
		}
		if _, err := e.m.Start(context.Background(), "CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}); !isPending(err, NextResume) {
			t.Fatalf("new generate: %v", err)
		}
		e.op.use(cards[1], cards[0])
		h, err = e.m.Resume(context.Background(), "CN=carol")
		if err != nil {
			t.Fatal(err)
		}
		j = e.mustSucceed(h)
		if e.backupKeyID() != j.KeyID || j.Attempt != 2 {
			t.Fatalf("attempt %d, key %s", j.Attempt, e.backupKeyID())
		}
	})
}

func isPending(err error, next NextAction) bool {
	var p *PendingError
	return errors.As(err, &p) && p.Pending.Next == next
}
