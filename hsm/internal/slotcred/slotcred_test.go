package slotcred

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
)

func testMAC(key byte) MAC {
	return func(msg []byte) ([]byte, error) {
		m := hmac.New(sha256.New, []byte{key})
		m.Write(msg)
		return m.Sum(nil), nil
	}
}

func TestIssueAndCheck(t *testing.T) {
	mac := testMAC(1)
	c, err := Issue(9, "0123456789ABCDEF", mac)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 26+16+macSize || !bytes.HasPrefix(c, []byte("KQSC\x01\x00\x00\x00\x09")) {
		t.Fatalf("credential layout %x", c)
	}
	long, err := Issue(1, string(bytes.Repeat([]byte("S"), 64)), mac)
	if err != nil || len(long) != MaxSize {
		t.Fatalf("64-character serial: %d bytes, %v", len(long), err)
	}
	if err := Check(9, "0123456789ABCDEF", c, mac); err != nil {
		t.Fatal(err)
	}
	var cm *hsm.CardMismatchError
	if err := Check(9, "OTHER", c, mac); !errors.As(err, &cm) || cm.Issued != "0123456789ABCDEF" {
		t.Fatalf("other card: %v", err)
	}
	if err := Check(9, "0123456789ABCDEF", c, testMAC(2)); !errors.Is(err, hsm.ErrCredentialInvalid) {
		t.Fatalf("other key: %v", err)
	}
	for _, serial := range []string{"", "has space", "tab\t", string(bytes.Repeat([]byte("S"), 65))} {
		if _, err := Issue(1, serial, mac); !errors.Is(err, hsm.ErrInvalidSerial) {
			t.Errorf("serial %q: %v", serial, err)
		}
	}
	if _, err := Issue(1, "S", func([]byte) ([]byte, error) { return make([]byte, 20), nil }); err == nil {
		t.Error("20-byte MAC accepted")
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// FuzzDecode: no panic, every failure ErrCredentialInvalid, and a credential that decodes is
// exactly its parts.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, hsm.ErrCredentialInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if !bytes.Equal(append(bytes.Clone(c.body), c.tag...), b) || len(c.tag) != macSize || len(c.Serial) != int(b[25]) {
			t.Fatalf("decoded parts differ from the input %x", b)
		}
		if err := Check(uint(c.Slot), c.Serial, b, testMAC(1)); err != nil && !errors.Is(err, hsm.ErrCredentialInvalid) {
			t.Fatalf("check of a decodable credential under another key: %v", err)
		}
	})
}

func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *updateCorpus {
		valid, err := Issue(3, "SERIAL-1", testMAC(1))
		if err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o755)
		for name, b := range map[string][]byte{
			"valid":          valid,
			"truncated":      valid[:len(valid)-1],
			"long-serial":    func() []byte { c, _ := Issue(1, string(bytes.Repeat([]byte("S"), 64)), testMAC(1)); return c }(),
			"bad-length":     func() []byte { c := bytes.Clone(valid); c[25] = 200; return c }(),
			"control-serial": func() []byte { c := bytes.Clone(valid); c[27] = '\n'; return c }(),
		} {
			text := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < 5 {
		t.Fatalf("seed corpus: %d files, %v", len(entries), err)
	}
}
