// Package sharing splits the Master Backup Key k-of-n with Shamir's secret sharing and defines
// the share record that one smart card stores.
//
// # Splitting and combining
//
// [Split] cuts a secret into n [Record]s of which any k reconstruct it; [Combine] puts k or more
// back together. The arithmetic is github.com/hashicorp/vault/shamir. What this package adds is
// the bookkeeping that makes a reconstruction trustworthy: every record names its set (a random
// [SetID] per ceremony) and the [KeyID] of the secret, so Combine refuses records of another set,
// the same share twice and too few shares, each with an error that says which, and checks the
// reconstructed secret against the key ID. Given more than k records of which some are damaged,
// Combine names the damaged ones.
//
// # The share record
//
// A record is binary, versioned and at most [MaxRecordSize] bytes so that it fits one short APDU
// write. [Record.Marshal] and [Unmarshal] are strict: anything truncated, extended, of another
// version or corrupted is a [*DecodeError], never a panic. Version 1:
//
//	offset  size  field
//	0       4     magic "KQSR"
//	4       1     version (1)
//	5       16    set ID
//	21      8     key ID
//	29      1     k
//	30      1     n
//	31      1     share index (1..n, the card's number in the set)
//	32      8     creation time, Unix seconds, big-endian
//	40      1     label length L (0..64)
//	41      L     label, UTF-8 without control characters
//	41+L    1     share length S (2..65)
//	42+L    S     share (vault/shamir format: y values then the x coordinate)
//	42+L+S  8     checksum: the first 8 bytes of SHA-256 over everything before it
//
// The checksum catches a damaged card; it is no protection against a forged one. That is what
// the key ID check after Combine is for.
//
// # Secrets
//
// Secrets and shares are []byte, never strings; [Zero] and [Record.Zero] overwrite them when they
// are no longer needed. The shares of the records [Split] and [Unmarshal] make are in locked
// memory, out of swap and core dumps where the system allows (internal/secmem), and
// [Record.Zero] frees it; vault/shamir computes in Go's heap, whose copies are zeroed where this
// package gets hold of them but cannot be locked, and the secret [Combine] returns is in the heap
// too. No String, error text or fmt verb of this package ever shows share or secret bytes. This
// package knows nothing of cards, PINs or HSMs.
//
// The design of the whole system (the share record and the card layout among it) is in
// docs/design.md.
package sharing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/hashicorp/vault/shamir"
)

// KeySize is the size of the Master Backup Key: a 32-byte AES-256 key.
const KeySize = 32

// MaxSecretSize bounds what Split accepts, so that a record always fits in MaxRecordSize.
const MaxSecretSize = 64

// Preset is a quorum the WebConf wizard offers.
type Preset struct{ K, N int }

// Presets are the quorums of the appliance's manual: 2 of 3 and 3 of 5.
var Presets = []Preset{{2, 3}, {3, 5}}

// ErrQuorum is a k-of-n that cannot be used.
var ErrQuorum = errors.New("invalid quorum")

// ValidateQuorum reports whether k of n is a usable quorum: 2 ≤ k ≤ n ≤ 255.
func ValidateQuorum(k, n int) error {
	if k < 2 || n < k || n > 255 {
		return fmt.Errorf("%w %d of %d: need 2 ≤ k ≤ n ≤ 255", ErrQuorum, k, n)
	}
	return nil
}

// KeyID fingerprints a secret without revealing it: the first 8 bytes of
// HMAC-SHA256(key = secret, message = "keyquorum key id").
type KeyID [8]byte

// KeyIDOf returns the key ID of secret.
func KeyIDOf(secret []byte) KeyID {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("keyquorum key id"))
	var id KeyID
	copy(id[:], m.Sum(nil))
	return id
}

func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// SetID names one card set: every record written by one ceremony carries the same random ID.
type SetID [16]byte

// NewSetID returns a random set ID.
func NewSetID() (SetID, error) {
	var id SetID
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("generate set id: %w", err)
	}
	return id, nil
}

func (id SetID) String() string { return hex.EncodeToString(id[:]) }

// Short is the first 8 hex digits and an ellipsis, the way messages name a set.
func (id SetID) Short() string { return hex.EncodeToString(id[:4]) + "…" }

// Split cuts secret into n records of which any k reconstruct it. The records share a new set
// ID and the secret's key ID, are numbered 1..n and carry the current time; the caller may set
// their Label before marshalling. secret is not retained; the records own their shares and should
// be zeroed ([Record.Zero]) once written.
func Split(secret []byte, k, n int) ([]*Record, error) {
	if err := ValidateQuorum(k, n); err != nil {
		return nil, fmt.Errorf("split secret: %w", err)
	}
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return nil, fmt.Errorf("split secret: size %d bytes, want 1 to %d", len(secret), MaxSecretSize)
	}
	setID, err := NewSetID()
	if err != nil {
		return nil, fmt.Errorf("split secret: %w", err)
	}
	shares, err := shamir.Split(secret, n, k)
	if err != nil {
		return nil, fmt.Errorf("split secret: %w", err)
	}
	keyID := KeyIDOf(secret)
	now := time.Unix(time.Now().Unix(), 0).UTC()
	records := make([]*Record, n)
	for i, share := range shares {
		records[i] = &Record{SetID: setID, KeyID: keyID, K: k, N: n, Index: i + 1, Created: now}
		records[i].setShare(share) // into locked memory: the records live while n cards are written
		Zero(share)
	}
	return records, nil
}

// Combine reconstructs the secret from records of one set and checks it against their key ID.
//
// It refuses, with an error naming the problem: records of different sets
// ([*SetMismatchError]), records of one set that disagree on the key or quorum
// ([*InconsistentRecordError]), the same share index twice ([*DuplicateIndexError]), fewer than k
// records ([*NotEnoughSharesError]), and a result that does not match the key ID
// ([ErrKeyIDMismatch]). With more than k records, every record is checked: damaged ones are
// named in a [*BadShareError] and nothing is returned, so the caller can drop them and combine
// the rest. The caller owns the returned secret and should [Zero] it after use.
func Combine(records []*Record) ([]byte, error) {
	if err := checkSet(records); err != nil {
		return nil, fmt.Errorf("combine shares: %w", err)
	}
	k := records[0].K
	want := records[0].KeyID
	if len(records) == k {
		secret, ok := reconstruct(records, want)
		if !ok {
			return nil, fmt.Errorf("combine shares: %w", ErrKeyIDMismatch)
		}
		return secret, nil
	}

	// More than k: find a k-subset that reconstructs the key, then test every other record
	// against k-1 members of that subset.
	good, secret := findGoodSubset(records, k, want)
	if secret == nil {
		return nil, fmt.Errorf("combine shares: %w", ErrKeyIDMismatch)
	}
	inGood := make(map[int]bool, k)
	for _, i := range good {
		inGood[i] = true
	}
	var bad []int
	probe := make([]*Record, k)
	for i := range good[:k-1] {
		probe[i] = records[good[i]]
	}
	for i, r := range records {
		if inGood[i] {
			continue
		}
		probe[k-1] = r
		s, ok := reconstruct(probe, want)
		Zero(s)
		if !ok {
			bad = append(bad, r.Index)
		}
	}
	if len(bad) > 0 {
		Zero(secret)
		return nil, fmt.Errorf("combine shares: %w", &BadShareError{Indexes: bad})
	}
	return secret, nil
}

// maxSubsets bounds the search for a good k-subset. With one damaged record among m the search
// meets a subset without it after at most m steps; the bound only stops pathological inputs.
const maxSubsets = 4096

// findGoodSubset returns the positions of the first k-subset of records (in lexicographic order)
// that reconstructs the key with ID want, and the secret; nil if none is found.
func findGoodSubset(records []*Record, k int, want KeyID) ([]int, []byte) {
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	subset := make([]*Record, k)
	for tries := 0; tries < maxSubsets; tries++ {
		for i, j := range idx {
			subset[i] = records[j]
		}
		if secret, ok := reconstruct(subset, want); ok {
			return idx, secret
		}
		// Next combination: the rightmost position that can still move does, the ones after it
		// follow it.
		i := k - 1
		for i >= 0 && idx[i] == len(records)-k+i {
			i--
		}
		if i < 0 {
			return nil, nil
		}
		idx[i]++
		for j := i + 1; j < k; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
	return nil, nil
}

// reconstruct interpolates the records' shares and reports whether the result has key ID want.
// On a mismatch it zeroes the result and returns nil.
func reconstruct(records []*Record, want KeyID) ([]byte, bool) {
	parts := make([][]byte, len(records))
	for i, r := range records {
		parts[i] = r.Share
	}
	secret, err := shamir.Combine(parts)
	if err != nil {
		// Two shares with the same x coordinate: one of them is damaged.
		return nil, false
	}
	got := KeyIDOf(secret)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		Zero(secret)
		return nil, false
	}
	return secret, true
}

// checkSet verifies that records are well-formed members of one set, distinct, and at least k.
func checkSet(records []*Record) error {
	if len(records) == 0 {
		return &NotEnoughSharesError{}
	}
	for _, r := range records {
		if r == nil {
			return errors.New("nil record")
		}
		if err := r.validate(); err != nil {
			return err
		}
	}
	ref := records[0]
	seen := make(map[int]bool, len(records))
	for _, r := range records {
		switch {
		case r.SetID != ref.SetID:
			return &SetMismatchError{Index: r.Index, Got: r.SetID, Want: ref.SetID}
		case r.KeyID != ref.KeyID:
			return &InconsistentRecordError{Index: r.Index, Field: "key id"}
		case r.K != ref.K || r.N != ref.N:
			return &InconsistentRecordError{Index: r.Index, Field: "quorum"}
		case len(r.Share) != len(ref.Share):
			return &InconsistentRecordError{Index: r.Index, Field: "share length"}
		case seen[r.Index]:
			return &DuplicateIndexError{Index: r.Index}
		}
		seen[r.Index] = true
	}
	if len(records) < ref.K {
		return &NotEnoughSharesError{Need: ref.K, N: ref.N, Have: len(records)}
	}
	return nil
}

// Zero overwrites b with zeros. Go gives no guarantee that no other copy exists (the garbage
// collector may have moved it), so callers also keep copies few.
func Zero(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}
