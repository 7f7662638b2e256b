package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/keyquorum/keyquorum/hsm"
)

// ObjectRecord is one object of an HSM's object store in a backup's content (content types
// ending in "/2"). Material is the object's key material wrapped under the MBK with AES Key Wrap
// with Padding (RFC 5649, PKCS#11 CKM_AES_KEY_WRAP_PAD): the key's value for a secret key, its
// PKCS#8 PrivateKeyInfo (DER) for a private key; empty for public keys, certificates and data
// objects, whose attributes are all they are.
type ObjectRecord struct {
	Class, Type uint32 // hsm.Class*, and the key type, certificate type or hsm.NoType
	Flags       byte   // FlagManaged
	Attrs       []hsm.Attr
	Material    []byte
}

// FlagManaged marks an application key Keyquorum created: part of the key database a factory
// reset clears.
const FlagManaged = 1

// Limits of an object record.
const (
	MaxAttrs          = 64
	MaxAttrLen        = 1 << 20
	MaxObjectMaterial = 16 << 10
	objectRecordType  = 'O'
	objectRecordVer   = 1
)

// Attr returns the value of attribute t, or nil.
func (r *ObjectRecord) Attr(t uint32) []byte {
	for _, a := range r.Attrs {
		if a.Type == t {
			return a.Value
		}
	}
	return nil
}

// Bool returns the value of a boolean attribute, false when absent.
func (r *ObjectRecord) Bool(t uint32) bool {
	v := r.Attr(t)
	return len(v) == 1 && v[0] == 1
}

// Zero overwrites the record's key material (wrapped, but wrapped key material is still not
// left lying around).
func (r *ObjectRecord) Zero() { hsm.Zero(r.Material) }

// Object describes the record as an [hsm.Object] (carried, never key material).
func (r *ObjectRecord) Object() hsm.Object {
	o := hsm.Object{
		Class: r.Class, Type: r.Type,
		Label:   string(r.Attr(hsm.AttrLabel)),
		ID:      bytes.Clone(r.Attr(hsm.AttrID)),
		Managed: r.Flags&FlagManaged != 0,
		Carried: true,
		Attrs:   r.Attrs,
	}
	if r.Class == hsm.ClassData {
		o.Application = string(r.Attr(hsm.AttrApplication))
	}
	o.Bits = hsm.BitsOf(r.Class, r.Type, r.Attr(hsm.AttrModulus), r.Attr(hsm.AttrECParams), 0)
	if r.Class == hsm.ClassSecretKey && len(r.Material) >= 16 {
		o.Bits = 8 * (len(r.Material) - 8) // RFC 5649 pads to 8 bytes: exact for AES and DES3
		if r.Type == hsm.KeyDES3 {
			o.Bits = 0
		}
	}
	return o
}

// Validate checks a record: a carried kind, only its carried attributes in ascending order,
// booleans of 0 or 1, CK_ULONGs of 8 bytes, material exactly where the class has some.
func (r *ObjectRecord) Validate() error {
	if ok, why := hsm.Supported(r.Class, r.Type); !ok {
		return errors.New(why)
	}
	if r.Flags&^FlagManaged != 0 {
		return fmt.Errorf("unknown flags 0x%02x", r.Flags)
	}
	if len(r.Attrs) > MaxAttrs {
		return errors.New("too many attributes")
	}
	specs := hsm.CarriedAttrs(r.Class, r.Type)
	j := 0
	for i, a := range r.Attrs {
		if i > 0 && a.Type <= r.Attrs[i-1].Type {
			return fmt.Errorf("attribute 0x%x out of order or repeated", a.Type)
		}
		for j < len(specs) && specs[j].Type < a.Type {
			j++
		}
		if j == len(specs) || specs[j].Type != a.Type {
			return fmt.Errorf("attribute 0x%x is not carried for this kind", a.Type)
		}
		switch specs[j].Kind {
		case hsm.KindBool:
			if len(a.Value) != 1 || a.Value[0] > 1 {
				return fmt.Errorf("%s is not a boolean", specs[j].Name)
			}
		case hsm.KindULong:
			if len(a.Value) != 8 {
				return fmt.Errorf("%s is not an 8-byte number", specs[j].Name)
			}
		}
		if len(a.Value) > MaxAttrLen {
			return fmt.Errorf("%s is too long", specs[j].Name)
		}
	}
	if hsm.HasMaterial(r.Class) {
		if len(r.Material) < 16 || len(r.Material) > MaxObjectMaterial || len(r.Material)%8 != 0 {
			return errors.New("key material must be a wrapped key of 16 to 16384 bytes")
		}
	} else if len(r.Material) != 0 {
		return errors.New("an object of this class carries no key material")
	}
	return nil
}

// AppendObjectRecord appends the encoding of r to b:
//
//	1  type 'O'
//	1  record version (1)
//	1  flags: bit 0 = an application key Keyquorum created (the key database), others 0
//	4  class (PKCS#11 CKO_*)
//	4  type: key type (CKK_*), certificate type (CKC_*), or 0xffffffff for a data object
//	1  attribute count N (0..64), then N times, in ascending order of type:
//	   4  attribute type (PKCS#11 CKA_*)
//	   4  value length (0..1 MiB), then the value: CK_BBOOL as 1 byte (0/1), CK_ULONG as 8
//	      bytes big-endian, other values as the token holds them
//	4  material length (0 for classes without key material, else 16..16384, a multiple of 8),
//	   then the material: the key wrapped under the MBK with RFC 5649
func AppendObjectRecord(b []byte, r *ObjectRecord) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return b, fmt.Errorf("write object record: %w", err)
	}
	b = append(b, objectRecordType, objectRecordVer, r.Flags)
	b = binary.BigEndian.AppendUint32(b, r.Class)
	b = binary.BigEndian.AppendUint32(b, r.Type)
	b = append(b, byte(len(r.Attrs)))
	for _, a := range r.Attrs {
		b = binary.BigEndian.AppendUint32(b, a.Type)
		b = binary.BigEndian.AppendUint32(b, uint32(len(a.Value)))
		b = append(b, a.Value...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Material)))
	return append(b, r.Material...), nil
}

// EncodedLen is the length of r's encoding.
func (r *ObjectRecord) EncodedLen() int {
	n := 3 + 8 + 1 + 4 + len(r.Material)
	for _, a := range r.Attrs {
		n += 8 + len(a.Value)
	}
	return n
}

// WriteObjectRecord writes one object record to w (a [*Writer]).
func WriteObjectRecord(w io.Writer, r *ObjectRecord) error {
	b, err := AppendObjectRecord(make([]byte, 0, r.EncodedLen()), r)
	if err != nil {
		return err
	}
	defer hsm.Zero(b)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write object record: %w", err)
	}
	return nil
}

// ObjectRecordReader reads object records one by one from a backup's content.
type ObjectRecordReader struct {
	r io.Reader
	n int
}

// NewObjectRecordReader reads records from r (a [*Reader]).
func NewObjectRecordReader(r io.Reader) *ObjectRecordReader { return &ObjectRecordReader{r: r} }

// Next returns the next record, or io.EOF when the content ends cleanly between records. A
// malformed record is a [*RecordError]; errors of the underlying reader are passed on.
func (rr *ObjectRecordReader) Next() (*ObjectRecord, error) {
	n := rr.n
	bad := func(field string) error { return &RecordError{N: n, Field: field} }
	read := func(b []byte, field string) error {
		_, err := io.ReadFull(rr.r, b)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return bad(field + " (content ends inside the record)")
		}
		return err
	}
	var head [12]byte
	if _, err := io.ReadFull(rr.r, head[:1]); err != nil {
		return nil, err // io.EOF: a clean end
	}
	if err := read(head[1:], "header"); err != nil {
		return nil, err
	}
	if head[0] != objectRecordType {
		return nil, bad("type")
	}
	if head[1] != objectRecordVer {
		return nil, bad("record version")
	}
	rec := &ObjectRecord{Flags: head[2], Class: binary.BigEndian.Uint32(head[3:7]), Type: binary.BigEndian.Uint32(head[7:11])}
	if ok, _ := hsm.Supported(rec.Class, rec.Type); !ok {
		return nil, bad("class or type")
	}
	count := int(head[11])
	if count > MaxAttrs {
		return nil, bad("attribute count")
	}
	for i := 0; i < count; i++ {
		var ah [8]byte
		if err := read(ah[:], "attribute header"); err != nil {
			return nil, err
		}
		l := binary.BigEndian.Uint32(ah[4:])
		if l > MaxAttrLen {
			return nil, bad("attribute length")
		}
		a := hsm.Attr{Type: binary.BigEndian.Uint32(ah[:4]), Value: make([]byte, l)}
		if err := read(a.Value, "attribute value"); err != nil {
			return nil, err
		}
		rec.Attrs = append(rec.Attrs, a)
	}
	var ml [4]byte
	if err := read(ml[:], "material length"); err != nil {
		return nil, err
	}
	m := binary.BigEndian.Uint32(ml[:])
	if m > MaxObjectMaterial {
		return nil, bad("material length")
	}
	if m > 0 {
		rec.Material = make([]byte, m)
		if err := read(rec.Material, "material"); err != nil {
			rec.Zero()
			return nil, err
		}
	}
	if err := rec.Validate(); err != nil {
		rec.Zero()
		return nil, bad(err.Error())
	}
	rr.n++
	return rec, nil
}
