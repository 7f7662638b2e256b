// Package tcos speaks the TCOS 3.0 card protocol in APDUs: it recognises a TCOS card by its
// answer to reset, reads its serial number, reads a PIN's retry counter without spending a try,
// has PINs verified and changed on a PIN pad, reads and writes the card's two data slots,
// surveys a card without a PIN, and prepares a card that allows it.
//
// It sits between a [Transport] (APDUs to one card: PC/SC, or a virtual card) and a [PINPad]
// (the reader's secure PIN entry: PC/SC part 10, or the simulator's pad). The same code runs
// against real cards and virtual ones; only those two interfaces differ.
//
// # Card profiles
//
// Where the slots live is a [Profile]: the DF holding them, each slot's EF, size and PIN
// reference, how PIN tries are read (EF_PWDD records, a PIN file's FCP, or — only where the
// profile declares it safe — a VERIFY without data) and the ATRs it is for. [Profiles] are the
// shipped ones; [ParseProfile] reads an integrator's file. Each slot is a transparent EF
// holding a 2-byte big-endian length and then the data; its READ BINARY and UPDATE BINARY need
// the slot's PIN, a local PIN of the profile's DF, which is selected before every PIN command.
// Reads and writes go in chunks of at most 255 bytes by offset (short APDUs, no chaining). A
// write first sets the length to zero, writes the data, then the length, and reads everything
// back: an interrupted write leaves an empty or unverifiable slot, never a plausible wrong one.
//
// [Survey] reads a card through a guard that lets only reads pass, and says which profile fits;
// [Card.Prepare] creates what a profile lacks on a card that allows it; [Card.SetFirstPIN]
// leaves a PIN's NullPIN (transport) state with the PIN typed on the pad.
//
// pinpad/README.md lists which APDUs and facts are taken from public sources and which are
// assumptions to check on a real card.
//
// What this package must never do: see a PIN (the pad puts it into the VERIFY and CHANGE
// REFERENCE DATA commands), know what the bytes in a slot mean, leave slot data in a buffer
// it does not return, or send a data-less VERIFY on a card whose profile does not declare it
// safe (except to confirm a NullPIN state the card just reported).
package tcos

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
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

// Card is a TCOS card reached through a transport, laid out as its [Profile] says. It
// implements every method of [pinpad.Card] except Close, which belongs to the backend that owns
// the connection. It is not safe for concurrent use.
type Card struct {
	tr     Transport
	pad    PINPad
	prof   *Profile
	atr    []byte
	serial string
}

// ErrProfileATR is a TCOS card whose answer to reset is none the chosen profile lists.
var ErrProfileATR = errors.New("the card's answer to reset is not one the card profile lists: run keyquorum card survey")

// Open is [OpenProfile] with the default profile, [KeyquorumMF].
func Open(ctx context.Context, tr Transport, atr []byte, pad PINPad) (*Card, error) {
	return OpenProfile(ctx, tr, atr, pad, KeyquorumMF())
}

// OpenProfile checks atr ([pinpad.ErrNotTCOS] for any other card, [ErrProfileATR] for a TCOS
// card the profile is not for), selects the MF and reads the serial number. pad may be nil:
// the card then refuses PIN entry with [pinpad.ErrNoPINPad].
func OpenProfile(ctx context.Context, tr Transport, atr []byte, pad PINPad, prof *Profile) (*Card, error) {
	if !IsTCOS(atr) {
		return nil, pinpad.ErrNotTCOS
	}
	if prof == nil {
		prof = KeyquorumMF()
	}
	if !prof.MatchATR(atr) {
		return nil, fmt.Errorf("profile %s: %w", prof.Name, ErrProfileATR)
	}
	c := &Card{tr: tr, pad: pad, prof: prof, atr: append([]byte(nil), atr...)}
	if err := c.selectMF(ctx); err != nil {
		return nil, err
	}
	gdo, err := c.readFile(ctx, []uint16{FileGDO}, "read serial number")
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

// Profile is the layout the card is used with.
func (c *Card) Profile() *Profile { return c.prof }

// ProfileName is the name of the card's profile (what the ceremony journal records).
func (c *Card) ProfileName() string { return c.prof.Name }

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

// selectDF makes the profile's DF the current one, so that VERIFY and CHANGE REFERENCE DATA
// address its local PINs.
func (c *Card) selectDF(ctx context.Context, op string) error {
	if len(c.prof.DF) == 0 {
		return c.selectMF(ctx)
	}
	_, sw, err := c.transmit(ctx, selectPathAPDU(c.prof.DF, false))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return checkSW(op, sw)
}

// selectPathAPDU selects a file by its path from the MF (P1 08, the MF's 3F00 left out [V
// OpenSC tcos_select_file]); with fcp the card returns the FCP (P2 04), else nothing (P2 0C).
func selectPathAPDU(path []uint16, fcp bool) []byte {
	p2 := byte(0x0C)
	if fcp {
		p2 = 0x04
	}
	apdu := []byte{0x00, 0xA4, 0x08, p2, byte(2 * len(path))}
	for _, f := range path {
		apdu = append(apdu, byte(f>>8), byte(f))
	}
	if fcp {
		apdu = append(apdu, 0x00)
	}
	return apdu
}

// slotPath is the path of a file in the profile's DF.
func (c *Card) slotPath(fid uint16) []uint16 {
	return append(slices.Clone(c.prof.DF), fid)
}

// selectEF selects an EF by its path from the MF and returns its size from the FCP.
func (c *Card) selectEF(ctx context.Context, path []uint16, op string) (int, error) {
	fcp, sw, err := c.transmit(ctx, selectPathAPDU(path, true))
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
func (c *Card) readFile(ctx context.Context, path []uint16, op string) ([]byte, error) {
	size, err := c.selectEF(ctx, path, op)
	if err != nil {
		return nil, err
	}
	if size > 255 {
		return nil, fmt.Errorf("%s: file of %d bytes: %w", op, size, ErrBadRecord)
	}
	return c.readBinary(ctx, 0, size, op)
}

// VerifyPINCommand is the structure VerifyPIN hands to the pad for the PIN ref: 6 to 15 ASCII
// digits, confirmed with OK, put by the pad into VERIFY 00 20 00 ref with Lc set to the PIN's
// length (the variable-length form of Reiner's driver [V]; TCOS takes unpadded ASCII PINs [V
// OpenSC]).
func VerifyPINCommand(ref byte, timeout time.Duration) *part10.PINVerify {
	return &part10.PINVerify{
		Timeout:       timeout,
		PINFormat:     pinFormat(),
		NumberMessage: 0x01,
		LangID:        0x0409,
		MsgIndex:      0x00, // "Enter PIN"
		APDU:          []byte{0x00, 0x20, 0x00, ref, 0x00},
	}
}

// ChangePINCommand is the structure ChangePIN hands to the pad after the old PIN was verified:
// the new PIN twice, put into CHANGE REFERENCE DATA 00 24 01 ref (P1 01: new PIN only, the old
// one was verified just before [I: TCOS P1 semantics from HARDWARE.md §3]).
func ChangePINCommand(ref byte, timeout time.Duration) *part10.PINModify {
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
	}
}

// FirstPINCommand is the structure SetFirstPIN hands to the pad for a PIN still in its NullPIN
// (transport) state: the new PIN twice, put after six 00 bytes (the "null" old PIN) into
// CHANGE REFERENCE DATA 00 24 00 ref, as netkey-tool leaves the NullPIN state [V]. The
// template's data ends where the PIN goes: the pad appends the PIN and sets Lc [U: whether the
// e-com fills a variable-length template with a fixed prefix; Reiner's own variable form has
// none].
func FirstPINCommand(ref byte, timeout time.Duration) *part10.PINModify {
	return &part10.PINModify{
		Timeout:            timeout,
		PINFormat:          pinFormat(),
		InsertionOffsetNew: nullPINLength,
		ConfirmPIN:         part10.ConfirmNewPIN,
		NumberMessage:      0xFF, // the messages of Reiner's own modify, as ChangePINCommand
		LangID:             0x0409,
		MsgIndex:           [3]byte{0x00, 0x01, 0x00},
		APDU:               []byte{0x00, 0x24, 0x00, ref, nullPINLength, 0, 0, 0, 0, 0, 0},
	}
}

// nullPINLength is the length of the zero "old PIN" that ends the NullPIN state [V netkey-tool].
const nullPINLength = 6

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

// pinRef selects the profile's DF (local PINs are the current DF's) and returns the slot's PIN.
func (c *Card) pinRef(ctx context.Context, slot pinpad.Slot, op string) (byte, error) {
	spec, err := c.prof.Slot(slot)
	if err != nil {
		return 0, err
	}
	if err := c.selectDF(ctx, op); err != nil {
		return 0, err
	}
	return spec.PINRef, nil
}

// VerifyPIN has the operator enter the slot's PIN on the pad.
func (c *Card) VerifyPIN(ctx context.Context, slot pinpad.Slot, timeout time.Duration) error {
	if c.pad == nil {
		return pinpad.ErrNoPINPad
	}
	ref, err := c.pinRef(ctx, slot, "verify PIN")
	if err != nil {
		return err
	}
	res, err := c.pad.VerifyPIN(ctx, VerifyPINCommand(ref, timeout))
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
	spec, err := c.prof.Slot(slot)
	if err != nil {
		return err
	}
	res, err := c.pad.ModifyPIN(ctx, ChangePINCommand(spec.PINRef, timeout))
	if err != nil {
		return fmt.Errorf("change PIN: %w", err)
	}
	return part10.Result("change PIN", res)
}

// SetFirstPIN has the operator enter a first PIN twice for a slot whose PIN is still in its
// NullPIN (transport) state. It first makes sure the PIN is in that state: with
// [pinpad.ErrNullPIN] from [Card.NullPIN] only; on any other card a CHANGE with the null PIN
// would count as a wrong PIN.
func (c *Card) SetFirstPIN(ctx context.Context, slot pinpad.Slot, timeout time.Duration) error {
	if c.pad == nil {
		return pinpad.ErrNoPINPad
	}
	null, err := c.NullPIN(ctx, slot)
	if err != nil {
		return err
	}
	if !null {
		return fmt.Errorf("set first PIN: %w", ErrNotNullPIN)
	}
	ref, err := c.pinRef(ctx, slot, "set first PIN")
	if err != nil {
		return err
	}
	res, err := c.pad.ModifyPIN(ctx, FirstPINCommand(ref, timeout))
	if err != nil {
		return fmt.Errorf("set first PIN: %w", err)
	}
	return part10.Result("set first PIN", res)
}

// ErrNotNullPIN is a first PIN asked for a slot whose PIN is already set.
var ErrNotNullPIN = pinpad.ErrNotNullPIN

// Read returns the slot's data: [pinpad.ErrEmpty] when it holds none, [pinpad.ErrAccessDenied]
// when its PIN was not verified.
func (c *Card) Read(ctx context.Context, slot pinpad.Slot) ([]byte, error) {
	spec, err := c.prof.Slot(slot)
	if err != nil {
		return nil, err
	}
	op := "read " + slot.String()
	size, err := c.selectEF(ctx, c.slotPath(spec.File), op)
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
	spec, err := c.prof.Slot(slot)
	if err != nil {
		return err
	}
	op := "write " + slot.String()
	size, err := c.selectEF(ctx, c.slotPath(spec.File), op)
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
	f, err := ParseFCP(b)
	if err != nil {
		return 0, err
	}
	if f.Size < 0 {
		return 0, errors.New("parse file control parameters: no file size")
	}
	return f.Size, nil
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
