// Package hsm is the room that holds keys: the contract Keyquorum needs of a Hardware Security
// Module, and the errors every backend reports.
//
// # What an HSM does here
//
// An [HSM] holds two kinds of secrets. The Master Backup Key (MBK), loaded once by the key
// ceremony with [HSM.LoadBackupKey], encrypts everything that leaves the HSM: [HSM.Backup] streams
// the key database out under it and [HSM.Restore] brings a backup back in, refusing one made
// under another MBK with a [*ForeignKeyError]. The MBK cannot be replaced once set (that would
// invalidate every backup); only [HSM.Reset], the factory reset, clears it. Loading the same key
// again is a no-op so that a ceremony interrupted after the load can simply be retried.
//
// The second kind is everything else the HSM holds: its object store. Application keys that
// Keyquorum creates ([KeyStore]), and every object other software put there — private and public
// keys (RSA, EC, EdDSA), secret keys of every type and length, certificates, data objects —
// described by one model ([Object], PKCS#11 attributes) in both backends. [ObjectStore] lists
// them (each saying whether a backup carries it, and why not), backs them up whole, restores
// them (adding and replacing only what the backup brings, with a preview and a make-equal mode)
// and wipes them; [ObjectCreator] makes and imports them. Nothing is left out of a backup without
// a word: an object that cannot leave refuses the backup before a byte is written
// ([*IncompleteBackupError]) unless the caller asks to skip it. Besides, a credential key binds
// PKCS#11 slot user credentials to one smart card ([HSM.IssueSlotCredential],
// [HSM.ActivateSlot]). A credential copied byte for byte onto another card is refused with a
// [*CardMismatchError]. The optional [SlotKeyCarrier] carries that key to another node of the
// cluster, wrapped under the MBK, so that the node activates the same cards.
//
// The optional [Authenticator] vouches for data (share records) with a key derived from the MBK,
// so that one share card can be checked alone: no quorum, no reconstruction.
//
// # Backends and the backup format
//
//   - hsm/soft: the embedded default, a bbolt key store in the data dir whose secrets are
//     sealed under a device key file.
//   - hsm/pkcs11: a real HSM through PKCS#11 (SoftHSM2 in tests); the MBK is a sensitive,
//     non-extractable AES-256 object on the token.
//   - hsm/backup: the MBK-encrypted backup format both backends write: streamed in constant
//     memory, chunked AES-256-GCM, every kind of damage a typed error ([*BackupError]) that says
//     which.
//
// # What this room must never do
//
// Know about cards, PIN pads or shares (a card serial is an opaque string here), show a secret
// in an error, a log or a String method, or write the MBK, an application key or a backup's data
// key to disk unencrypted. Secrets are []byte, copied on the way in and zeroed after use.
package hsm

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
)

// KeySize is the size of the Master Backup Key: a 32-byte AES-256 key.
const KeySize = 32

// KeyID names a Master Backup Key without revealing it: the first 8 bytes of
// HMAC-SHA256(key = MBK, message = "keyquorum key id"). It is the same value as sharing.KeyID,
// defined again here because hsm imports no other package of Keyquorum.
type KeyID [8]byte

// KeyIDOf returns the key ID of an MBK.
func KeyIDOf(mbk []byte) KeyID {
	m := hmac.New(sha256.New, mbk)
	m.Write([]byte("keyquorum key id"))
	var id KeyID
	copy(id[:], m.Sum(nil))
	return id
}

func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// HSM is what the ceremony needs of a hardware security module.
//
// Every method is safe for concurrent use. Methods after Close return [ErrClosed].
type HSM interface {
	// LoadBackupKey sets the MBK. It copies mbk (the caller zeroes its own copy). It returns
	// [ErrBackupKeySet] if a different key is set and nil if the same key is set already.
	LoadBackupKey(ctx context.Context, mbk []byte) error
	// BackupKeyID reports the key ID of the MBK, or [ErrNoBackupKey] when none is set.
	BackupKeyID(ctx context.Context) (KeyID, error)
	// Backup writes the object store to w, encrypted under the MBK (format: hsm/backup). An
	// object that cannot be carried refuses it before anything is written, with an
	// [*IncompleteBackupError] ([ObjectStore.BackupObjects] can skip them instead).
	Backup(ctx context.Context, w io.Writer) error
	// Restore brings the objects of a backup read from r into the HSM: they are added, objects
	// of the same identity ([Object.Identity]) replaced, every other object kept
	// ([ObjectStore.RestoreObjects] can make the HSM equal to the backup instead). Nothing
	// changes unless the whole backup was read and authenticated. A backup made under another
	// MBK is a [*ForeignKeyError]; damage is a [*BackupError]; a backup of another kind of HSM is
	// a [*ContentError].
	Restore(ctx context.Context, r io.Reader) error
	// IssueSlotCredential returns a credential for PKCS#11 slot slot, bound to the card with
	// serial cardSerial by a key only this HSM holds. The credential is a secret: it belongs on
	// the slot user card and nowhere else.
	IssueSlotCredential(ctx context.Context, slot uint, cardSerial string) ([]byte, error)
	// ActivateSlot checks a credential read from the card with serial cardSerial and activates
	// the slot. It returns a [*CardMismatchError] for a credential issued to another card, a
	// [*SlotMismatchError] for one issued for another slot and [ErrCredentialInvalid] for
	// anything this HSM did not issue.
	ActivateSlot(ctx context.Context, slot uint, cardSerial string, credential []byte) error
	// Reset is the factory reset: it zeroizes the MBK, the slot credential key and the
	// application keys Keyquorum created. Other objects stay ([ObjectStore.Wipe] clears them).
	Reset(ctx context.Context) error
	// Close releases the HSM and clears the secrets it holds in memory.
	Close() error
}

// KeyStore is the optional part of an HSM that creates and lists keys. Both backends implement
// it.
type KeyStore interface {
	// CreateKey generates a new AES-256 application key inside the HSM under label: Keyquorum's
	// own, cleared by a factory reset.
	CreateKey(ctx context.Context, label string) (KeyInfo, error)
	// Keys lists every secret and private key but Keyquorum's own (MBK, slot and
	// authenticator keys), ordered by ID.
	Keys(ctx context.Context) ([]KeyInfo, error)
}

// KeyInfo describes one application key. It never holds key material.
type KeyInfo struct {
	ID        string // hex; unique within the HSM, kept across backup and restore
	Label     string
	Algorithm string // "AES-256", "RSA-3072", "EC-256", ... ([AlgorithmOf])
}

// AlgorithmAES256 is the algorithm of the application keys Keyquorum creates.
const AlgorithmAES256 = "AES-256"

// MaxLabelLen bounds a key label, in bytes.
const MaxLabelLen = 64

// Zero overwrites b with zeros. Best effort: Go may have copied the bytes elsewhere.
func Zero(b []byte) { clear(b) }
