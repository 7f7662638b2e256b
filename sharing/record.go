package sharing

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/keyquorum/keyquorum/internal/secmem"
	"unicode"
	"unicode/utf8"
)

// Record format constants; see the package documentation for the layout.
const (
	recordVersion  = 1
	headerSize     = 41 // magic .. label length
	checksumSize   = 8
	MaxLabelSize   = 64
	minShareSize   = 2
	maxShareSize   = MaxSecretSize + 1
	minRecordSize  = headerSize + 1 + minShareSize + checksumSize
	MaxRecordSize  = headerSize + MaxLabelSize + 1 + maxShareSize + checksumSize
	recordMagicLen = 4
)

var recordMagic = []byte("KQSR")

// Record is what one card's share slot stores: one share of a set, and what is needed to tell
// whether it belongs with the others.
//
// Share is secret. Record's String, GoString, Format and LogValue never show it.
type Record struct {
	SetID   SetID
	KeyID   KeyID
	K, N    int       // the quorum: any K of the N records reconstruct the secret
	Index   int       // 1..N: which card of the set this is
	Share   []byte    // secret
	Created time.Time // second precision
	Label   string    // the appliance or cluster the set belongs to, for people

	// mem holds Share in locked memory (internal/secmem) for the records Split and Unmarshal
	// make; Zero frees it. A record built by hand has none: its Share is only zeroed.
	mem *secmem.Buf
}

// setShare puts a copy of share into locked memory as the record's share. A record dropped
// without Zero gives its buffer back (zeroed) when the garbage collector finds it.
func (r *Record) setShare(share []byte) {
	b := secmem.Clone(share)
	r.Share, r.mem = b.Bytes(), b
	runtime.AddCleanup(r, func(b *secmem.Buf) { b.Free() }, b)
}

// Marshal encodes r in the current record format.
func (r *Record) Marshal() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("marshal share record: %w", err)
	}
	out := make([]byte, 0, headerSize+len(r.Label)+1+len(r.Share)+checksumSize)
	out = append(out, recordMagic...)
	out = append(out, recordVersion)
	out = append(out, r.SetID[:]...)
	out = append(out, r.KeyID[:]...)
	out = append(out, byte(r.K), byte(r.N), byte(r.Index))
	out = binary.BigEndian.AppendUint64(out, uint64(r.Created.Unix()))
	out = append(out, byte(len(r.Label)))
	out = append(out, r.Label...)
	out = append(out, byte(len(r.Share)))
	out = append(out, r.Share...)
	sum := sha256.Sum256(out)
	out = append(out, sum[:checksumSize]...)
	return out, nil
}

// Unmarshal decodes a share record. Anything but a complete, intact record of a known version is
// a [*DecodeError] whose Err is one of ErrNotRecord, ErrVersion, ErrTruncated, ErrTrailingData,
// ErrChecksum or ErrInvalidField. b is not retained.
func Unmarshal(b []byte) (*Record, error) {
	fail := func(field string, err error) (*Record, error) {
		return nil, &DecodeError{Field: field, Err: err}
	}
	if len(b) < recordMagicLen {
		if bytes.HasPrefix(recordMagic, b) {
			return fail("magic", ErrTruncated)
		}
		return fail("magic", ErrNotRecord)
	}
	if !bytes.Equal(b[:recordMagicLen], recordMagic) {
		return fail("magic", ErrNotRecord)
	}
	if len(b) < recordMagicLen+1 {
		return fail("version", ErrTruncated)
	}
	if b[4] != recordVersion {
		return nil, &DecodeError{Field: "version", Err: ErrVersion, Version: int(b[4])}
	}
	if len(b) < headerSize {
		return fail("header", ErrTruncated)
	}
	labelLen := int(b[headerSize-1])
	if labelLen > MaxLabelSize {
		return fail("label length", ErrInvalidField)
	}
	shareLenAt := headerSize + labelLen
	if len(b) <= shareLenAt {
		return fail("label", ErrTruncated)
	}
	shareLen := int(b[shareLenAt])
	if shareLen < minShareSize || shareLen > maxShareSize {
		return fail("share length", ErrInvalidField)
	}
	end := shareLenAt + 1 + shareLen + checksumSize
	switch {
	case len(b) < end:
		return fail("share", ErrTruncated)
	case len(b) > end:
		return fail("record", ErrTrailingData)
	}
	sum := sha256.Sum256(b[:end-checksumSize])
	if subtle.ConstantTimeCompare(sum[:checksumSize], b[end-checksumSize:]) != 1 {
		return fail("checksum", ErrChecksum)
	}

	r := &Record{
		K:       int(b[29]),
		N:       int(b[30]),
		Index:   int(b[31]),
		Created: time.Unix(int64(binary.BigEndian.Uint64(b[32:40])), 0).UTC(),
		Label:   string(b[headerSize:shareLenAt]),
	}
	r.setShare(b[shareLenAt+1 : end-checksumSize])
	copy(r.SetID[:], b[5:21])
	copy(r.KeyID[:], b[21:29])
	if err := r.validate(); err != nil {
		r.Zero()
		return nil, err
	}
	return r, nil
}

// validate checks the fields a record must satisfy whichever way it was made.
func (r *Record) validate() error {
	bad := func(field string) error { return &DecodeError{Field: field, Err: ErrInvalidField} }
	switch {
	case ValidateQuorum(r.K, r.N) != nil:
		return bad("quorum")
	case r.Index < 1 || r.Index > r.N:
		return bad("share index")
	case len(r.Share) < minShareSize || len(r.Share) > maxShareSize:
		return bad("share length")
	case r.Share[len(r.Share)-1] == 0:
		// x = 0 is where the polynomial holds the secret itself: no share is ever made there.
		return bad("share")
	case r.Created.Unix() <= 0:
		return bad("creation time")
	case len(r.Label) > MaxLabelSize || !utf8.ValidString(r.Label):
		return bad("label")
	}
	for _, c := range r.Label {
		if unicode.IsControl(c) {
			return bad("label")
		}
	}
	return nil
}

// Zero overwrites the share and frees its locked memory. The record is unusable afterwards
// (its Share is nil when it was in locked memory).
func (r *Record) Zero() {
	if r == nil {
		return
	}
	if r.mem != nil {
		r.mem.Free()
		r.mem, r.Share = nil, nil
		return
	}
	Zero(r.Share)
}

// String describes the record for people and logs; it never shows the share.
func (r Record) String() string {
	s := fmt.Sprintf("share %d of %d (any %d) of set %s, key %s", r.Index, r.N, r.K, r.SetID.Short(), r.KeyID)
	if r.Label != "" {
		s += fmt.Sprintf(", %q", r.Label)
	}
	return s
}

// GoString keeps %#v from printing the share.
func (r Record) GoString() string { return "sharing.Record{" + r.String() + "}" }

// Format makes every fmt verb print [Record.String], so that not even %d or %x shows the share.
func (r Record) Format(f fmt.State, verb rune) { fmt.Fprint(f, r.String()) }

// LogValue keeps log/slog from printing the share.
func (r Record) LogValue() slog.Value { return slog.StringValue(r.String()) }
