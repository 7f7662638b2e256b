package ceremony

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

// Closing the Manager (the service stopping) mid-ceremony is classified exactly like a crash.
func TestCloseMidCeremonyIsAnInterruption(t *testing.T) {
	t.Run("generate while writing", func(t *testing.T) {
		e := newEnv(t)
		cards := e.newCards(3)
		e.op.use(cards[0])
		e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3})
		e.events.waitFor(t, "second card prompt", func(ev Event) bool { return ev.Display == "Insert 2. card press OK/Cancel" })
		e.restart()
		o, err := e.m.Overview(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if o.Pending == nil || o.Pending.Next != NextReset || o.Last.Status != StatusInterrupted || !strings.Contains(o.Pending.Message, cards[0]) {
			t.Fatalf("overview %+v / %+v", o.Pending, o.Last)
		}
		if _, err := e.m.Resume(context.Background(), "CN=alice"); !isPending(err, NextReset) {
			t.Fatalf("resume: %v", err)
		}
		e.reset()
		if _, err := e.m.Resume(context.Background(), "CN=alice"); !errors.Is(err, ErrNothingToResume) {
			t.Fatalf("resume after reset: %v", err)
		}
	})
	t.Run("copy while writing the target", func(t *testing.T) {
		e := newEnv(t)
		cards, _ := e.generate(2, 2)
		e.pad.Remove()
		target := e.newCards(1)[0]
		ctx, stop := context.WithCancel(context.Background())
		e.hook.setHook(func(op string, c pinpad.Card) {
			if op == "write" && c.Serial() == target {
				e.hook.setHook(nil)
				stop() // the service stops while the target is being written
			}
		})
		e.op.use(cards[0], target)
		h, err := e.m.Start(ctx, "CN=custodian", Request{Kind: KindCopyCard})
		if err != nil {
			t.Fatal(err)
		}
		j, err := e.wait(h)
		if !errors.Is(err, context.Canceled) || j.Status != StatusInterrupted || !strings.Contains(j.Outcome, target) || !strings.Contains(j.Outcome, "incomplete copy") {
			t.Fatalf("status %s outcome %q err %v", j.Status, j.Outcome, err)
		}
		e.restart()
		if o, _ := e.m.Overview(context.Background()); o.Pending != nil || o.Last.Status != StatusInterrupted {
			t.Fatalf("after restart: %+v %+v", o.Pending, o.Last)
		}
	})
}

// A ceremony's context ending (the caller's service context) interrupts it.
func TestStartContextEndsCeremony(t *testing.T) {
	e, cards, _ := loadEnv(t, 2, 3)
	ctx, cancel := context.WithCancel(context.Background())
	e.op.use(cards[0])
	h, err := e.m.Start(ctx, "CN=dr-team", Request{Kind: KindLoad})
	if err != nil {
		t.Fatal(err)
	}
	e.events.waitFor(t, "second prompt", func(ev Event) bool { return ev.Ceremony == h.ID() && ev.Display == "Insert 2. card press OK/Cancel" })
	cancel()
	j, err := e.wait(h)
	if !errors.Is(err, context.Canceled) || j.Status != StatusInterrupted || j.Next != NextRestartRead {
		t.Fatalf("status %s next %q err %v", j.Status, j.Next, err)
	}
	e.op.use(cards[1], cards[2])
	h, err = e.m.Resume(context.Background(), "CN=dr-team")
	if err != nil {
		t.Fatal(err)
	}
	e.mustSucceed(h)
}

func TestRetryAndCancelErrors(t *testing.T) {
	e := newEnv(t)
	if err := e.m.Retry("CN=a"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("retry with nothing running: %v", err)
	}
	if err := e.m.Cancel("CN=a"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("cancel with nothing running: %v", err)
	}
	cards := e.newCards(2)
	h := e.start("CN=a", Request{Kind: KindGenerate, K: 2, N: 2})
	e.events.waitFor(t, "first prompt", func(ev Event) bool { return ev.Step == StepInsertCard })
	if err := e.m.Retry("CN=a"); !errors.Is(err, ErrNotStalled) {
		t.Fatalf("retry while running: %v", err)
	}
	if err := e.m.Cancel(""); !errors.Is(err, ErrBadOperator) {
		t.Fatalf("cancel without operator: %v", err)
	}
	e.m.Cancel("CN=b")
	j, _ := e.wait(h)
	if j.Status != StatusAborted || !strings.Contains(j.LastError, "cancelled by CN=b") {
		t.Fatalf("journal %+v", j)
	}
	_ = cards
}

func TestProtocol(t *testing.T) {
	e := newEnv(t, withTimeouts(Timeouts{OK: 3 * time.Second, Card: 300 * time.Millisecond, PIN: 3 * time.Second, Removal: 3 * time.Second}))
	cards := e.newCards(3)
	e.op.use(cards[0])
	go func() {
		e.events.waitFor(t, "stall", func(ev Event) bool { return ev.Type == EventStalled })
		e.op.use(cards[1], cards[2], cards[0])
		e.m.Retry("CN=bob")
	}()
	j := e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3, Label: "cluster-a"}))
	p, err := e.m.Protocol(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Participants) != 2 || p.Participants[0] != "CN=alice" || p.Participants[1] != "CN=bob" {
		t.Fatalf("participants %v", p.Participants)
	}
	var buf bytes.Buffer
	if err := p.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{"key generation", "CN=alice", "CN=bob", "2 of 3", j.SetID, j.KeyID, "cluster-a", cards[0], cards[1], cards[2],
		"Signature (CN=alice)", "Signature (CN=bob)", p.AuditHead, j.Outcome, "card.written", "ceremony.retried"} {
		if !strings.Contains(text, want) {
			t.Errorf("protocol lacks %q:\n%s", want, text)
		}
	}
	if _, err := e.m.Protocol(999); !errors.Is(err, ErrNoCeremony) {
		t.Fatalf("protocol of a ceremony that never was: %v", err)
	}
	e.logs.Write(buf.Bytes()) // searched for secrets with the logs
}

func TestAuditExportThroughManager(t *testing.T) {
	e := newEnv(t)
	e.generate(2, 3)
	e.reset()
	var buf bytes.Buffer
	if err := e.m.ExportAudit(&buf); err != nil {
		t.Fatal(err)
	}
	want, err := e.m.VerifyAudit()
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyAuditExport(bytes.NewReader(buf.Bytes()))
	if err != nil || got.Entries != want.Entries || got.Head != want.Head {
		t.Fatalf("export verifies as %+v, %v; log %+v", got, err, want)
	}
	e.logs.Write(buf.Bytes())
	list, err := e.m.Ceremonies(0)
	if err != nil || len(list) != 2 || list[0].Kind != KindFactoryReset || list[1].Kind != KindGenerate {
		t.Fatalf("ceremonies %+v, %v", list, err)
	}
}

func TestSubscribeThroughManager(t *testing.T) {
	e := newEnv(t)
	slow := e.m.Subscribe() // never read until the end
	a, b := e.m.Subscribe(), e.m.Subscribe()
	got := make(chan int, 2)
	for _, s := range []*Subscription{a, b} {
		go func(s *Subscription) {
			n := 0
			for ev := range s.C() {
				n++
				if ev.Type == EventOutcome {
					s.Close()
				}
			}
			got <- n
		}(s)
	}
	e.generate(3, 5)
	for i := 0; i < 2; i++ {
		select {
		case n := <-got:
			if n < 20 {
				t.Errorf("subscriber saw %d events", n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("subscriber never saw the outcome")
		}
	}
	var last Event
	for len(slow.C()) > 0 {
		last = <-slow.C()
	}
	if last.Type != EventOutcome {
		t.Fatalf("slow subscriber's last event is %s, want the outcome", last.Type)
	}
	slow.Close()
}

// The consumer-owned interfaces are satisfied by every terminal and HSM of the contracts.
var (
	_ Pad = pinpad.Terminal(nil)
	_ Pad = (*sim.Pad)(nil)
	_ HSM = hsm.HSM(nil)
	_ HSM = (*soft.HSM)(nil)
)

func TestOpenRefusesASecondManagerOnTheSameDir(t *testing.T) {
	e := newEnv(t)
	_, err := Open(context.Background(), Config{Dir: e.dir, Pad: e.pad, HSM: e.hsm})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if _, err := Open(context.Background(), Config{Dir: e.dir}); err == nil {
		t.Fatal("Open without pad and hsm succeeded")
	}
}
