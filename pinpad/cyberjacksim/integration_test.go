package cyberjacksim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/internal/pcscdtest"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/pinpad/pcsc"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// The integration tests run ebfe/scard → libpcsclite → a pcscd of this test binary → the
// virtual cyberJack driver (cmd/ifd-cyberjacksim, built here with -buildmode=c-shared) → a
// virtual TCOS card, with the pcsc backend exactly as production uses it: the PIN is "typed"
// on the virtual pad through the driver's control socket and never passes the host.

const readerName = "REINER SCT cyberJack ecom_a"

var stack struct {
	err     error
	skip    bool
	dir     string
	control string // the driver's control socket
	stop    func()
}

func TestMain(m *testing.M) {
	start()
	code := m.Run()
	if stack.stop != nil {
		stack.stop()
	}
	os.Exit(code)
}

func start() {
	dir, err := os.MkdirTemp("", "cyberjacksim-")
	if err != nil {
		stack.err = err
		return
	}
	stack.dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lib, err := pcscdtest.BuildDriver(ctx, "../..", "./cmd/ifd-cyberjacksim", dir)
	if err != nil {
		stack.err = err
		return
	}
	stack.control = filepath.Join(dir, "pad.sock")
	os.Setenv("CYBERJACKSIM_LOG", filepath.Join(dir, "driver.log"))
	// One reader: pcscd gives every reader of one driver library the same LUN.
	d, err := pcscdtest.Start(pcscdtest.Reader{FriendlyName: readerName, DeviceName: "/dev/null:" + stack.control + ":timeout-10", LibPath: lib})
	if err != nil {
		stack.err, stack.skip = err, pcscdtest.Require(err)
		return
	}
	stack.stop = func() {
		d.Stop()
		if os.Getenv("CYBERJACKSIM_KEEP") == "" {
			os.RemoveAll(dir)
		}
	}
	if err := waitForFile(stack.control, 10*time.Second); err != nil {
		stack.err = fmt.Errorf("driver did not open its control socket: %v\npcscd: %s", err, d.Log())
	}
}

func waitForFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not appear", path)
}

// needStack fails (in CI) or skips (elsewhere, component missing) when the stack is down.
func needStack(t *testing.T) {
	t.Helper()
	if stack.err == nil {
		return
	}
	if stack.skip {
		t.Skipf("no private pcscd here: %v", stack.err)
	}
	t.Fatalf("real PC/SC stack: %v", stack.err)
}

// rig is one test's reader, pad control and card.
type rig struct {
	term *pcsc.Terminal
	pad  *cyberjacksim.Client
	card string // path of the virtual card file
}

func newRig(t *testing.T) *rig {
	t.Helper()
	needStack(t)
	ctx := t.Context()
	term, err := pcsc.Open(ctx, pcsc.Options{Reader: readerName})
	if err != nil {
		t.Fatalf("open %s: %v", readerName, err)
	}
	t.Cleanup(func() { term.Close() })
	pad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pad.Close() })
	path := filepath.Join(t.TempDir(), "card.json")
	if _, err := vcard.New(path, nil); err != nil {
		t.Fatal(err)
	}
	return &rig{term: term, pad: pad, card: path}
}

// insert puts the card in the reader, presses OK on the pad as the prompt asks, and connects
// to the card through PC/SC.
func (r *rig) insert(t *testing.T) pinpad.Card {
	t.Helper()
	return r.insertAnswering(t, true)
}

// insertAnswering is insert; withOK false is a reader that cannot report its keys (no
// MKT_COMP), where the insertion is the answer.
func (r *rig) insertAnswering(t *testing.T, withOK bool) pinpad.Card {
	t.Helper()
	if err := r.pad.Insert(r.card); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.pad.Remove() })
	var typed <-chan error
	if withOK {
		typed = typeOnPad(t, stack.control, keys("OK"))
	}
	card, err := r.term.WaitForCard(t.Context(), "Insert 1. card press OK/Cancel", 10*time.Second)
	if err != nil {
		t.Fatalf("wait for card: %v", err)
	}
	if typed != nil {
		if err := <-typed; err != nil {
			t.Fatal(err)
		}
	}
	return card
}

// remove takes the card out and waits until PC/SC has seen it go.
func (r *rig) remove(t *testing.T, card pinpad.Card) {
	t.Helper()
	card.Close()
	if err := r.pad.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := r.term.WaitForRemoval(t.Context(), "Remove card", 10*time.Second); err != nil {
		t.Fatalf("wait for removal: %v", err)
	}
}

// typeOnPad answers the next PIN entries of the pad, one key sequence each, on its own
// connection (the test goroutine is blocked in the PC/SC call meanwhile).
func typeOnPad(t *testing.T, control string, entries ...[]string) <-chan error {
	done := make(chan error, 1)
	go func() {
		pad, err := cyberjacksim.Dial(control)
		if err != nil {
			done <- err
			return
		}
		defer pad.Close()
		for _, keys := range entries {
			if err := pad.Keys(keys...); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

func keys(k ...string) []string { return k }

func TestCyberJackFeatures(t *testing.T) {
	r := newRig(t)
	f, err := r.term.Features(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for tag, want := range map[byte]uint32{6: 0x42000DB2, 7: 0x42000DB3, 8: 0x42000DB4, 9: 0x42000DB5} {
		if got, ok := f.Code(tag); !ok || got != want {
			t.Errorf("feature %02X: %08X %v, want %08X", tag, got, ok, want)
		}
	}
}

func TestCyberJackVerifyWriteRead(t *testing.T) {
	r := newRig(t)
	card := r.insert(t)
	typed := typeOnPad(t, stack.control, keys("123456", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("verify on the pad: %v", err)
	}
	if err := <-typed; err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("share record "), 20)
	if err := card.Write(t.Context(), pinpad.SlotShare, data); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := card.Read(t.Context(), pinpad.SlotShare)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	r.remove(t, card)
}

func TestCyberJackWrongPINCountsDownToBlocked(t *testing.T) {
	r := newRig(t)
	card := r.insert(t)
	for _, remaining := range []int{2, 1} {
		typed := typeOnPad(t, stack.control, keys("000000", "OK"))
		err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second)
		var wrong *pinpad.WrongPINError
		if !errors.As(err, &wrong) || wrong.Remaining != remaining {
			t.Fatalf("wrong PIN: got %v, want %d tries left", err, remaining)
		}
		if err := <-typed; err != nil {
			t.Fatal(err)
		}
		if n, err := card.PINTries(t.Context(), pinpad.SlotShare); err != nil || n != remaining {
			t.Fatalf("tries: %d %v, want %d", n, err, remaining)
		}
	}
	typed := typeOnPad(t, stack.control, keys("000000", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); !errors.Is(err, pinpad.ErrPINBlocked) {
		t.Fatalf("third wrong PIN: got %v, want ErrPINBlocked", err)
	}
	<-typed
	// Blocked now even with the right PIN.
	typed = typeOnPad(t, stack.control, keys("123456", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 3*time.Second); !errors.Is(err, pinpad.ErrPINBlocked) {
		t.Fatalf("right PIN on a blocked card: got %v, want ErrPINBlocked", err)
	}
	<-typed
	// The other slot has its own PIN and still works.
	typed = typeOnPad(t, stack.control, keys("123456", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotUser, 10*time.Second); err != nil {
		t.Fatalf("slot user PIN: %v", err)
	}
	<-typed
	r.remove(t, card)
}

func TestCyberJackCancelAndTimeout(t *testing.T) {
	r := newRig(t)
	card := r.insert(t)

	typed := typeOnPad(t, stack.control, keys("12", "CLEAR", "1", "CANCEL"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); !errors.Is(err, pinpad.ErrCancelled) {
		t.Fatalf("cancel on the pad: got %v, want ErrCancelled", err)
	}
	if err := <-typed; err != nil {
		t.Fatal(err)
	}

	// Nobody types: the pad gives up after the operation's timeout.
	began := time.Now()
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, time.Second); !errors.Is(err, pinpad.ErrTimeout) {
		t.Fatalf("no keys: got %v, want ErrTimeout", err)
	}
	if took := time.Since(began); took > 8*time.Second {
		t.Fatalf("pad timeout took %v for a 1 s timeout", took)
	}
	// Neither spent a try.
	if n, err := card.PINTries(t.Context(), pinpad.SlotShare); err != nil || n != 3 {
		t.Fatalf("tries after cancel and timeout: %d %v", n, err)
	}
	r.remove(t, card)
}

func TestCyberJackChangePIN(t *testing.T) {
	r := newRig(t)
	card := r.insert(t)

	// New PIN and its confirmation differ: nothing changes.
	typed := typeOnPad(t, stack.control, keys("123456", "OK"), keys("24681357", "OK"), keys("24681358", "OK"))
	if err := card.ChangePIN(t.Context(), pinpad.SlotShare, 10*time.Second); !errors.Is(err, pinpad.ErrPINsDiffer) {
		t.Fatalf("differing new PINs: got %v, want ErrPINsDiffer", err)
	}
	if err := <-typed; err != nil {
		t.Fatal(err)
	}

	typed = typeOnPad(t, stack.control, keys("123456", "OK"), keys("24681357", "OK"), keys("24681357", "OK"))
	if err := card.ChangePIN(t.Context(), pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("change PIN on the pad: %v", err)
	}
	if err := <-typed; err != nil {
		t.Fatal(err)
	}
	r.remove(t, card)

	// A new session: the old PIN is refused, the new one accepted.
	card = r.insert(t)
	typed = typeOnPad(t, stack.control, keys("123456", "OK"))
	var wrong *pinpad.WrongPINError
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); !errors.As(err, &wrong) {
		t.Fatalf("old PIN after change: got %v, want WrongPINError", err)
	}
	<-typed
	typed = typeOnPad(t, stack.control, keys("24681357", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("new PIN: %v", err)
	}
	<-typed
	r.remove(t, card)
}

func TestCyberJackDisplayText(t *testing.T) {
	r := newRig(t)
	text := "Write New Key\rpress OK/Cancel"
	if err := r.term.Show(t.Context(), text); err != nil {
		t.Fatalf("show: %v", err)
	}
	outputs, err := r.pad.Outputs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(outputs, text) {
		t.Fatalf("display got %q, want %q among them", outputs, text)
	}
	if shown, _ := r.pad.Display(); shown != text {
		t.Fatalf("display shows %q", shown)
	}
}

func TestCyberJackWithoutDisplayModule(t *testing.T) {
	r := newRig(t)
	if err := r.pad.SetFirmware(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.pad.SetFirmware(true) })
	before, err := r.pad.Outputs()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.term.Show(t.Context(), "Insert 1. card"); !errors.Is(err, pinpad.ErrNoDisplay) {
		t.Fatalf("show on firmware without MKT_COMP: got %v, want ErrNoDisplay", err)
	}
	if after, _ := r.pad.Outputs(); len(after) != len(before) {
		t.Fatalf("text reached a display that has no module: %q", after[len(before):])
	}
	// Without MKT_COMP there is no INPUT: the pad's keys cannot be read outside a PIN entry, so
	// the question goes to the screen and the insertion answers "Insert 1. card".
	if err := r.term.WaitForOK(t.Context(), "Write New Key press OK/Cancel", 5*time.Second); !errors.Is(err, pinpad.ErrNoOKKey) {
		t.Fatalf("wait for OK without MKT_COMP: got %v, want ErrNoOKKey", err)
	}
	// The PIN pad itself still works.
	card := r.insertAnswering(t, false)
	typed := typeOnPad(t, stack.control, keys("123456", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("verify: %v", err)
	}
	<-typed
	r.remove(t, card)
}

// TestCyberJackPanel drives the real pcsc path the way the WebConf simulator panel does in
// `keyquorum serve --pinpad pcsc --virtual-reader`: a card from the rack, digits and OK pressed
// once the pad asks.
func TestCyberJackPanel(t *testing.T) {
	needStack(t)
	panel, err := cyberjacksim.OpenPanel(t.TempDir(), stack.control, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer panel.Close()
	term, err := pcsc.Open(t.Context(), pcsc.Options{Reader: readerName})
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()

	serial, err := panel.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := panel.NewForeignCard()
	if err != nil {
		t.Fatal(err)
	}
	if err := panel.Insert("00"); !errors.Is(err, sim.ErrUnknownCard) {
		t.Fatalf("insert unknown card: %v", err)
	}
	if err := panel.Insert(serial); err != nil {
		t.Fatal(err)
	}
	ok := make(chan error, 1)
	go func() { // the panel's OK answers the pad's INPUT
		for st := range panel.Watch(t.Context()) {
			if st.Waiting == sim.WaitCard && st.Inserted != "" {
				panel.PressOK()
				ok <- nil
				return
			}
		}
	}()
	card, err := term.WaitForCard(t.Context(), "Insert 1. card press OK/Cancel", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	<-ok
	if card.Serial() != serial {
		t.Fatalf("card serial %s through PC/SC, rack says %s", card.Serial(), serial)
	}
	if st := panel.State(); st.Inserted != serial {
		t.Fatalf("state %+v", st)
	}

	watch := panel.Watch(t.Context())
	typed := make(chan error, 1)
	go func() {
		for st := range watch {
			if st.Waiting == sim.WaitPIN {
				if err := panel.TypeDigits("000000"); err != nil {
					typed <- err
					return
				}
				panel.PressOK()
				typed <- nil
				return
			}
		}
	}()
	var wrong *pinpad.WrongPINError
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); !errors.As(err, &wrong) || wrong.Remaining != 2 {
		t.Fatalf("wrong PIN typed on the panel: %v", err)
	}
	if err := <-typed; err != nil {
		t.Fatal(err)
	}
	if err := panel.TypeDigits("1"); !errors.Is(err, sim.ErrNotPIN) {
		t.Fatalf("digits with no PIN entry running: %v", err)
	}
	cards := panel.Cards()
	i := slices.IndexFunc(cards, func(c sim.CardInfo) bool { return c.Serial == serial })
	if len(cards) != 2 || i < 0 || cards[i].Tries[pinpad.SlotShare] != 2 || cards[i].Tries[pinpad.SlotUser] != 3 {
		t.Fatalf("rack %+v", cards)
	}
	if !slices.ContainsFunc(cards, func(c sim.CardInfo) bool { return c.Serial == foreign && c.Foreign }) {
		t.Fatalf("foreign card missing from the rack: %+v", cards)
	}
	card.Close()
	if err := panel.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := term.WaitForRemoval(t.Context(), "Remove card", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// The panel's "Unplug the reader" pulls the virtual cable: pcscd, and so the terminal, see
	// no PIN pad until "Plug".
	panel.Unplug()
	if st := panel.State(); st.Plugged {
		t.Fatalf("state after unplug %+v", st)
	}
	waitStatus(t, term, pinpad.ErrNoReader)
	panel.Plug()
	if st := panel.State(); !st.Plugged {
		t.Fatalf("state after plug %+v", st)
	}
	waitStatus(t, term, nil)
}
