package vcard

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// exchange sends APDUs in hex and checks each response, "…SW" ending with the status word.
func exchange(t *testing.T, c *Card, steps ...string) {
	t.Helper()
	for _, s := range steps {
		cmd, want, _ := strings.Cut(s, "->")
		apdu, err := hex.DecodeString(strings.ReplaceAll(cmd, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Transmit(apdu)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if got := strings.ToUpper(hex.EncodeToString(resp)); got != strings.ReplaceAll(want, " ", "") {
			t.Errorf("%s -> %s, want %s", cmd, got, want)
		}
	}
}

func TestCardCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.card")
	c, err := New(path, []byte{0xCA, 0xFE})
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c,
		"00 A4 00 0C -> 9000",
		"00 A4 00 0C 02 3F00 -> 9000",
		"00 A4 08 0C 02 2F02 -> 9000",
		"00 B0 00 00 04 -> 5A02CAFE 9000",
		"00 B0 00 00 08 -> 5A02CAFE 6282", // past the end: what there is, end of file
		"00 B0 00 05 01 -> 6B00",
		"00 D6 00 00 01 00 -> 6982", // the serial is read-only
		"00 A4 08 04 02 4B01 00 -> 620B 8002 0400 820101 83024B01 9000",
		"00 A4 08 04 04 3F00 4B02 00 -> 620B 8002 0400 820101 83024B02 9000",
		"00 A4 08 0C 02 4B09 -> 6A82",
		"00 A4 05 0C 02 4B01 -> 6A86",
		"00 A4 08 0C 02 4B01 -> 9000",
		"00 B0 00 00 02 -> 6982", // PIN not verified
		"00 20 00 81 -> 63C3",
		"00 20 00 83 -> 6A88",
		"00 20 00 81 06 313233343536 -> 9000",
		"00 20 00 81 -> 9000",
		"00 B0 00 00 02 -> 0000 9000",
		"00 D6 03 FE 02 AAAA -> 9000",
		"00 D6 03 FF 02 AAAA -> 6B00", // beyond the file
		"00 B0 03 FE 02 -> AAAA 9000",
		"00 B0 80 00 02 -> 6A81", // short EF identifiers: not here
		"00 A4 00 0C -> 9000",
		"00 B0 00 00 02 -> 6986", // no current EF
		"80 B0 00 00 02 -> 6D00", // a proprietary CLA: only 80 AA and 80 E0
		"A0 B0 00 00 02 -> 6E00",
		"00 CA 00 00 00 -> 6D00",
		"00 B0 00 -> 6700",
		"00 D6 00 00 05 AA -> 6700",
	)
	// The slot user PIN: wrong twice, change with old ‖ new (P1 00), then after verify (P1 01).
	exchange(t, c,
		"00 20 00 82 06 313131313131 -> 63C2",
		"00 24 00 82 0C 313233343536 363534333231 -> 9000",
		"00 20 00 82 -> 63C3",
		"00 24 00 82 0C 313233343536 363534333231 -> 63C2", // the old PIN no longer
		"00 24 01 82 06 393939393939 -> 6982",              // P1 01 needs a verified PIN
		"00 20 00 82 06 363534333231 -> 9000",
		"00 24 01 82 03 393939 -> 6A80", // too short
		"00 24 01 82 06 3939393939 41 -> 6A80",
		"00 24 01 82 06 393939393939 -> 9000",
	)
	// Block the share PIN.
	exchange(t, c,
		"00 20 00 81 06 303030303030 -> 63C2",
		"00 20 00 81 06 303030303030 -> 63C1",
		"00 20 00 81 06 303030303030 -> 63C0",
		"00 20 00 81 06 313233343536 -> 6983",
		"00 20 00 81 -> 6983",
		"00 24 01 81 06 393939393939 -> 6983",
	)
	c.Reset()
	exchange(t, c, "00 A4 08 0C 02 4B01 -> 9000", "00 B0 00 00 02 -> 6982")

	// Everything above is in the file.
	d, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Tries(tcos.PINRefShare); n != 0 {
		t.Errorf("share tries after load: %d", n)
	}
	exchange(t, d,
		"00 20 00 82 06 393939393939 -> 9000",
		"00 A4 08 0C 02 4B02 -> 9000",
		"00 B0 03 FE 02 -> 0000 9000",
	)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("card file mode: %v %v", st.Mode(), err)
	}
	if d.Serial() != "CAFE" || d.Foreign() || !bytes.Equal(d.ATR(), tcos.ATR) {
		t.Errorf("loaded card: %s %v %x", d.Serial(), d.Foreign(), d.ATR())
	}
}

func TestForeignCard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.card")
	c, err := NewForeign(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tcos.IsTCOS(c.ATR()) || !c.Foreign() {
		t.Fatal("a foreign card with a TCOS ATR")
	}
	exchange(t, c, "00 A4 00 0C -> 6A82", "00 20 00 81 -> 6D00")
	d, err := Load(path)
	if err != nil || !d.Foreign() || d.Serial() != c.Serial() {
		t.Fatalf("load: %v", err)
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":     "{",
		"version":     `{"version":7,"serial":"AQI="}`,
		"no serial":   `{"version":1}`,
		"null PIN":    `{"version":1,"serial":"AQI=","pins":{"81":null}}`,
		"tries":       `{"version":1,"serial":"AQI=","pins":{"81":{"pin":"MTIzNDU2","tries":9}}}`,
		"null file":   `{"version":1,"serial":"AQI=","files":{"4B01":null}}`,
		"not present": "",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if name != "not present" {
			os.WriteFile(path, []byte(content), 0o600)
		}
		if _, err := Load(path); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// TestLoadVersion1 reads a card file of the first format (FIDs under the MF, PINs of the MF):
// the simulator's cards made before card profiles still work, in the keyquorum-mf layout.
func TestLoadVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.card")
	v1 := `{"version":1,"serial":"yv4=","pins":{"81":{"pin":"MTIzNDU2","tries":2},"82":{"pin":"NjU0MzIx","tries":3}},` +
		`"files":{"2F02":"WgLK/g==","4B01":"AAJoaQAA","4B02":"AAAAAAAA"}}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Tries(0x81); n != 2 || c.Serial() != "CAFE" {
		t.Fatalf("tries %d serial %s", n, c.Serial())
	}
	exchange(t, c,
		"00 A4 08 0C 02 4B01 -> 9000",
		"00 B0 00 00 04 -> 6982",
		"00 20 00 81 06 313233343536 -> 9000",
		"00 B0 00 00 04 -> 00026869 9000",
		"00 A4 08 0C 02 5049 -> 9000",
		"00 B2 01 04 00 -> A00783018190020303 9000", // max 3, 3 left: the right PIN restored them
		"00 B2 02 04 00 -> A00783018290020303 9000",
	)
	// Saved again, it is a version 2 file.
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"version":2`) {
		t.Errorf("saved as %s", b)
	}
}
