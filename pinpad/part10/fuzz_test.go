package part10

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseFeatures checks the feature TLV parser: no panic, and a list it accepts encodes back
// to the same features.
func FuzzParseFeatures(f *testing.F) {
	f.Add([]byte{0x06, 0x04, 0x42, 0x00, 0x0D, 0xB2, 0x07, 0x04, 0x42, 0x00, 0x0D, 0xB3})
	f.Fuzz(func(t *testing.T, b []byte) {
		feats, err := ParseFeatures(b)
		if err != nil {
			return
		}
		if len(b) != 6*len(feats) {
			t.Fatalf("%d bytes gave %d features", len(b), len(feats))
		}
		again, err := ParseFeatures(MarshalFeatures(feats))
		if err != nil || len(again) != len(feats) {
			t.Fatalf("round trip: %v", err)
		}
		for tag, code := range feats {
			if again[tag] != code {
				t.Fatalf("feature %02X changed", tag)
			}
		}
		_ = feats.String()
	})
}

// FuzzParsePINStructures checks both PIN structure parsers as a reader runs them: no panic,
// an accepted structure marshals back to the same bytes (bTimerOut2 aside), and completing it
// with a PIN never panics.
func FuzzParsePINStructures(f *testing.F) {
	f.Add([]byte{0x1E, 0x1E, 0x82, 0x0F, 0x00, 0x0F, 0x06, 0x02, 0x01, 0x09, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x81, 0x00})
	f.Add([]byte{0x3C, 0x3C, 0x82, 0x0F, 0x00, 0x00, 0x00, 0x0F, 0x06, 0x01, 0x02, 0x02, 0x09, 0x04, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x24, 0x01, 0x81, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		pin := []byte("123456")
		if v, err := ParsePINVerify(b); err == nil {
			if out, err := v.Marshal(); err == nil && (!bytes.Equal(out[2:12], b[2:12]) || !bytes.Equal(out[15:], b[15:])) {
				t.Fatalf("verify round trip\n in %x\nout %x", b, out)
			}
			if apdu, err := v.Fill(pin); err == nil && len(apdu) < 5 {
				t.Fatalf("filled APDU %x", apdu)
			}
		}
		if m, err := ParsePINModify(b); err == nil {
			if out, err := m.Marshal(); err == nil && (!bytes.Equal(out[2:17], b[2:17]) || !bytes.Equal(out[20:], b[20:])) {
				t.Fatalf("modify round trip\n in %x\nout %x", b, out)
			}
			m.Fill(pin, pin)
		}
	})
}

// FuzzPadReplies checks what the host parses of a pad's answers: the two-byte PIN result, the
// MCT_UNIVERSAL envelope, an INPUT's key and GET STATUS's firmware.
func FuzzPadReplies(f *testing.F) {
	f.Add([]byte{0x90, 0x00})
	f.Add([]byte{0x01, 0x02, 0x02, 0x00, 0x6D, 0x00})
	f.Add(append([]byte{0x01, 0x02, 29, 0x00, 0x46, 25}, "DESCTCJECA V3.0; Rev.  41\x90\x00"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if key, err := InputResult(b); err == nil && (key < KeyOK || key > KeyNoInput) {
			t.Fatalf("key %d from %x", key, b)
		}
		if fw, err := ParseStatus(b); err == nil && (fw.Ident == "" || !strings.Contains(string(b), fw.Ident)) {
			t.Fatalf("firmware %+v from %x", fw, b)
		}
		if err := Result("verify PIN", b); err == nil && !bytes.Equal(b, []byte{0x90, 0x00}) {
			t.Fatalf("%x accepted as success", b)
		}
		if sw, err := MCTResponse(b); err == nil && sw != uint16(b[len(b)-2])<<8|uint16(b[len(b)-1]) {
			t.Fatalf("status %04X from %x", sw, b)
		}
	})
}
