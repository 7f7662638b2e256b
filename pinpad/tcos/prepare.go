package tcos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keyquorum/keyquorum/pinpad"
)

// Preparing a card lays it out in its profile: CREATE FILE (80 E0) for the DF and the slot EFs,
// with access rules (tag 86) that put READ and UPDATE BINARY behind the slot's local PIN, and a
// password record appended to the DF's EF_PWDD for each slot PIN. [V] for the CREATE FILE
// command and FCI tags (OpenSC tcos_construct_fci); [I] for the rule bytes (cyberflex-shell
// tcos_card.py); [U] for creating a PIN by appending an EF_PWDD record in its NullPIN state —
// no public source shows how a TCOS 3 card takes a new PIN object, so on a real card expect
// this step to need the issuer's tools, and the survey to say so.

// Prepare lays the card out in its profile where it lacks files. It first surveys the card:
// a card that already fits is left alone; a card whose MF rules require a key for CREATE
// FILE, or that refuses a CREATE, gives [*pinpad.PrepareRefusedError] with the findings.
func (c *Card) Prepare(ctx context.Context) (*pinpad.Prepared, error) {
	rep, err := Survey(ctx, c.tr, c.atr, []*Profile{c.prof})
	if err != nil {
		return nil, err
	}
	out := &pinpad.Prepared{}
	if rep.Fits == c.prof.Name {
		return out, nil
	}
	fit := rep.Profiles[0]
	refused := func(findings string) error {
		return &pinpad.PrepareRefusedError{Profile: c.prof.Name, Findings: findings,
			Advice: "use another card, or order cards personalised for this profile (keyquorum card profiles -json gives its file for the issuer)"}
	}
	if !c.prof.MatchATR(c.atr) {
		return nil, refused("its answer to reset is not one the profile lists")
	}
	if strings.HasPrefix(rep.Preparable, "no") {
		return nil, refused(fmt.Sprintf("it lacks %s, and %s", strings.Join(fit.Missing, ", "), strings.TrimPrefix(rep.Preparable, "no: ")))
	}
	if k := maxLocalPIN(c.prof); k > 3 {
		return nil, refused(fmt.Sprintf("local PIN %02X cannot be named in an access rule (only local PINs 80 to 83 can)", k|0x80))
	}
	create := func(what string, fci []byte) error {
		apdu := append([]byte{0x80, 0xE0, 0x00, 0x00, byte(len(fci))}, fci...)
		_, sw, err := c.transmit(ctx, apdu)
		if err != nil {
			return fmt.Errorf("prepare card: %w", err)
		}
		switch sw {
		case swOK:
			out.Created = append(out.Created, what)
			return nil
		case swSecurityStatus, swConditionsOfUse, swInsNotSupported, swClaNotSupported:
			return refused(fmt.Sprintf("it refused to create %s (status %04X)", what, sw))
		}
		return fmt.Errorf("prepare card: create %s: %w", what, &pinpad.StatusError{Op: "create " + what, SW: sw})
	}

	// The DF chain.
	if err := c.selectMF(ctx); err != nil {
		return nil, err
	}
	for i, fid := range c.prof.DF {
		path := c.prof.DF[:i+1]
		_, sw, err := c.transmit(ctx, selectPathAPDU(path, false))
		if err != nil {
			return nil, fmt.Errorf("prepare card: %w", err)
		}
		if sw == swOK {
			continue
		}
		if sw != swFileNotFound {
			return nil, fmt.Errorf("prepare card: %w", &pinpad.StatusError{Op: "select " + PathString(path), SW: sw})
		}
		if i > 0 { // CREATE works in the current DF: the parent
			if _, sw, err := c.transmit(ctx, selectPathAPDU(c.prof.DF[:i], false)); err != nil || sw != swOK {
				return nil, fmt.Errorf("prepare card: select %s: %v %04X", PathString(c.prof.DF[:i]), err, sw)
			}
		} else if err := c.selectMF(ctx); err != nil {
			return nil, err
		}
		name := []byte(fmt.Sprintf("KEYQUORUM-%04X", fid))
		fci := tlvs(0x6F,
			tlvBytes(0x82, []byte{0x38}),
			tlvBytes(0x83, []byte{byte(fid >> 8), byte(fid)}),
			tlvBytes(0x84, name),
			tlvBytes(0x85, []byte{0x01}),
		)
		if err := create("DF "+PathString(path), fci); err != nil {
			return nil, err
		}
	}

	// The slot PINs, in their NullPIN state, as EF_PWDD records of the DF.
	recs, err := c.ReadPWDD(ctx, c.prof.DF)
	var u *unavailable
	if err != nil && !errors.As(err, &u) {
		return nil, err
	}
	for _, s := range []pinpad.Slot{pinpad.SlotShare, pinpad.SlotUser} {
		spec, _ := c.prof.Slot(s)
		if slices.ContainsFunc(recs, func(r PWDDRecord) bool { return r.Ref == spec.PINRef }) {
			continue
		}
		if _, sw, err := c.transmit(ctx, selectPathAPDU(c.slotPath(FilePWDD), false)); err != nil || sw != swOK {
			if err != nil {
				return nil, fmt.Errorf("prepare card: %w", err)
			}
			return nil, refused(fmt.Sprintf("it has no EF_PWDD in %s to hold the PINs (status %04X)", c.prof.DFPath(), sw))
		}
		rec := tlvs(0xA0, tlvBytes(0x83, []byte{spec.PINRef}), tlvBytes(0x90, []byte{byte(c.prof.MaxTries), byte(c.prof.MaxTries)}))
		_, sw, err := c.transmit(ctx, append([]byte{0x00, 0xE2, 0x00, 0x00, byte(len(rec))}, rec...))
		if err != nil {
			return nil, fmt.Errorf("prepare card: %w", err)
		}
		what := fmt.Sprintf("PIN %02X in %s", spec.PINRef, c.prof.DFPath())
		if sw != swOK {
			return nil, refused(fmt.Sprintf("it refused to create %s (status %04X)", what, sw))
		}
		out.Created = append(out.Created, what)
		out.FirstPIN = append(out.FirstPIN, s)
	}

	// The slot files, READ and UPDATE behind the slot's PIN.
	for _, s := range []pinpad.Slot{pinpad.SlotShare, pinpad.SlotUser} {
		spec, _ := c.prof.Slot(s)
		path := c.slotPath(spec.File)
		_, sw, err := c.transmit(ctx, selectPathAPDU(path, false))
		if err != nil {
			return nil, fmt.Errorf("prepare card: %w", err)
		}
		if sw == swOK {
			continue
		}
		if err := c.selectDF(ctx, "prepare card"); err != nil {
			return nil, err
		}
		mask := pinMask(spec.PINRef)
		rules := []byte{
			0xA4, 0x00, 0x00, 0x00, 0xFF, 0xFF, // SELECT: free
			0xB0, mask, 0x00, 0x00, 0xFF, 0xFF, // READ BINARY: the slot's PIN
			0xD6, mask, 0x00, 0x00, 0xFF, 0xFF, // UPDATE BINARY: the slot's PIN
		}
		fci := tlvs(0x6F,
			tlvBytes(0x81, []byte{byte(spec.Size >> 8), byte(spec.Size)}),
			tlvBytes(0x82, []byte{0x01}),
			tlvBytes(0x83, []byte{byte(spec.File >> 8), byte(spec.File)}),
			tlvBytes(0x85, []byte{0x01, 0x00}),
			tlvBytes(0x86, rules),
		)
		if err := create(fmt.Sprintf("EF %s (%d bytes)", PathString(path), spec.Size), fci); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// pinMask is the password mask of an access rule naming PIN ref: 0x01<<k for local PIN k,
// 0x10<<k for global PIN k [I cyberflex-shell].
func pinMask(ref byte) byte {
	if ref&0x80 != 0 {
		return 0x01 << (ref & 0x03)
	}
	return 0x10 << (ref & 0x03)
}

func maxLocalPIN(p *Profile) byte {
	return max(p.Share.PINRef&0x7F, p.User.PINRef&0x7F)
}

func tlvBytes(tag byte, v []byte) []byte { return append([]byte{tag, byte(len(v))}, v...) }

func tlvs(tag byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return tlvBytes(tag, body)
}
