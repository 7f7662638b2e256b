package sharing

import (
	"errors"
	"fmt"
	"strings"
)

// Decode conditions, wrapped in a [*DecodeError].
var (
	ErrNotRecord    = errors.New("not a keyquorum share record")
	ErrVersion      = errors.New("share record of an unsupported version")
	ErrTruncated    = errors.New("share record is truncated")
	ErrTrailingData = errors.New("share record has trailing data")
	ErrChecksum     = errors.New("share record is damaged (checksum mismatch)")
	ErrInvalidField = errors.New("share record has an invalid field")
)

// ErrKeyIDMismatch means the shares did not reconstruct the key they name: at least one is
// damaged or forged. Reading one more card of the set lets Combine name the damaged one.
var ErrKeyIDMismatch = errors.New("the shares do not reconstruct the key they belong to: a card is damaged; read one more card of the set to find which")

// DecodeError is a share record that could not be decoded.
type DecodeError struct {
	Field   string // the part of the record where decoding stopped
	Err     error  // one of the Err* decode conditions
	Version int    // the record's version, when Err is ErrVersion
}

func (e *DecodeError) Error() string {
	if errors.Is(e.Err, ErrVersion) {
		return fmt.Sprintf("share record version %d is not supported (this build reads version %d)", e.Version, recordVersion)
	}
	return fmt.Sprintf("%v (%s)", e.Err, e.Field)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// NotEnoughSharesError is a reconstruction attempted with fewer than k distinct shares.
type NotEnoughSharesError struct {
	Need int // k; 0 when no record was given at all
	N    int
	Have int // distinct shares given
}

func (e *NotEnoughSharesError) Error() string {
	if e.Need == 0 {
		return "no card read"
	}
	cards := "cards"
	if e.Have == 1 {
		cards = "card"
	}
	return fmt.Sprintf("%d of %d needed, %d distinct %s read: %d more needed", e.Need, e.N, e.Have, cards, e.Need-e.Have)
}

// SetMismatchError is a record of another set among the records being combined.
type SetMismatchError struct {
	Index     int // the share index the stray record claims
	Got, Want SetID
}

func (e *SetMismatchError) Error() string {
	return fmt.Sprintf("card %d belongs to set %s, expected %s", e.Index, e.Got.Short(), e.Want.Short())
}

// InconsistentRecordError is a record that names the right set but disagrees with the others on
// Field: it was damaged or forged.
type InconsistentRecordError struct {
	Index int
	Field string
}

func (e *InconsistentRecordError) Error() string {
	return fmt.Sprintf("card %d disagrees with the other cards of its set on the %s: it is damaged", e.Index, e.Field)
}

// DuplicateIndexError is the same share presented twice: the same card read again, or a copy.
type DuplicateIndexError struct {
	Index int
}

func (e *DuplicateIndexError) Error() string {
	return fmt.Sprintf("card %d was read twice (the same card or a copy of it): use a different card of the set", e.Index)
}

// BadShareError names the damaged records found when more than k were combined.
type BadShareError struct {
	Indexes []int
}

func (e *BadShareError) Error() string {
	names := make([]string, len(e.Indexes))
	for i, idx := range e.Indexes {
		names[i] = fmt.Sprint(idx)
	}
	if len(names) == 1 {
		return fmt.Sprintf("card %s holds a damaged share: set it aside and use the other cards", names[0])
	}
	return fmt.Sprintf("cards %s hold damaged shares: set them aside and use the other cards", strings.Join(names, ", "))
}
