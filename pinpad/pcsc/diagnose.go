package pcsc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// DiagnoseOptions say what Diagnose tries.
type DiagnoseOptions struct {
	// Reader is the name prefix of the reader to examine; DefaultReader when empty. Every
	// reader is listed either way.
	Reader string
	// VerifyPIN runs one PIN verify on the pad for Slot (the operator types the PIN on the pad;
	// a wrong PIN spends a try). Timeout bounds the entry (90 s when zero).
	VerifyPIN bool
	Slot      pinpad.Slot
	Timeout   time.Duration
	// Profile is the card layout to read the card with; tcos.KeyquorumMF when nil.
	Profile *tcos.Profile
}

// Diagnose writes a report for field support to w: the readers pcscd knows; for the chosen
// one its part 10 feature list as raw bytes and decoded; and, with a card in it, the ATR and
// the exact bytes of every APDU and control exchange of opening the card, reading its PIN
// try counter and, if asked, a PIN verify on the pad. The PIN is typed on the pad and never
// passes the host; no slot data is read. A reader that answers a part 10 call with a bare
// "generic reader error" (OpenSC issue 1051) shows here what it was sent.
func Diagnose(ctx context.Context, w io.Writer, o DiagnoseOptions) error {
	if o.Reader == "" {
		o.Reader = DefaultReader
	}
	if o.Slot == 0 {
		o.Slot = pinpad.SlotShare
	}
	if o.Timeout <= 0 {
		o.Timeout = 90 * time.Second
	}
	fmt.Fprintf(w, "pcsc-lite client: ebfe/scard, %s\n", scard.Version())
	sc, err := scard.EstablishContext()
	if err != nil {
		return fmt.Errorf("diagnose: %w", mapError("connect to pcscd", err))
	}
	defer sc.Release()
	readers, err := sc.ListReaders()
	if err != nil && !errors.Is(err, scard.ErrNoReadersAvailable) {
		return fmt.Errorf("diagnose: %w", mapError("list readers", err))
	}
	fmt.Fprintf(w, "readers: %d\n", len(readers))
	var name string
	for _, r := range readers {
		mark := " "
		if name == "" && strings.HasPrefix(r, o.Reader) {
			name, mark = r, "*"
		}
		fmt.Fprintf(w, " %s %q\n", mark, r)
	}
	if name == "" {
		fmt.Fprintf(w, "no reader named %q*\n", o.Reader)
		return pinpad.ErrNoReader
	}

	rs := []scard.ReaderState{{Reader: name, CurrentState: scard.StateUnaware}}
	if err := sc.GetStatusChange(rs, 0); err != nil && !errors.Is(err, scard.ErrTimeout) {
		return fmt.Errorf("diagnose: %w", mapError("read reader state", err))
	}
	fmt.Fprintf(w, "reader state: %s\n", stateString(rs[0].EventState))
	present := rs[0].EventState&scard.StatePresent != 0

	var h *scard.Card
	if present {
		h, err = sc.Connect(name, scard.ShareExclusive, scard.ProtocolAny)
		fmt.Fprintf(w, "connect exclusive: %s\n", errString(err))
	} else {
		h, err = sc.Connect(name, scard.ShareDirect, scard.ProtocolUndefined)
		fmt.Fprintf(w, "connect direct (no card): %s\n", errString(err))
	}
	if err != nil {
		return fmt.Errorf("diagnose: %w", mapError("connect to reader", err))
	}
	defer h.Disconnect(scard.ResetCard)
	tr := &tracer{h: h, w: w}

	fmt.Fprintf(w, "feature request (CM_IOCTL_GET_FEATURE_REQUEST):\n")
	features, raw, ferr := readFeatures(tr)
	switch {
	case ferr != nil:
		fmt.Fprintf(w, "  features: %v\n", ferr)
		features = part10.Features{}
	case raw == nil:
		fmt.Fprintf(w, "  no part 10 features (unsupported feature)\n")
	default:
		for i := 0; i+6 <= len(raw); i += 6 {
			fmt.Fprintf(w, "  TLV %s  %-24s code 0x%08X\n", hex.EncodeToString(raw[i:i+6]),
				part10.FeatureName(raw[i]), features[raw[i]])
		}
	}
	_, hasVerify := features.Code(part10.FeatureVerifyPINDirect)
	_, hasModify := features.Code(part10.FeatureModifyPINDirect)
	_, hasMCT := features.Code(part10.FeatureMCTUniversal)
	fmt.Fprintf(w, "PIN pad verify: %v, modify: %v, display (MCT_UNIVERSAL): %v\n", hasVerify, hasModify, hasMCT)
	if !hasVerify {
		fmt.Fprintf(w, "  this reader cannot be used for PIN entry: %v\n", pinpad.ErrNoPINPad)
	}
	var fw *part10.Firmware
	if code, ok := features.Code(part10.FeatureMCTUniversal); ok {
		fmt.Fprintf(w, "firmware (CT-BCS GET STATUS 20 13 00 46 00):\n")
		out, err := tr.Control(code, part10.GetStatusCommand())
		if err == nil {
			var f part10.Firmware
			if f, err = part10.ParseStatus(out); err == nil {
				fw = &f
			}
		}
		switch {
		case err != nil:
			fmt.Fprintf(w, "  firmware: %s\n", errString(err))
		case fw.Revision >= 0 && fw.Older(part10.MinPINDirectFirmware):
			fmt.Fprintf(w, "  firmware %s (%q): %v\n", fw, fw.Ident, &pinpad.FirmwareError{Firmware: fw.String(), Need: part10.MinPINDirectFirmware.String()})
		default:
			fmt.Fprintf(w, "  firmware %s (%q)\n", fw, fw.Ident)
		}
		// CT-BCS INPUT of no key, 1 s: 6D 00 means firmware without MKT_COMP, whose OK and Cancel
		// keys (and display) the host cannot use.
		if in, err := part10.InputCommand("diagnose", time.Second); err == nil {
			if out, err := tr.Control(code, in); err == nil {
				key, err := part10.InputResult(out)
				fmt.Fprintf(w, "  pad keys through CT-BCS INPUT: %s\n", map[bool]string{true: "no (6D 00: no MKT_COMP module; OK/Cancel are asked on the WebConf screen)", false: "yes"}[err == nil && key == part10.KeyNoInput])
			}
		}
	}
	if !present {
		fmt.Fprintf(w, "no card in the reader: insert a card for the card checks\n")
		return nil
	}

	st, err := h.Status()
	if err != nil {
		return fmt.Errorf("diagnose: %w", mapError("read card status", err))
	}
	fmt.Fprintf(w, "ATR: %s (TCOS 3: %v), protocol T=%d\n", hex.EncodeToString(st.Atr),
		tcos.IsTCOS(st.Atr), protocolNumber(st.ActiveProtocol))
	var p tcos.PINPad
	if hasVerify {
		p = &pad{h: tr, features: features, log: discard, firmware: fw}
	}
	fmt.Fprintf(w, "open card (select MF, read EF_GDO):\n")
	c, err := tcos.OpenProfile(ctx, transport{h: tr}, st.Atr, p, o.Profile)
	if err != nil {
		fmt.Fprintf(w, "  open card: %v\n", err)
		return nil
	}
	fmt.Fprintf(w, "  serial: %s\n", c.Serial())
	fmt.Fprintf(w, "PIN try counter of the %s slot:\n", o.Slot)
	n, err := c.PINTries(ctx, o.Slot)
	fmt.Fprintf(w, "  tries left: %d (%s)\n", n, errString(err))
	if !o.VerifyPIN {
		return nil
	}
	fmt.Fprintf(w, "PIN verify on the pad (%s slot, %s): type the PIN on the pad now\n", o.Slot, o.Timeout)
	err = c.VerifyPIN(ctx, o.Slot, o.Timeout)
	fmt.Fprintf(w, "  verify: %s\n", errString(err))
	return nil
}

var discard = slogDiscard()

// tracer logs every exchange with the reader, byte for byte. Only Diagnose uses it: it sends
// nothing secret (no PIN, no slot data).
type tracer struct {
	h handle
	w io.Writer
}

func (t *tracer) Transmit(cmd []byte) ([]byte, error) {
	fmt.Fprintf(t.w, "  > apdu    %s\n", hex.EncodeToString(cmd))
	resp, err := t.h.Transmit(cmd)
	if err != nil {
		fmt.Fprintf(t.w, "  < error   %s\n", errString(err))
		return nil, err
	}
	fmt.Fprintf(t.w, "  < apdu    %s\n", hex.EncodeToString(resp))
	return resp, nil
}

func (t *tracer) Control(code uint32, in []byte) ([]byte, error) {
	fmt.Fprintf(t.w, "  > control 0x%08X %s\n", code, hex.EncodeToString(in))
	out, err := t.h.Control(code, in)
	if err != nil {
		fmt.Fprintf(t.w, "  < error   %s\n", errString(err))
		return nil, err
	}
	fmt.Fprintf(t.w, "  < control %s\n", hex.EncodeToString(out))
	return out, nil
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	var code scard.Error
	if errors.As(err, &code) {
		return fmt.Sprintf("%v (0x%08X)", err, uint32(code))
	}
	return err.Error()
}

func protocolNumber(p scard.Protocol) int {
	switch p {
	case scard.ProtocolT0:
		return 0
	case scard.ProtocolT1:
		return 1
	}
	return -1
}

func stateString(s scard.StateFlag) string {
	names := []struct {
		f    scard.StateFlag
		name string
	}{
		{scard.StateChanged, "changed"}, {scard.StateUnknown, "unknown"},
		{scard.StateUnavailable, "unavailable"}, {scard.StateEmpty, "empty"},
		{scard.StatePresent, "present"}, {scard.StateExclusive, "exclusive"},
		{scard.StateInuse, "in use"}, {scard.StateMute, "mute"}, {scard.StateUnpowered, "unpowered"},
	}
	var out []string
	for _, n := range names {
		if s&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return fmt.Sprintf("%s (0x%08X)", strings.Join(out, ", "), uint32(s))
}
