package cyberjacksim

import (
	"encoding/binary"
	"time"
)

// PIN-pad results as the two bytes a part 10 verify/modify returns (HARDWARE.md §1).
var (
	swTimeout   = []byte{0x64, 0x00}
	swCancelled = []byte{0x64, 0x01}
	swDiffer    = []byte{0x64, 0x02}
	swLength    = []byte{0x64, 0x03}
	swRejected  = []byte{0x6B, 0x80}
)

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
	if len(tpl) < 5 || !f.valid() {
		return swRejected, nil
	}
	card, err := r.poweredCard()
	if err != nil {
		return nil, err
	}
	pin, sw := r.readPIN("Enter PIN", f)
	if sw != nil {
		return sw, nil
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
	if len(tpl) < 5 || !f.valid() {
		return swRejected, nil
	}
	card, err := r.poweredCard()
	if err != nil {
		return nil, err
	}
	var old []byte
	if confirm&0x02 != 0 {
		var sw []byte
		if old, sw = r.readPIN("Enter old PIN", f); sw != nil {
			return sw, nil
		}
		defer clear(old)
	}
	pin, sw := r.readPIN("Enter new PIN", f)
	if sw != nil {
		return sw, nil
	}
	defer clear(pin)
	if confirm&0x01 != 0 {
		again, sw := r.readPIN("Confirm new PIN", f)
		if sw != nil {
			return sw, nil
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
// ended the entry without a PIN.
func (r *Reader) readPIN(prompt string, f pinFormat) ([]byte, []byte) {
	r.mu.Lock()
	for len(r.keys) > 0 { // keys pressed before the prompt do not count
		<-r.keys
	}
	r.entry = prompt
	r.entrySeq++
	r.display = prompt
	r.changed.Broadcast()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.entry = ""
		r.display = ""
		r.changed.Broadcast()
		r.mu.Unlock()
	}()

	digits := make([]byte, 0, 16)
	timer := time.NewTimer(f.timeout)
	defer timer.Stop()
	finish := func() ([]byte, []byte) {
		if len(digits) < f.min || len(digits) > f.max {
			clear(digits)
			return nil, swLength
		}
		return digits, nil
	}
	for {
		select {
		case <-timer.C:
			if f.condition&0x04 != 0 && len(digits) > 0 {
				return finish()
			}
			clear(digits)
			return nil, swTimeout
		case k := <-r.keys:
			switch {
			case k == KeyCancel:
				clear(digits)
				return nil, swCancelled
			case k == KeyClear:
				clear(digits)
				digits = digits[:0]
			case k == KeyOK:
				if f.condition&0x02 != 0 {
					return finish()
				}
			case len(digits) < f.max:
				digits = append(digits, byte(k))
				if f.condition&0x01 != 0 && len(digits) == f.max {
					return finish()
				}
			}
			r.setDisplay(prompt + " " + stars(len(digits)))
		}
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
