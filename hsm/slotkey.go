package hsm

import (
	"context"
	"errors"
)

// SlotKeyCarrier is the optional part of an HSM whose slot credential key can travel to another
// node of its cluster: wrapped under the MBK (AES key wrap with padding, RFC 5649), never in the
// clear. A node that imports the key activates the slots of slot user cards another node wrote.
// hsm/soft implements it; a token whose slot key was generated not extractable (hsm/pkcs11)
// does not, and its slot cards stay bound to it.
type SlotKeyCarrier interface {
	// ExportSlotKey returns the slot credential key wrapped under the MBK, or nil when the HSM
	// has none yet (no slot credential was ever issued). It returns [ErrNoBackupKey] without an
	// MBK.
	ExportSlotKey(ctx context.Context) ([]byte, error)
	// ImportSlotKey unwraps a key ExportSlotKey made under the same MBK and makes it this
	// HSM's slot credential key, replacing its own (credentials it issued are then refused). A
	// wrapped key that does not unwrap under this MBK is [ErrSlotKeyInvalid] and changes
	// nothing.
	ImportSlotKey(ctx context.Context, wrapped []byte) error
}

// SlotKeySize is the size of the slot credential key: an HMAC-SHA256 key.
const SlotKeySize = 32

// ErrSlotKeyInvalid is a wrapped slot credential key that does not unwrap under this HSM's MBK
// to a key of [SlotKeySize] bytes.
var ErrSlotKeyInvalid = errors.New("the slot credential key offered does not unwrap under this hsm's master backup key")
