package backup

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
)

func b1(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

// sampleRecords are one record of each class.
func sampleRecords() []ObjectRecord {
	return []ObjectRecord{
		{Class: hsm.ClassSecretKey, Type: hsm.KeyAES, Flags: FlagManaged, Attrs: []hsm.Attr{
			{Type: hsm.AttrPrivate, Value: b1(true)}, {Type: hsm.AttrLabel, Value: []byte("aes key")},
			{Type: hsm.AttrID, Value: []byte{1, 2}}, {Type: hsm.AttrSensitive, Value: b1(true)},
			{Type: hsm.AttrEncrypt, Value: b1(true)}, {Type: hsm.AttrExtractable, Value: b1(true)}},
			Material: bytes.Repeat([]byte{5}, 24)},
		{Class: hsm.ClassPrivateKey, Type: hsm.KeyRSA, Attrs: []hsm.Attr{
			{Type: hsm.AttrLabel, Value: []byte("ca")}, {Type: hsm.AttrID, Value: []byte{9}},
			{Type: hsm.AttrSign, Value: b1(true)}, {Type: hsm.AttrModulus, Value: bytes.Repeat([]byte{0xc1}, 384)},
			{Type: hsm.AttrPublicExponent, Value: []byte{1, 0, 1}}},
			Material: bytes.Repeat([]byte{6}, 1232)},
		{Class: hsm.ClassPublicKey, Type: hsm.KeyEC, Attrs: []hsm.Attr{
			{Type: hsm.AttrLabel, Value: []byte("ec")}, {Type: hsm.AttrID, Value: []byte{3}},
			{Type: hsm.AttrECParams, Value: []byte("\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07")},
			{Type: hsm.AttrECPoint, Value: bytes.Repeat([]byte{4}, 67)}}},
		{Class: hsm.ClassCertificate, Type: hsm.CertX509, Attrs: []hsm.Attr{
			{Type: hsm.AttrLabel, Value: []byte("cert")}, {Type: hsm.AttrValue, Value: []byte("0\x82der")},
			{Type: hsm.AttrCertificateCategory, Value: make([]byte, 8)}}},
		{Class: hsm.ClassData, Type: hsm.NoType, Attrs: []hsm.Attr{
			{Type: hsm.AttrLabel, Value: []byte("data")}, {Type: hsm.AttrApplication, Value: []byte("other app")},
			{Type: hsm.AttrValue, Value: []byte("hello\n")}}},
	}
}

func encodeObjects(t testing.TB, recs []ObjectRecord) []byte {
	var b []byte
	for i := range recs {
		var err error
		if b, err = AppendObjectRecord(b, &recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestObjectRecordRoundTrip(t *testing.T) {
	recs := sampleRecords()
	b := encodeObjects(t, recs)
	rr := NewObjectRecordReader(bytes.NewReader(b))
	for i := range recs {
		got, err := rr.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		again, _ := AppendObjectRecord(nil, got)
		want, _ := AppendObjectRecord(nil, &recs[i])
		if !bytes.Equal(again, want) {
			t.Fatalf("record %d differs after a round trip", i)
		}
	}
	if _, err := rr.Next(); err != io.EOF {
		t.Fatalf("after the last record: %v", err)
	}
	o := recs[1].Object()
	if o.Kind() != "RSA-3072 private key" || o.Label != "ca" || o.Managed {
		t.Errorf("object of the RSA record: %s", o)
	}
	if k := recs[0].Object().Kind(); k != "AES-128 secret key" {
		t.Errorf("object of the AES record: %s", k)
	}
	// Refusals on the way in.
	bad := []ObjectRecord{
		{Class: hsm.ClassSecretKey, Type: 0x99, Material: make([]byte, 24)},                                       // unknown key type
		{Class: hsm.ClassData, Type: hsm.NoType, Material: make([]byte, 24)},                                      // material on data
		{Class: hsm.ClassSecretKey, Type: hsm.KeyAES},                                                             // no material
		{Class: hsm.ClassData, Type: hsm.NoType, Attrs: []hsm.Attr{{Type: hsm.AttrValue}, {Type: hsm.AttrLabel}}}, // order
		{Class: hsm.ClassData, Type: hsm.NoType, Attrs: []hsm.Attr{{Type: hsm.AttrModulus}}},                      // not carried
		{Class: hsm.ClassData, Type: hsm.NoType, Attrs: []hsm.Attr{{Type: hsm.AttrPrivate, Value: []byte{2}}}},    // bool
	}
	for i := range bad {
		if _, err := AppendObjectRecord(nil, &bad[i]); err == nil {
			t.Errorf("bad record %d encoded", i)
		}
	}
}

// FuzzObjectRecordReader decodes object records from arbitrary content: no panic, every failure
// a *RecordError, every record decoded valid and re-encoding to exactly the bytes it came from.
func FuzzObjectRecordReader(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		rr := NewObjectRecordReader(bytes.NewReader(b))
		var again []byte
		for {
			rec, err := rr.Next()
			if err == io.EOF {
				if !bytes.Equal(again, b) {
					t.Fatalf("records re-encode differently:\n in %x\nout %x", b, again)
				}
				return
			}
			if err != nil {
				var re *RecordError
				if !errors.As(err, &re) {
					t.Fatalf("untyped error %T: %v", err, err)
				}
				return
			}
			if again, err = AppendObjectRecord(again, rec); err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
			_ = rec.Object().String()
		}
	})
}

// objectRecordSeeds are the checked-in corpus of FuzzObjectRecordReader.
func objectRecordSeeds(t *testing.T) map[string][]byte {
	all := encodeObjects(t, sampleRecords())
	one := encodeObjects(t, sampleRecords()[:1])
	return map[string][]byte{
		"valid-all":        all,
		"valid-one":        one,
		"truncated":        all[:len(all)-1],
		"bad-type":         append([]byte{'X'}, one[1:]...),
		"bad-version":      func() []byte { b := bytes.Clone(one); b[1] = 9; return b }(),
		"bad-flags":        func() []byte { b := bytes.Clone(one); b[2] = 0x80; return b }(),
		"bad-class":        func() []byte { b := bytes.Clone(one); b[6] = 7; return b }(),
		"bad-bool":         func() []byte { b := bytes.Clone(one); b[20] = 2; return b }(),
		"huge-attribute":   func() []byte { b := bytes.Clone(one); b[16] = 0x7f; return b }(),
		"material-missing": func() []byte { b := bytes.Clone(one); return append(b[:len(b)-28], 0, 0, 0, 0) }(),
	}
}

func TestObjectRecordSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzObjectRecordReader")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < 8 {
		t.Fatalf("seed corpus: %d files, %v (write it with go test -run TestSeedCorpus -update-corpus)", len(entries), err)
	}
	for _, e := range entries {
		text, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(text), "\n", 3)
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatal(err)
		}
		rr := NewObjectRecordReader(strings.NewReader(s))
		var last error
		for {
			_, err := rr.Next()
			if err != nil {
				last = err
				break
			}
		}
		valid := strings.HasPrefix(e.Name(), "valid-")
		var re *RecordError
		if valid && last != io.EOF || !valid && !errors.As(last, &re) {
			t.Errorf("%s: ends with %v", e.Name(), last)
		}
	}
}
