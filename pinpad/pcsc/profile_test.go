package pcsc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/pinpad/vpcd"
)

// queuePad is a TEST-ONLY host-side pad (see hostPad) that types the next PIN of its queue at
// each entry: a verify takes one, a change of PIN one (the new PIN, typed twice on a real pad).
type queuePad struct {
	tr   transport
	mu   sync.Mutex
	pins []string
}

func (p *queuePad) next() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pins) == 0 {
		return nil
	}
	pin := []byte(p.pins[0])
	p.pins = p.pins[1:]
	return pin
}

func (p *queuePad) send(ctx context.Context, apdu []byte, err error) ([]byte, error) {
	if err != nil {
		return []byte{0x64, 0x03}, nil
	}
	resp, err := p.tr.Transmit(ctx, apdu)
	clear(apdu)
	if err != nil {
		return nil, err
	}
	return resp[len(resp)-2:], nil
}

func (p *queuePad) VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error) {
	apdu, err := v.Fill(p.next())
	return p.send(ctx, apdu, err)
}

func (p *queuePad) ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error) {
	apdu, err := m.Fill(nil, p.next())
	return p.send(ctx, apdu, err)
}

func (p *queuePad) typeNext(pins ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pins = append(p.pins, pins...)
}

// TestCardProfiles runs each shipped profile, on the card shapes it is for, through pcscd and
// vpcd: write and read back both slots, read tries (never with a VERIFY query), count a wrong
// PIN, change a PIN.
func TestCardProfiles(t *testing.T) {
	requireStack(t)
	mf, nk := tcos.KeyquorumMF(), tcos.NetKeyDF01()
	for _, c := range []struct {
		name  string
		shape vcard.Options
	}{
		{"keyquorum-mf", vcard.Options{Profile: mf, VerifyQuery: vcard.QuerySpends}},
		{"netkey-df01", vcard.Options{Profile: nk, VerifyQuery: vcard.QuerySpends}},
		{"netkey-df01 tries in PIN files", vcard.Options{Profile: nk, NoPWDD: true, PINFiles: true}},
		{"netkey-df01 3B 9F ATR", vcard.Options{Profile: nk, ATR: tcos.ATRNoTB1, VerifyQuery: vcard.QueryRefNotFound}},
	} {
		t.Run(c.name, func(t *testing.T) { testCardProfile(t, c.shape) })
	}
}

func testCardProfile(t *testing.T, shape vcard.Options) {
	prof := shape.Profile
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	term, err := Open(ctx, Options{Reader: stack.reader, Profile: prof, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	pad := &queuePad{}
	term.newPad = func(h handle, _ part10.Features, _ *slog.Logger) tcos.PINPad {
		pad.tr = transport{h: h}
		return pad
	}
	vc, err := vcard.NewWith(filepath.Join(t.TempDir(), "card"), shape)
	if err != nil {
		t.Fatal(err)
	}
	slot := vpcd.NewSlot(stack.addr)
	inserted := insertAfter(t, ctx, slot, vc)
	card, err := term.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 10*time.Second)
	if err != nil {
		t.Fatalf("wait for card: %v", err)
	}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	defer removeAndWait(t, ctx, term, slot)
	defer card.Close()
	if card.Serial() != vc.Serial() || card.ProfileName() != prof.Name || !bytes.Equal(card.ATR(), vc.ATR()) {
		t.Fatalf("card %s profile %s ATR %X", card.Serial(), card.ProfileName(), card.ATR())
	}
	df := prof.DFPath()
	for _, s := range []struct {
		slot pinpad.Slot
		spec tcos.SlotSpec
		size int
	}{{pinpad.SlotShare, prof.Share, 300}, {pinpad.SlotUser, prof.User, 40}} {
		if n, err := card.PINTries(ctx, s.slot); n != 3 || err != nil {
			t.Fatalf("%s tries: %d, %v", s.slot, n, err)
		}
		data := make([]byte, s.size)
		rand.Read(data)
		if err := card.Write(ctx, s.slot, data); !errors.Is(err, pinpad.ErrAccessDenied) {
			t.Fatalf("write %s without PIN: %v", s.slot, err)
		}
		pad.typeNext("123456")
		if err := card.VerifyPIN(ctx, s.slot, 10*time.Second); err != nil {
			t.Fatalf("verify %s: %v", s.slot, err)
		}
		if err := card.Write(ctx, s.slot, data); err != nil {
			t.Fatalf("write %s: %v", s.slot, err)
		}
		got, err := card.Read(ctx, s.slot)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %s: %v", s.slot, err)
		}
		// The data sits in the profile's file, behind its length prefix.
		file, ok := vc.FileData(fmt.Sprintf("%s/%04X", df, s.spec.File))
		if !ok || len(file) != s.spec.Size || !bytes.Equal(file[2:2+s.size], data) {
			t.Fatalf("%s is not in %s/%04X", s.slot, df, s.spec.File)
		}
	}
	// A wrong PIN counts, the tries say so, the right one restores them.
	pad.typeNext("000000")
	var wrong *pinpad.WrongPINError
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 10*time.Second); !errors.As(err, &wrong) || wrong.Remaining != 2 {
		t.Fatalf("wrong PIN: %v", err)
	}
	if n, err := card.PINTries(ctx, pinpad.SlotShare); n != 2 || err != nil {
		t.Fatalf("tries after a wrong PIN: %d, %v", n, err)
	}
	// Change the share PIN: old PIN, then the new one.
	pad.typeNext("123456", "24681357")
	if err := card.ChangePIN(ctx, pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("change PIN: %v", err)
	}
	if n, err := card.PINTries(ctx, pinpad.SlotShare); n != 3 || err != nil {
		t.Fatalf("tries after the change: %d, %v", n, err)
	}
	pad.typeNext("123456")
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 10*time.Second); !errors.As(err, &wrong) {
		t.Fatalf("old PIN after the change: %v", err)
	}
	pad.typeNext("24681357")
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("new PIN: %v", err)
	}
	for _, pin := range vc.PINs() {
		if pin.Spent != 0 {
			t.Errorf("PIN %02X in %s: %d tries spent by queries", pin.Ref, pin.DF, pin.Spent)
		}
		if pin.DF != df {
			t.Errorf("PIN %02X lives in %s, the profile says %s", pin.Ref, pin.DF, df)
		}
	}
}

// TestCardSurveyPCSC surveys virtual cards of several shapes through pcscd and vpcd (what
// `keyquorum card survey` does): the right verdict, no PIN presented, the card file unchanged.
func TestCardSurveyPCSC(t *testing.T) {
	requireStack(t)
	mf, nk := tcos.KeyquorumMF(), tcos.NetKeyDF01()
	for _, c := range []struct {
		name  string
		shape vcard.Options
		fits  string
		says  string
	}{
		{"keyquorum-mf", vcard.Options{Profile: mf, VerifyQuery: vcard.QuerySpends}, "keyquorum-mf", "--card-profile keyquorum-mf"},
		{"netkey-df01 3B 9F", vcard.Options{Profile: nk, ATR: tcos.ATRNoTB1}, "netkey-df01", "--card-profile netkey-df01"},
		{"unpersonalised", vcard.Options{Creatable: true}, "", "Prepare cards can lay out a profile"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			path := filepath.Join(t.TempDir(), "card")
			vc, err := vcard.NewWith(path, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			term := openTerminal(t, ctx, nil)
			slot := vpcd.NewSlot(stack.addr)
			if err := slot.Insert(ctx, vc); err != nil {
				t.Fatal(err)
			}
			defer removeAndWait(t, ctx, term, slot)
			var rep *tcos.SurveyReport
			for range 50 { // until pcscd has powered the card
				rep, err = term.SurveyCard(ctx)
				if !errors.Is(err, pinpad.ErrNoCard) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Fits != c.fits || !strings.Contains(rep.Verdict, c.says) || rep.Serial != vc.Serial() {
				t.Fatalf("fits %q serial %s verdict %q", rep.Fits, rep.Serial, rep.Verdict)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Error("the survey changed the card file")
			}
			for _, p := range vc.PINs() {
				if p.Presented != 0 || p.Spent != 0 {
					t.Errorf("PIN %02X presented %d, spent %d", p.Ref, p.Presented, p.Spent)
				}
			}
		})
	}
}
