package part10

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// MaxDisplayText is the most text one CT-BCS OUTPUT carries on the e-com (HARDWARE.md §2).
const MaxDisplayText = 64

// CT-BCS addresses inside an MCT_UNIVERSAL envelope: the terminal is 1, the host 2.
const (
	mctTerminal byte = 0x01
	mctHost     byte = 0x02
)

// OutputCommand builds the MCT_UNIVERSAL input that writes text on the pad's display: the
// envelope src(1)=02 dst(1)=01 length(2, little-endian), then CT-BCS OUTPUT
// 20 17 40 00 Lc 50 L text. '\n' becomes the display's line break '\r'. Text is ASCII; other
// bytes are replaced with '?', and more than [MaxDisplayText] bytes is an error.
func OutputCommand(text string) ([]byte, error) {
	t, err := displayText("show text", text)
	if err != nil {
		return nil, err
	}
	cmd := []byte{0x20, 0x17, 0x40, 0x00, byte(2 + len(t)), 0x50, byte(len(t))}
	return mct(append(cmd, t...)), nil
}

// MCTResponse unwraps an MCT_UNIVERSAL reply (the envelope with source and destination
// swapped) and returns the CT-BCS status word.
func MCTResponse(b []byte) (uint16, error) {
	if len(b) < 4 {
		return 0, fmt.Errorf("%w: MCT reply of %d bytes", ErrBadStructure, len(b))
	}
	n := int(binary.LittleEndian.Uint16(b[2:4]))
	if n != len(b)-4 || n < 2 {
		return 0, fmt.Errorf("%w: MCT reply length %d, %d bytes follow", ErrBadStructure, n, len(b)-4)
	}
	return uint16(b[len(b)-2])<<8 | uint16(b[len(b)-1]), nil
}

// mct wraps a CT-BCS command for the terminal in the MCT_UNIVERSAL envelope.
func mct(cmd []byte) []byte {
	out := []byte{mctHost, mctTerminal, 0, 0}
	binary.LittleEndian.PutUint16(out[2:], uint16(len(cmd)))
	return append(out, cmd...)
}

// displayText makes text fit the display: '\n' becomes '\r', other bytes outside printable
// ASCII become '?'; more than [MaxDisplayText] bytes is an error.
func displayText(op, text string) ([]byte, error) {
	t := []byte(text)
	for i, c := range t {
		switch {
		case c == '\n':
			t[i] = '\r'
		case c == '\r':
		case c < 0x20 || c > 0x7E:
			t[i] = '?'
		}
	}
	if len(t) > MaxDisplayText {
		return nil, fmt.Errorf("%s: %d bytes, the display takes %d", op, len(t), MaxDisplayText)
	}
	return t, nil
}

// InputCommand builds the MCT_UNIVERSAL input of CT-BCS INPUT that shows text and waits for one
// key: 20 16 50 00 Lc 80 01 t 50 L text 01. With Le 01 and P2 00 the pad answers 90 00 for OK,
// 64 01 for Cancel, 64 00 when no key came within t seconds, or a digit and 90 00 (Reiner's
// driver, CCIDReader.cpp INS 16; HARDWARE.md §5). t is timeout in whole seconds, rounded up,
// 1..255.
func InputCommand(text string, timeout time.Duration) ([]byte, error) {
	t, err := displayText("wait for a key", text)
	if err != nil {
		return nil, err
	}
	secs := timerOut(timeout)
	if secs == 0 {
		secs = 1
	}
	data := append([]byte{0x80, 0x01, secs, 0x50, byte(len(t))}, t...)
	cmd := append([]byte{0x20, 0x16, 0x50, 0x00, byte(len(data))}, data...)
	return mct(append(cmd, 0x01)), nil
}

// Key is what a CT-BCS INPUT of one key returned.
type Key int

// The answers of an INPUT of one key.
const (
	KeyOK      Key = iota // 90 00
	KeyCancel             // 64 01
	KeyTimeout            // 64 00
	KeyDigit              // a digit key: not an answer to an OK/Cancel question
	KeyNoInput            // 6D 00: firmware without the MKT_COMP module has no INPUT
)

// InputResult decodes an MCT_UNIVERSAL reply to [InputCommand].
func InputResult(b []byte) (Key, error) {
	sw, err := MCTResponse(b)
	if err != nil {
		return 0, err
	}
	data := len(b) - 4 - 2
	switch {
	case sw == 0x9000 && data == 0:
		return KeyOK, nil
	case sw == 0x9000 && data == 1:
		return KeyDigit, nil
	case sw == 0x6401:
		return KeyCancel, nil
	case sw == 0x6400:
		return KeyTimeout, nil
	case sw == 0x6D00:
		return KeyNoInput, nil
	}
	return 0, fmt.Errorf("wait for a key: the pad answered %04X", sw)
}

// GetStatusCommand is CT-BCS GET STATUS of the terminal's manufacturer data (20 13 00 46 00)
// in the MCT_UNIVERSAL envelope.
func GetStatusCommand() []byte { return mct([]byte{0x20, 0x13, 0x00, 0x46, 0x00}) }

// Firmware is the version a cyberJack reports in GET STATUS: "V3.0; Rev. 45" is 3.0.45.
type Firmware struct {
	Major, Minor, Revision int
	// Ident is the manufacturer data as the reader sent it ("DESCTCJECA V3.0; Rev.  45").
	Ident string
}

func (f Firmware) String() string { return fmt.Sprintf("%d.%d.%d", f.Major, f.Minor, f.Revision) }

// MinPINDirectFirmware is the oldest kernel on which Reiner's driver takes secure PIN entry
// (CCIDReader.cpp PinDirectSupported: version 3.0, revision 42); older ones answer
// VERIFY/MODIFY_PIN_DIRECT with SCARD_E_UNSUPPORTED_FEATURE.
var MinPINDirectFirmware = Firmware{Major: 3, Minor: 0, Revision: 42}

// Older reports whether f is older than g.
func (f Firmware) Older(g Firmware) bool {
	if f.Major != g.Major {
		return f.Major < g.Major
	}
	if f.Minor != g.Minor {
		return f.Minor < g.Minor
	}
	return f.Revision < g.Revision
}

// ParseStatus decodes the MCT_UNIVERSAL reply to [GetStatusCommand]: tag 46, length, then
// "DESCT" and the product ("CJECA"), " Vm.n" and, on class-3 readers, "; Rev. nnn"
// (CCIDReader.cpp, INS 13). A reply without the revision gives revision -1.
func ParseStatus(b []byte) (Firmware, error) {
	sw, err := MCTResponse(b)
	if err != nil {
		return Firmware{}, err
	}
	if sw != 0x9000 {
		return Firmware{}, fmt.Errorf("read firmware: the reader answered %04X", sw)
	}
	body := b[4 : len(b)-2]
	if len(body) < 2 || body[0] != 0x46 || int(body[1]) != len(body)-2 {
		return Firmware{}, fmt.Errorf("%w: GET STATUS reply % X", ErrBadStructure, body)
	}
	ident := string(body[2:])
	f := Firmware{Ident: ident, Revision: -1}
	v := strings.Index(ident, " V")
	if v < 0 {
		return Firmware{}, fmt.Errorf("%w: no version in %q", ErrBadStructure, ident)
	}
	if n, _ := fmt.Sscanf(ident[v+2:], "%d.%d", &f.Major, &f.Minor); n != 2 {
		return Firmware{}, fmt.Errorf("%w: no version in %q", ErrBadStructure, ident)
	}
	if r := strings.Index(ident, "Rev."); r >= 0 {
		if _, err := fmt.Sscanf(strings.TrimSpace(ident[r+4:]), "%d", &f.Revision); err != nil {
			return Firmware{}, fmt.Errorf("%w: bad revision in %q", ErrBadStructure, ident)
		}
	}
	return f, nil
}
