package ceremony

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
)

// What the operators see says what is true: the pad's last prompt does not linger through the
// steps after it, a read-back starts at 0 cards read, a refused card's reason shows on the pad
// before "Remove card", a refused card's line carries no PIN tries, and a refused resume says
// what is really pending.
func TestOperatorSeesTheTruth(t *testing.T) {
	t.Run("displays and counters of a generation", func(t *testing.T) {
		e := newEnv(t)
		_, j := e.generate(2, 3)
		sawReadPrompt := false
		for _, ev := range e.events.all() {
			if ev.Ceremony != j.ID {
				continue
			}
			switch ev.Step {
			case StepWriteCard, StepCombine, StepLoadKey, StepReadCard:
				if ev.Display != "" {
					t.Errorf("step %s shows %q on the pad", ev.Step, ev.Display)
				}
			}
			if ev.Type == EventPrompt && ev.Display == attempt.TextReadNewKey {
				sawReadPrompt = true
				if ev.CardsDone != 0 || ev.CardsTotal != 2 {
					t.Errorf("%q with %d of %d cards", ev.Display, ev.CardsDone, ev.CardsTotal)
				}
			}
		}
		if !sawReadPrompt {
			t.Fatal("no Read New Key prompt")
		}
	})
	t.Run("refused cards: the reason on the pad, no PIN tries", func(t *testing.T) {
		e, cards, _ := loadEnv(t, 2, 3)
		foreign, _ := e.pad.NewForeignCard()
		e.op.with(func(o *operator) { o.typed[cards[0]] = []string{"111111", "222222", "333333"} })
		e.op.use(foreign, cards[0], cards[1], cards[2])
		j := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
		var removals []string
		for _, ev := range e.events.all() {
			if ev.Ceremony != j.ID {
				continue
			}
			if ev.Type == EventPrompt && ev.Waiting == WaitRemoval {
				removals = append(removals, ev.Display)
			}
			if ev.Type == EventProblem && strings.Contains(ev.Error, "refused") && (ev.PINTries > 0 || ev.Waiting == WaitPIN) {
				t.Errorf("refusal %q shows %d PIN tries, waiting %q", ev.Error, ev.PINTries, ev.Waiting)
			}
		}
		if len(removals) < 2 || removals[0] != "Wrong card Remove card" || removals[1] != "Card blocked Remove card" {
			t.Fatalf("removal prompts %q", removals)
		}
	})
	t.Run("resume refused while a reset is required says so", func(t *testing.T) {
		e := newEnv(t)
		cards := e.newCards(3)
		e.op.use(cards[0])
		e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3})
		e.events.waitFor(t, "second card prompt", func(ev Event) bool { return ev.Display == "Insert 2. card press OK/Cancel" })
		e.restart()
		_, err := e.m.Resume(context.Background(), "CN=alice")
		var pe *PendingError
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "resume ceremony: ") || strings.Contains(err.Error(), "start ceremony") {
			t.Fatalf("resume: %v", err)
		}
		if todo := pe.Todo(); !strings.Contains(todo, "factory reset is required") || strings.Contains(todo, "Resume") {
			t.Fatalf("todo %q", todo)
		}
		e.reset()
	})
}

// The cards of the set the status shows are the set's cards, each once: a generation's
// read-back is no extra card, and a load lists the cards it read, with the label they carry.
func TestStatusCardsOfSet(t *testing.T) {
	e := newEnv(t)
	cards, gen := e.generate(2, 3)
	o, err := e.m.Overview(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ks := o.KeySet
	if ks == nil || ks.SetID != gen.SetID || ks.Label != "appliance-1" || len(ks.Cards) != 3 {
		t.Fatalf("key set after generation %+v", ks)
	}
	for i, c := range ks.Cards {
		if c.Serial != cards[i] || c.Index != i+1 || c.State != CardWritten {
			t.Fatalf("card %d of the set: %+v", i+1, c)
		}
	}
	e.reset()
	e.pad.Remove()
	e.op.use(cards[2], cards[0])
	e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
	o, _ = e.m.Overview(context.Background())
	ks = o.KeySet
	if ks == nil || ks.Label != "appliance-1" || len(ks.Cards) != 2 || ks.Cards[0].Serial != cards[2] || ks.Cards[1].Serial != cards[0] {
		t.Fatalf("key set after load %+v", ks)
	}
}
