package ceremony

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
)

// noOKKeyPad is a pad like a cyberJack through PC/SC: it shows text but cannot report its OK and
// Cancel keys, so every question goes to the screen.
type noOKKeyPad struct{ Pad }

func (p noOKKeyPad) WaitForOK(ctx context.Context, text string, timeout time.Duration) error {
	return pinpad.ErrNoOKKey
}

// answerOnScreen answers every on-screen question with ok, as an operator at WebConf would.
func answerOnScreen(t *testing.T, m *Manager, ok bool) (answered func() []string, stop func()) {
	sub := m.Subscribe()
	done := make(chan struct{})
	var texts []string
	go func() {
		defer close(done)
		for ev := range sub.C() {
			if ev.Waiting != WaitConfirm {
				continue
			}
			texts = append(texts, ev.Display)
			if err := m.Answer("screen operator", Answer{Question: ev.Question.ID, OK: ok, SteppedUp: true}); err != nil && !errors.Is(err, ErrStaleAnswer) {
				t.Errorf("confirm: %v", err)
			}
		}
	}()
	return func() []string { sub.Close(); <-done; return texts }, func() { sub.Close(); <-done }
}

func TestGenerateConfirmedOnScreen(t *testing.T) {
	e := newEnv(t, withPad(func(p Pad) Pad { return noOKKeyPad{p} }))
	if err := e.m.Answer("screen operator", Answer{Question: "c1-q1", OK: true}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("confirm with nothing running: %v", err)
	}
	answered, _ := answerOnScreen(t, e.m, true)
	cards, j := e.generate(2, 3)
	texts := answered()
	if len(cards) != 3 || j.Phase != PhaseFinished || e.backupKeyID() != j.KeyID {
		t.Fatalf("generate: %+v", j)
	}
	if len(texts) < 2 || texts[0] != "Write New Key press OK/Cancel" {
		t.Fatalf("questions asked on screen: %q", texts)
	}
	if got := countOf(e.auditEvents(j.ID), AuditCeremonyConfirmed); got != len(texts) {
		t.Fatalf("%d confirmations audited, %d asked", got, len(texts))
	}
	confirmed := 0
	for _, p := range j.Participants {
		if p.Operator == "screen operator" && p.Action == "confirm" {
			confirmed++
		}
	}
	if confirmed != len(texts) {
		t.Fatalf("participants %+v", j.Participants)
	}
}

func TestGenerateDeclinedOnScreen(t *testing.T) {
	e := newEnv(t, withPad(func(p Pad) Pad { return noOKKeyPad{p} }))
	_, stop := answerOnScreen(t, e.m, false)
	defer stop()
	e.newCards(3)
	h := e.start("admin", Request{Kind: KindGenerate, K: 2, N: 3})
	j, err := e.wait(h)
	if !errors.Is(err, pinpad.ErrCancelled) {
		t.Fatalf("declined Write New Key: %v", err)
	}
	if e.backupKeyID() != "" || len(j.CardsWith(RoleShare, CardWritten)) != 0 {
		t.Fatalf("declined ceremony changed something: key %q, journal %+v", e.backupKeyID(), j)
	}
}

// Each on-screen question has an ID; an answer names it. An answer to a question no longer
// asked (a double click, a stale page) is refused and never answers the next one; OK to a
// destructive question (the last PIN try, an overwrite) needs the security-key step-up; the
// answer is audited with the question's text.
func TestAnswerBoundToQuestion(t *testing.T) {
	e := newEnv(t, withPad(func(p Pad) Pad { return noOKKeyPad{p} }))
	sub := e.m.Subscribe()
	defer sub.Close()
	if err := e.m.Answer("CN=alice", Answer{Question: "c1-q1", OK: true}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("answer with nothing running: %v", err)
	}
	cards := e.newCards(4)
	// The fourth card is left with one PIN try: its last try is a destructive question.
	e.op.with(func(o *operator) { o.typed[cards[3]] = []string{"111111", "222222"} })
	e.op.use(cards[3])
	blockedTries := e.start("CN=alice", Request{Kind: KindChangePIN, Slot: pinpad.SlotShare})
	q := waitQuestion(t, sub, "Last PIN try")
	if !q.Destructive || !strings.Contains(q.Detail, cards[3]) {
		t.Fatalf("question %+v", q)
	}
	if err := e.m.Answer("CN=bob", Answer{Question: q.ID, OK: true}); !errors.Is(err, ErrStepUpRequired) {
		t.Fatalf("OK to the last PIN try without the security key: %v", err)
	}
	e.m.Cancel("CN=alice")
	e.wait(blockedTries)
	e.pad.Remove()

	if err := e.m.Answer("CN=alice", Answer{Question: q.ID, OK: true}); err == nil {
		t.Fatal("the question of a cancelled ceremony was answered")
	}
	cards = cards[:3]
	e.op.use(cards...)
	e.op.use(cards[:1]...)
	h := e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3})
	first := waitQuestion(t, sub, "Write New Key")
	if first.Destructive || first.ID == "" {
		t.Fatalf("question %+v", first)
	}
	if j, _ := e.m.Ceremony(h.ID()); j.Question == nil || j.Question.ID != first.ID {
		t.Fatalf("open question not journaled: %+v", j.Question)
	}
	if err := e.m.Answer("CN=alice", Answer{Question: "c99-q1", OK: true}); !errors.Is(err, ErrStaleAnswer) {
		t.Fatalf("answer to another question: %v", err)
	}
	if err := e.m.Answer("CN=alice", Answer{Question: first.ID, OK: true}); err != nil {
		t.Fatal(err)
	}
	// The double click: the same answer again is stale and does not answer the next question.
	var stale *StaleAnswerError
	if err := e.m.Answer("CN=alice", Answer{Question: first.ID, OK: true}); !errors.As(err, &stale) || stale.Answered != first.ID {
		t.Fatalf("second answer to %s: %v", first.ID, err)
	}
	next := waitQuestion(t, sub, "Read New Key")
	if next.ID == first.ID {
		t.Fatalf("two questions with ID %s", next.ID)
	}
	if err := e.m.Answer("CN=alice", Answer{Question: first.ID, OK: true}); !errors.As(err, &stale) || stale.Asked == nil || stale.Asked.ID != next.ID {
		t.Fatalf("stale answer while %s is asked: %v", next.ID, err)
	}
	if err := e.m.Answer("CN=alice", Answer{Question: next.ID, OK: true}); err != nil {
		t.Fatal(err)
	}
	j := e.mustSucceed(h)
	if j.Question != nil || j.Questions != 2 {
		t.Fatalf("journal questions %d, open %+v", j.Questions, j.Question)
	}
	audit, _ := e.m.AuditLog(j.ID)
	n := 0
	for _, a := range audit {
		if a.Event == AuditCeremonyConfirmed {
			n++
			if !strings.Contains(a.Message, "answered OK") || (!strings.Contains(a.Message, first.Text) && !strings.Contains(a.Message, next.Text)) {
				t.Errorf("audit %q", a.Message)
			}
		}
	}
	if n != 2 {
		t.Fatalf("%d answers audited, want 2", n)
	}
}
