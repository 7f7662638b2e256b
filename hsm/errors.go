package hsm

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Conditions of the MBK and of the HSM itself.
var (
	// ErrBackupKeySet means a different MBK is already loaded. Replacing it would make every
	// existing backup unreadable; only a factory reset ([HSM.Reset]) clears it.
	ErrBackupKeySet = errors.New("a different master backup key is already loaded: it can only be replaced after a factory reset")
	// ErrNoBackupKey means no MBK is loaded: run the key ceremony first.
	ErrNoBackupKey = errors.New("no master backup key is loaded: load it with the key ceremony first")
	// ErrKeySize means a key of the wrong size was offered as the MBK.
	ErrKeySize = errors.New("master backup key must be 32 bytes")
	// ErrClosed means the HSM was used after Close.
	ErrClosed = errors.New("hsm is closed")
	// ErrInvalidLabel means a key label is empty, too long, not UTF-8 or has control characters.
	ErrInvalidLabel = errors.New("key label must be 1 to 64 bytes of printable UTF-8")
)

// ForeignKeyError is a backup made under another MBK than the one this HSM holds.
type ForeignKeyError struct {
	Got  KeyID // the key ID the backup names
	Want KeyID // the key ID of this HSM's MBK
}

func (e *ForeignKeyError) Error() string {
	return fmt.Sprintf("backup was made under master backup key %s, this hsm holds %s: load the cards of that key set first", e.Got, e.Want)
}

// Conditions of a backup that does not read back, wrapped in a [*BackupError].
var (
	ErrNotBackup          = errors.New("not a keyquorum backup")
	ErrBackupVersion      = errors.New("backup of an unsupported version")
	ErrBackupTruncated    = errors.New("backup is truncated")
	ErrBackupReordered    = errors.New("backup chunks are out of order")
	ErrBackupTampered     = errors.New("backup was altered or damaged")
	ErrBackupTrailingData = errors.New("backup has data after its end")
)

// BackupError is a backup that could not be read: which condition, and where.
type BackupError struct {
	Err     error // one of ErrNotBackup, ErrBackupVersion, ErrBackupTruncated, ErrBackupReordered, ErrBackupTampered, ErrBackupTrailingData
	Chunk   int64 // position of the chunk where reading stopped (0 = first); -1 for the header
	Found   int64 // ErrBackupReordered: the chunk number found at position Chunk
	Offset  int64 // byte offset into the backup where the faulty part starts
	Version int   // ErrBackupVersion: the version the backup claims
	Detail  string
}

func (e *BackupError) Error() string {
	var where string
	switch {
	case errors.Is(e.Err, ErrBackupVersion):
		return fmt.Sprintf("read backup: version %d is not supported (this build reads versions 1 and 2)", e.Version)
	case errors.Is(e.Err, ErrBackupReordered):
		return fmt.Sprintf("read backup: %v: chunk %d found where chunk %d belongs (byte %d); chunks were moved, dropped or repeated", e.Err, e.Found, e.Chunk, e.Offset)
	case e.Chunk < 0:
		where = fmt.Sprintf("header (byte %d)", e.Offset)
	default:
		where = fmt.Sprintf("chunk %d (byte %d)", e.Chunk, e.Offset)
	}
	if e.Detail != "" {
		return fmt.Sprintf("read backup: %v: %s: %s", e.Err, where, e.Detail)
	}
	return fmt.Sprintf("read backup: %v: %s", e.Err, where)
}

func (e *BackupError) Unwrap() error { return e.Err }

// ContentError is a backup written by another kind of HSM than the one restoring it.
type ContentError struct {
	Got, Want string // content types, e.g. "keyquorum/soft-keys/1"
}

func (e *ContentError) Error() string {
	return fmt.Sprintf("restore backup: it holds %q, this hsm restores %q", e.Got, e.Want)
}

// Conditions of slot credentials.
var (
	// ErrCredentialInvalid means a slot credential was not issued by this HSM (or since its last
	// reset), or is damaged.
	ErrCredentialInvalid = errors.New("slot credential is not valid: this hsm did not issue it, or it is damaged")
)

// CardMismatchError is a slot credential presented from another card than the one it was
// issued to: a copy. Card serials are not secret.
type CardMismatchError struct {
	Slot      uint
	Issued    string // serial of the card the credential was issued to
	Presented string // serial of the card it was read from
}

func (e *CardMismatchError) Error() string {
	return fmt.Sprintf("activate slot %d: credential was issued to card %s, not to card %s: a copied credential does not activate a slot", e.Slot, e.Issued, e.Presented)
}

// SlotMismatchError is a slot credential issued for another slot.
type SlotMismatchError struct {
	Issued, Presented uint
}

func (e *SlotMismatchError) Error() string {
	return fmt.Sprintf("activate slot %d: credential is for slot %d", e.Presented, e.Issued)
}

// ValidateLabel checks a key label: 1 to [MaxLabelLen] bytes of UTF-8 without control
// characters.
func ValidateLabel(label string) error {
	if label == "" || len(label) > MaxLabelLen || !utf8.ValidString(label) {
		return ErrInvalidLabel
	}
	for _, r := range label {
		if unicode.IsControl(r) {
			return ErrInvalidLabel
		}
	}
	return nil
}

// ValidateSerial checks a card serial as given to the slot credential methods: 1 to 64 bytes
// of printable ASCII.
func ValidateSerial(serial string) error {
	if serial == "" || len(serial) > 64 {
		return ErrInvalidSerial
	}
	for i := 0; i < len(serial); i++ {
		if serial[i] < 0x21 || serial[i] > 0x7e {
			return ErrInvalidSerial
		}
	}
	return nil
}

// ErrInvalidSerial means a card serial is empty, too long or not printable ASCII.
var ErrInvalidSerial = errors.New("card serial must be 1 to 64 printable ASCII characters")
