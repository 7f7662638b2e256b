package backup

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
)

// The fuzz targets open every input with the MBK testMBK(1), the key the checked-in seeds
// under testdata/fuzz were written with, so that mutations reach the chunk decoder and not only
// the key ID check.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// FuzzReader feeds arbitrary bytes to the header and chunk decoder. It never panics, every
// failure is one of the typed errors, no error text shows the MBK, what it yields before an
// error is whole chunks, and a header that parses re-encodes to exactly the bytes it came from.
func FuzzReader(f *testing.F) {
	kw := testWrap(f, 1)
	f.Add([]byte{})
	f.Add([]byte("KQBK\x01"))
	f.Add(makeBackup(f, kw, content(ChunkSize+1, 1), 0)) // two chunks: too big to check in
	mbkHex := hex.EncodeToString(testMBK(1))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := ReadHeader(bytes.NewReader(b)); err == nil {
			if got := h.marshal(); !bytes.Equal(got, b[:len(got)]) || !bytes.Equal(h.raw, got) {
				t.Fatalf("header re-encodes differently:\n in %x\nout %x", b[:len(h.raw)], got)
			}
		} else if !typed(err) {
			t.Fatalf("untyped header error %T: %v", err, err)
		}
		out, err := open(kw, b, 1000)
		if err == nil {
			return
		}
		if !typed(err) {
			t.Fatalf("untyped error %T: %v", err, err)
		}
		if strings.Contains(err.Error(), mbkHex) {
			t.Fatal("error text shows the MBK")
		}
		if len(out)%ChunkSize != 0 && !errors.Is(err, hsm.ErrBackupTrailingData) {
			t.Fatalf("%d bytes yielded before an error: not whole chunks", len(out))
		}
	})
}

func typed(err error) bool {
	var be *hsm.BackupError
	var fe *hsm.ForeignKeyError
	return errors.As(err, &be) || errors.As(err, &fe)
}

// FuzzRecordReader decodes key records from arbitrary content: no panic, every failure a
// *RecordError, and every record decoded re-encodes to exactly the bytes it came from.
func FuzzRecordReader(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{'K', 1, 1, 'x', 1, 'y', 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rr := NewRecordReader(bytes.NewReader(b))
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
				if !bytes.HasPrefix(b, again) {
					t.Fatal("records decoded before the error re-encode differently")
				}
				return
			}
			if again, err = AppendRecord(again, rec); err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
		}
	})
}

// seeds are the checked-in corpus of FuzzReader, each named for what it is; TestSeedCorpus
// checks that each still decodes as its name says.
func seeds(t *testing.T) map[string][]byte {
	kw := testWrap(t, 1)
	small := makeBackup(t, kw, []byte("a small backup"), 0)
	records := func(n int) []byte {
		var buf bytes.Buffer
		w, err := NewWriter(context.Background(), &buf, kw, Header{Source: "seed", Content: "keyquorum/soft-keys/1"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			rec := KeyRecord{ID: []byte{byte(i), 1, 2, 3}, Label: fmt.Sprintf("key %d", i), Algorithm: hsm.AlgorithmAES256, Material: bytes.Repeat([]byte{byte(i)}, 32)}
			if err := WriteRecord(w, &rec); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		return buf.Bytes()
	}
	flip := func(b []byte, off int) []byte { c := bytes.Clone(b); c[off] ^= 0x20; return c }
	return map[string][]byte{
		"valid-empty":   makeBackup(t, kw, nil, 0),
		"valid-small":   small,
		"valid-records": records(5),
		"valid-no-source": func() []byte {
			var b bytes.Buffer
			w, _ := NewWriter(context.Background(), &b, kw, Header{Content: "x"})
			w.Close()
			return b.Bytes()
		}(),
		"truncated-header": small[:30],
		"truncated-chunk":  small[:len(small)-3],
		"truncated-frame":  small[:len(small)-len("a small backup")-tagSize-5],
		"tampered-chunk":   flip(small, len(small)-1),
		"tampered-frame":   flip(small, len(small)-len("a small backup")-tagSize-frameSize+8),
		"tampered-header":  flip(small, 25),
		"trailing-data":    append(bytes.Clone(small), "tail"...),
		"foreign-key":      makeBackup(t, testWrap(t, 2), []byte("other key"), 0),
		"version-3":        func() []byte { c := bytes.Clone(small); c[4] = 3; return c }(),
		"valid-v1-records": func() []byte {
			var buf bytes.Buffer
			w, err := newWriter(context.Background(), &buf, kw, Header{Source: "old", Content: "keyquorum/soft-keys/1"}, 1)
			if err != nil {
				t.Fatal(err)
			}
			rec := KeyRecord{ID: []byte{1, 2, 3}, Label: "old key", Algorithm: hsm.AlgorithmAES256, Material: bytes.Repeat([]byte{9}, 32)}
			if err := WriteRecord(w, &rec); err != nil {
				t.Fatal(err)
			}
			w.Close()
			return buf.Bytes()
		}(),
		"valid-skipped": func() []byte {
			var buf bytes.Buffer
			w, err := NewWriter(context.Background(), &buf, kw, Header{Source: "seed", Content: "keyquorum/soft-objects/2",
				Skipped: []hsm.SkippedObject{{Kind: "AES-256 secret key", Label: "hsm-only", ID: []byte{1}, Reason: "it is not extractable"},
					{Kind: "data object", Label: "", Reason: "x"}}, SkippedTotal: 3})
			if err != nil {
				t.Fatal(err)
			}
			w.Close()
			return buf.Bytes()
		}(),
		"not-backup": []byte("PK\x03\x04not a backup"),
	}
}

// recordSeeds are the checked-in corpus of FuzzRecordReader.
func recordSeeds(t *testing.T) map[string][]byte {
	enc := func(recs ...KeyRecord) []byte {
		var b []byte
		for i := range recs {
			var err error
			if b, err = AppendRecord(b, &recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	one := KeyRecord{ID: bytes.Repeat([]byte{7}, 16), Label: "signing key", Algorithm: hsm.AlgorithmAES256, Material: bytes.Repeat([]byte{1}, 32)}
	wrapped := KeyRecord{ID: []byte("id-000001"), Label: "wrapped", Algorithm: hsm.AlgorithmAES256, Material: bytes.Repeat([]byte{2}, 40)}
	three := enc(one, wrapped, KeyRecord{ID: []byte{1}, Label: "é ü", Algorithm: hsm.AlgorithmAES256, Material: []byte{3}})
	return map[string][]byte{
		"valid-one":     enc(one),
		"valid-three":   three,
		"truncated":     three[:len(three)-1],
		"bad-type":      append([]byte{'X'}, enc(one)[1:]...),
		"bad-label":     func() []byte { b := enc(one); b[20] = '\n'; return b }(),
		"zero-material": func() []byte { b := enc(one); return append(b[:len(b)-34], 0, 0) }(),
	}
}

func writeCorpus(t *testing.T, dir string, seeds map[string][]byte) {
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	for name, b := range seeds {
		text := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if *updateCorpus {
		writeCorpus(t, dir, seeds(t))
		writeCorpus(t, filepath.Join("testdata", "fuzz", "FuzzRecordReader"), recordSeeds(t))
		writeCorpus(t, filepath.Join("testdata", "fuzz", "FuzzObjectRecordReader"), objectRecordSeeds(t))
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < 10 {
		t.Fatalf("seed corpus: %d files, %v", len(entries), err)
	}
	want := map[string]error{
		"truncated": hsm.ErrBackupTruncated, "tampered": hsm.ErrBackupTampered, "trailing": hsm.ErrBackupTrailingData,
		"version": hsm.ErrBackupVersion, "not": hsm.ErrNotBackup,
	}
	kw := testWrap(t, 1)
	for _, e := range entries {
		text, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(text), "\n", 3)
		quoted := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
		s, err := strconv.Unquote(quoted)
		if lines[0] != "go test fuzz v1" || err != nil {
			t.Fatalf("%s is not a fuzz corpus file: %v", e.Name(), err)
		}
		_, err = open(kw, []byte(s), 0)
		kind := strings.SplitN(e.Name(), "-", 2)[0]
		switch kind {
		case "valid":
			if err != nil {
				t.Errorf("%s: %v", e.Name(), err)
			}
		case "foreign":
			var fe *hsm.ForeignKeyError
			if !errors.As(err, &fe) {
				t.Errorf("%s: %v", e.Name(), err)
			}
		default:
			if w, ok := want[kind]; !ok || !errors.Is(err, w) {
				t.Errorf("%s: %v, want %v", e.Name(), err, w)
			}
		}
	}
}
