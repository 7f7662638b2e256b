package soft

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// FuzzDecodeObject decodes object entries as the database holds them: no panic; an entry that
// decodes re-encodes (with the same sealed bytes) to what it came from.
func FuzzDecodeObject(f *testing.F) {
	rec := appKeyRecord("seed", []byte{1, 2}, 32)
	v := []byte{entryVersion, 0, 0, 0, 3, 'a', 'b', 'c'}
	v, _ = backup.AppendObjectRecord(v, rec)
	f.Add(v)
	f.Add([]byte{2, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeObject([]byte("handle-0123456789"), b)
		if err != nil {
			return
		}
		_ = describe(e).String()
		again := []byte{entryVersion}
		again = append(again, b[1:5]...)
		again = append(again, e.sealed...)
		again, err = backup.AppendObjectRecord(again, e.rec)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("entry re-encodes differently: %v", err)
		}
	})
}

// FuzzDecodeJournal decodes the soft restore journal: no panic, and a journal that decodes
// re-encodes to what it came from.
func FuzzDecodeJournal(f *testing.F) {
	f.Add(encodeJournal(hsm.BackupRef{ID: "00112233445566778899aabbccddeeff", Source: "node-a", Created: time.Unix(1700000000, 0)}, true, 17, time.Unix(1700000100, 0)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeJournal(b)
		if err != nil {
			return
		}
		if again := encodeJournal(p.Backup, p.MakeEqual, p.Done, p.Started); !bytes.Equal(again, b) {
			t.Fatalf("journal re-encodes differently:\n in %x\nout %x", b, again)
		}
	})
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz")

// TestSeedCorpus checks the checked-in seed corpora of this package's fuzz targets: each file
// decodes (valid-*) or is refused (the others) as its name says. -update-corpus rewrites them.
func TestSeedCorpus(t *testing.T) {
	check := func(target string, decode func([]byte) error) {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		if err != nil || len(entries) < 3 {
			t.Fatalf("%s: %d seed files, %v", target, len(entries), err)
		}
		for _, e := range entries {
			text, _ := os.ReadFile(filepath.Join("testdata", "fuzz", target, e.Name()))
			lines := bytes.SplitN(text, []byte("\n"), 3)
			s, err := strconv.Unquote(string(bytes.TrimSuffix(bytes.TrimPrefix(lines[1], []byte("[]byte(")), []byte(")"))))
			if err != nil {
				t.Fatalf("%s/%s: %v", target, e.Name(), err)
			}
			if err := decode([]byte(s)); (err == nil) != bytes.HasPrefix([]byte(e.Name()), []byte("valid")) {
				t.Errorf("%s/%s: %v", target, e.Name(), err)
			}
		}
	}
	defer check("FuzzDecodeObject", func(b []byte) error { _, err := decodeObject([]byte("h"), b); return err })
	defer check("FuzzDecodeJournal", func(b []byte) error { _, err := decodeJournal(b); return err })
	if !*updateCorpus {
		return
	}
	rec := appKeyRecord("seed", []byte{1, 2}, 32)
	entry, _ := backup.AppendObjectRecord([]byte{entryVersion, 0, 0, 0, 3, 'a', 'b', 'c'}, rec)
	cert := &backup.ObjectRecord{Class: hsm.ClassCertificate, Type: hsm.CertX509, Attrs: []hsm.Attr{{Type: hsm.AttrLabel, Value: []byte("c")}, {Type: hsm.AttrValue, Value: []byte("0")}}}
	certEntry, _ := backup.AppendObjectRecord([]byte{entryVersion, 0, 0, 0, 0}, cert)
	j := encodeJournal(hsm.BackupRef{ID: "00112233445566778899aabbccddeeff", Source: "node-a", Created: time.Unix(1700000000, 0)}, true, 17, time.Unix(1700000100, 0))
	writeSeeds(t, "FuzzDecodeObject", map[string][]byte{"valid-key": entry, "valid-cert": certEntry, "truncated": entry[:len(entry)-3], "bad-version": append([]byte{1}, entry[1:]...)})
	writeSeeds(t, "FuzzDecodeJournal", map[string][]byte{"valid": j, "truncated": j[:len(j)-1], "bad-flag": func() []byte { c := bytes.Clone(j); c[len(c)-13] = 7; return c }()})
}

func writeSeeds(t *testing.T, target string, seeds map[string][]byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	os.MkdirAll(dir, 0o755)
	for name, b := range seeds {
		text := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
