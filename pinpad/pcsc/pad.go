package pcsc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
)

// handle is what this package needs of a PC/SC card handle (*scard.Card); tests use a fake.
type handle interface {
	Transmit(cmd []byte) ([]byte, error)
	Control(ioctl uint32, in []byte) ([]byte, error)
}

// mapError turns a PC/SC error into the pinpad error an operator understands.
func mapError(op string, err error) error {
	var code scard.Error
	if !errors.As(err, &code) {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch code {
	case scard.ErrRemovedCard, scard.ErrNoSmartcard, scard.ErrResetCard, scard.ErrUnpoweredCard:
		return pinpad.ErrCardRemoved
	case scard.ErrReaderUnavailable, scard.ErrUnknownReader, scard.ErrNoReadersAvailable:
		return pinpad.ErrReaderGone
	case scard.ErrTimeout:
		return pinpad.ErrTimeout
	}
	return fmt.Errorf("%s: %w (PC/SC error 0x%08X)", op, code, uint32(code))
}

// transport carries APDUs to the card over a PC/SC handle.
type transport struct {
	h handle
}

func (t transport) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transmit apdu: %w", err)
	}
	resp, err := t.h.Transmit(apdu)
	if err != nil {
		return nil, mapError("transmit apdu", err)
	}
	return resp, nil
}

// pad is the reader's secure PIN entry through PC/SC part 10: the structures go to the
// control codes the reader's feature list names. The structure bytes and the two-byte result
// carry no PIN, so they are logged at debug level for field diagnosis (OpenSC issue 1051).
type pad struct {
	h        handle
	features part10.Features
	log      *slog.Logger
	firmware *part10.Firmware // as GET STATUS reported it; nil when unknown
}

// firmwareError is the reader refusing secure PIN entry for its firmware's sake.
func (p *pad) firmwareError() error {
	e := &pinpad.FirmwareError{Need: part10.MinPINDirectFirmware.String()}
	if p.firmware != nil {
		e.Firmware = p.firmware.String()
	}
	return e
}

func (p *pad) control(ctx context.Context, op string, feature byte, in []byte) ([]byte, error) {
	code, ok := p.features.Code(feature)
	if !ok {
		return nil, pinpad.ErrNoPINPad
	}
	if p.firmware != nil && p.firmware.Revision >= 0 && p.firmware.Older(part10.MinPINDirectFirmware) {
		return nil, p.firmwareError()
	}
	p.log.DebugContext(ctx, "pinpad control", "op", op, "feature", part10.FeatureName(feature),
		"code", fmt.Sprintf("0x%08X", code), "in", hex.EncodeToString(in))
	// The call blocks until the operator is done or the pad's own timeout (bTimerOut, set from
	// the operation's timeout) ends it: PC/SC cannot abort a secure PIN entry from the host, so
	// a cancelled context is reported once the pad returns.
	out, err := p.h.Control(code, in)
	if err != nil {
		p.log.DebugContext(ctx, "pinpad control failed", "op", op, "err", err)
		if errors.Is(err, scard.ErrUnsupportedFeature) {
			// Reiner's driver lists the feature but refuses it below kernel 3.0.42.
			return nil, p.firmwareError()
		}
		return nil, mapError(op, err)
	}
	p.log.DebugContext(ctx, "pinpad control result", "op", op, "out", hex.EncodeToString(out))
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

func (p *pad) VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error) {
	in, err := v.Marshal()
	if err != nil {
		return nil, err
	}
	out, err := p.control(ctx, "verify PIN", part10.FeatureVerifyPINDirect, in)
	if err != nil {
		return nil, err
	}
	return p.cardSaid(ctx, "verify PIN", v.APDU, out)
}

func (p *pad) ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error) {
	in, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	out, err := p.control(ctx, "change PIN", part10.FeatureModifyPINDirect, in)
	if err != nil {
		return nil, err
	}
	return p.cardSaid(ctx, "change PIN", m.APDU, out)
}

// cardSaid checks a 69 85 result. Reiner's driver makes 69 85 itself from a CCID error (bError
// 26 in a verify, 31 in a modify; CCIDReader.cpp), which would otherwise read as the card's
// transport-PIN state. The card is asked directly, with the data-less VERIFY of the PIN
// (00 20 00 ref, no try spent): only when it says 69 85 too is the result the card's.
func (p *pad) cardSaid(ctx context.Context, op string, tpl, out []byte) ([]byte, error) {
	if len(out) != 2 || out[0] != 0x69 || out[1] != 0x85 || len(tpl) < 4 {
		return out, nil
	}
	resp, err := p.h.Transmit([]byte{0x00, 0x20, 0x00, tpl[3]})
	if err != nil {
		return nil, mapError(op, err)
	}
	if n := len(resp); n >= 2 && resp[n-2] == 0x69 && resp[n-1] == 0x85 {
		return out, nil
	}
	p.log.DebugContext(ctx, "69 85 came from the reader, not the card", "op", op, "card", hex.EncodeToString(resp))
	return nil, &pinpad.ReaderRefusedError{Op: op, SW: 0x6985}
}

// readFeatures asks the reader for its part 10 features. A reader that answers "unsupported
// feature" (vpcd, readers without a pad) has none.
func readFeatures(h handle) (part10.Features, []byte, error) {
	out, err := h.Control(scard.CtlCode(part10.GetFeatureRequest), nil)
	if errors.Is(err, scard.ErrUnsupportedFeature) {
		return part10.Features{}, nil, nil
	}
	if err != nil {
		return nil, nil, mapError("read reader features", err)
	}
	f, err := part10.ParseFeatures(out)
	return f, out, err
}

// show writes text on the display with CT-BCS OUTPUT through MCT_UNIVERSAL.
func show(h handle, features part10.Features, text string) error {
	code, ok := features.Code(part10.FeatureMCTUniversal)
	if !ok {
		return pinpad.ErrNoDisplay
	}
	in, err := part10.OutputCommand(text)
	if err != nil {
		return err
	}
	out, err := h.Control(code, in)
	if err != nil {
		return mapError("show text", err)
	}
	sw, err := part10.MCTResponse(out)
	if err != nil {
		return fmt.Errorf("show text: %w", err)
	}
	switch sw {
	case 0x9000:
		return nil
	case 0x6D00: // firmware without the MKT_COMP module
		return pinpad.ErrNoDisplay
	}
	return &pinpad.StatusError{Op: "show text", SW: sw}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
