package cyberjacksim

import (
	"encoding/binary"
	"time"
)

// PIN-pad results as the two bytes a part 10 verify/modify returns (HARDWARE.md §1). Reiner's
// driver has no 64 03 (CCIDReader.cpp IfdVerifyPinDirect): the pad does not take OK before the
// minimum number of digits [I], so a too-short PIN ends in 64 00 if the operator stops there.
var (
	swTimeout   = []byte{0x64, 0x00}
	swCancelled = []byte{0x64, 0x01}
	swDiffer    = []byte{0x64, 0x02}
	swRejected  = []byte{0x6B, 0x80}
)

// reinerVerify and reinerModify report whether a structure has the shape Reiner's own
// builder gives it (CCIDReader.cpp cjccid_SecurePV / cjccid_SecureMV, called with no tag 53 or
// 54): byte units and left justification in bmFormatString, a format the pad knows,
// bEntryValidationCondition 01 (fixed length) or 02 (OK key), wLangId 0409, bTeoPrologue
// 00 00 00, and the messages it sets — verify bNumberMessage 01 with index 00, modify FF with
// indexes 00 01 00. The real reader would show or do something else for other values, which a
// test on this reader could not see; so this reader refuses them with 6B 80, the answer
// Reiner's driver gives for a structure the reader rejects.
func reinerVerify(in []byte) bool {
	return reinerFormat(in[2]) && reinerCondition(in[7]) && in[8] == 0x01 &&
		binary.LittleEndian.Uint16(in[9:11]) == 0x0409 && in[11] == 0x00 && zero(in[12:15])
}

func reinerModify(in []byte) bool {
	return reinerFormat(in[2]) && in[9] <= 0x03 && reinerCondition(in[10]) && in[11] == 0xFF &&
		binary.LittleEndian.Uint16(in[12:14]) == 0x0409 && in[14] == 0x00 && in[15] == 0x01 && in[16] == 0x00 &&
		zero(in[17:20])
}

func reinerFormat(fs byte) bool { return fs&0x80 != 0 && fs&0x04 == 0 && fs&0x03 <= 0x02 }

func reinerCondition(c byte) bool { return c == 0x01 || c == 0x02 }

func zero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// pinFormat is what the PIN structures say about how a PIN goes into the APDU.
type pinFormat struct {
	formatString byte // bmFormatString
	blockString  byte // bmPINBlockString
	lengthFormat byte // bmPINLengthFormat
	min, max     int  // from wPINMaxExtraDigit
	condition    byte // bEntryValidationCondition
	timeout      time.Duration
}

func (r *Reader) parseFormat(timerOut, fs, bs, lf byte, maxExtra uint16, cond byte) pinFormat {
	t := time.Duration(timerOut) * time.Second
	if timerOut == 0 {
		t = r.opts.DefaultTimeout
	}
	return pinFormat{fs, bs, lf, int(maxExtra >> 8), int(maxExtra & 0xff), cond, t}
}

// verifyPIN executes a PIN_VERIFY_STRUCTURE: 19 bytes of header, then the APDU template.
func (r *Reader) verifyPIN(in []byte) ([]byte, error) {
	if len(in) < 19 || int(binary.LittleEndian.Uint32(in[15:19])) != len(in)-19 {
		return nil, ErrBadStructure
	}
	f := r.parseFormat(in[0], in[2], in[3], in[4], binary.LittleEndian.Uint16(in[5:7]), in[7])
	tpl := in[19:]
	if len(tpl) < 5 || !f.valid() || !reinerVerify(in) {
		return swRejected, nil
	}
	card, err := r.poweredCard()
	if err != nil {
		return nil, err
	}
	pin, sw, err := r.readPIN("Enter PIN", f)
	if err != nil || sw != nil {
		return sw, err
	}
	defer clear(pin)
	apdu, ok := f.build(tpl, int(f.formatString>>3)&0x0f, pin, nil, 0)
	if !ok {
		return swRejected, nil
	}
	defer clear(apdu)
	return statusOf(r.transmitTo(card, apdu))
}

// modifyPIN executes a PIN_MODIFY_STRUCTURE: 24 bytes of header, then the APDU template.
func (r *Reader) modifyPIN(in []byte) ([]byte, error) {
	if len(in) < 24 || int(binary.LittleEndian.Uint32(in[20:24])) != len(in)-24 {
		return nil, ErrBadStructure
	}
	f := r.parseFormat(in[0], in[2], in[3], in[4], binary.LittleEndian.Uint16(in[7:9]), in[10])
	offOld, offNew, confirm := int(in[5]), int(in[6]), in[9]
	tpl := in[24:]
	if len(tpl) < 5 || !f.valid() || !reinerModify(in) {
		return swRejected, nil
	}
	card, err := r.poweredCard()
	if err != nil {
		return nil, err
	}
	// Each entry has its own bTimerOut: a PIN change's entries each get the whole time.
	var old []byte
	if confirm&0x02 != 0 {
		var sw []byte
		var err error
		if old, sw, err = r.readPIN("Enter old PIN", f); err != nil || sw != nil {
			return sw, err
		}
		defer clear(old)
	}
	pin, sw, err := r.readPIN("Enter new PIN", f)
	if err != nil || sw != nil {
		return sw, err
	}
	defer clear(pin)
	if confirm&0x01 != 0 {
		again, sw, err := r.readPIN("Confirm new PIN", f)
		if err != nil || sw != nil {
			return sw, err
		}
		same := string(again) == string(pin)
		clear(again)
		if !same {
			return swDiffer, nil
		}
	}
	var apdu []byte
	var ok bool
	if old != nil {
		apdu, ok = f.build(tpl, offOld, old, pin, offNew)
	} else {
		apdu, ok = f.build(tpl, offNew, pin, nil, 0)
	}
	if !ok {
		return swRejected, nil
	}
	defer clear(apdu)
	return statusOf(r.transmitTo(card, apdu))
}

// statusOf reduces a card response to its status word: a PIN command returns exactly two bytes.
func statusOf(resp []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	if len(resp) < 2 {
		return swRejected, nil
	}
	return resp[len(resp)-2:], nil
}

// readPIN runs one PIN entry on the pad. It returns the digits, or the two-byte result that
// ended the entry without a PIN, or [ErrUnplugged].
func (r *Reader) readPIN(prompt string, f pinFormat) ([]byte, []byte, error) {
	r.beginEntry("pin", prompt)
	r.setDisplay(prompt)
	defer r.endEntry(true)

	digits := make([]byte, 0, 16)
	timer := time.NewTimer(f.timeout)
	defer timer.Stop()
	for {
		k, ok, err := r.nextKey(timer.C)
		switch {
		case err != nil:
			clear(digits)
			return nil, nil, err
		case !ok:
			clear(digits)
			return nil, swTimeout, nil
		case k == KeyCancel:
			clear(digits)
			return nil, swCancelled, nil
		case k == KeyClear:
			clear(digits)
			digits = digits[:0]
		case k == KeyOK:
			if f.condition&0x02 != 0 && len(digits) >= f.min {
				return digits, nil, nil
			}
		case len(digits) < f.max:
			digits = append(digits, byte(k))
			if f.condition&0x01 != 0 && len(digits) == f.max {
				return digits, nil, nil
			}
		}
		r.setDisplay(prompt + " " + stars(len(digits)))
	}
}

func stars(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '*'
	}
	return string(b)
}

// valid reports whether the reader can honour the format at all.
func (f pinFormat) valid() bool {
	kind := f.formatString & 0x03
	return kind != 0x03 && f.min >= 1 && f.max >= f.min && f.max <= 16 && f.condition&0x07 != 0
}

// build puts pin (and pin2, for a change with the old PIN) into a copy of the APDU template.
//
// A template of just a header and Lc = 0 takes the PIN as its whole data field, Lc set to the
// PIN's length: the variable-length form Reiner's own driver sends. Otherwise the data field is
// a fixed block and the PIN is written at pos (bytes or bits, by bmFormatString b7), encoded
// binary, BCD or ASCII, left or right justified, with its length at the place
// bmPINLengthFormat names when bmPINBlockString asks for a length field.
func (f pinFormat) build(tpl []byte, pos int, pin, pin2 []byte, pos2 int) ([]byte, bool) {
	if len(tpl) < 5 {
		return nil, false
	}
	apdu := append([]byte(nil), tpl...)
	kind := f.formatString & 0x03
	if len(tpl) == 5 && tpl[4] == 0 {
		data := f.encode(pin, kind)
		if pin2 != nil {
			data = append(data, f.encode(pin2, kind)...)
		}
		if len(data) > 255 {
			return nil, false
		}
		apdu[4] = byte(len(data))
		return append(apdu, data...), true
	}
	data := apdu[5:]
	if int(apdu[4]) != len(data) {
		return nil, false
	}
	if pin2 == nil && pos == len(data) && f.formatString&0x80 != 0 && f.blockString>>4 == 0 {
		// The data ends where the PIN goes: the PIN is appended after the fixed prefix and Lc
		// grows (TCOS's first PIN after the NullPIN state: six 00 bytes, then the new PIN).
		enc := f.encode(pin, kind)
		if len(data)+len(enc) > 255 {
			clear(enc)
			return nil, false
		}
		apdu = append(apdu, enc...)
		clear(enc)
		apdu[4] = byte(len(apdu) - 5)
		return apdu, true
	}
	if !f.place(data, pos, pin, kind) {
		return nil, false
	}
	if pin2 != nil && !f.place(data, pos2, pin2, kind) {
		return nil, false
	}
	return apdu, true
}

func (f pinFormat) encode(pin []byte, kind byte) []byte {
	switch kind {
	case 0x02: // ASCII
		return append([]byte(nil), pin...)
	case 0x01: // BCD, padded with F
		out := make([]byte, (len(pin)+1)/2)
		for i := range out {
			out[i] = 0xff
		}
		for i, d := range pin {
			shift := 4 * (1 - i%2)
			out[i/2] = out[i/2]&^(0x0f<<shift) | (d-'0')<<shift
		}
		return out
	default: // binary: one byte per digit
		out := make([]byte, len(pin))
		for i, d := range pin {
			out[i] = d - '0'
		}
		return out
	}
}

// place writes one encoded PIN into a fixed block of data.
func (f pinFormat) place(data []byte, pos int, pin []byte, kind byte) bool {
	bytesUnits := f.formatString&0x80 != 0
	if !bytesUnits {
		if pos%8 != 0 {
			return false // bit-aligned PINs: no reader of this family needs them
		}
		pos /= 8
	}
	block := int(f.blockString & 0x0f)
	enc := f.encode(pin, kind)
	if block == 0 {
		block = len(enc)
	}
	if len(enc) > block || pos+block > len(data) {
		return false
	}
	at := pos
	if f.formatString&0x04 != 0 { // right justified
		at = pos + block - len(enc)
	}
	if kind == 0x01 && len(pin)%2 == 1 {
		// Odd BCD: keep the template's pad nibble in the last byte.
		copy(data[at:], enc[:len(enc)-1])
		last := at + len(enc) - 1
		data[last] = enc[len(enc)-1]&0xf0 | data[last]&0x0f
	} else {
		copy(data[at:], enc)
	}
	clear(enc)
	if bits := int(f.blockString >> 4); bits > 0 {
		lenPos := int(f.lengthFormat & 0x0f)
		if f.lengthFormat&0x10 != 0 {
			lenPos *= 8
		}
		if !setBits(data, lenPos, bits, len(pin)) {
			return false
		}
	}
	return true
}

// setBits writes value into n bits of data starting at bit pos (bit 0 = MSB of data[0]).
func setBits(data []byte, pos, n, value int) bool {
	if pos+n > 8*len(data) || n > 16 {
		return false
	}
	for i := 0; i < n; i++ {
		bit := (value >> (n - 1 - i)) & 1
		at := pos + i
		mask := byte(0x80 >> (at % 8))
		if bit == 1 {
			data[at/8] |= mask
		} else {
			data[at/8] &^= mask
		}
	}
	return true
}
