package cyberjacksim

import (
	"encoding/binary"
	"testing"
)

// waits reports whether a CT-BCS command would wait for a person (REQUEST ICC, EJECT ICC,
// INPUT): the fuzz target leaves those out, they are covered by the tests with keys.
func waits(cmd []byte) bool {
	return len(cmd) >= 2 && (cmd[1] == 0x12 || cmd[1] == 0x15 || cmd[1] == 0x16)
}

// FuzzControl feeds the driver's control input — what any PC/SC client can send it — to the
// part 10 and CT-BCS decoders: no panic, no reply longer than the caller's buffer.
func FuzzControl(f *testing.F) {
	f.Add(verifyVariable)
	f.Add(verifyFixed)
	f.Add(mustHex("1E 00 82 0F 00 00 00 0F 06 01 02 FF 09 04 00 01 00 00 00 00 05 00 00 00 00 24 01 81 00"))
	f.Add(mct(mustHex("20 13 00 46 00")))
	f.Add(mct(mustHex("20 17 40 00 07 50 05 48 65 6C 6C 6F")))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(Options{})
		for _, code := range []uint32{CtlVerifyPINDirect, CtlModifyPINDirect, CtlGetFeatureRequest} {
			if out, err := r.Control(code, b, 64); err == nil && len(out) > 64 {
				t.Fatalf("control %08X: %d bytes for a 64-byte buffer", code, len(out))
			}
		}
		if !waits(b) {
			if out, err := r.Control(CtlMCTReaderDirect, b, 32); err == nil && len(out) > 32 {
				t.Fatalf("reader direct: %d bytes", len(out))
			}
		}
		if len(b) < 4 || int(binary.LittleEndian.Uint16(b[2:4])) != len(b)-4 || !waits(b[4:]) {
			if out, err := r.Control(CtlMCTUniversal, b, 32); err == nil && len(out) > 32 {
				t.Fatalf("MCT universal: %d bytes", len(out))
			}
		}
		// A template of any shape with a PIN of any shape: the pad's APDU builder must not panic.
		if len(b) > 8 {
			fmt := pinFormat{formatString: b[0], blockString: b[1], lengthFormat: b[2], min: 1, max: 16, condition: 2}
			fmt.build(b[8:], int(b[3]), []byte("123456"), []byte("654321"), int(b[4]))
		}
	})
}
