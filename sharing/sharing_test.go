package sharing

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func newSecret(t testing.TB) []byte {
	t.Helper()
	s := make([]byte, KeySize)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// subsets calls f with every size-element subset of records, in order.
func subsets(records []*Record, size int, f func([]*Record)) {
	var rec func(start int, acc []*Record)
	rec = func(start int, acc []*Record) {
		if len(acc) == size {
			f(append([]*Record(nil), acc...))
			return
		}
		for i := start; i < len(records); i++ {
			rec(i+1, append(acc, records[i]))
		}
	}
	rec(0, nil)
}

func TestEveryQuorumSubsetReconstructs(t *testing.T) {
	for _, p := range Presets {
		t.Run(fmt.Sprintf("%dof%d", p.K, p.N), func(t *testing.T) {
			secret := newSecret(t)
			records, err := Split(secret, p.K, p.N)
			if err != nil {
				t.Fatal(err)
			}
			count := 0
			for size := p.K; size <= p.N; size++ {
				subsets(records, size, func(sub []*Record) {
					count++
					got, err := Combine(sub)
					if err != nil {
						t.Fatalf("combine %v: %v", indexes(sub), err)
					}
					if !bytes.Equal(got, secret) {
						t.Fatalf("combine %v: wrong secret", indexes(sub))
					}
				})
			}
			if count == 0 {
				t.Fatal("no subset tried")
			}
		})
	}
}

func TestEveryShortSubsetIsRefused(t *testing.T) {
	for _, p := range Presets {
		t.Run(fmt.Sprintf("%dof%d", p.K, p.N), func(t *testing.T) {
			secret := newSecret(t)
			records, err := Split(secret, p.K, p.N)
			if err != nil {
				t.Fatal(err)
			}
			subsets(records, p.K-1, func(sub []*Record) {
				_, err := Combine(sub)
				var short *NotEnoughSharesError
				if !errors.As(err, &short) || short.Need != p.K || short.Have != p.K-1 {
					t.Fatalf("combine %v: got %v, want NotEnoughSharesError", indexes(sub), err)
				}
				// The same shares relabelled as a quorum of k-1 (a forged record) interpolate
				// to some value: the key ID check must refuse it.
				if p.K-1 < 2 {
					return
				}
				forged := make([]*Record, len(sub))
				for i, r := range sub {
					c := *r
					c.K = p.K - 1
					forged[i] = &c
				}
				if _, err := Combine(forged); !errors.Is(err, ErrKeyIDMismatch) {
					t.Fatalf("combine forged %v: got %v, want ErrKeyIDMismatch", indexes(sub), err)
				}
			})
		})
	}
}

func TestNotEnoughSharesMessage(t *testing.T) {
	records, err := Split(newSecret(t), 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Combine(records[:1])
	if want := "2 of 3 needed, 1 distinct card read"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want it to say %q", err, want)
	}
	if _, err := Combine(nil); err == nil {
		t.Fatal("combine of nothing succeeded")
	}
}

func TestSetMismatchNamesBothSets(t *testing.T) {
	secret := newSecret(t)
	a, _ := Split(secret, 2, 3)
	b, _ := Split(secret, 2, 3)
	_, err := Combine([]*Record{a[0], b[1]})
	var mm *SetMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("got %v, want SetMismatchError", err)
	}
	if mm.Index != 2 || mm.Got != b[1].SetID || mm.Want != a[0].SetID {
		t.Fatalf("got %+v", mm)
	}
	want := fmt.Sprintf("card 2 belongs to set %s, expected %s", b[1].SetID.Short(), a[0].SetID.Short())
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q does not contain %q", err, want)
	}
}

func TestDuplicateIndexRefused(t *testing.T) {
	records, _ := Split(newSecret(t), 2, 3)
	copyOf := *records[1]
	copyOf.Share = bytes.Clone(records[1].Share)
	for _, tc := range []struct {
		name string
		in   []*Record
	}{
		{"same card twice", []*Record{records[1], records[1]}},
		{"a copy", []*Record{records[1], &copyOf, records[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Combine(tc.in)
			var dup *DuplicateIndexError
			if !errors.As(err, &dup) || dup.Index != 2 {
				t.Fatalf("got %v, want DuplicateIndexError for card 2", err)
			}
		})
	}
}

func TestInconsistentRecordRefused(t *testing.T) {
	records, _ := Split(newSecret(t), 2, 3)
	other := *records[1]
	other.KeyID[0] ^= 1
	_, err := Combine([]*Record{records[0], &other})
	var inc *InconsistentRecordError
	if !errors.As(err, &inc) || inc.Index != 2 || inc.Field != "key id" {
		t.Fatalf("got %v, want InconsistentRecordError on the key id of card 2", err)
	}
	other = *records[1]
	other.N = 4
	if _, err := Combine([]*Record{records[0], &other}); !errors.As(err, &inc) || inc.Field != "quorum" {
		t.Fatalf("got %v, want InconsistentRecordError on the quorum", err)
	}
}

// damage returns a copy of r with one share byte changed.
func damage(r *Record, at int) *Record {
	c := *r
	c.Share = bytes.Clone(r.Share)
	c.Share[at] ^= 0x5a
	return &c
}

func TestBadShareIdentified(t *testing.T) {
	for _, p := range Presets {
		for bad := 0; bad < p.N; bad++ {
			for _, at := range []int{0, KeySize - 1, KeySize} { // first y, last y, the x coordinate
				name := fmt.Sprintf("%dof%d/card%d/byte%d", p.K, p.N, bad+1, at)
				t.Run(name, func(t *testing.T) {
					secret := newSecret(t)
					records, _ := Split(secret, p.K, p.N)
					records[bad] = damage(records[bad], at)
					if records[bad].Share[KeySize] == 0 {
						t.Skip("damage made x = 0, which validation refuses; covered elsewhere")
					}
					_, err := Combine(records)
					var bs *BadShareError
					if !errors.As(err, &bs) || len(bs.Indexes) != 1 || bs.Indexes[0] != bad+1 {
						t.Fatalf("got %v, want BadShareError naming card %d", err, bad+1)
					}
					if !strings.Contains(err.Error(), fmt.Sprintf("card %d holds a damaged share", bad+1)) {
						t.Fatalf("message %q does not name the card", err)
					}
					// Without the damaged card the rest reconstruct the key.
					rest := append(append([]*Record(nil), records[:bad]...), records[bad+1:]...)
					got, err := Combine(rest)
					if err != nil || !bytes.Equal(got, secret) {
						t.Fatalf("combine without the damaged card: %v", err)
					}
				})
			}
		}
	}
}

func TestExactlyKWithDamagedShareFailsKeyCheck(t *testing.T) {
	records, _ := Split(newSecret(t), 3, 5)
	_, err := Combine([]*Record{records[0], damage(records[1], 3), records[2]})
	if !errors.Is(err, ErrKeyIDMismatch) {
		t.Fatalf("got %v, want ErrKeyIDMismatch", err)
	}
}

func TestTwoDamagedOfFiveBothNamed(t *testing.T) {
	records, _ := Split(newSecret(t), 2, 5)
	records[1] = damage(records[1], 1)
	records[4] = damage(records[4], 7)
	_, err := Combine(records)
	var bs *BadShareError
	if !errors.As(err, &bs) || fmt.Sprint(bs.Indexes) != "[2 5]" {
		t.Fatalf("got %v, want cards 2 and 5 named", err)
	}
}

func TestSplitRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		k, n, size int
	}{
		{1, 3, 32}, {0, 0, 32}, {4, 3, 32}, {2, 256, 32}, {2, 3, 0}, {2, 3, MaxSecretSize + 1},
	} {
		if _, err := Split(make([]byte, tc.size), tc.k, tc.n); err == nil {
			t.Errorf("Split(%d bytes, %d, %d) succeeded", tc.size, tc.k, tc.n)
		}
	}
	if _, err := Split(newSecret(t), 255, 255); err != nil {
		t.Errorf("255 of 255: %v", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	records, err := Split(newSecret(t), 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	r := records[2]
	r.Label = "hsm-cluster Zürich"
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxRecordSize || MaxRecordSize > 255 {
		t.Fatalf("record %d bytes, max %d: must fit one short APDU", len(b), MaxRecordSize)
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.SetID != r.SetID || got.KeyID != r.KeyID || got.K != 3 || got.N != 5 || got.Index != 3 ||
		!got.Created.Equal(r.Created) || got.Label != r.Label || !bytes.Equal(got.Share, r.Share) {
		t.Fatalf("round trip changed the record: %s vs %s", got, r)
	}
	// The largest record fits.
	big := *r
	big.Label = strings.Repeat("x", MaxLabelSize)
	big.Share = make([]byte, maxShareSize)
	big.Share[maxShareSize-1] = 1
	if b, err := big.Marshal(); err != nil || len(b) != MaxRecordSize {
		t.Fatalf("largest record: %d bytes, %v", len(b), err)
	}
}

// validRecord returns a marshalled record with the given label.
func validRecord(t testing.TB) (*Record, []byte) {
	t.Helper()
	records, err := Split(newSecret(t), 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	records[0].Label = "node-a"
	b, err := records[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return records[0], b
}

// reseal recomputes the checksum after a test edited a field, to reach field validation.
func reseal(b []byte) []byte {
	r := bytes.Clone(b[:len(b)-checksumSize])
	sum := sha256.Sum256(r)
	return append(r, sum[:checksumSize]...)
}

func TestUnmarshalErrors(t *testing.T) {
	_, good := validRecord(t)
	labelAt := headerSize
	shareLenAt := headerSize + len("node-a")
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	set := func(at int, v byte) []byte { return edit(func(b []byte) []byte { b[at] = v; return reseal(b) }) }

	cases := []struct {
		name  string
		in    []byte
		want  error
		field string
	}{
		{"empty", nil, ErrTruncated, "magic"},
		{"blank card zeros", make([]byte, 64), ErrNotRecord, "magic"},
		{"blank card FF", bytes.Repeat([]byte{0xff}, 64), ErrNotRecord, "magic"},
		{"other magic", append([]byte("KQSX"), good[4:]...), ErrNotRecord, "magic"},
		{"magic only", good[:4], ErrTruncated, "version"},
		{"version 0", set(4, 0), ErrVersion, "version"},
		{"version 2", set(4, 2), ErrVersion, "version"},
		{"header cut", good[:20], ErrTruncated, "header"},
		{"label cut", good[:labelAt+2], ErrTruncated, "label"},
		{"share cut", good[:len(good)-checksumSize-3], ErrTruncated, "share"},
		{"checksum cut", good[:len(good)-1], ErrTruncated, "share"},
		{"extended", append(bytes.Clone(good), 0), ErrTrailingData, "record"},
		{"checksum flipped", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum, "checksum"},
		{"share flipped", edit(func(b []byte) []byte { b[len(b)-checksumSize-2] ^= 1; return b }), ErrChecksum, "checksum"},
		{"set id flipped", edit(func(b []byte) []byte { b[7] ^= 1; return b }), ErrChecksum, "checksum"},
		{"label too long", set(headerSize-1, MaxLabelSize+1), ErrInvalidField, "label length"},
		{"share too short", set(shareLenAt, 1), ErrInvalidField, "share length"},
		{"share too long", set(shareLenAt, maxShareSize+1), ErrInvalidField, "share length"},
		{"k is 1", set(29, 1), ErrInvalidField, "quorum"},
		{"n below k", set(30, 1), ErrInvalidField, "quorum"},
		{"index 0", set(31, 0), ErrInvalidField, "share index"},
		{"index above n", set(31, 4), ErrInvalidField, "share index"},
		{"x coordinate 0", set(len(good)-checksumSize-1, 0), ErrInvalidField, "share"},
		{"time 0", edit(func(b []byte) []byte { clear(b[32:40]); return reseal(b) }), ErrInvalidField, "creation time"},
		{"label not utf-8", set(labelAt, 0xff), ErrInvalidField, "label"},
		{"label control char", set(labelAt, '\n'), ErrInvalidField, "label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Unmarshal(tc.in)
			if r != nil {
				t.Fatalf("decoded %s", r)
			}
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, tc.want) || de.Field != tc.field {
				t.Fatalf("got %v (%#v), want %v in field %q", err, err, tc.want, tc.field)
			}
		})
	}
}

// Every truncation and every single-bit flip of a valid record is refused.
func TestUnmarshalEveryTruncationAndFlip(t *testing.T) {
	_, good := validRecord(t)
	for n := 0; n < len(good); n++ {
		if _, err := Unmarshal(good[:n]); err == nil {
			t.Fatalf("record cut to %d bytes decoded", n)
		}
	}
	for i := range good {
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			if _, err := Unmarshal(b); err == nil {
				t.Fatalf("record with byte %d bit %d flipped decoded", i, bit)
			}
		}
	}
}

func TestVersionErrorMessage(t *testing.T) {
	_, good := validRecord(t)
	b := bytes.Clone(good)
	b[4] = 9
	_, err := Unmarshal(b)
	if err == nil || !strings.Contains(err.Error(), "version 9 is not supported") {
		t.Fatalf("got %v", err)
	}
}

func TestMarshalRefusesInvalidRecord(t *testing.T) {
	r, _ := validRecord(t)
	bad := *r
	bad.Index = 9
	if _, err := bad.Marshal(); err == nil {
		t.Fatal("marshalled index 9 of 3")
	}
	bad = *r
	bad.Created = time.Time{}
	if _, err := bad.Marshal(); err == nil {
		t.Fatal("marshalled a record without a creation time")
	}
}

// No formatting of a record, and no error of this package, shows share or secret bytes.
func TestNoSecretInText(t *testing.T) {
	secret := newSecret(t)
	records, _ := Split(secret, 3, 5)
	r := records[0]
	var texts []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%X", "%q"} {
		texts = append(texts, fmt.Sprintf(verb, r), fmt.Sprintf(verb, *r), fmt.Sprintf(verb, records))
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("record", "r", *r, "rp", r)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("record", "r", *r)
	texts = append(texts, logged.String())

	damaged := append([]*Record(nil), records...)
	damaged[1] = damage(records[1], 0)
	for _, in := range [][]*Record{records[:2], damaged, damaged[:3], {records[0], records[0]}} {
		if _, err := Combine(in); err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
		}
	}
	for _, text := range texts {
		for _, s := range [][]byte{secret, r.Share, r.Share[:KeySize]} {
			for _, enc := range []string{hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s)),
				base64.StdEncoding.EncodeToString(s), fmt.Sprint(s), string(s)} {
				if strings.Contains(text, enc) {
					t.Fatalf("secret bytes in %q", text)
				}
			}
		}
	}
}

func TestZero(t *testing.T) {
	r, _ := validRecord(t)
	r.Zero()
	if !bytes.Equal(r.Share, make([]byte, len(r.Share))) {
		t.Fatal("share not zeroed")
	}
	var nilRecord *Record
	nilRecord.Zero()
}

func TestKeyIDIsStableAndKeyed(t *testing.T) {
	a := newSecret(t)
	if KeyIDOf(a) != KeyIDOf(bytes.Clone(a)) {
		t.Fatal("key id not deterministic")
	}
	b := bytes.Clone(a)
	b[0] ^= 1
	if KeyIDOf(a) == KeyIDOf(b) {
		t.Fatal("different keys, same key id")
	}
	if strings.Contains(hex.EncodeToString(a), KeyIDOf(a).String()) {
		t.Fatal("key id is part of the key")
	}
}

func indexes(records []*Record) []int {
	out := make([]int, len(records))
	for i, r := range records {
		out[i] = r.Index
	}
	return out
}
