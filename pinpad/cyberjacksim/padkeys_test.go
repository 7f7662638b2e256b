package cyberjacksim_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/pcsc"
)

// The tests of issue 17, over pcscd and the virtual cyberJack driver: the pad's own OK and
// Cancel keys in a whole Generate, the firmware modes, hot-plug, and the PIN structures the
// driver takes.

const (
	textWriteNewKey = "Write New Key press OK/Cancel"
	textInsert1     = "Insert 1. card press OK/Cancel"
)

// shortTimeouts let a test wait out the pad's timeouts in seconds.
var shortTimeouts = ceremony.Timeouts{OK: 2 * time.Second, Card: 3 * time.Second, PIN: 10 * time.Second, Removal: 10 * time.Second}

func ceremonyContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func written(j ceremony.Journal) int {
	n := 0
	for _, c := range j.Cards {
		if c.Role == ceremony.RoleShare && c.State == ceremony.CardWritten {
			n++
		}
	}
	return n
}

func participants(j ceremony.Journal, action string) int {
	n := 0
	for _, p := range j.Participants {
		if p.Action == action {
			n++
		}
	}
	return n
}

func TestCyberJackPadKeys(t *testing.T) {
	needStack(t)
	t.Run("Cancel on the pad at Write New Key", func(t *testing.T) {
		ctx := ceremonyContext(t)
		c := newPCSCCeremony(t, ctx, 2, shortTimeouts)
		c.op.queue = c.cards
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			if ev.Waiting == ceremony.WaitOK && ev.Display == textWriteNewKey {
				return true, o.pad.Keys("CANCEL")
			}
			return false, nil
		}
		j, err, _, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 2})
		if !errors.Is(err, pinpad.ErrCancelled) || j.Status != ceremony.StatusAborted {
			t.Fatalf("status %s, err %v; want aborted by Cancel on the pad", j.Status, err)
		}
		if written(j) != 0 {
			t.Fatalf("cards written after Cancel at the first question: %+v", j.Cards)
		}
	})
	t.Run("Cancel on the pad at Insert 2. card", func(t *testing.T) {
		ctx := ceremonyContext(t)
		c := newPCSCCeremony(t, ctx, 3, shortTimeouts)
		c.op.queue = c.cards
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			if ev.Waiting == ceremony.WaitCard && strings.HasPrefix(ev.Display, "Insert 2.") {
				return true, o.pad.Keys("CANCEL") // no card: Cancel at the prompt
			}
			return false, nil
		}
		began := time.Now()
		j, err, _, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 3})
		if !errors.Is(err, pinpad.ErrCancelled) || j.Status != ceremony.StatusAborted {
			t.Fatalf("status %s, err %v; want aborted by Cancel on the pad", j.Status, err)
		}
		// Card 1 was written; the set is incomplete, so the journal names it unusable.
		if len(j.Cards) != 1 || j.Cards[0].Index != 1 || !slices.Equal(j.Unusable, []string{j.Cards[0].Serial}) {
			t.Fatalf("want card 1 alone, left unusable: %+v, unusable %v", j.Cards, j.Unusable)
		}
		// Cancel ends the wait at once, not at the card timeout.
		if took := time.Since(began); took > 20*time.Second {
			t.Fatalf("cancelled ceremony took %v", took)
		}
	})
	t.Run("Cancel on the pad at Remove card", func(t *testing.T) {
		ctx := ceremonyContext(t)
		c := newPCSCCeremony(t, ctx, 3, shortTimeouts)
		c.op.queue = c.cards
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			if ev.Waiting == ceremony.WaitRemoval && ev.CardsDone == 1 {
				// The custodian leaves the card in and presses Cancel once the pad listens.
				return true, o.pad.Keys("CANCEL")
			}
			return false, nil
		}
		j, err, took, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 3})
		if !errors.Is(err, pinpad.ErrCancelled) || j.Status != ceremony.StatusAborted || len(j.Cards) != 1 {
			t.Fatalf("status %s, err %v, cards %+v; want aborted by Cancel after card 1", j.Status, err, j.Cards)
		}
		if took > 15*time.Second {
			t.Fatalf("took %v", took)
		}
	})
	t.Run("timeouts stall, Retry, OK on the pad", func(t *testing.T) {
		ctx := ceremonyContext(t)
		c := newPCSCCeremony(t, ctx, 3, shortTimeouts)
		readBack := slices.Clone(c.cards[1:])
		c.op.queue = append(slices.Clone(c.cards), readBack...)
		var mu sync.Mutex
		waited := map[string]bool{} // the prompts nobody answered once
		var stalls []string
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ev.Waiting == ceremony.WaitRetry:
				stalls = append(stalls, ev.Error)
				return true, o.m.Retry("custodian")
			case (ev.Waiting == ceremony.WaitOK && ev.Display == textWriteNewKey) ||
				(ev.Waiting == ceremony.WaitCard && ev.Display == textInsert1):
				if !waited[ev.Display] {
					waited[ev.Display] = true
					return true, nil // nobody at the pad: let it time out
				}
			}
			return false, nil
		}
		j, err, took, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 3})
		if err != nil || j.Phase != ceremony.PhaseFinished || j.KeyID == "" {
			t.Fatalf("generate: %v, journal %+v", err, j)
		}
		if written(j) != 3 {
			t.Fatalf("cards %+v", j.Cards)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(stalls) != 2 || !strings.Contains(stalls[0], "timed out") || !strings.Contains(stalls[1], "timed out") {
			t.Fatalf("stalls %q, want two pad timeouts", stalls)
		}
		if participants(j, "retry") != 2 || participants(j, "confirm") != 0 {
			t.Fatalf("participants %+v: want two retries and no answer on the screen", j.Participants)
		}
		outputs, err := c.pad.Outputs()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{textWriteNewKey, textInsert1, "Read New Key press OK/Cancel"} {
			if !slices.Contains(outputs, strings.ReplaceAll(want, "\n", "\r")) {
				t.Errorf("the pad never showed %q", want)
			}
		}
		t.Logf("2-of-3 generate with two pad timeouts and retries: %v", took)
	})
}

func TestCyberJackFirmware(t *testing.T) {
	needStack(t)
	t.Run("old firmware", func(t *testing.T) {
		ctx := ceremonyContext(t)
		ctl, err := cyberjacksim.Dial(stack.control)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.Close() }) // after the cleanups below, which use it
		if err := ctl.SetFirmwareVersion("3.0.41"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.SetFirmwareVersion(cyberjacksim.DefaultFirmware.String()) })

		var report bytes.Buffer
		if err := pcsc.Diagnose(ctx, &report, pcsc.DiagnoseOptions{Reader: readerName}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(report.String(), "firmware 3.0.41") || !strings.Contains(report.String(), "update the reader's firmware") {
			t.Fatalf("reader diagnose does not name the old firmware:\n%s", report.String())
		}

		c := newPCSCCeremony(t, ctx, 2, shortTimeouts)
		if fw, err := c.term.Firmware(ctx); err != nil || fw.String() != "3.0.41" {
			t.Fatalf("firmware %v %v", fw, err)
		}
		c.op.queue = c.cards
		pinAsked := false
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			if ev.Waiting == ceremony.WaitPIN {
				pinAsked = true
				return true, nil // the pad never asks: the reader refuses secure PIN entry
			}
			return false, nil
		}
		j, err, _, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 2})
		var fe *pinpad.FirmwareError
		if !errors.As(err, &fe) || !errors.Is(err, pinpad.ErrNoPINPad) || fe.Firmware != "3.0.41" {
			t.Fatalf("generate on 3.0.41: %v, want a firmware error naming 3.0.41", err)
		}
		if !strings.Contains(j.LastError, "update the reader's firmware") || !strings.Contains(j.LastError, "3.0.42") {
			t.Fatalf("the operator reads %q", j.LastError)
		}
		if written(j) != 0 || !pinAsked {
			t.Fatalf("cards %+v", j.Cards)
		}
	})
	t.Run("no MKT_COMP", func(t *testing.T) {
		ctx := ceremonyContext(t)
		ctl, err := cyberjacksim.Dial(stack.control)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.Close() }) // after the cleanups below, which use it
		if err := ctl.SetFirmware(false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.SetFirmware(true) })
		before, _ := ctl.Outputs()

		var report bytes.Buffer
		if err := pcsc.Diagnose(ctx, &report, pcsc.DiagnoseOptions{Reader: readerName}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(report.String(), "no (6D 00: no MKT_COMP module") {
			t.Fatalf("reader diagnose does not say the keys cannot be read:\n%s", report.String())
		}

		c := newPCSCCeremony(t, ctx, 2, ceremony.Timeouts{})
		c.op.queue = append(slices.Clone(c.cards), c.cards...)
		c.op.noKeys = true
		var mu sync.Mutex
		var onScreen []string
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			switch ev.Waiting {
			case ceremony.WaitOK:
				// The ceremony announces the question; the pad cannot answer it.
				return true, nil
			case ceremony.WaitConfirm:
				mu.Lock()
				onScreen = append(onScreen, ev.Display)
				mu.Unlock()
			}
			return false, nil
		}
		j, err, _, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 2})
		if err != nil || j.Phase != ceremony.PhaseFinished || written(j) != 2 {
			t.Fatalf("generate without MKT_COMP: %v, %+v", err, j)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(onScreen, textWriteNewKey) || participants(j, "confirm") < 2 {
			t.Fatalf("questions on the screen %q, participants %+v", onScreen, j.Participants)
		}
		if after, _ := ctl.Outputs(); len(after) != len(before) {
			t.Fatalf("text reached a display without the module: %q", after[len(before):])
		}
	})
}

// waitStatus waits until the terminal's view of the reader is want (nil: connected).
func waitStatus(t *testing.T, term *pcsc.Terminal, want error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := term.Status(t.Context())
		if (want == nil && err == nil) || (want != nil && errors.Is(err, want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader status %v, want %v", err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCyberJackHotplug(t *testing.T) {
	needStack(t)
	t.Run("service started with no reader", func(t *testing.T) {
		ctx := ceremonyContext(t)
		ctl, err := cyberjacksim.Dial(stack.control)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.Close() }) // after the cleanups below, which use it
		if err := ctl.Unplug(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctl.Plug() })
		// pcscd sees the reader go at once (the driver's polling function returns on unplug).
		probe, err := pcsc.Open(ctx, pcsc.Options{Reader: readerName})
		if err != nil {
			t.Fatalf("open with the reader unplugged: %v", err)
		}
		waitStatus(t, probe, pinpad.ErrNoReader)

		c := newPCSCCeremony(t, ctx, 2, shortTimeouts) // opens its terminal with no reader
		if _, err := c.term.Status(ctx); !errors.Is(err, pinpad.ErrNoReader) || err.Error() != "no PIN pad connected" {
			t.Fatalf("status without a reader: %v", err)
		}
		c.op.queue = append(slices.Clone(c.cards), c.cards...)
		var mu sync.Mutex
		var stalls []string
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			if ev.Waiting != ceremony.WaitRetry {
				return false, nil
			}
			mu.Lock()
			stalls = append(stalls, ev.Error+" / "+ev.Hint)
			mu.Unlock()
			if err := o.pad.Plug(); err != nil { // the custodian plugs the reader in
				return true, err
			}
			waitStatus(t, probe, nil) // and sees WebConf show it before pressing Retry
			return true, o.m.Retry("custodian")
		}
		j, err, _, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 2})
		if err != nil || j.Phase != ceremony.PhaseFinished || written(j) != 2 {
			t.Fatalf("generate after plugging in: %v, %+v", err, j)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(stalls) == 0 || !strings.Contains(stalls[0], "no PIN pad connected") || !strings.Contains(stalls[0], "plug the card reader back in") {
			t.Fatalf("stalls %q", stalls)
		}
		if !strings.HasPrefix(c.term.Name(), readerName) {
			t.Fatalf("terminal name %q after plugging in", c.term.Name())
		}
	})
	t.Run("unplugged mid-ceremony, Retry finishes it", func(t *testing.T) {
		ctx := ceremonyContext(t)
		c := newPCSCCeremony(t, ctx, 3, shortTimeouts)
		c.op.queue = append(slices.Clone(c.cards), c.cards[1:]...)
		var mu sync.Mutex
		unplugged := false
		var stalls []string
		c.op.rule = func(o *padOperator, ev ceremony.Event) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ev.Waiting == ceremony.WaitPIN && ev.CardsDone == 1 && !unplugged:
				// The cable comes out while the pad waits for the second card's PIN.
				unplugged = true
				for deadline := time.Now().Add(5 * time.Second); ; {
					st, err := o.pad.State()
					if err != nil {
						return true, err
					}
					if st.Kind == "pin" {
						break
					}
					if time.Now().After(deadline) {
						return true, errors.New("the pad never asked for the PIN")
					}
					time.Sleep(10 * time.Millisecond)
				}
				return true, o.pad.Unplug()
			case ev.Waiting == ceremony.WaitRetry:
				stalls = append(stalls, ev.Error+" / "+ev.Hint)
				if err := o.pad.Plug(); err != nil {
					return true, err
				}
				time.Sleep(100 * time.Millisecond)
				return true, o.m.Retry("custodian")
			}
			return false, nil
		}
		j, err, _, _ := c.run(t, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 3})
		if err != nil || j.Phase != ceremony.PhaseFinished || written(j) != 3 {
			t.Fatalf("generate across an unplug: %v, %+v", err, j)
		}
		mu.Lock()
		defer mu.Unlock()
		if !unplugged || len(stalls) == 0 || !strings.Contains(stalls[0], pinpad.ErrReaderGone.Error()) {
			t.Fatalf("unplugged %v, stalls %q", unplugged, stalls)
		}
		if participants(j, "retry") < 1 {
			t.Fatalf("participants %+v", j.Participants)
		}
	})
}

// TestCyberJackStructures sends PIN structures straight to the driver: the shapes Reiner's own
// builder makes are taken, others refused with 6B 80 before the pad asks for anything, so a
// structure the real reader would treat differently cannot pass in tests.
func TestCyberJackStructures(t *testing.T) {
	r := newRig(t)
	card := r.insert(t)
	defer r.remove(t, card)
	f, err := r.term.Features(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	verifyCode, _ := f.Code(part10.FeatureVerifyPINDirect)
	modifyCode, _ := f.Code(part10.FeatureModifyPINDirect)

	// A second, shared connection to the card the rig holds: the rig's session is exclusive, so
	// take the structures through a fresh one after closing it.
	card.Close()
	sc, err := scard.EstablishContext()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Release()
	var h *scard.Card
	readers, _ := sc.ListReaders()
	for _, name := range readers {
		if strings.HasPrefix(name, readerName) {
			h, err = sc.Connect(name, scard.ShareExclusive, scard.ProtocolAny)
		}
	}
	if h == nil || err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer h.Disconnect(scard.ResetCard)

	modify := func(numberMessage byte, index [3]byte) []byte {
		m := &part10.PINModify{Timeout: 5 * time.Second, PINFormat: part10.PINFormat{FormatString: 0x82, PINBlockString: 0x0F,
			MinDigits: 6, MaxDigits: 15, EntryValidation: part10.ValidateOKKey}, ConfirmPIN: part10.ConfirmNewPIN,
			NumberMessage: numberMessage, LangID: 0x0409, MsgIndex: index, APDU: []byte{0x00, 0x24, 0x01, 0x81, 0x00}}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	verify := func(numberMessage byte, langID uint16) []byte {
		v := &part10.PINVerify{Timeout: 5 * time.Second, PINFormat: part10.PINFormat{FormatString: 0x82, PINBlockString: 0x0F,
			MinDigits: 6, MaxDigits: 15, EntryValidation: part10.ValidateOKKey},
			NumberMessage: numberMessage, LangID: langID, APDU: []byte{0x00, 0x20, 0x00, 0x81, 0x00}}
		b, err := v.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		code uint32
		in   []byte
	}{
		// Keyquorum's modify before issue 17: two messages, indexes 01 02 00.
		{"modify, bNumberMessage 02 / 01 02 00", modifyCode, modify(0x02, [3]byte{1, 2, 0})},
		{"modify, no messages", modifyCode, modify(0x00, [3]byte{})},
		{"verify, bNumberMessage FF", verifyCode, verify(0xFF, 0x0409)},
		{"verify, wLangId 0407", verifyCode, verify(0x01, 0x0407)},
	} {
		_, seqBefore := entrySeq(t, r.pad)
		out, err := h.Control(tc.code, tc.in)
		if err != nil || part10.Result(tc.name, out) == nil || !errors.Is(part10.Result(tc.name, out), part10.ErrStructureRejected) {
			t.Errorf("%s: %X %v, want 6B 80", tc.name, out, err)
		}
		if _, seq := entrySeq(t, r.pad); seq != seqBefore {
			t.Errorf("%s: the pad asked for a PIN", tc.name)
		}
	}

	// Reiner's shapes are taken: the pad asks, and Cancel ends it.
	for name, in := range map[string][]byte{"verify": verify(0x01, 0x0409), "modify": modify(0xFF, [3]byte{0, 1, 0})} {
		code := verifyCode
		if name == "modify" {
			// A modify needs the old PIN verified first on TCOS; Cancel ends it before the card.
			code = modifyCode
		}
		typed := typeOnPad(t, stack.control, keys("CANCEL"))
		out, err := h.Control(code, in)
		if err != nil || !errors.Is(part10.Result(name, out), pinpad.ErrCancelled) {
			t.Errorf("Reiner's %s: %X %v, want the pad's Cancel (64 01)", name, out, err)
		}
		if err := <-typed; err != nil {
			t.Fatal(err)
		}
	}

	// A structure whose length disagrees with its ulDataLength is not even passed to the pad.
	bad := verify(0x01, 0x0409)
	binary.LittleEndian.PutUint32(bad[15:19], 9)
	if _, err := h.Control(verifyCode, bad); err == nil {
		t.Error("a verify structure with a wrong ulDataLength was taken")
	}
}

// entrySeq is what the pad waits for now and how many waits for keys it has begun.
func entrySeq(t *testing.T, pad *cyberjacksim.Client) (string, int) {
	t.Helper()
	st, err := pad.State()
	if err != nil {
		t.Fatal(err)
	}
	return st.Kind, st.Entries
}
