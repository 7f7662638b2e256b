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
// The second kind is the HSM's own: application keys (the key database that backups carry,
// created and listed through the optional [KeyStore]) and a credential key that binds PKCS#11
// slot user credentials to one smart card ([HSM.IssueSlotCredential], [HSM.ActivateSlot]). A
// credential copied byte for byte onto another card is refused with a [*CardMismatchError].
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
	// Backup writes the key database to w, encrypted under the MBK (format: hsm/backup).
	Backup(ctx context.Context, w io.Writer) error
	// Restore replaces the key database with the one in a backup read from r. Nothing changes
	// unless the whole backup was read and authenticated. A backup made under another MBK is a
	// [*ForeignKeyError]; damage is a [*BackupError]; a backup of another kind of HSM is a
	// [*ContentError].
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
	// Reset zeroizes the MBK, the key database and the slot credential key: the factory reset.
	Reset(ctx context.Context) error
	// Close releases the HSM and clears the secrets it holds in memory.
	Close() error
}

// KeyStore is the optional part of an HSM that creates and lists application keys: the key
// database that backups carry. Both backends implement it.
type KeyStore interface {
	// CreateKey generates a new AES-256 key inside the HSM under label.
	CreateKey(ctx context.Context, label string) (KeyInfo, error)
	// Keys lists the application keys, ordered by ID.
	Keys(ctx context.Context) ([]KeyInfo, error)
}

// KeyInfo describes one application key. It never holds key material.
type KeyInfo struct {
	ID        string // hex; unique within the HSM, kept across backup and restore
	Label     string
	Algorithm string // "AES-256"
}

// AlgorithmAES256 is the only algorithm of application keys so far.
const AlgorithmAES256 = "AES-256"

// MaxLabelLen bounds a key label, in bytes.
const MaxLabelLen = 64

// Zero overwrites b with zeros. Best effort: Go may have copied the bytes elsewhere.
func Zero(b []byte) { clear(b) }
