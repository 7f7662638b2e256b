package ceremony

import (
	"context"
	"errors"
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
			if err := m.Confirm("screen operator", ok); err != nil && !errors.Is(err, ErrNotAsking) {
				t.Errorf("confirm: %v", err)
			}
		}
	}()
	return func() []string { sub.Close(); <-done; return texts }, func() { sub.Close(); <-done }
}

func TestGenerateConfirmedOnScreen(t *testing.T) {
	e := newEnv(t, withPad(func(p Pad) Pad { return noOKKeyPad{p} }))
	if err := e.m.Confirm("screen operator", true); !errors.Is(err, ErrNotRunning) {
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
	if e.backupKeyID() != "" || len(j.cardsWith(RoleShare, CardWritten)) != 0 {
		t.Fatalf("declined ceremony changed something: key %q, journal %+v", e.backupKeyID(), j)
	}
}
