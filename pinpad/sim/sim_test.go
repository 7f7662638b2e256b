package sim_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

var _ pinpad.Terminal = (*sim.Pad)(nil)

// operator drives the pad from another goroutine, as the WebConf panel does.
type operator struct {
	mu  sync.Mutex // one action at a time reads the watch channel
	wg  sync.WaitGroup
	t   *testing.T
	pad *sim.Pad
	ch  <-chan sim.State
}

func newOperator(t *testing.T, ctx context.Context, pad *sim.Pad) *operator {
	o := &operator{t: t, pad: pad, ch: pad.Watch(ctx)}
	t.Cleanup(o.wg.Wait) // before the test's context ends: cleanups run last-in first-out
	return o
}

// bg runs one operator action in the background. Actions hold the operator in turn, so a new action never
// steals the states an earlier one is still consuming.
func (o *operator) bg(f func()) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.mu.Lock()
		defer o.mu.Unlock()
		f()
	}()
}

// await blocks until the pad waits for w and returns the state. Every helper that acts on a
// wait also consumes the states up to its end, so the next await sees the next wait.
func (o *operator) await(w sim.Wait) sim.State {
	return o.until(func(s sim.State) bool { return s.Waiting == w }, w.String())
}

// done consumes states until the pad no longer waits for w.
func (o *operator) done(w sim.Wait) {
	o.until(func(s sim.State) bool { return s.Waiting != w }, "end of "+w.String())
}

func (o *operator) until(cond func(sim.State) bool, what string) sim.State {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s, ok := <-o.ch:
			if !ok {
				o.t.Errorf("watch ended before %s", what)
				return sim.State{}
			}
			if cond(s) {
				return s
			}
		case <-timeout:
			o.t.Errorf("waited in vain for %s (state %+v)", what, o.pad.State())
			return sim.State{}
		}
	}
}

func (o *operator) enterPIN(pin string) {
	o.await(sim.WaitPIN)
	if err := o.pad.TypeDigits(pin); err != nil {
		o.t.Error(err)
	}
	o.pad.PressOK()
	o.done(sim.WaitPIN)
}

func openPad(t *testing.T, opts ...sim.Option) (*sim.Pad, string) {
	t.Helper()
	dir := t.TempDir()
	pad, err := sim.Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return pad, dir
}

func TestWriteReadShare(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pad, dir := openPad(t)
	serial, err := pad.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	op := newOperator(t, ctx, pad)
	var wg sync.WaitGroup
	wg.Add(1)
	op.bg(func() {
		defer wg.Done()
		s := op.await(sim.WaitCard)
		if s.Display != "Insert 1. card press OK/Cancel" {
			t.Errorf("display %q", s.Display)
		}
		if err := pad.Insert(serial); err != nil {
			t.Error(err)
		}
		pad.PressOK()
		op.enterPIN("123456")
	})
	card, err := pad.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if card.Serial() != serial {
		t.Errorf("serial %q, want %q", card.Serial(), serial)
	}
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	record := bytes.Repeat([]byte{0xA5, 0x5A, 0x01}, 200) // 600 bytes: three chunks
	if err := card.Write(ctx, pinpad.SlotShare, record); err != nil {
		t.Fatal(err)
	}
	got, err := card.Read(ctx, pinpad.SlotShare)
	if err != nil || !bytes.Equal(got, record) {
		t.Fatalf("read %x, %v", got, err)
	}
	if _, err := card.Read(ctx, pinpad.SlotUser); !errors.Is(err, pinpad.ErrAccessDenied) {
		t.Errorf("read slot user without its PIN: %v, want ErrAccessDenied", err)
	}
	card.Close()

	// The card file keeps the record: a new pad on the same directory reads it back.
	pad2, err := sim.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	op2 := newOperator(t, ctx, pad2)
	wg.Add(1)
	op2.bg(func() {
		defer wg.Done()
		op2.await(sim.WaitCard)
		pad2.Insert(serial)
		pad2.PressOK()
		op2.enterPIN("123456")
	})
	card2, err := pad2.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer card2.Close()
	if err := card2.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	got, err = card2.Read(ctx, pinpad.SlotShare)
	if err != nil || !bytes.Equal(got, record) {
		t.Fatalf("read after reopen %x, %v", got, err)
	}
}
