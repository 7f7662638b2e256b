package part10

import (
	"encoding/binary"
	"fmt"
	"time"
)

// PIN formats of bmFormatString b1–0.
const (
	FormatBinary byte = 0x00
	FormatBCD    byte = 0x01
	FormatASCII  byte = 0x02
)

// Entry validation conditions (bEntryValidationCondition), ORed.
const (
	ValidateMaxLength byte = 0x01
	ValidateOKKey     byte = 0x02
	ValidateTimeout   byte = 0x04
)

// PINFormat is what both structures say about the PIN and where it goes in the APDU.
type PINFormat struct {
	// FormatString is bmFormatString: b7 units (1 bytes, 0 bits), b6–3 PIN position after the
	// 5-byte APDU header, b2 right justification, b1–0 FormatBinary/BCD/ASCII.
	FormatString byte
	// PINBlockString is bmPINBlockString: b7–4 bits of a PIN length field, b3–0 PIN block size.
	PINBlockString byte
	// PINLengthFormat is bmPINLengthFormat: b4 units, b3–0 position of the length field.
	PINLengthFormat byte
	// MinDigits and MaxDigits bound the PIN (wPINMaxExtraDigit).
	MinDigits, MaxDigits int
	// EntryValidation is bEntryValidationCondition.
	EntryValidation byte
}

func (f PINFormat) check() error {
	if f.MinDigits < 0 || f.MaxDigits > 255 || f.MinDigits > f.MaxDigits {
		return fmt.Errorf("%w: PIN length %d..%d", ErrBadStructure, f.MinDigits, f.MaxDigits)
	}
	return nil
}

func (f PINFormat) maxExtraDigit() uint16 { return uint16(f.MinDigits)<<8 | uint16(f.MaxDigits) }

// PINVerify is a PIN_VERIFY_STRUCTURE: read one PIN on the pad, put it into APDU, send that to
// the card, return the card's status word.
type PINVerify struct {
	// Timeout becomes bTimerOut and bTimerOut2 (whole seconds, rounded up, ≤ 255; 0 = the
	// reader's default).
	Timeout time.Duration
	PINFormat
	// NumberMessage is bNumberMessage: 00 none, 01 the message at MsgIndex, FF the default.
	NumberMessage byte
	LangID        uint16
	MsgIndex      byte
	// APDU is the command template the pad completes with the PIN.
	APDU []byte
}

const (
	verifyHeader = 19
	modifyHeader = 24
)

// Marshal builds the structure byte for byte: 19 bytes of header, then the APDU template.
// Two- and four-byte fields are little-endian, the host order of every platform the appliance
// runs on (pcsc-lite passes the buffer to the driver untouched).
func (v *PINVerify) Marshal() ([]byte, error) {
	if err := v.PINFormat.check(); err != nil {
		return nil, err
	}
	if len(v.APDU) < 4 || len(v.APDU) > 5+255 {
		return nil, fmt.Errorf("%w: APDU template of %d bytes", ErrBadStructure, len(v.APDU))
	}
	t := timerOut(v.Timeout)
	b := make([]byte, verifyHeader, verifyHeader+len(v.APDU))
	b[0] = t
	b[1] = t
	b[2] = v.FormatString
	b[3] = v.PINBlockString
	b[4] = v.PINLengthFormat
	binary.LittleEndian.PutUint16(b[5:7], v.maxExtraDigit())
	b[7] = v.EntryValidation
	b[8] = v.NumberMessage
	binary.LittleEndian.PutUint16(b[9:11], v.LangID)
	b[11] = v.MsgIndex
	// b[12:15] bTeoPrologue stays 00 00 00: T=1 prologue is the reader's business.
	binary.LittleEndian.PutUint32(b[15:19], uint32(len(v.APDU)))
	return append(b, v.APDU...), nil
}

// ParsePINVerify decodes a PIN_VERIFY_STRUCTURE as a reader does: the length must be exactly
// 19 + ulDataLength. Timeout is taken from bTimerOut.
func ParsePINVerify(b []byte) (*PINVerify, error) {
	if len(b) < verifyHeader {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadStructure, len(b), verifyHeader)
	}
	n := binary.LittleEndian.Uint32(b[15:19])
	if uint64(n) != uint64(len(b)-verifyHeader) {
		return nil, fmt.Errorf("%w: ulDataLength %d, %d bytes follow", ErrBadStructure, n, len(b)-verifyHeader)
	}
	extra := binary.LittleEndian.Uint16(b[5:7])
	return &PINVerify{
		Timeout: time.Duration(b[0]) * time.Second,
		PINFormat: PINFormat{
			FormatString: b[2], PINBlockString: b[3], PINLengthFormat: b[4],
			MinDigits: int(extra >> 8), MaxDigits: int(extra & 0xFF), EntryValidation: b[7],
		},
		NumberMessage: b[8],
		LangID:        binary.LittleEndian.Uint16(b[9:11]),
		MsgIndex:      b[11],
		APDU:          append([]byte(nil), b[verifyHeader:]...),
	}, nil
}

// PINModify is a PIN_MODIFY_STRUCTURE: read the new PIN (and, as ConfirmPIN says, the old PIN
// and the new one again) on the pad, put them into APDU, send it, return the status word.
type PINModify struct {
	Timeout time.Duration
	PINFormat
	// InsertionOffsetOld and InsertionOffsetNew are where the old and new PIN go, in the units
	// of FormatString, counted from the first data byte.
	InsertionOffsetOld, InsertionOffsetNew byte
	// ConfirmPIN is bConfirmPIN: b0 ask for the new PIN twice, b1 ask for the old PIN first.
	ConfirmPIN    byte
	NumberMessage byte
	LangID        uint16
	MsgIndex      [3]byte
	APDU          []byte
}

// Confirmation flags of bConfirmPIN.
const (
	ConfirmNewPIN byte = 0x01
	EnterOldPIN   byte = 0x02
)

// Marshal builds the structure byte for byte: 24 bytes of header, then the APDU template.
func (m *PINModify) Marshal() ([]byte, error) {
	if err := m.PINFormat.check(); err != nil {
		return nil, err
	}
	if len(m.APDU) < 4 || len(m.APDU) > 5+255 {
		return nil, fmt.Errorf("%w: APDU template of %d bytes", ErrBadStructure, len(m.APDU))
	}
	t := timerOut(m.Timeout)
	b := make([]byte, modifyHeader, modifyHeader+len(m.APDU))
	b[0] = t
	b[1] = t
	b[2] = m.FormatString
	b[3] = m.PINBlockString
	b[4] = m.PINLengthFormat
	b[5] = m.InsertionOffsetOld
	b[6] = m.InsertionOffsetNew
	binary.LittleEndian.PutUint16(b[7:9], m.maxExtraDigit())
	b[9] = m.ConfirmPIN
	b[10] = m.EntryValidation
	b[11] = m.NumberMessage
	binary.LittleEndian.PutUint16(b[12:14], m.LangID)
	copy(b[14:17], m.MsgIndex[:])
	binary.LittleEndian.PutUint32(b[20:24], uint32(len(m.APDU)))
	return append(b, m.APDU...), nil
}

// ParsePINModify decodes a PIN_MODIFY_STRUCTURE; the length must be exactly 24 + ulDataLength.
func ParsePINModify(b []byte) (*PINModify, error) {
	if len(b) < modifyHeader {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadStructure, len(b), modifyHeader)
	}
	n := binary.LittleEndian.Uint32(b[20:24])
	if uint64(n) != uint64(len(b)-modifyHeader) {
		return nil, fmt.Errorf("%w: ulDataLength %d, %d bytes follow", ErrBadStructure, n, len(b)-modifyHeader)
	}
	extra := binary.LittleEndian.Uint16(b[7:9])
	m := &PINModify{
		Timeout: time.Duration(b[0]) * time.Second,
		PINFormat: PINFormat{
			FormatString: b[2], PINBlockString: b[3], PINLengthFormat: b[4],
			MinDigits: int(extra >> 8), MaxDigits: int(extra & 0xFF), EntryValidation: b[10],
		},
		InsertionOffsetOld: b[5],
		InsertionOffsetNew: b[6],
		ConfirmPIN:         b[9],
		NumberMessage:      b[11],
		LangID:             binary.LittleEndian.Uint16(b[12:14]),
		APDU:               append([]byte(nil), b[modifyHeader:]...),
	}
	copy(m.MsgIndex[:], b[14:17])
	return m, nil
}

// Fill does what a pad does with a verify structure once the operator has typed pin (ASCII
// digits): it returns the APDU to send to the card. The simulator's pad and tests use it; the
// caller clears both pin and the result after use.
func (v *PINVerify) Fill(pin []byte) ([]byte, error) {
	if err := v.PINFormat.accepts(pin); err != nil {
		return nil, err
	}
	pos := int(v.FormatString>>3) & 0x0F
	return v.PINFormat.fill(v.APDU, pin, pos, nil, 0)
}

// Fill does what a pad does with a modify structure: old is nil unless ConfirmPIN asks for the
// old PIN. The caller clears the PINs and the result after use.
func (m *PINModify) Fill(old, pin []byte) ([]byte, error) {
	if err := m.PINFormat.accepts(pin); err != nil {
		return nil, err
	}
	if m.ConfirmPIN&EnterOldPIN == 0 {
		return m.PINFormat.fill(m.APDU, pin, int(m.InsertionOffsetNew), nil, 0)
	}
	if err := m.PINFormat.accepts(old); err != nil {
		return nil, err
	}
	return m.PINFormat.fill(m.APDU, old, int(m.InsertionOffsetOld), pin, int(m.InsertionOffsetNew))
}

// accepts checks a typed PIN against the format's length bounds and digit alphabet.
func (f PINFormat) accepts(pin []byte) error {
	if len(pin) < f.MinDigits || len(pin) > f.MaxDigits {
		return fmt.Errorf("fill pin: %d digits, want %d..%d", len(pin), f.MinDigits, f.MaxDigits)
	}
	for _, d := range pin {
		if d < '0' || d > '9' {
			return fmt.Errorf("fill pin: not a digit")
		}
	}
	return nil
}

// fill copies the template and writes the PIN(s) into it. A template that is a bare header
// with Lc = 00 takes the PIN(s) as its whole data field and Lc becomes their length: the
// variable-length form Reiner's driver sends. Otherwise each PIN goes at its offset (bytes or
// bits) in the data field, encoded and justified as FormatString says, and its length into
// the length field when PINBlockString asks for one.
func (f PINFormat) fill(tpl, pin []byte, pos int, pin2 []byte, pos2 int) ([]byte, error) {
	kind := f.FormatString & 0x03
	if kind == 0x03 {
		return nil, fmt.Errorf("%w: PIN format 3", ErrBadStructure)
	}
	if len(tpl) == 5 && tpl[4] == 0 {
		data := encodePIN(pin, kind)
		if pin2 != nil {
			data = append(data, encodePIN(pin2, kind)...)
		}
		if len(data) > 255 {
			clear(data)
			return nil, fmt.Errorf("%w: PIN data of %d bytes", ErrBadStructure, len(data))
		}
		out := append(append([]byte(nil), tpl[:4]...), byte(len(data)))
		out = append(out, data...)
		clear(data)
		return out, nil
	}
	if len(tpl) < 5 || int(tpl[4]) != len(tpl)-5 {
		return nil, fmt.Errorf("%w: template Lc does not match its data", ErrBadStructure)
	}
	if pin2 == nil && pos == int(tpl[4]) && f.FormatString&0x80 != 0 && f.PINBlockString>>4 == 0 {
		// The data ends where the PIN goes: a variable-length PIN after a fixed prefix (TCOS's
		// 00 24 00 ref 06 000000000000 ‖ new PIN that leaves the NullPIN state). The PIN is
		// appended and Lc grows by its length, as in the header-only form.
		data := encodePIN(pin, kind)
		defer clear(data)
		if len(tpl)-5+len(data) > 255 {
			return nil, fmt.Errorf("%w: PIN data of %d bytes", ErrBadStructure, len(tpl)-5+len(data))
		}
		out := append(append([]byte(nil), tpl...), data...)
		out[4] = byte(len(out) - 5)
		return out, nil
	}
	out := append([]byte(nil), tpl...)
	if err := f.place(out[5:], pos, pin, kind); err != nil {
		clear(out)
		return nil, err
	}
	if pin2 != nil {
		if err := f.place(out[5:], pos2, pin2, kind); err != nil {
			clear(out)
			return nil, err
		}
	}
	return out, nil
}

func encodePIN(pin []byte, kind byte) []byte {
	switch kind {
	case FormatASCII:
		return append([]byte(nil), pin...)
	case FormatBCD:
		out := make([]byte, (len(pin)+1)/2)
		for i := range out {
			out[i] = 0xFF
		}
		for i, d := range pin {
			shift := 4 * uint(1-i%2)
			out[i/2] = out[i/2]&^(0x0F<<shift) | (d-'0')<<shift
		}
		return out
	default:
		out := make([]byte, len(pin))
		for i, d := range pin {
			out[i] = d - '0'
		}
		return out
	}
}

func (f PINFormat) place(data []byte, pos int, pin []byte, kind byte) error {
	if f.FormatString&0x80 == 0 { // positions in bits
		if pos%8 != 0 {
			return fmt.Errorf("%w: PIN at bit %d", ErrBadStructure, pos)
		}
		pos /= 8
	}
	enc := encodePIN(pin, kind)
	defer clear(enc)
	block := int(f.PINBlockString & 0x0F)
	if block == 0 {
		block = len(enc)
	}
	if len(enc) > block || pos+block > len(data) {
		return fmt.Errorf("%w: PIN block does not fit the template", ErrBadStructure)
	}
	at := pos
	if f.FormatString&0x04 != 0 {
		at = pos + block - len(enc)
	}
	copy(data[at:], enc)
	if bits := int(f.PINBlockString >> 4); bits > 0 {
		lenPos := int(f.PINLengthFormat & 0x0F)
		if f.PINLengthFormat&0x10 != 0 {
			lenPos *= 8
		}
		if lenPos+bits > 8*len(data) {
			return fmt.Errorf("%w: PIN length field outside the template", ErrBadStructure)
		}
		for i := 0; i < bits; i++ {
			at := lenPos + i
			mask := byte(0x80 >> uint(at%8))
			if (len(pin)>>uint(bits-1-i))&1 == 1 {
				data[at/8] |= mask
			} else {
				data[at/8] &^= mask
			}
		}
	}
	return nil
}
