package tcos

// ATR is the answer to reset of a TCOS 3.0 card as OpenSC's card-tcos.c lists it first [V]:
//
//	3B BF 96 00 81 31 FE 5D 00 64 04 11 03 01 31 C0 73 F7 01 D0 00 90 00 7D
//
// OpenSC lists two more (…04 11 04 0F…74, 3B BF B6 …04 28 03 02…67) and matches them with the
// mask 3BBF..008131FE5D0064........31C073F701D0009000.. [V]: the interface byte TA1 (speed),
// the chip and version bytes and the check byte vary. The virtual card answers with it.
var ATR = []byte{0x3B, 0xBF, 0x96, 0x00, 0x81, 0x31, 0xFE, 0x5D, 0x00, 0x64, 0x04, 0x11, 0x03,
	0x01, 0x31, 0xC0, 0x73, 0xF7, 0x01, 0xD0, 0x00, 0x90, 0x00, 0x7D}

// ATRNoTB1 is the same card's answer without the interface byte TB1 (T0 9F instead of BF, one
// byte shorter, check byte recomputed): the 3B 9F form a TCOS 3 card on a newer chip may give
// [I: ISO 7816-3 drops TB1 (VPP); no public list shows such a TCOS ATR, so both forms are
// accepted and the survey reports which one a card gave].
var ATRNoTB1 = []byte{0x3B, 0x9F, 0x96, 0x81, 0x31, 0xFE, 0x5D, 0x00, 0x64, 0x04, 0x11, 0x03,
	0x01, 0x31, 0xC0, 0x73, 0xF7, 0x01, 0xD0, 0x00, 0x90, 0x00, 0x5D}

// IsTCOS reports whether atr is the answer to reset of a TCOS 3.0 card, in either form. Every
// other card (TCOS 2 included: its file system differs) is not a card of this appliance.
func IsTCOS(atr []byte) bool {
	return atrTCOS3.Match(atr) || atrTCOS3NoTB1.Match(atr)
}
