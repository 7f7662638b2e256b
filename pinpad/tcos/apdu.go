package tcos

import (
	"context"
	"fmt"

	"github.com/keyquorum/keyquorum/pinpad"
)

// Transport carries command APDUs to the card and returns its response APDUs (data followed
// by SW1 SW2). A backend maps its own failures to the pinpad errors (a removed card is
// [pinpad.ErrCardRemoved], a vanished reader [pinpad.ErrReaderGone]).
type Transport interface {
	Transmit(ctx context.Context, apdu []byte) ([]byte, error)
}

// Status words this package acts on (ISO 7816-4; TCOS meanings from OpenSC's card-tcos.c).
const (
	swOK               uint16 = 0x9000
	swEndOfFile        uint16 = 0x6282 // fewer bytes than Le: end of file
	swRecordNotFound   uint16 = 0x6A83
	swWrongLength      uint16 = 0x6700
	swSecurityStatus   uint16 = 0x6982
	swPINBlocked       uint16 = 0x6983
	swConditionsOfUse  uint16 = 0x6985 // TCOS: the PIN is still in its NullPIN (transport) state
	swFileNotFound     uint16 = 0x6A82
	swNotEnoughMemory  uint16 = 0x6A84
	swWrongOffset      uint16 = 0x6B00
	swMemoryFailure    uint16 = 0x6581
	swInsNotSupported  uint16 = 0x6D00
	swClaNotSupported  uint16 = 0x6E00
	swWrongPINCounter0 uint16 = 0x63C0
)

// checkSW turns a status word into the error the caller sees. op names what was attempted
// ("read share slot"); it goes into errors that have no better name.
func checkSW(op string, sw uint16) error {
	switch {
	case sw == swOK:
		return nil
	case sw == swWrongPINCounter0, sw == swPINBlocked:
		return pinpad.ErrPINBlocked
	case sw&0xFFF0 == 0x63C0:
		return &pinpad.WrongPINError{Remaining: int(sw & 0x0F)}
	case sw == swConditionsOfUse:
		return pinpad.ErrNullPIN
	case sw == swSecurityStatus:
		return pinpad.ErrAccessDenied
	case sw == swMemoryFailure:
		return fmt.Errorf("%s: %w", op, pinpad.ErrMemory)
	case sw == swNotEnoughMemory:
		return fmt.Errorf("%s: %w", op, pinpad.ErrTooLarge)
	case sw == swFileNotFound:
		return fmt.Errorf("%s: %w", op, pinpad.ErrNotPersonalised)
	case sw == swWrongLength:
		return fmt.Errorf("%s: %w", op, pinpad.ErrWrongLength)
	}
	return &pinpad.StatusError{Op: op, SW: sw}
}

// transmit sends one APDU and follows the transport-level status words: 61 xx (more data:
// GET RESPONSE) and 6C xx (wrong Le: send again with Le = xx). It returns the data and the
// final status word.
func (c *Card) transmit(ctx context.Context, apdu []byte) ([]byte, uint16, error) {
	resp, err := c.tr.Transmit(ctx, apdu)
	if err != nil {
		return nil, 0, err
	}
	var data []byte
	for range 64 { // a card chaining more than 64 × 256 bytes is broken
		if len(resp) < 2 {
			clear(data)
			return nil, 0, fmt.Errorf("transmit apdu: response of %d bytes", len(resp))
		}
		sw1, sw2 := resp[len(resp)-2], resp[len(resp)-1]
		body := resp[:len(resp)-2]
		switch sw1 {
		case 0x61:
			data = append(data, body...)
			clear(resp)
			resp, err = c.tr.Transmit(ctx, []byte{0x00, 0xC0, 0x00, 0x00, sw2})
		case 0x6C:
			again := append([]byte(nil), apdu...)
			if k := caseOf(apdu); k == 2 || k == 4 {
				again[len(again)-1] = sw2 // replace Le
			} else {
				again = append(again, sw2)
			}
			clear(resp)
			resp, err = c.tr.Transmit(ctx, again)
			clear(again)
		default:
			data = append(data, body...)
			clear(resp)
			return data, uint16(sw1)<<8 | uint16(sw2), nil
		}
		if err != nil {
			clear(data)
			return nil, 0, err
		}
	}
	clear(data)
	return nil, 0, fmt.Errorf("transmit apdu: the card kept asking for GET RESPONSE")
}

// caseOf tells a short APDU's ISO case: 1 header only, 2 with Le, 3 with data, 4 data and Le.
func caseOf(apdu []byte) int {
	switch {
	case len(apdu) <= 4:
		return 1
	case len(apdu) == 5:
		return 2
	case len(apdu) == 5+int(apdu[4]):
		return 3
	default:
		return 4
	}
}
