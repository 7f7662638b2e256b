package sim_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// connect inserts a new card and returns the session WaitForCard gives.
func connect(t *testing.T, ctx context.Context, pad *sim.Pad, op *operator, serial string) pinpad.Card {
	t.Helper()
	op.bg(func() {
		op.await(sim.WaitCard)
		if err := pad.Insert(serial); err != nil {
			t.Error(err)
		}
		pad.PressOK()
		op.done(sim.WaitCard)
	})
	card, err := pad.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { card.Close() })
	return card
}

func setup(t *testing.T, opts ...sim.Option) (context.Context, *sim.Pad, *operator, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	pad, _ := openPad(t, opts...)
	serial, err := pad.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	return ctx, pad, newOperator(t, ctx, pad), serial
}

func TestWrongPINCountsDownToBlocked(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	card := connect(t, ctx, pad, op, serial)
	if n, err := card.PINTries(ctx, pinpad.SlotShare); n != 3 || err != nil {
		t.Fatalf("tries %d, %v; want 3", n, err)
	}
	for _, want := range []error{&pinpad.WrongPINError{Remaining: 2}, &pinpad.WrongPINError{Remaining: 1}, pinpad.ErrPINBlocked, pinpad.ErrPINBlocked} {
		op.bg(func() { op.enterPIN("654321") })
		err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second)
		var wp, wantWP *pinpad.WrongPINError
		switch {
		case errors.As(want, &wantWP):
			if !errors.As(err, &wp) || wp.Remaining != wantWP.Remaining {
				t.Fatalf("verify: %v, want %v", err, want)
			}
		case !errors.Is(err, want):
			t.Fatalf("verify: %v, want %v", err, want)
		}
	}
	if n, err := card.PINTries(ctx, pinpad.SlotShare); n != 0 || err != nil {
		t.Errorf("tries of a blocked PIN %d, %v; want 0", n, err)
	}
	// The other slot has its own PIN and counter.
	if n, err := card.PINTries(ctx, pinpad.SlotUser); n != 3 || err != nil {
		t.Errorf("slot user tries %d, %v; want 3", n, err)
	}
	info := pad.Cards()
	if len(info) != 1 || !info[0].Blocked[pinpad.SlotShare] || info[0].Blocked[pinpad.SlotUser] || info[0].Tries[pinpad.SlotUser] != 3 {
		t.Errorf("cards: %+v", info)
	}
}

func TestRightPINResetsCounter(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	card := connect(t, ctx, pad, op, serial)
	op.bg(func() { op.enterPIN("000000") })
	var wp *pinpad.WrongPINError
	if err := card.VerifyPIN(ctx, pinpad.SlotUser, 5*time.Second); !errors.As(err, &wp) || wp.Remaining != 2 {
		t.Fatalf("verify: %v", err)
	}
	op.bg(func() { op.enterPIN("123456") })
	if err := card.VerifyPIN(ctx, pinpad.SlotUser, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, _ := card.PINTries(ctx, pinpad.SlotUser); n != 3 {
		t.Errorf("tries after the right PIN: %d", n)
	}
}

func TestPINEntryKeys(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	card := connect(t, ctx, pad, op, serial)

	t.Run("clear restarts the entry", func(t *testing.T) {
		op.bg(func() {
			op.await(sim.WaitPIN)
			pad.TypeDigits("99")
			pad.PressClear()
			pad.TypeDigits("123456")
			pad.PressOK()
			op.done(sim.WaitPIN)
		})
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		op.bg(func() {
			op.await(sim.WaitPIN)
			pad.TypeDigits("12")
			pad.PressCancel()
			op.done(sim.WaitPIN)
		})
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrCancelled) {
			t.Fatalf("verify: %v, want ErrCancelled", err)
		}
	})
	t.Run("too short", func(t *testing.T) {
		op.bg(func() { op.enterPIN("123") })
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrPINLength) {
			t.Fatalf("verify: %v, want ErrPINLength", err)
		}
		if n, _ := card.PINTries(ctx, pinpad.SlotShare); n != 3 {
			t.Errorf("a PIN the pad refused spent a try: %d left", n)
		}
	})
	t.Run("pad timeout", func(t *testing.T) {
		start := time.Now()
		err := card.VerifyPIN(ctx, pinpad.SlotShare, 150*time.Millisecond)
		if !errors.Is(err, pinpad.ErrTimeout) {
			t.Fatalf("verify: %v, want ErrTimeout", err)
		}
		if time.Since(start) < 150*time.Millisecond {
			t.Error("timed out early")
		}
		if s := pad.State(); s.Display != "" || s.Waiting != sim.WaitNone {
			t.Errorf("after a timeout the display is blank and nothing waits: %+v", s)
		}
		op.await(sim.WaitPIN)
		op.done(sim.WaitPIN)
	})
	t.Run("context cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		op.bg(func() {
			op.await(sim.WaitPIN)
			cancel()
			op.done(sim.WaitPIN)
		})
		err := card.VerifyPIN(cctx, pinpad.SlotShare, 5*time.Second)
		if !errors.Is(err, context.Canceled) || errors.Is(err, pinpad.ErrTimeout) {
			t.Fatalf("verify: %v, want context.Canceled", err)
		}
	})
	t.Run("digits only while a PIN is asked", func(t *testing.T) {
		if err := pad.TypeDigits("1"); !errors.Is(err, sim.ErrNotPIN) {
			t.Errorf("type digits with no entry: %v", err)
		}
	})
}

func TestChangePIN(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	card := connect(t, ctx, pad, op, serial)

	op.bg(func() {
		op.enterPIN("123456") // old
		s := op.await(sim.WaitPIN)
		if s.Display != "Enter new PIN" {
			t.Errorf("display %q", s.Display)
		}
		pad.TypeDigits("24681357")
		pad.PressOK()
		op.done(sim.WaitPIN)
		op.enterPIN("24681357")
	})
	if err := card.ChangePIN(ctx, pinpad.SlotShare, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	card.Close()

	if err := pad.Remove(); err != nil {
		t.Fatal(err)
	}
	card = connect(t, ctx, pad, op, serial)
	op.bg(func() { op.enterPIN("123456") })
	var wp *pinpad.WrongPINError
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.As(err, &wp) {
		t.Fatalf("old PIN after change: %v", err)
	}
	op.bg(func() { op.enterPIN("24681357") })
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); err != nil {
		t.Fatalf("new PIN: %v", err)
	}

	t.Run("new PINs differ", func(t *testing.T) {
		op.bg(func() {
			op.enterPIN("24681357")
			op.enterPIN("111111")
			op.enterPIN("222222")
		})
		if err := card.ChangePIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrPINsDiffer) {
			t.Fatalf("change: %v, want ErrPINsDiffer", err)
		}
	})
}

func TestForeignCard(t *testing.T) {
	ctx, pad, op, _ := setup(t)
	foreign, err := pad.NewForeignCard()
	if err != nil {
		t.Fatal(err)
	}
	op.bg(func() {
		op.await(sim.WaitCard)
		pad.Insert(foreign)
		pad.PressOK()
	})
	if _, err := pad.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 5*time.Second); !errors.Is(err, pinpad.ErrNotTCOS) {
		t.Fatalf("foreign card: %v, want ErrNotTCOS", err)
	}
	found := false
	for _, c := range pad.Cards() {
		if c.Serial == foreign {
			found = c.Foreign
		}
	}
	if !found {
		t.Error("Cards does not list the foreign card as foreign")
	}
}

func TestWaitForCard(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	t.Run("OK without a card does not count", func(t *testing.T) {
		op.bg(func() {
			op.await(sim.WaitCard)
			pad.PressOK()
			time.Sleep(20 * time.Millisecond)
			pad.PressCancel()
			op.done(sim.WaitCard)
		})
		if _, err := pad.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 5*time.Second); !errors.Is(err, pinpad.ErrCancelled) {
			t.Fatalf("wait: %v, want ErrCancelled", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		if _, err := pad.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 100*time.Millisecond); !errors.Is(err, pinpad.ErrTimeout) {
			t.Fatalf("wait: %v, want ErrTimeout", err)
		}
		op.await(sim.WaitCard)
		op.done(sim.WaitCard)
	})
	t.Run("default timeout", func(t *testing.T) {
		pad, _ := openPad(t, sim.WithDefaultTimeout(80*time.Millisecond))
		if _, err := pad.WaitForCard(ctx, "x", 0); !errors.Is(err, pinpad.ErrTimeout) {
			t.Fatalf("wait: %v, want ErrTimeout", err)
		}
	})
	t.Run("deadline shown", func(t *testing.T) {
		op.bg(func() {
			s := op.await(sim.WaitCard)
			if d := time.Until(s.Deadline); d <= 0 || d > 5*time.Second {
				t.Errorf("deadline in %v", d)
			}
			pad.Insert(serial)
			pad.PressOK()
			op.done(sim.WaitCard)
		})
		card, err := pad.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		card.Close()
		if s := pad.State(); s.Inserted != serial || s.Waiting != sim.WaitNone || !s.Deadline.IsZero() {
			t.Errorf("state after the wait: %+v", s)
		}
	})
	t.Run("removal", func(t *testing.T) {
		op.bg(func() {
			op.await(sim.WaitRemoval)
			pad.Remove()
			op.done(sim.WaitRemoval)
		})
		if err := pad.WaitForRemoval(ctx, "Remove the card", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := pad.WaitForRemoval(ctx, "Remove the card", 5*time.Second); err != nil {
			t.Fatalf("an empty slot: %v", err)
		}
	})
	t.Run("operator API errors", func(t *testing.T) {
		if err := pad.Insert("00"); !errors.Is(err, sim.ErrUnknownCard) {
			t.Errorf("insert unknown: %v", err)
		}
		if err := pad.Remove(); !errors.Is(err, sim.ErrSlotEmpty) {
			t.Errorf("remove from empty slot: %v", err)
		}
		pad.Insert(serial)
		if err := pad.Insert(serial); !errors.Is(err, sim.ErrSlotOccupied) {
			t.Errorf("insert twice: %v", err)
		}
		pad.Remove()
	})
}

func TestWaitForOK(t *testing.T) {
	ctx, pad, op, _ := setup(t)
	op.bg(func() {
		s := op.await(sim.WaitOK)
		if s.Display != "Write New Key press OK/Cancel" {
			t.Errorf("display %q", s.Display)
		}
		pad.PressOK()
		op.done(sim.WaitOK)
	})
	if err := pad.WaitForOK(ctx, "Write New Key press OK/Cancel", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	op.bg(func() {
		op.await(sim.WaitOK)
		pad.PressCancel()
	})
	if err := pad.WaitForOK(ctx, "Read New Key press OK/Cancel", 5*time.Second); !errors.Is(err, pinpad.ErrCancelled) {
		t.Fatalf("wait: %v, want ErrCancelled", err)
	}
	if err := pad.Show(ctx, "hello"); err != nil || pad.State().Display != "hello" {
		t.Errorf("show: %v, display %q", err, pad.State().Display)
	}
}

func TestCardRemovedDuringOperation(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	card := connect(t, ctx, pad, op, serial)
	op.bg(func() {
		op.await(sim.WaitPIN)
		pad.TypeDigits("123")
		pad.Remove()
	})
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrCardRemoved) {
		t.Fatalf("verify: %v, want ErrCardRemoved", err)
	}
	if _, err := card.Read(ctx, pinpad.SlotShare); !errors.Is(err, pinpad.ErrCardRemoved) {
		t.Fatalf("read: %v, want ErrCardRemoved", err)
	}
	// Put back, the old session stays dead and the card forgot the verified PIN.
	pad.Insert(serial)
	if _, err := card.Read(ctx, pinpad.SlotShare); !errors.Is(err, pinpad.ErrCardRemoved) {
		t.Fatalf("read on the old session: %v, want ErrCardRemoved", err)
	}
}

func TestUnplug(t *testing.T) {
	ctx, pad, op, serial := setup(t)
	card := connect(t, ctx, pad, op, serial)
	op.bg(func() {
		op.await(sim.WaitPIN)
		pad.Unplug()
	})
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrReaderGone) {
		t.Fatalf("verify: %v, want ErrReaderGone", err)
	}
	if _, err := card.PINTries(ctx, pinpad.SlotShare); !errors.Is(err, pinpad.ErrReaderGone) {
		t.Fatalf("tries: %v, want ErrReaderGone", err)
	}
	if _, err := pad.WaitForCard(ctx, "Insert", time.Second); !errors.Is(err, pinpad.ErrReaderGone) {
		t.Fatalf("wait while unplugged: %v, want ErrReaderGone", err)
	}
	if err := pad.Show(ctx, "x"); !errors.Is(err, pinpad.ErrReaderGone) {
		t.Fatalf("show while unplugged: %v", err)
	}
	pad.Plug()
	if s := pad.State(); !s.Plugged || s.Inserted != serial {
		t.Fatalf("after plug: %+v", s)
	}
	op.bg(func() {
		op.await(sim.WaitCard)
		pad.PressOK()
	})
	card2, err := pad.WaitForCard(ctx, "Insert", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer card2.Close()
	if _, err := card2.Read(ctx, pinpad.SlotShare); !errors.Is(err, pinpad.ErrAccessDenied) {
		t.Fatalf("a PIN verified before the unplug still counts: %v", err)
	}
}

func TestWatchEndsWithContext(t *testing.T) {
	pad, _ := openPad(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := pad.Watch(ctx)
	if s := <-ch; !s.Plugged {
		t.Fatalf("first state %+v", s)
	}
	serial, _ := pad.NewCard()
	pad.Insert(serial)
	for s := range ch {
		if s.Inserted == serial {
			break
		}
	}
	cancel()
	for range ch {
	}
}

func TestSurveyCard(t *testing.T) {
	ctx := context.Background()
	pad, err := sim.Open(t.TempDir(), sim.WithProfile(tcos.NetKeyDF01()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pad.SurveyCard(ctx); !errors.Is(err, pinpad.ErrNoCard) {
		t.Fatalf("empty slot: %v", err)
	}
	serial, err := pad.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	if err := pad.Insert(serial); err != nil {
		t.Fatal(err)
	}
	rep, err := pad.SurveyCard(ctx)
	if err != nil || rep.Fits != "netkey-df01" || rep.Serial != serial {
		t.Fatalf("survey: %v %+v", err, rep)
	}
	blank, err := pad.NewShapedCard(vcard.Options{Creatable: true})
	if err != nil {
		t.Fatal(err)
	}
	pad.Remove()
	pad.Insert(blank)
	if rep, err := pad.SurveyCard(ctx); err != nil || rep.Fits != "" || rep.Preparable != "yes" {
		t.Fatalf("survey of a blank card: %v %+v", err, rep)
	}
}

// A temporary card file a crash left between write and rename is removed when the simulator
// opens: it holds a card's PINs and data and is no card.
func TestOpenRemovesTemporaryCardFiles(t *testing.T) {
	dir := t.TempDir()
	p, err := sim.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := p.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(dir, ".card-123456")
	if err := os.WriteFile(left, []byte(`{"pins":"secret"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, err := sim.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary card file still there: %v", err)
	}
	if cards := p2.Cards(); len(cards) != 1 || cards[0].Serial != serial {
		t.Fatalf("cards after reopening: %+v", cards)
	}
}
