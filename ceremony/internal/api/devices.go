package api

import (
	"context"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad"
)

// Pad is what a ceremony needs of the PIN pad. Every [pinpad.Terminal] (pinpad/pcsc,
// pinpad/sim) satisfies it. The card it hands out is a [pinpad.Card].
type Pad interface {
	Show(ctx context.Context, text string) error
	WaitForOK(ctx context.Context, text string, timeout time.Duration) error
	WaitForCard(ctx context.Context, text string, timeout time.Duration) (pinpad.Card, error)
	WaitForRemoval(ctx context.Context, text string, timeout time.Duration) error
}

// HSM is what a ceremony needs of the HSM. Every [hsm.HSM] (hsm/soft, hsm/pkcs11) satisfies it.
// An HSM that also implements [hsm.Authenticator] (both backends do) lets card checks vouch for
// cards; without it a card check can still name a card's set, but not say it is intact.
type HSM interface {
	LoadBackupKey(ctx context.Context, mbk []byte) error
	BackupKeyID(ctx context.Context) (hsm.KeyID, error)
	IssueSlotCredential(ctx context.Context, slot uint, cardSerial string) ([]byte, error)
	ActivateSlot(ctx context.Context, slot uint, cardSerial string, credential []byte) error
	Reset(ctx context.Context) error
}

// Timeouts bound each wait on the pad. A wait that runs out stalls the ceremony (see
// [Manager.Retry]); it does not end it. `keyquorum serve` sets each from a flag.
type Timeouts struct {
	OK      time.Duration // a confirmation ("Write New Key press OK/Cancel")
	Card    time.Duration // a card inserted and OK pressed
	PIN     time.Duration // one PIN typed on the pad; each entry of a PIN change gets its own
	Removal time.Duration // the card taken out
}

// DefaultTimeouts are long enough for a custodian fetching a card from the next room, short
// enough that an abandoned pad does not wait forever. A PIN gets 90 s: field reports found a
// minute too short for people at a pad (web-eid/libpcsc-cpp raised theirs to 90 s).
var DefaultTimeouts = Timeouts{OK: 2 * time.Minute, Card: 3 * time.Minute, PIN: 90 * time.Second, Removal: 2 * time.Minute}

func (t Timeouts) WithDefaults() Timeouts {
	if t.OK <= 0 {
		t.OK = DefaultTimeouts.OK
	}
	if t.Card <= 0 {
		t.Card = DefaultTimeouts.Card
	}
	if t.PIN <= 0 {
		t.PIN = DefaultTimeouts.PIN
	}
	if t.Removal <= 0 {
		t.Removal = DefaultTimeouts.Removal
	}
	return t
}
