package pcsc

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// fakeHandle is a card handle with no PC/SC behind it: APDUs go to a virtual card, control
// calls are recorded and answered from a script.
type fakeHandle struct {
	card     *vcard.Card
	controls []controlCall
	answer   func(code uint32, in []byte) ([]byte, error)
	transmit func(cmd []byte) ([]byte, error) // replaces the card when set
}

type controlCall struct {
	code uint32
	in   []byte
}

func (h *fakeHandle) Transmit(cmd []byte) ([]byte, error) {
	if h.transmit != nil {
		return h.transmit(cmd)
	}
	return h.card.Transmit(cmd)
}

func (h *fakeHandle) Control(code uint32, in []byte) ([]byte, error) {
	h.controls = append(h.controls, controlCall{code, bytes.Clone(in)})
	return h.answer(code, in)
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The two ways drivers number the part 10 features (HARDWARE.md §0).
var (
	reinerFeatures = "06 04 42000DB2 07 04 42000DB3 08 04 42000DB4 09 04 42000DB5"
	ccidFeatures   = "06 04 42330006 07 04 42330007 0A 04 4233000A"
)

func newFakeCard(t *testing.T, features string, answer func(code uint32, in []byte) ([]byte, error)) (*tcos.Card, *fakeHandle) {
	t.Helper()
	vc, err := vcard.New("", unhex(t, "0102030405060708"))
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHandle{card: vc, answer: func(code uint32, in []byte) ([]byte, error) {
		if code == scard.CtlCode(part10.GetFeatureRequest) {
			return unhex(t, features), nil
		}
		return answer(code, in)
	}}
	f, raw, err := readFeatures(h)
	if err != nil || !bytes.Equal(raw, unhex(t, features)) {
		t.Fatalf("features: %v %x", err, raw)
	}
	if len(h.controls) != 1 || h.controls[0].code != 0x42000D48 || h.controls[0].in != nil {
		t.Fatalf("feature request: %+v", h.controls)
	}
	h.controls = nil
	c, err := tcos.Open(context.Background(), transport{h: h}, vc.ATR(), newPartTenPad(h, f, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return c, h
}

func TestPadSendsStructuresToListedCodes(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name               string
		features           string
		verifyCode, modify uint32
	}{
		{"reiner", reinerFeatures, 0x42000DB2, 0x42000DB3},
		{"libccid", ccidFeatures, 0x42330006, 0x42330007},
	} {
		t.Run(c.name, func(t *testing.T) {
			card, h := newFakeCard(t, c.features, func(code uint32, in []byte) ([]byte, error) {
				return []byte{0x90, 0x00}, nil
			})
			if err := card.VerifyPIN(ctx, pinpad.SlotShare, 90*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := card.ChangePIN(ctx, pinpad.SlotUser, 45*time.Second); err != nil {
				t.Fatal(err)
			}
			want := []controlCall{
				{c.verifyCode, unhex(t, "5A 5A 82 0F 00 0F 06 02 01 09 04 00 00 00 00 05 00 00 00 | 00 20 00 81 00")},
				// ChangePIN: the old PIN as a verify, then the new one twice.
				{c.verifyCode, unhex(t, "2D 2D 82 0F 00 0F 06 02 01 09 04 00 00 00 00 05 00 00 00 | 00 20 00 82 00")},
				{c.modify, unhex(t, "2D 2D 82 0F 00 00 00 0F 06 01 02 FF 09 04 00 01 00 00 00 00 05 00 00 00 | 00 24 01 82 00")},
			}
			if len(h.controls) != len(want) {
				t.Fatalf("%d control calls, want %d", len(h.controls), len(want))
			}
			for i, w := range want {
				if h.controls[i].code != w.code || !bytes.Equal(h.controls[i].in, w.in) {
					t.Errorf("control %d: 0x%08X %x\n          want 0x%08X %x", i, h.controls[i].code, h.controls[i].in, w.code, w.in)
				}
			}
		})
	}
}

// TestPadResults runs every two-byte result a pad returns through the card's VerifyPIN and
// ChangePIN, the way the ceremony sees them.
func TestPadResults(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		reply string
		want  error
	}{
		{"9000", nil},
		{"63C0", pinpad.ErrPINBlocked},
		{"6983", pinpad.ErrPINBlocked},
		// The vcard is not in its transport state: a 69 85 is then the reader's own.
		{"6985", new(pinpad.ReaderRefusedError)},
		{"6400", pinpad.ErrTimeout},
		{"6401", pinpad.ErrCancelled},
		{"6402", pinpad.ErrPINsDiffer},
		{"6403", pinpad.ErrPINLength},
		{"6B80", part10.ErrStructureRejected},
	} {
		t.Run(c.reply, func(t *testing.T) {
			card, _ := newFakeCard(t, reinerFeatures, func(code uint32, in []byte) ([]byte, error) {
				return unhex(t, c.reply), nil
			})
			matches := func(err error) bool {
				if want, ok := c.want.(*pinpad.ReaderRefusedError); ok {
					return errors.As(err, &want)
				}
				return errors.Is(err, c.want) && (c.want == nil) == (err == nil)
			}
			err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute)
			if !matches(err) {
				t.Errorf("verify: %v, want %v", err, c.want)
			}
			// The change's modify step sees the same result once its verify passed.
			card2, _ := newFakeCard(t, reinerFeatures, func(code uint32, in []byte) ([]byte, error) {
				if code == 0x42000DB2 {
					return []byte{0x90, 0x00}, nil
				}
				return unhex(t, c.reply), nil
			})
			if err := card2.ChangePIN(ctx, pinpad.SlotShare, time.Minute); !matches(err) {
				t.Errorf("change: %v, want %v", err, c.want)
			}
		})
	}
	for _, reply := range []string{"63C2", "63C1"} {
		card, _ := newFakeCard(t, reinerFeatures, func(uint32, []byte) ([]byte, error) { return unhex(t, reply), nil })
		var wp *pinpad.WrongPINError
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute); !errors.As(err, &wp) || fmt.Sprintf("63C%d", wp.Remaining) != reply {
			t.Errorf("%s: %v", reply, err)
		}
	}
	t.Run("69 85 the card confirms", func(t *testing.T) {
		card, h := newFakeCard(t, reinerFeatures, func(uint32, []byte) ([]byte, error) { return []byte{0x69, 0x85}, nil })
		h.transmit = func(cmd []byte) ([]byte, error) {
			if bytes.Equal(cmd, []byte{0x00, 0x20, 0x00, 0x81}) {
				return []byte{0x69, 0x85}, nil // the card's own answer: transport PIN
			}
			return h.card.Transmit(cmd)
		}
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute); !errors.Is(err, pinpad.ErrNullPIN) {
			t.Errorf("verify: %v, want ErrNullPIN", err)
		}
	})
	t.Run("old firmware", func(t *testing.T) {
		card, _ := newFakeCard(t, reinerFeatures, func(uint32, []byte) ([]byte, error) { return nil, scard.ErrUnsupportedFeature })
		err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute)
		var fe *pinpad.FirmwareError
		if !errors.As(err, &fe) || !errors.Is(err, pinpad.ErrNoPINPad) || !strings.Contains(err.Error(), "update the reader's firmware") {
			t.Errorf("verify on firmware that refuses part 10: %v", err)
		}
	})
	t.Run("driver errors", func(t *testing.T) {
		for reply, want := range map[scard.Error]error{
			scard.ErrRemovedCard:       pinpad.ErrCardRemoved,
			scard.ErrReaderUnavailable: pinpad.ErrReaderGone,
			scard.ErrNotTransacted:     scard.ErrNotTransacted, // "generic reader error": kept, with its code
		} {
			card, _ := newFakeCard(t, reinerFeatures, func(uint32, []byte) ([]byte, error) { return nil, reply })
			if err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute); !errors.Is(err, want) {
				t.Errorf("%v: %v, want %v", reply, err, want)
			}
		}
		card, _ := newFakeCard(t, reinerFeatures, func(uint32, []byte) ([]byte, error) { return []byte{0x90, 0x00, 0x00}, nil })
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute); err == nil {
			t.Error("a three-byte result was accepted")
		}
	})
}

func TestReaderWithoutVerifyFeature(t *testing.T) {
	for _, features := range []string{"", "08 04 42000DB4 09 04 42000DB5"} {
		card, h := newFakeCard(t, features, func(uint32, []byte) ([]byte, error) {
			t.Fatal("a PIN structure was sent to a reader without VERIFY_PIN_DIRECT")
			return nil, nil
		})
		ctx := context.Background()
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, time.Minute); !errors.Is(err, pinpad.ErrNoPINPad) {
			t.Errorf("features %q: verify %v, want ErrNoPINPad", features, err)
		}
		if err := card.ChangePIN(ctx, pinpad.SlotShare, time.Minute); !errors.Is(err, pinpad.ErrNoPINPad) {
			t.Errorf("features %q: change %v, want ErrNoPINPad", features, err)
		}
		if len(h.controls) != 0 {
			t.Errorf("control calls: %+v", h.controls)
		}
	}
}

func TestShow(t *testing.T) {
	f, _ := part10.ParseFeatures(unhex(t, reinerFeatures))
	for reply, want := range map[string]error{
		"01 02 02 00 90 00": nil,
		"01 02 02 00 6D 00": pinpad.ErrNoDisplay, // firmware without MKT_COMP
	} {
		h := &fakeHandle{answer: func(code uint32, in []byte) ([]byte, error) { return unhex(t, reply), nil }}
		if err := show(h, f, "Insert 1. card"); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", reply, err, want)
		}
		wantIn := append(unhex(t, "02 01 15 00 | 20 17 40 00 10 50 0E"), "Insert 1. card"...)
		if len(h.controls) != 1 || h.controls[0].code != 0x42000DB5 || !bytes.Equal(h.controls[0].in, wantIn) {
			t.Errorf("control: %+v, want MCT_UNIVERSAL %x", h.controls, wantIn)
		}
	}
	var se *pinpad.StatusError
	h := &fakeHandle{answer: func(uint32, []byte) ([]byte, error) { return unhex(t, "01 02 02 00 6A 82"), nil }}
	if err := show(h, f, "x"); !errors.As(err, &se) || se.SW != 0x6A82 {
		t.Errorf("6A 82: %v", err)
	}
	noMCT, _ := part10.ParseFeatures(unhex(t, "06 04 42000DB2"))
	h = &fakeHandle{answer: func(uint32, []byte) ([]byte, error) { t.Fatal("sent"); return nil, nil }}
	if err := show(h, noMCT, "x"); !errors.Is(err, pinpad.ErrNoDisplay) {
		t.Errorf("no MCT_UNIVERSAL: %v", err)
	}
}

func TestMapError(t *testing.T) {
	for in, want := range map[scard.Error]error{
		scard.ErrRemovedCard:        pinpad.ErrCardRemoved,
		scard.ErrNoSmartcard:        pinpad.ErrCardRemoved,
		scard.ErrResetCard:          pinpad.ErrCardRemoved,
		scard.ErrReaderUnavailable:  pinpad.ErrReaderGone,
		scard.ErrUnknownReader:      pinpad.ErrReaderGone,
		scard.ErrNoReadersAvailable: pinpad.ErrReaderGone,
		scard.ErrTimeout:            pinpad.ErrTimeout,
		scard.ErrSharingViolation:   scard.ErrSharingViolation,
	} {
		if err := mapError("op", in); !errors.Is(err, want) {
			t.Errorf("%v: %v, want %v", in, err, want)
		}
	}
	if err := mapError("op", errors.New("x")); err.Error() != "op: x" {
		t.Errorf("plain error: %v", err)
	}
}
