package backup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/keyquorum/keyquorum/hsm"
)

// KeyRecord is one application key in a backup's content. Material is secret: the raw key for
// the soft backend, the key wrapped under the MBK by the token for pkcs11.
type KeyRecord struct {
	ID        []byte // 1..64 bytes, unique in the key database
	Label     string // as [hsm.ValidateLabel] allows
	Algorithm string // [hsm.AlgorithmAES256]
	Material  []byte // 1..MaxMaterial bytes
}

// Zero overwrites the record's key material.
func (r *KeyRecord) Zero() { hsm.Zero(r.Material) }

// MaxMaterial bounds a record's key material.
const MaxMaterial = 4096

// A record:
//
//	1  type 'K'
//	1  algorithm: 1 = AES-256
//	1  ID length (1..64), then the ID
//	1  label length (1..64), then the label
//	2  material length (1..4096), then the material
const (
	recordType = 'K'
	algAES256  = 1
	maxID      = 64
)

// ErrBadRecord means the content of an authenticated backup is not a valid key record: the
// backup was written by a broken or foreign program.
var ErrBadRecord = errors.New("backup holds a malformed key record")

// RecordError is a key record that did not decode.
type RecordError struct {
	N     int    // the record's position, from 0
	Field string // where decoding stopped
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("read key record %d: %v (%s)", e.N, ErrBadRecord, e.Field)
}

func (e *RecordError) Unwrap() error { return ErrBadRecord }

func (r *KeyRecord) validate() error {
	switch {
	case len(r.ID) == 0 || len(r.ID) > maxID:
		return errors.New("id must be 1 to 64 bytes")
	case hsm.ValidateLabel(r.Label) != nil:
		return hsm.ErrInvalidLabel
	case r.Algorithm != hsm.AlgorithmAES256:
		return fmt.Errorf("unknown algorithm %q", r.Algorithm)
	case len(r.Material) == 0 || len(r.Material) > MaxMaterial:
		return errors.New("key material must be 1 to 4096 bytes")
	}
	return nil
}

// AppendRecord appends the encoding of r to b.
func AppendRecord(b []byte, r *KeyRecord) ([]byte, error) {
	if err := r.validate(); err != nil {
		return b, fmt.Errorf("write key record: %w", err)
	}
	b = append(b, recordType, algAES256, byte(len(r.ID)))
	b = append(b, r.ID...)
	b = append(b, byte(len(r.Label)))
	b = append(b, r.Label...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Material)))
	return append(b, r.Material...), nil
}

// WriteRecord writes one key record to w (a [*Writer]). The encoding is zeroed after the
// write since it holds the key material.
func WriteRecord(w io.Writer, r *KeyRecord) error {
	b, err := AppendRecord(make([]byte, 0, 8+len(r.ID)+len(r.Label)+len(r.Material)), r)
	if err != nil {
		return err
	}
	defer hsm.Zero(b)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write key record: %w", err)
	}
	return nil
}

// RecordReader reads key records one by one from a backup's content.
type RecordReader struct {
	r io.Reader
	n int
}

// NewRecordReader reads records from r (a [*Reader]).
func NewRecordReader(r io.Reader) *RecordReader { return &RecordReader{r: r} }

// Next returns the next record, or io.EOF when the content ends cleanly between records. A
// malformed record is a [*RecordError]; errors of the underlying reader are passed on.
func (rr *RecordReader) Next() (*KeyRecord, error) {
	n := rr.n
	bad := func(field string) error { return &RecordError{N: n, Field: field} }
	read := func(b []byte, field string) error {
		_, err := io.ReadFull(rr.r, b)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return bad(field + " (content ends inside the record)")
		}
		return err
	}
	var head [3]byte
	if _, err := io.ReadFull(rr.r, head[:1]); err != nil {
		return nil, err // io.EOF: a clean end
	}
	if err := read(head[1:], "header"); err != nil {
		return nil, err
	}
	if head[0] != recordType {
		return nil, bad("type")
	}
	if head[1] != algAES256 {
		return nil, bad("algorithm")
	}
	if head[2] == 0 || head[2] > maxID {
		return nil, bad("id length")
	}
	rec := &KeyRecord{ID: make([]byte, head[2]), Algorithm: hsm.AlgorithmAES256}
	var l [1]byte
	if err := read(rec.ID, "id"); err != nil {
		return nil, err
	}
	if err := read(l[:], "label length"); err != nil {
		return nil, err
	}
	label := make([]byte, l[0])
	if err := read(label, "label"); err != nil {
		return nil, err
	}
	rec.Label = string(label)
	if hsm.ValidateLabel(rec.Label) != nil {
		return nil, bad("label")
	}
	var ml [2]byte
	if err := read(ml[:], "material length"); err != nil {
		return nil, err
	}
	m := int(binary.BigEndian.Uint16(ml[:]))
	if m == 0 || m > MaxMaterial {
		return nil, bad("material length")
	}
	rec.Material = make([]byte, m)
	if err := read(rec.Material, "material"); err != nil {
		rec.Zero()
		return nil, err
	}
	rr.n++
	return rec, nil
}
