package tcos

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/keyquorum/keyquorum/pinpad"
)

// unavailable is a way of reading tries the card does not offer (a file it lacks, a status
// word it refuses, a record that does not parse): the next source is tried.
type unavailable struct{ err error }

func (u *unavailable) Error() string { return u.err.Error() }
func (u *unavailable) Unwrap() error { return u.err }

func soft(err error) error {
	if err == nil {
		return nil
	}
	return &unavailable{err}
}

// TriesUnknownError is a card that answered none of the profile's ways of reading tries. It
// wraps [pinpad.ErrTriesUnknown]; Reasons say what each source answered (for the log and the
// survey).
type TriesUnknownError struct {
	Slot    pinpad.Slot
	Reasons []string
}

func (e *TriesUnknownError) Error() string {
	return fmt.Sprintf("%s PIN: %v (%s)", e.Slot, pinpad.ErrTriesUnknown, strings.Join(e.Reasons, "; "))
}

func (e *TriesUnknownError) Unwrap() error { return pinpad.ErrTriesUnknown }

// PINTries reads how many tries the slot's PIN has left, the ways the profile lists, in order,
// without spending one: EF_PWDD records, the PIN file's FCP, and the data-less VERIFY only
// when the profile declares it safe. A blocked PIN has 0 tries and no error. When no way
// answers, the error wraps [pinpad.ErrTriesUnknown]: not fatal, the caller says "tries
// unknown" and goes on. Transport failures (card removed, reader gone) are returned as they
// are.
func (c *Card) PINTries(ctx context.Context, slot pinpad.Slot) (int, error) {
	spec, err := c.prof.Slot(slot)
	if err != nil {
		return 0, err
	}
	var reasons []string
	for _, src := range c.prof.Tries {
		n, err := c.triesFrom(ctx, src, spec)
		var u *unavailable
		switch {
		case err == nil:
			return n, nil
		case errors.As(err, &u):
			reasons = append(reasons, fmt.Sprintf("%s: %v", src, u.err))
		default:
			return 0, err
		}
	}
	return 0, &TriesUnknownError{Slot: slot, Reasons: reasons}
}

func (c *Card) triesFrom(ctx context.Context, src TriesSource, spec SlotSpec) (int, error) {
	switch src {
	case TriesPWDD:
		recs, err := c.ReadPWDD(ctx, c.prof.DF)
		if err != nil {
			return 0, err
		}
		for _, r := range recs {
			if r.Ref == spec.PINRef && r.Tries >= 0 {
				return r.Tries, nil
			}
		}
		return 0, soft(fmt.Errorf("EF_PWDD has no record for PIN %02X", spec.PINRef))
	case TriesFCP:
		if spec.PINFile == 0 {
			return 0, soft(errors.New("the profile names no PIN file"))
		}
		fcp, err := c.SelectFCP(ctx, c.slotPath(spec.PINFile))
		if err != nil {
			return 0, err
		}
		n, err := PINFileTries(fcp)
		return n, soft(err)
	case TriesVerify:
		if !c.prof.VerifyQuerySafe {
			return 0, soft(errors.New("the profile does not declare the VERIFY query safe"))
		}
		if err := c.selectDF(ctx, "read PIN tries"); err != nil {
			return 0, softSW(err)
		}
		_, sw, err := c.transmit(ctx, []byte{0x00, 0x20, 0x00, spec.PINRef})
		if err != nil {
			return 0, fmt.Errorf("read PIN tries: %w", err)
		}
		switch {
		case sw == swOK:
			return c.prof.MaxTries, nil
		case sw == swPINBlocked:
			return 0, nil
		case sw&0xFFF0 == 0x63C0:
			return int(sw & 0x0F), nil
		case sw == swConditionsOfUse:
			return 0, pinpad.ErrNullPIN
		}
		return 0, soft(checkSW("read PIN tries", sw))
	}
	return 0, soft(fmt.Errorf("unknown source %q", src))
}

// softSW marks a card's refusal (a status word) as unavailable; transport errors stay hard.
func softSW(err error) error {
	var se *pinpad.StatusError
	switch {
	case errors.As(err, &se), errors.Is(err, pinpad.ErrNotPersonalised), errors.Is(err, pinpad.ErrAccessDenied),
		errors.Is(err, pinpad.ErrWrongLength), errors.Is(err, ErrBadRecord):
		return soft(err)
	}
	return err
}

// NullPIN reports whether the slot's PIN is still in its NullPIN (transport) state: a VERIFY
// without data answered 69 85 [V OpenSC card-tcos.c, netkey-tool]. It sends that data-less
// VERIFY, so callers use it only where it cannot cost a try: the profile declares the query
// safe, or the card just answered 69 85 to a VERIFY on the pad (a PIN in NullPIN state has no
// value to count tries against) [I].
func (c *Card) NullPIN(ctx context.Context, slot pinpad.Slot) (bool, error) {
	ref, err := c.pinRef(ctx, slot, "read PIN state")
	if err != nil {
		return false, err
	}
	_, sw, err := c.transmit(ctx, []byte{0x00, 0x20, 0x00, ref})
	if err != nil {
		return false, fmt.Errorf("read PIN state: %w", err)
	}
	return sw == swConditionsOfUse, nil
}

// PWDDRecord is one password record of EF_PWDD.
type PWDDRecord struct {
	// Ref is the PIN reference (tag 83); Tries the last byte of tag 90, -1 without one.
	Ref   byte
	Tries int
	// Raw is the record as read (it holds no PIN value on the cards OpenSC reads).
	Raw []byte
}

// ParsePWDDRecord decodes a record of EF_PWDD: A0 L { 83 01 ref, …, 90 n … tries } [V OpenSC
// pkcs15-tcos.c insert_pin]. Other tags are skipped.
func ParsePWDDRecord(rec []byte) (PWDDRecord, error) {
	tag, body, _, err := nextTLV(rec)
	if err != nil {
		return PWDDRecord{}, fmt.Errorf("EF_PWDD record: %w", err)
	}
	if tag != 0xA0 {
		return PWDDRecord{}, fmt.Errorf("EF_PWDD record: tag %X, want A0", tag)
	}
	out := PWDDRecord{Tries: -1, Raw: append([]byte(nil), rec...)}
	found := false
	for len(body) > 0 {
		t, v, rest, err := nextTLV(body)
		if err != nil {
			return PWDDRecord{}, fmt.Errorf("EF_PWDD record: %w", err)
		}
		switch {
		case t == 0x83 && len(v) == 1:
			out.Ref, found = v[0], true
		case t == 0x90 && len(v) > 0:
			out.Tries = int(v[len(v)-1])
		}
		body = rest
	}
	if !found {
		return PWDDRecord{}, errors.New("EF_PWDD record: no PIN reference (tag 83)")
	}
	if out.Tries > 15 {
		return PWDDRecord{}, fmt.Errorf("EF_PWDD record: %d tries", out.Tries)
	}
	return out, nil
}

// maxRecords bounds a READ RECORD loop: a DF with more passwords than this is not ours.
const maxRecords = 32

// ReadPWDD reads every record of EF_PWDD in the DF at path (nil: the MF). It spends no try and
// needs no PIN on the cards OpenSC reads [I: OpenSC reads it before any VERIFY].
func (c *Card) ReadPWDD(ctx context.Context, df []uint16) ([]PWDDRecord, error) {
	path := append(append([]uint16(nil), df...), FilePWDD)
	_, sw, err := c.transmit(ctx, selectPathAPDU(path, false))
	if err != nil {
		return nil, fmt.Errorf("select EF_PWDD: %w", err)
	}
	if sw != swOK {
		return nil, soft(&pinpad.StatusError{Op: "select EF_PWDD " + PathString(path), SW: sw})
	}
	var out []PWDDRecord
	for n := 1; n <= maxRecords; n++ {
		rec, sw, err := c.transmit(ctx, []byte{0x00, 0xB2, byte(n), 0x04, 0x00})
		if err != nil {
			return nil, fmt.Errorf("read EF_PWDD: %w", err)
		}
		if sw == swRecordNotFound || sw == swEndOfFile && len(rec) == 0 {
			break
		}
		if sw != swOK {
			return nil, soft(&pinpad.StatusError{Op: "read EF_PWDD record", SW: sw})
		}
		r, err := ParsePWDDRecord(rec)
		if err != nil {
			continue // a record of another kind: OpenSC skips those too
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, soft(errors.New("EF_PWDD holds no password record"))
	}
	return out, nil
}

// SelectFCP selects the file at path and returns its FCP; a card's refusal is "unavailable".
func (c *Card) SelectFCP(ctx context.Context, path []uint16) (FCP, error) {
	apdu := selectPathAPDU(path, true)
	if len(path) == 0 {
		apdu = []byte{0x00, 0xA4, 0x00, 0x04, 0x00} // the MF
	}
	resp, sw, err := c.transmit(ctx, apdu)
	if err != nil {
		return FCP{}, fmt.Errorf("select %s: %w", PathString(path), err)
	}
	if sw != swOK {
		return FCP{}, soft(&pinpad.StatusError{Op: "select " + PathString(path), SW: sw})
	}
	f, err := ParseFCP(resp)
	return f, soft(err)
}

// PINFileTries reads the tries left from a PIN file's FCP: tag 85 is 01 80 ref tries max [V
// netkey-tool show_pin, TCOS 2].
func PINFileTries(f FCP) (int, error) {
	p := f.Prop
	if len(p) != 5 || p[0] != 0x01 || p[1] != 0x80 {
		return 0, fmt.Errorf("FCP tag 85 % X is not a PIN file's", p)
	}
	if p[3] > p[4] || p[4] > 15 {
		return 0, fmt.Errorf("FCP tag 85: %d of %d tries", p[3], p[4])
	}
	return int(p[3]), nil
}

// FCP is what a SELECT with P2 04 returns (template 62) [V OpenSC tcos_select_file].
type FCP struct {
	Size       int    // tag 80 (or 81), -1 when absent
	Descriptor []byte // tag 82: b5..3 = 111 DF, 000 EF; b2..0 EF structure
	FID        uint16 // tag 83
	Name       []byte // tag 84 (a DF's name)
	Prop       []byte // tag 85: status; a PIN file's try counter on TCOS 2
	Rules      []byte // tag 86: access rules, 6 bytes each
}

// IsDF reports whether the descriptor says DF.
func (f FCP) IsDF() bool { return len(f.Descriptor) > 0 && f.Descriptor[0]&0x38 == 0x38 }

// ParseFCP decodes an FCP template 62.
func ParseFCP(b []byte) (FCP, error) {
	tag, body, _, err := nextTLV(b)
	if err != nil {
		return FCP{}, fmt.Errorf("parse file control parameters: %w", err)
	}
	if tag != 0x62 {
		return FCP{}, fmt.Errorf("parse file control parameters: tag %X, want 62", tag)
	}
	f := FCP{Size: -1}
	for len(body) > 0 {
		t, v, rest, err := nextTLV(body)
		if err != nil {
			return FCP{}, fmt.Errorf("parse file control parameters: %w", err)
		}
		switch t {
		case 0x80, 0x81:
			if (t == 0x80 || f.Size < 0) && len(v) > 0 && len(v) <= 3 {
				n := 0
				for _, x := range v {
					n = n<<8 | int(x)
				}
				f.Size = n
			}
		case 0x82:
			f.Descriptor = append([]byte(nil), v...)
		case 0x83:
			if len(v) == 2 {
				f.FID = uint16(v[0])<<8 | uint16(v[1])
			}
		case 0x84:
			f.Name = append([]byte(nil), v...)
		case 0x85:
			f.Prop = append([]byte(nil), v...)
		case 0x86:
			f.Rules = append([]byte(nil), v...)
		}
		body = rest
	}
	return f, nil
}
