// Package tcos speaks the TCOS 3.0 card protocol in APDUs: it recognises a TCOS card by its
// answer to reset, reads its serial number, reads a PIN's retry counter without spending a try,
// has PINs verified and changed on a PIN pad, and reads and writes the card's two data slots.
//
// It sits between a [Transport] (APDUs to one card: PC/SC, or a virtual card) and a [PINPad]
// (the reader's secure PIN entry: PC/SC part 10, or the simulator's pad). The same code runs
// against real cards and virtual ones; only those two interfaces differ.
//
// # Card layout
//
// Each slot is a transparent EF under the MF holding a 2-byte big-endian length and then the
// data; its READ BINARY and UPDATE BINARY need the slot's local PIN. Reads and writes go in
// chunks of at most 255 bytes by offset (short APDUs, no chaining). A write first sets the
// length to zero, writes the data, then the length, and reads everything back: an interrupted
// write leaves an empty or unverifiable slot, never a plausible wrong one.
//
// pinpad/README.md lists which APDUs and facts are taken from public sources and which are
// assumptions to check on a real card.
//
// What this package must never do: see a PIN (the pad puts it into the VERIFY and CHANGE
// REFERENCE DATA commands), know what the bytes in a slot mean, or leave slot data in a buffer
// it does not return.
package tcos

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
)

// PINPad is a reader's secure PIN entry. It reads the PIN from the operator, completes the
// command template of the structure with it, sends that to the card and returns the two-byte
// result: the card's status word, or the pad's own 64 xx / 6B 80.
type PINPad interface {
	VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error)
	ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error)
}

// ErrBadRecord is a slot whose length prefix does not fit its file.
var ErrBadRecord = errors.New("the card's data slot is damaged (bad length)")

// Card is a TCOS card reached through a transport. It implements every method of
// [pinpad.Card] except Close, which belongs to the backend that owns the connection.
// It is not safe for concurrent use.
type Card struct {
	tr     Transport
	pad    PINPad
	atr    []byte
	serial string
}

// Open checks atr ([pinpad.ErrNotTCOS] for any other card), selects the MF and reads the
// serial number. pad may be nil: the card then refuses PIN entry with [pinpad.ErrNoPINPad].
func Open(ctx context.Context, tr Transport, atr []byte, pad PINPad) (*Card, error) {
	if !IsTCOS(atr) {
		return nil, pinpad.ErrNotTCOS
	}
	c := &Card{tr: tr, pad: pad, atr: append([]byte(nil), atr...)}
	if err := c.selectMF(ctx); err != nil {
		return nil, err
	}
	gdo, err := c.readFile(ctx, FileGDO, "read serial number")
	if err != nil {
		return nil, err
	}
	sn, err := ParseGDO(gdo)
	if err != nil {
		return nil, err
	}
	c.serial = strings.ToUpper(hex.EncodeToString(sn))
	return c, nil
}

// Serial is the card's serial number (EF_GDO tag 5A) in upper-case hex.
func (c *Card) Serial() string { return c.serial }

// ATR is the card's answer to reset.
func (c *Card) ATR() []byte { return append([]byte(nil), c.atr...) }

func (c *Card) selectMF(ctx context.Context) error {
	_, sw, err := c.transmit(ctx, []byte{0x00, 0xA4, 0x00, 0x0C})
	if err != nil {
		return fmt.Errorf("select master file: %w", err)
	}
	if err := checkSW("select master file", sw); err != nil {
		return err
	}
	return nil
}

// selectEF selects an EF under the MF by path (P1 08) and returns its size from the FCP.
func (c *Card) selectEF(ctx context.Context, fid uint16, op string) (int, error) {
	apdu := []byte{0x00, 0xA4, 0x08, 0x04, 0x02, byte(fid >> 8), byte(fid), 0x00}
	fcp, sw, err := c.transmit(ctx, apdu)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := checkSW(op, sw); err != nil {
		return 0, err
	}
	size, err := ParseFCPSize(fcp)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if size > maxFileSize {
		// READ/UPDATE BINARY offsets have 15 bits; a larger size is not a file of ours.
		return 0, fmt.Errorf("%s: file of %d bytes: %w", op, size, ErrBadRecord)
	}
	return size, nil
}

const maxFileSize = 0x7FFF

// readBinary reads n bytes at off in chunks of at most 255.
func (c *Card) readBinary(ctx context.Context, off, n int, op string) ([]byte, error) {
	out := make([]byte, 0, n)
	for n > 0 {
		chunk := min(n, maxChunk)
		data, sw, err := c.transmit(ctx, []byte{0x00, 0xB0, byte(off >> 8), byte(off), byte(chunk)})
		if err != nil {
			clear(out)
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if sw == swEndOfFile || sw == swOK && len(data) != chunk {
			clear(data)
			clear(out)
			return nil, fmt.Errorf("%s: %w", op, ErrBadRecord)
		}
		if err := checkSW(op, sw); err != nil {
			clear(data)
			clear(out)
			return nil, err
		}
		out = append(out, data...)
		clear(data)
		off += chunk
		n -= chunk
	}
	return out, nil
}

// updateBinary writes data at off in chunks of at most 255.
func (c *Card) updateBinary(ctx context.Context, off int, data []byte, op string) error {
	for len(data) > 0 {
		chunk := min(len(data), maxChunk)
		apdu := make([]byte, 0, 5+chunk)
		apdu = append(apdu, 0x00, 0xD6, byte(off>>8), byte(off), byte(chunk))
		apdu = append(apdu, data[:chunk]...)
		_, sw, err := c.transmit(ctx, apdu)
		clear(apdu)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if err := checkSW(op, sw); err != nil {
			return err
		}
		off += chunk
		data = data[chunk:]
	}
	return nil
}

// readFile reads a whole small file that needs no PIN (EF_GDO).
func (c *Card) readFile(ctx context.Context, fid uint16, op string) ([]byte, error) {
	size, err := c.selectEF(ctx, fid, op)
	if err != nil {
		return nil, err
	}
	if size > 255 {
		return nil, fmt.Errorf("%s: file of %d bytes: %w", op, size, ErrBadRecord)
	}
	return c.readBinary(ctx, 0, size, op)
}

// PINTries reads the slot's retry counter with a VERIFY that carries no PIN (ISO 7816-4:
// 63 Cx with x tries left, 90 00 when the PIN is already verified). A blocked PIN has 0 tries
// and no error. [U] on TCOS 3 whether such a VERIFY counts as a try: check on a real card.
func (c *Card) PINTries(ctx context.Context, slot pinpad.Slot) (int, error) {
	ref, err := PINRef(slot)
	if err != nil {
		return 0, err
	}
	_, sw, err := c.transmit(ctx, []byte{0x00, 0x20, 0x00, ref})
	if err != nil {
		return 0, fmt.Errorf("read PIN tries: %w", err)
	}
	switch {
	case sw == swOK:
		return MaxTries, nil
	case sw == swPINBlocked:
		return 0, nil
	case sw&0xFFF0 == 0x63C0:
		return int(sw & 0x0F), nil
	}
	return 0, checkSW("read PIN tries", sw)
}

// VerifyPINCommand is the structure VerifyPIN hands to the pad: the slot's PIN as 6 to 15
// ASCII digits, confirmed with OK, put by the pad into VERIFY 00 20 00 ref with Lc set to the
// PIN's length (the variable-length form of Reiner's driver [V]; TCOS takes unpadded ASCII
// PINs [V OpenSC]).
func VerifyPINCommand(slot pinpad.Slot, timeout time.Duration) (*part10.PINVerify, error) {
	ref, err := PINRef(slot)
	if err != nil {
		return nil, err
	}
	return &part10.PINVerify{
		Timeout:       timeout,
		PINFormat:     pinFormat(),
		NumberMessage: 0x01,
		LangID:        0x0409,
		MsgIndex:      0x00, // "Enter PIN"
		APDU:          []byte{0x00, 0x20, 0x00, ref, 0x00},
	}, nil
}

// ChangePINCommand is the structure ChangePIN hands to the pad after the old PIN was verified:
// the new PIN twice, put into CHANGE REFERENCE DATA 00 24 01 ref (P1 01: new PIN only, the old
// one was verified just before [I: TCOS P1 semantics from HARDWARE.md §3]).
func ChangePINCommand(slot pinpad.Slot, timeout time.Duration) (*part10.PINModify, error) {
	ref, err := PINRef(slot)
	if err != nil {
		return nil, err
	}
	return &part10.PINModify{
		Timeout:    timeout,
		PINFormat:  pinFormat(),
		ConfirmPIN: part10.ConfirmNewPIN,
		// The messages as Reiner's own builder sets them for a modify (CCIDReader.cpp
		// cjccid_SecureMV: bNumberMessage FF, indexes 00 01 00); the virtual cyberJack refuses
		// any other shape, so a mismatch shows in tests.
		NumberMessage: 0xFF,
		LangID:        0x0409,
		MsgIndex:      [3]byte{0x00, 0x01, 0x00},
		APDU:          []byte{0x00, 0x24, 0x01, ref, 0x00},
	}, nil
}

func pinFormat() part10.PINFormat {
	return part10.PINFormat{
		FormatString:    0x80 | part10.FormatASCII, // bytes, PIN at offset 0, left, ASCII
		PINBlockString:  0x0F,
		PINLengthFormat: 0x00,
		MinDigits:       MinPINDigits,
		MaxDigits:       MaxPINDigits,
		EntryValidation: part10.ValidateOKKey,
	}
}

// VerifyPIN has the operator enter the slot's PIN on the pad.
func (c *Card) VerifyPIN(ctx context.Context, slot pinpad.Slot, timeout time.Duration) error {
	if c.pad == nil {
		return pinpad.ErrNoPINPad
	}
	v, err := VerifyPINCommand(slot, timeout)
	if err != nil {
		return err
	}
	res, err := c.pad.VerifyPIN(ctx, v)
	if err != nil {
		return fmt.Errorf("verify PIN: %w", err)
	}
	return part10.Result("verify PIN", res)
}

// ChangePIN has the operator enter the old PIN (a verify), then the new PIN twice.
func (c *Card) ChangePIN(ctx context.Context, slot pinpad.Slot, timeout time.Duration) error {
	if c.pad == nil {
		return pinpad.ErrNoPINPad
	}
	if err := c.VerifyPIN(ctx, slot, timeout); err != nil {
		return err
	}
	m, err := ChangePINCommand(slot, timeout)
	if err != nil {
		return err
	}
	res, err := c.pad.ModifyPIN(ctx, m)
	if err != nil {
		return fmt.Errorf("change PIN: %w", err)
	}
	return part10.Result("change PIN", res)
}

// Read returns the slot's data: [pinpad.ErrEmpty] when it holds none, [pinpad.ErrAccessDenied]
// when its PIN was not verified.
func (c *Card) Read(ctx context.Context, slot pinpad.Slot) ([]byte, error) {
	fid, err := SlotFile(slot)
	if err != nil {
		return nil, err
	}
	op := "read " + slot.String()
	size, err := c.selectEF(ctx, fid, op)
	if err != nil {
		return nil, err
	}
	return c.readSlot(ctx, size, op)
}

func (c *Card) readSlot(ctx context.Context, size int, op string) ([]byte, error) {
	if size < 2 {
		return nil, fmt.Errorf("%s: %w", op, ErrBadRecord)
	}
	prefix, err := c.readBinary(ctx, 0, 2, op)
	if err != nil {
		return nil, err
	}
	n := int(prefix[0])<<8 | int(prefix[1])
	if n == 0 {
		return nil, pinpad.ErrEmpty
	}
	if n > size-2 {
		return nil, fmt.Errorf("%s: %w", op, ErrBadRecord)
	}
	return c.readBinary(ctx, 2, n, op)
}

// Write replaces the slot's data and reads it back: [pinpad.ErrWriteVerify] when the card
// returns something else, [pinpad.ErrTooLarge] when it does not fit. Writing no data empties
// the slot.
func (c *Card) Write(ctx context.Context, slot pinpad.Slot, data []byte) error {
	fid, err := SlotFile(slot)
	if err != nil {
		return err
	}
	op := "write " + slot.String()
	size, err := c.selectEF(ctx, fid, op)
	if err != nil {
		return err
	}
	if len(data) > 0xFFFF || 2+len(data) > size {
		return fmt.Errorf("%s: %d bytes, the slot takes %d: %w", op, len(data), max(size-2, 0), pinpad.ErrTooLarge)
	}
	if err := c.updateBinary(ctx, 0, []byte{0, 0}, op); err != nil {
		return err
	}
	if len(data) > 0 {
		if err := c.updateBinary(ctx, 2, data, op); err != nil {
			return err
		}
		if err := c.updateBinary(ctx, 0, []byte{byte(len(data) >> 8), byte(len(data))}, op); err != nil {
			return err
		}
	}
	back, err := c.readSlot(ctx, size, "read back "+slot.String())
	switch {
	case errors.Is(err, pinpad.ErrEmpty) && len(data) == 0:
		return nil
	case errors.Is(err, pinpad.ErrEmpty), errors.Is(err, ErrBadRecord):
		return fmt.Errorf("%s: %w", op, pinpad.ErrWriteVerify)
	case err != nil:
		return err
	}
	defer clear(back)
	if len(back) != len(data) || subtle.ConstantTimeCompare(back, data) != 1 {
		return fmt.Errorf("%s: %w", op, pinpad.ErrWriteVerify)
	}
	return nil
}

// ParseGDO returns the serial number (tag 5A) from the contents of EF_GDO, a sequence of
// BER-TLVs [V OpenSC sc_parse_ef_gdo].
func ParseGDO(b []byte) ([]byte, error) {
	for len(b) > 0 {
		if b[0] == 0x00 || b[0] == 0xFF { // padding between or after objects
			b = b[1:]
			continue
		}
		tag, val, rest, err := nextTLV(b)
		if err != nil {
			return nil, fmt.Errorf("read serial number: %w", err)
		}
		if tag == 0x5A {
			if len(val) == 0 {
				return nil, errors.New("read serial number: empty serial")
			}
			return bytes.Clone(val), nil
		}
		b = rest
	}
	return nil, errors.New("read serial number: EF_GDO holds no serial (tag 5A)")
}

// ParseFCPSize returns the file size from a SELECT's FCP template 62 (tag 80, or 81 when 80
// is absent).
func ParseFCPSize(b []byte) (int, error) {
	tag, fcp, _, err := nextTLV(b)
	if err != nil {
		return 0, fmt.Errorf("parse file control parameters: %w", err)
	}
	if tag != 0x62 {
		return 0, fmt.Errorf("parse file control parameters: tag %X, want 62", tag)
	}
	size := -1
	for len(fcp) > 0 {
		t, v, rest, err := nextTLV(fcp)
		if err != nil {
			return 0, fmt.Errorf("parse file control parameters: %w", err)
		}
		if (t == 0x80 || t == 0x81 && size < 0) && len(v) > 0 && len(v) <= 3 {
			n := 0
			for _, x := range v {
				n = n<<8 | int(x)
			}
			size = n
		}
		fcp = rest
	}
	if size < 0 {
		return 0, errors.New("parse file control parameters: no file size")
	}
	return size, nil
}

// nextTLV splits one BER-TLV off b: tags of one or two bytes, lengths of one to three bytes.
func nextTLV(b []byte) (tag int, val, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, errors.New("truncated TLV")
	}
	tag = int(b[0])
	i := 1
	if b[0]&0x1F == 0x1F {
		if b[1]&0x80 != 0 {
			return 0, nil, nil, errors.New("tag longer than two bytes")
		}
		tag = tag<<8 | int(b[1])
		i = 2
	}
	if i >= len(b) {
		return 0, nil, nil, errors.New("truncated TLV")
	}
	n := int(b[i])
	i++
	switch {
	case n < 0x80:
	case n == 0x81 || n == 0x82:
		k := n - 0x80
		if i+k > len(b) {
			return 0, nil, nil, errors.New("truncated TLV length")
		}
		n = 0
		for _, x := range b[i : i+k] {
			n = n<<8 | int(x)
		}
		i += k
	default:
		return 0, nil, nil, fmt.Errorf("bad TLV length byte %02X", b[i-1])
	}
	if n > len(b)-i {
		return 0, nil, nil, errors.New("TLV longer than its data")
	}
	return tag, b[i : i+n], b[i+n:], nil
}
