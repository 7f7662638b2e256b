package part10

import (
	"encoding/binary"
	"fmt"
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
		return nil, fmt.Errorf("show text: %d bytes, the display takes %d", len(t), MaxDisplayText)
	}
	cmd := []byte{0x20, 0x17, 0x40, 0x00, byte(2 + len(t)), 0x50, byte(len(t))}
	cmd = append(cmd, t...)
	out := []byte{mctHost, mctTerminal, 0, 0}
	binary.LittleEndian.PutUint16(out[2:], uint16(len(cmd)))
	return append(out, cmd...), nil
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
