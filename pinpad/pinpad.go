// Package pinpad is the room that touches the PIN-pad reader and the TCOS smart cards in it.
//
// It has two layers. A [Terminal] is the pad itself: a display, the OK / Cancel / Clear keys and
// a card slot. A [Card] is a TCOS card in that slot, spoken to in APDUs: its serial, its PIN try
// counters, PIN verification and change entered on the pad, and the two protected data slots a
// card carries (a Backup Key share, a PKCS#11 slot user credential).
//
// Backends live in sub-packages: pinpad/pcsc drives a real Reiner SCT cyberJack e-com through
// PC/SC (github.com/ebfe/scard), pinpad/sim is a virtual pad with virtual cards for demos and
// tests.
//
// What this package must never do: know what a share or a key is (it stores opaque bytes), see
// a PIN (PINs are typed on the pad; the host never receives one), or block without a
// [context.Context] and a timeout. Every wait reports which of the two ended it: a deadline of
// the pad ends with [ErrTimeout], a cancelled context with the context's error.
package pinpad

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Slot names one of the two protected data sets of a card. Each has its own PIN (seed 003: both
// preset to 123456 on delivery) and its own storage.
type Slot int

const (
	// SlotShare holds one Backup Key share record.
	SlotShare Slot = 1
	// SlotUser holds a PKCS#11 slot user activation credential.
	SlotUser Slot = 2
)

func (s Slot) String() string {
	switch s {
	case SlotShare:
		return "backup key share"
	case SlotUser:
		return "slot user"
	default:
		return fmt.Sprintf("slot %d", int(s))
	}
}

// Terminal is the PIN pad: display, keys and one card slot.
//
// Every wait takes a context and a timeout. A timeout of the pad returns [ErrTimeout]; a
// cancelled context returns an error wrapping ctx.Err(); the Cancel key returns [ErrCancelled].
type Terminal interface {
	// Name is the reader's name as the operator sees it.
	Name() string
	// Show puts text on the pad's display, best effort: a pad without a usable display returns
	// [ErrNoDisplay] and the caller shows the text elsewhere (WebConf).
	Show(ctx context.Context, text string) error
	// WaitForOK shows text and waits for OK (nil) or Cancel ([ErrCancelled]).
	WaitForOK(ctx context.Context, text string, timeout time.Duration) error
	// WaitForCard shows text ("Insert 1. card press OK/Cancel") and waits until a card is in
	// the slot and ready. The card is connected exclusively until [Card.Close]. A card that is
	// not a TCOS card is returned as [ErrNotTCOS] (the caller asks for it to be removed).
	WaitForCard(ctx context.Context, text string, timeout time.Duration) (Card, error)
	// WaitForRemoval shows text and waits until the slot is empty.
	WaitForRemoval(ctx context.Context, text string, timeout time.Duration) error
	// Close releases the reader.
	Close() error
}

// Card is a connected TCOS card. Its methods are not safe for concurrent use.
type Card interface {
	// Serial is the card's serial number, in hex, as printed by card tools.
	Serial() string
	// ATR is the card's answer to reset.
	ATR() []byte
	// ProfileName names the card profile (the layout of DF, slot files and PINs) the card is
	// read with.
	ProfileName() string
	// PINTries reports how many PIN tries the slot has left, without spending one. A card that
	// cannot tell without risking a try gives an error wrapping [ErrTriesUnknown]: the caller
	// says "tries unknown" and goes on.
	PINTries(ctx context.Context, slot Slot) (int, error)
	// VerifyPIN has the operator enter the slot's PIN on the pad. It returns nil when the card
	// accepted it, [*WrongPINError] with the tries left, [ErrPINBlocked], [ErrTimeout] or
	// [ErrCancelled]. The PIN never reaches the host.
	VerifyPIN(ctx context.Context, slot Slot, timeout time.Duration) error
	// ChangePIN has the operator enter the old PIN, the new PIN and the new PIN again on the pad.
	ChangePIN(ctx context.Context, slot Slot, timeout time.Duration) error
	// Read returns the slot's data (after VerifyPIN); [ErrEmpty] when the slot holds nothing.
	Read(ctx context.Context, slot Slot) ([]byte, error)
	// Write replaces the slot's data (after VerifyPIN), reads it back and compares: a card
	// that does not return what was written gives [ErrWriteVerify].
	Write(ctx context.Context, slot Slot, data []byte) error
	// Prepare lays the card out in its profile where it lacks files: the DF, the slot PINs
	// (created in their NullPIN state, with no value) and the slot files with their access
	// rules. Nothing that is there is changed or removed. A card that does not allow it gives
	// [*PrepareRefusedError] with what a survey found.
	Prepare(ctx context.Context) (*Prepared, error)
	// SetFirstPIN has the operator enter a first PIN, twice, for a slot whose PIN is still in
	// its NullPIN (transport) state.
	SetFirstPIN(ctx context.Context, slot Slot, timeout time.Duration) error
	// Close ends the session and resets the card, so a verified PIN does not outlive it.
	Close() error
}

// Prepared is what Prepare did to a card.
type Prepared struct {
	// Created lists the files and PINs created, in order ("DF 3F00/DF01", "PIN 81 in
	// 3F00/DF01", "EF 3F00/DF01/4B01 (1024 bytes)"); empty when the card already fitted.
	Created []string
	// FirstPIN lists the slots whose PIN was created now, in NullPIN state: each needs a
	// first PIN typed on the pad ([Card.SetFirstPIN]).
	FirstPIN []Slot
}

// PrepareRefusedError is a card that cannot be prepared: Findings are what a survey of it
// found, Advice what to do instead.
type PrepareRefusedError struct {
	Profile  string
	Findings string
	Advice   string
}

func (e *PrepareRefusedError) Error() string {
	return fmt.Sprintf("the card cannot be prepared for card profile %s: %s; %s", e.Profile, e.Findings, e.Advice)
}

// Conditions of the pad and the card. Texts are safe to show an operator.
var (
	ErrTimeout     = errors.New("the PIN pad timed out waiting for the operator")
	ErrCancelled   = errors.New("cancelled on the PIN pad")
	ErrCardRemoved = errors.New("the card was removed during the operation")
	ErrNoCard      = errors.New("no card in the reader")
	ErrReaderGone  = errors.New("the card reader was disconnected")
	// ErrNoReader is no PIN-pad reader connected (none plugged in, or it was unplugged and is
	// not back yet): a service waiting for one reports this until it is plugged in.
	ErrNoReader   = errors.New("no PIN pad connected")
	ErrNoPINPad   = errors.New("this reader has no PIN pad: PINs must be entered on a PIN pad, never in the browser")
	ErrNoDisplay  = errors.New("the PIN pad has no usable display")
	ErrNotTCOS    = errors.New("not a card of this appliance (not a TCOS card)")
	ErrPINBlocked = errors.New("the PIN is blocked after too many wrong entries")
	ErrNullPIN    = errors.New("the card still has its transport PIN: set a PIN first")
	// ErrNotNullPIN is a first PIN asked for a slot whose PIN is already set.
	ErrNotNullPIN   = errors.New("the slot's PIN is already set (not in its transport state): change it instead")
	ErrPINsDiffer   = errors.New("the two new PINs entered on the pad differ")
	ErrPINLength    = errors.New("the PIN entered has the wrong number of digits")
	ErrEmpty        = errors.New("the card holds no data in this slot")
	ErrTooLarge     = errors.New("the data does not fit on the card")
	ErrWriteVerify  = errors.New("the card did not return what was written to it")
	ErrMemory       = errors.New("the card reported a memory failure")
	ErrAccessDenied = errors.New("the card refused access: PIN not verified")
	// ErrNotPersonalised is a TCOS card without Keyquorum's files: a card of another
	// application, or a blank card nobody prepared for this appliance.
	ErrNotPersonalised = errors.New("the card has no Keyquorum data slots: it was not prepared for this appliance")
	// ErrNoOKKey is a pad that cannot report its OK / Cancel keys to the host (a cyberJack whose
	// firmware lacks the MKT_COMP module answers CT-BCS INPUT with 6D 00): the caller asks for
	// the confirmation on the WebConf screen instead.
	ErrNoOKKey = errors.New("this PIN pad cannot report its OK key: confirm on the WebConf screen")
	// ErrTriesUnknown is a card that does not say how many PIN tries are left without risking
	// one: not fatal, the PIN can still be entered.
	ErrTriesUnknown = errors.New("PIN tries unknown: the card does not tell them without risking a try")
	// ErrWrongLength is the card refusing a command's length (67 00).
	ErrWrongLength = errors.New("the card refused the length of a command")
)

// FirmwareError is a PIN-pad reader whose firmware cannot take PINs on its pad through PC/SC:
// Reiner's driver refuses secure PIN entry below kernel 3.0.42. It is an [ErrNoPINPad].
type FirmwareError struct {
	Firmware string // the reader's version, "" when it could not be read
	Need     string // the oldest version that works
}

func (e *FirmwareError) Error() string {
	have := "firmware"
	if e.Firmware != "" {
		have = "firmware " + e.Firmware
	}
	return fmt.Sprintf("the PIN pad's %s cannot take PINs on its pad through PC/SC (%s or newer is needed): update the reader's firmware", have, e.Need)
}

// Is makes a FirmwareError an [ErrNoPINPad].
func (e *FirmwareError) Is(target error) bool { return target == ErrNoPINPad }

// ReaderRefusedError is a PIN entry the reader itself refused with a status word that a card
// also uses (Reiner's driver makes 69 85 from a CCID error): the card said nothing, so this is
// not the card's state.
type ReaderRefusedError struct {
	Op string
	SW uint16
}

func (e *ReaderRefusedError) Error() string {
	return fmt.Sprintf("%s: the PIN pad reader refused the entry (status %04X from the reader, not the card)", e.Op, e.SW)
}

// WrongPINError is a PIN the card refused; Remaining tries are left before it blocks.
type WrongPINError struct {
	Remaining int
}

func (e *WrongPINError) Error() string {
	if e.Remaining == 1 {
		return "wrong PIN: 1 try left before the card is blocked"
	}
	return fmt.Sprintf("wrong PIN: %d tries left", e.Remaining)
}

// StatusError is a status word the protocol has no better name for. Op says what was attempted.
type StatusError struct {
	Op string
	SW uint16
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: card answered status %04X", e.Op, e.SW)
}
