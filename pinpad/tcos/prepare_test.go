package tcos_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// firstPINPad completes every structure with pin, as a pad would with what the operator typed.
type firstPINPad struct {
	tr  tcos.Transport
	pin string
}

func (p firstPINPad) send(ctx context.Context, apdu []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	resp, err := p.tr.Transmit(ctx, apdu)
	if err != nil {
		return nil, err
	}
	return resp[len(resp)-2:], nil
}

func (p firstPINPad) VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error) {
	apdu, err := v.Fill([]byte(p.pin))
	return p.send(ctx, apdu, err)
}

func (p firstPINPad) ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error) {
	apdu, err := m.Fill(nil, []byte(p.pin))
	return p.send(ctx, apdu, err)
}

func TestFirstPINCommand(t *testing.T) {
	m := tcos.FirstPINCommand(0x81, 0)
	apdu, err := m.Fill(nil, []byte("24681357"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ToUpper(hex.EncodeToString(apdu)); got != "002400810E000000000000"+strings.ToUpper(hex.EncodeToString([]byte("24681357"))) {
		t.Fatalf("first PIN APDU %s", got)
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := part10.ParsePINModify(b)
	if err != nil || back.InsertionOffsetNew != 6 || !bytes.Equal(back.APDU, m.APDU) {
		t.Fatalf("structure %X: %v", b, err)
	}
}

// TestPrepareCardsLayout prepares an unpersonalised card in each shipped profile: the files
// and PINs are created, the first PINs set on the pad, then the slots work and the survey says
// the profile fits. A second Prepare changes nothing.
func TestPrepareCardsLayout(t *testing.T) {
	ctx := context.Background()
	for _, prof := range tcos.Profiles() {
		t.Run(prof.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "card")
			vc, err := vcard.NewWith(path, vcard.Options{Creatable: true})
			if err != nil {
				t.Fatal(err)
			}
			pad := &firstPINPad{tr: &recorder{vc: vc}, pin: "11223344"}
			card, err := tcos.OpenProfile(ctx, pad.tr, vc.ATR(), pad, prof)
			if err != nil {
				t.Fatal(err)
			}
			if err := card.Write(ctx, pinpad.SlotShare, []byte("x")); !errors.Is(err, pinpad.ErrNotPersonalised) {
				t.Fatalf("write before preparing: %v", err)
			}
			done, err := card.Prepare(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(done.FirstPIN) != 2 || len(done.Created) < 4 {
				t.Fatalf("prepared %+v", done)
			}
			for _, s := range []pinpad.Slot{pinpad.SlotShare, pinpad.SlotUser} {
				if err := card.VerifyPIN(ctx, s, 0); !errors.Is(err, pinpad.ErrNullPIN) {
					t.Fatalf("verify before the first PIN: %v", err)
				}
				if err := card.SetFirstPIN(ctx, s, 0); err != nil {
					t.Fatalf("first PIN: %v", err)
				}
				if err := card.SetFirstPIN(ctx, s, 0); !errors.Is(err, tcos.ErrNotNullPIN) {
					t.Fatalf("second first PIN: %v", err)
				}
				if err := card.VerifyPIN(ctx, s, 0); err != nil {
					t.Fatalf("verify: %v", err)
				}
				if err := card.Write(ctx, s, []byte("record of "+s.String())); err != nil {
					t.Fatalf("write: %v", err)
				}
				if n, err := card.PINTries(ctx, s); n != 3 || err != nil {
					t.Fatalf("tries: %d, %v", n, err)
				}
			}
			before, _ := os.ReadFile(path)
			again, err := card.Prepare(ctx)
			if err != nil || len(again.Created) != 0 {
				t.Fatalf("second prepare: %+v, %v", again, err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("a second prepare changed the card")
			}
			rep, err := tcos.Survey(ctx, &recorder{vc: vc}, vc.ATR(), nil)
			if err != nil || rep.Fits != prof.Name {
				t.Fatalf("survey after preparing: %v %q", err, rep.Verdict)
			}
		})
	}
}

// TestPrepareCardsRefused: a card whose MF wants a key for CREATE FILE is refused with the
// survey's findings and left as it was.
func TestPrepareCardsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "card")
	vc, err := vcard.NewWith(path, vcard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	card, err := tcos.OpenProfile(ctx, &recorder{vc: vc}, vc.ATR(), nil, tcos.NetKeyDF01())
	if err != nil {
		t.Fatal(err)
	}
	_, err = card.Prepare(ctx)
	var refused *pinpad.PrepareRefusedError
	if !errors.As(err, &refused) || !strings.Contains(refused.Findings, "DF 3F00/DF01") || !strings.Contains(refused.Findings, "global key mask 02") || !strings.Contains(refused.Advice, "order cards personalised") {
		t.Fatalf("prepare: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused prepare changed the card")
	}
}
