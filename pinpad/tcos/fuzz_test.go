package tcos_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// FuzzATR checks that recognising an ATR never panics and accepts only 24-byte answers that
// keep the mask's fixed bytes.
func FuzzATR(f *testing.F) {
	f.Add(tcos.ATR)
	f.Fuzz(func(t *testing.T, atr []byte) {
		if !tcos.IsTCOS(atr) {
			return
		}
		if len(atr) != 24 || atr[0] != 0x3B || atr[1] != 0xBF || !bytes.Equal(atr[14:23], []byte{0x31, 0xC0, 0x73, 0xF7, 0x01, 0xD0, 0x00, 0x90, 0x00}) {
			t.Fatalf("accepted %x", atr)
		}
	})
}

// replay is a card whose responses come from the fuzzer: each is a length byte and that many
// bytes; when they run out the card answers 6D 00.
type replay struct{ data []byte }

func (r *replay) Transmit(_ context.Context, apdu []byte) ([]byte, error) {
	if len(apdu) < 4 {
		panic("tcos sent an APDU shorter than a header")
	}
	if len(apdu) > 5 && int(apdu[4]) != len(apdu)-5 && int(apdu[4]) != len(apdu)-6 {
		panic("tcos sent an APDU whose Lc does not match its data")
	}
	if len(r.data) == 0 {
		return []byte{0x6D, 0x00}, nil
	}
	n := int(r.data[0])
	r.data = r.data[1:]
	n = min(n, len(r.data))
	resp := bytes.Clone(r.data[:n])
	r.data = r.data[n:]
	return resp, nil
}

// FuzzResponses feeds arbitrary card responses to everything tcos parses: GET RESPONSE and
// Le corrections, the FCP, EF_GDO, the try counter and a slot's length prefix and data.
func FuzzResponses(f *testing.F) {
	// A well-behaved card: select MF, FCP of GDO, GDO, PIN status, FCP of the share file,
	// length 3, the data.
	f.Add([]byte("\x02\x90\x00" +
		"\x0f\x62\x0b\x80\x02\x00\x04\x82\x01\x01\x83\x02\x2f\x02\x90\x00" +
		"\x06\x5a\x02\xca\xfe\x90\x00" +
		"\x02\x63\xc2" +
		"\x0f\x62\x0b\x80\x02\x04\x00\x82\x01\x01\x83\x02\x4b\x01\x90\x00" +
		"\x04\x00\x03\x90\x00" +
		"\x05abc\x90\x00"))
	// GET RESPONSE and a wrong Le.
	f.Add([]byte("\x02\x90\x00\x08\x62\x0b\x80\x02\x00\x04\x61\x07\x09\x82\x01\x01\x83\x02\x2f\x02\x90\x00\x02\x6c\x04\x06\x5a\x02\xca\xfe\x90\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		c, err := tcos.Open(ctx, &replay{data: data}, tcos.ATR, nil)
		if err != nil {
			return
		}
		if c.Serial() == "" {
			t.Fatal("opened a card with an empty serial")
		}
		if n, err := c.PINTries(ctx, pinpad.SlotShare); err == nil && (n < 0 || n > 15) {
			t.Fatalf("tries %d", n)
		}
		if b, err := c.Read(ctx, pinpad.SlotShare); err == nil && (len(b) == 0 || len(b) > 0x7FFF) {
			t.Fatalf("read %d bytes", len(b))
		}
		c.Write(ctx, pinpad.SlotUser, []byte("x"))
	})
}
