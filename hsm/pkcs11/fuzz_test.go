//go:build cgo

package pkcs11

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

// FuzzDecodeJournal decodes the restore journal as a token holds it: no panic, and a journal
// that decodes re-encodes to what it came from.
func FuzzDecodeJournal(f *testing.F) {
	j := journal{backup: hsm.BackupRef{ID: "00112233445566778899aabbccddeeff", Source: "node-a", Created: time.Unix(1700000000, 0)},
		makeEqual: true, total: 12, done: 5, started: time.Unix(1700000100, 0)}
	f.Add(j.encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := decodeJournal(b)
		if err != nil {
			return
		}
		if again := j.encode(); !bytes.Equal(again, b) {
			t.Fatalf("journal re-encodes differently:\n in %x\nout %x", b, again)
		}
	})
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// TestSeedCorpus checks the checked-in seed corpus of FuzzDecodeJournal: each file decodes
// (valid-*) or is refused (the others) as its name says. -update-corpus rewrites it.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeJournal")
	defer func() {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) < 3 {
			t.Fatalf("%d seed files, %v", len(entries), err)
		}
		for _, e := range entries {
			text, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			lines := bytes.SplitN(text, []byte("\n"), 3)
			s, err := strconv.Unquote(string(bytes.TrimSuffix(bytes.TrimPrefix(lines[1], []byte("[]byte(")), []byte(")"))))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeJournal([]byte(s)); (err == nil) != bytes.HasPrefix([]byte(e.Name()), []byte("valid")) {
				t.Errorf("%s: %v", e.Name(), err)
			}
		}
	}()
	if !*updateCorpus {
		return
	}
	j := journal{backup: hsm.BackupRef{ID: "00112233445566778899aabbccddeeff", Source: "node-a", Created: time.Unix(1700000000, 0)},
		makeEqual: true, total: 12, done: 5, started: time.Unix(1700000100, 0)}
	b := j.encode()
	os.MkdirAll(dir, 0o755)
	for name, s := range map[string][]byte{"valid": b, "truncated": b[:len(b)-2], "bad-version": append([]byte{2}, b[1:]...)} {
		text := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
