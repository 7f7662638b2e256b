// Package part10 speaks PC/SC part 10 to a PIN-pad reader: the feature list a reader answers to
// CM_IOCTL_GET_FEATURE_REQUEST, the PIN_VERIFY_STRUCTURE and PIN_MODIFY_STRUCTURE that ask the
// pad to read a PIN and complete a card command with it, the two-byte results of those, and the
// CT-BCS OUTPUT command sent through MCT_UNIVERSAL to write on the display.
//
// Everything here is bytes in, bytes out: no reader, no card, no PC/SC library. The pcsc backend
// sends what this package builds; the simulator's pad and test fakes parse it and do what a pad
// does ([PINVerify.Fill]), so both sides of the wire are checked against one definition.
//
// Byte layouts follow pcsc-lite's reader.h and the CCID and Reiner SCT drivers (HARDWARE.md §1,
// §2). Control codes are never constants here: a reader's codes come from its feature list
// ([ParseFeatures]); Reiner's driver and libccid number them differently.
//
// What this package must never do: hold a PIN longer than the call that puts it into a command
// ([PINVerify.Fill], which exists for pad emulators and tests), or print one.
package part10

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
)

// Feature tags of PC/SC part 10 (pcsc-lite reader.h).
const (
	FeatureVerifyPINStart       byte = 0x01
	FeatureVerifyPINFinish      byte = 0x02
	FeatureModifyPINStart       byte = 0x03
	FeatureModifyPINFinish      byte = 0x04
	FeatureGetKeyPressed        byte = 0x05
	FeatureVerifyPINDirect      byte = 0x06
	FeatureModifyPINDirect      byte = 0x07
	FeatureMCTReaderDirect      byte = 0x08
	FeatureMCTUniversal         byte = 0x09
	FeatureIFDPINProperties     byte = 0x0A
	FeatureAbort                byte = 0x0B
	FeatureSetSPEMessage        byte = 0x0C
	FeatureVerifyPINDirectAppID byte = 0x0D
	FeatureModifyPINDirectAppID byte = 0x0E
	FeatureWriteDisplay         byte = 0x0F
	FeatureGetKey               byte = 0x10
	FeatureIFDDisplayProperties byte = 0x11
	FeatureGetTLVProperties     byte = 0x12
	FeatureCCIDEscCommand       byte = 0x13
	FeatureExecutePACE          byte = 0x20
	getFeatureRequestFunction        = 3400 // SCARD_CTL_CODE(3400): CM_IOCTL_GET_FEATURE_REQUEST
)

// GetFeatureRequest is the function number of CM_IOCTL_GET_FEATURE_REQUEST. The control code is
// the platform's SCARD_CTL_CODE of it (scard.CtlCode on pcsc-lite: 0x42000D48); it is the one
// code a caller must know before it has a feature list.
const GetFeatureRequest uint16 = getFeatureRequestFunction

// FeatureName names a feature tag for logs and diagnosis.
func FeatureName(tag byte) string {
	switch tag {
	case FeatureVerifyPINStart:
		return "VERIFY_PIN_START"
	case FeatureVerifyPINFinish:
		return "VERIFY_PIN_FINISH"
	case FeatureModifyPINStart:
		return "MODIFY_PIN_START"
	case FeatureModifyPINFinish:
		return "MODIFY_PIN_FINISH"
	case FeatureGetKeyPressed:
		return "GET_KEY_PRESSED"
	case FeatureVerifyPINDirect:
		return "VERIFY_PIN_DIRECT"
	case FeatureModifyPINDirect:
		return "MODIFY_PIN_DIRECT"
	case FeatureMCTReaderDirect:
		return "MCT_READER_DIRECT"
	case FeatureMCTUniversal:
		return "MCT_UNIVERSAL"
	case FeatureIFDPINProperties:
		return "IFD_PIN_PROPERTIES"
	case FeatureAbort:
		return "ABORT"
	case FeatureSetSPEMessage:
		return "SET_SPE_MESSAGE"
	case FeatureVerifyPINDirectAppID:
		return "VERIFY_PIN_DIRECT_APP_ID"
	case FeatureModifyPINDirectAppID:
		return "MODIFY_PIN_DIRECT_APP_ID"
	case FeatureWriteDisplay:
		return "WRITE_DISPLAY"
	case FeatureGetKey:
		return "GET_KEY"
	case FeatureIFDDisplayProperties:
		return "IFD_DISPLAY_PROPERTIES"
	case FeatureGetTLVProperties:
		return "GET_TLV_PROPERTIES"
	case FeatureCCIDEscCommand:
		return "CCID_ESC_COMMAND"
	case FeatureExecutePACE:
		return "EXECUTE_PACE"
	default:
		return fmt.Sprintf("FEATURE_%02X", tag)
	}
}

// Features maps the feature tags a reader offers to the control codes it answers them on.
type Features map[byte]uint32

// Code returns the control code of a feature and whether the reader offers it.
func (f Features) Code(tag byte) (uint32, bool) {
	c, ok := f[tag]
	return c, ok
}

// String lists the features as "VERIFY_PIN_DIRECT=0x42000DB2 ...", in tag order.
func (f Features) String() string {
	tags := make([]int, 0, len(f))
	for t := range f {
		tags = append(tags, int(t))
	}
	sort.Ints(tags)
	var b strings.Builder
	for i, t := range tags {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=0x%08X", FeatureName(byte(t)), f[byte(t)])
	}
	return b.String()
}

// FeatureError is a feature list that is not n × (tag, 04, code).
type FeatureError struct {
	Offset int
	Reason string
}

func (e *FeatureError) Error() string {
	return fmt.Sprintf("parse reader feature list: %s at byte %d", e.Reason, e.Offset)
}

// ParseFeatures decodes the reply to CM_IOCTL_GET_FEATURE_REQUEST: a sequence of tag(1)
// length(1)=04 control code(4, big-endian). An empty reply is a reader with no features. The
// parse is strict: a length other than 4, a truncated entry or a tag given twice is an error,
// since a wrong control code sent to a reader is worse than none.
func ParseFeatures(b []byte) (Features, error) {
	f := Features{}
	for i := 0; i < len(b); i += 6 {
		if len(b)-i < 2 {
			return nil, &FeatureError{Offset: i, Reason: "truncated entry"}
		}
		if b[i+1] != 4 {
			return nil, &FeatureError{Offset: i + 1, Reason: fmt.Sprintf("length %d, want 4", b[i+1])}
		}
		if len(b)-i < 6 {
			return nil, &FeatureError{Offset: i, Reason: "truncated control code"}
		}
		if _, dup := f[b[i]]; dup {
			return nil, &FeatureError{Offset: i, Reason: fmt.Sprintf("feature %02X given twice", b[i])}
		}
		f[b[i]] = binary.BigEndian.Uint32(b[i+2 : i+6])
	}
	return f, nil
}

// MarshalFeatures encodes a feature list the way a reader answers it, in tag order. Reader
// emulators and tests use it.
func MarshalFeatures(f Features) []byte {
	tags := make([]int, 0, len(f))
	for t := range f {
		tags = append(tags, int(t))
	}
	sort.Ints(tags)
	out := make([]byte, 0, 6*len(tags))
	for _, t := range tags {
		out = append(out, byte(t), 4)
		out = binary.BigEndian.AppendUint32(out, f[byte(t)])
	}
	return out
}

// timerOut converts an operation's timeout to the one-byte bTimerOut of the structures: whole
// seconds rounded up, at most 255; zero or less means the reader's default (00).
func timerOut(d time.Duration) byte {
	if d <= 0 {
		return 0
	}
	s := (d + time.Second - 1) / time.Second
	if s > 255 {
		s = 255
	}
	return byte(s)
}

// Errors of the PIN-pad layer that the pinpad package has no name for.
var (
	// ErrStructureRejected is result 6B 80: the reader refused the PIN entry request itself.
	ErrStructureRejected = errors.New("the PIN pad refused the PIN entry request (6B 80)")
	// ErrBadStructure is a PIN structure this package cannot build or parse.
	ErrBadStructure = errors.New("malformed PIN pad structure")
)

// Result turns the two bytes a VERIFY_PIN_DIRECT or MODIFY_PIN_DIRECT returns into an error:
// nil for 90 00, the pinpad package's typed errors for the card's and the pad's answers, and
// a [*pinpad.StatusError] for anything else. A reply that is not exactly two bytes is an
// error too (HARDWARE.md §1: every driver answers exactly two).
func Result(op string, b []byte) error {
	if len(b) != 2 {
		return fmt.Errorf("%s: the PIN pad answered %d bytes, want 2", op, len(b))
	}
	sw := uint16(b[0])<<8 | uint16(b[1])
	switch {
	case sw == 0x9000:
		return nil
	case sw == 0x63C0:
		return pinpad.ErrPINBlocked
	case sw&0xFFF0 == 0x63C0:
		return &pinpad.WrongPINError{Remaining: int(sw & 0x0F)}
	case sw == 0x6983:
		return pinpad.ErrPINBlocked
	case sw == 0x6985:
		return pinpad.ErrNullPIN
	case sw == 0x6400:
		return pinpad.ErrTimeout
	case sw == 0x6401:
		return pinpad.ErrCancelled
	case sw == 0x6402:
		return pinpad.ErrPINsDiffer
	case sw == 0x6403:
		return pinpad.ErrPINLength
	case sw == 0x6B80:
		return fmt.Errorf("%s: %w", op, ErrStructureRejected)
	}
	return &pinpad.StatusError{Op: op, SW: sw}
}
