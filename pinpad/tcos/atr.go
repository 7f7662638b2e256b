package tcos

// atrMask recognises TCOS 3.0 cards. OpenSC's card-tcos.c lists
//
//	3B BF 96 00 81 31 FE 5D 00 64 04 11 03 01 31 C0 73 F7 01 D0 00 90 00 7D
//	3B BF 96 00 81 31 FE 5D 00 64 04 11 04 0F 31 C0 73 F7 01 D0 00 90 00 74
//	3B BF B6 00 81 31 FE 5D 00 64 04 28 03 02 31 C0 73 F7 01 D0 00 90 00 67
//
// with the mask 3BBF..008131FE5D0064........31C073F701D0009000.. [V]: the interface byte TA1
// (speed), the chip and version bytes and the check byte vary.
var atrMask = struct{ value, mask [24]byte }{
	value: [24]byte{0x3B, 0xBF, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x5D, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00,
		0x31, 0xC0, 0x73, 0xF7, 0x01, 0xD0, 0x00, 0x90, 0x00, 0x00},
	mask: [24]byte{0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00,
		0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00},
}

// ATR is the answer to reset of a TCOS 3.0 card as OpenSC lists it first; the virtual card
// answers with it.
var ATR = []byte{0x3B, 0xBF, 0x96, 0x00, 0x81, 0x31, 0xFE, 0x5D, 0x00, 0x64, 0x04, 0x11, 0x03,
	0x01, 0x31, 0xC0, 0x73, 0xF7, 0x01, 0xD0, 0x00, 0x90, 0x00, 0x7D}

// IsTCOS reports whether atr is the answer to reset of a TCOS 3.0 card. Every other card
// (TCOS 2 included: its file system differs) is not a card of this appliance.
func IsTCOS(atr []byte) bool {
	if len(atr) != len(atrMask.value) {
		return false
	}
	for i, b := range atr {
		if b&atrMask.mask[i] != atrMask.value[i] {
			return false
		}
	}
	return true
}
