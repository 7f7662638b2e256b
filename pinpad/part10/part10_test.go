package part10

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFeatures(t *testing.T) {
	// Reiner SCT's driver: features 06..09 on SCARD_CTL_CODE(3506..3509).
	reiner := unhex(t, "06 04 42000DB2 07 04 42000DB3 08 04 42000DB4 09 04 42000DB5")
	f, err := ParseFeatures(reiner)
	if err != nil {
		t.Fatal(err)
	}
	want := Features{0x06: 0x42000DB2, 0x07: 0x42000DB3, 0x08: 0x42000DB4, 0x09: 0x42000DB5}
	if len(f) != len(want) {
		t.Fatalf("features %v", f)
	}
	for tag, code := range want {
		if got, ok := f.Code(tag); !ok || got != code {
			t.Errorf("feature %02X: 0x%08X, %v; want 0x%08X", tag, got, ok, code)
		}
	}
	if !bytes.Equal(MarshalFeatures(f), reiner) {
		t.Errorf("marshal: %x", MarshalFeatures(f))
	}
	if s := f.String(); s != "VERIFY_PIN_DIRECT=0x42000DB2 MODIFY_PIN_DIRECT=0x42000DB3 MCT_READER_DIRECT=0x42000DB4 MCT_UNIVERSAL=0x42000DB5" {
		t.Errorf("string %q", s)
	}

	// libccid numbers them SCARD_CTL_CODE(0x330000 + tag).
	ccid, err := ParseFeatures(unhex(t, "06 04 42330006 0A 04 4233000A 12 04 42330012"))
	if err != nil || ccid[FeatureVerifyPINDirect] != 0x42330006 || ccid[FeatureGetTLVProperties] != 0x42330012 {
		t.Fatalf("libccid list: %v %v", ccid, err)
	}
	if _, ok := ccid.Code(FeatureModifyPINDirect); ok {
		t.Error("a feature the reader did not list")
	}

	if f, err := ParseFeatures(nil); err != nil || len(f) != 0 {
		t.Errorf("empty list: %v %v", f, err)
	}
	for name, in := range map[string]string{
		"length 2":        "06 02 4200",
		"truncated code":  "06 04 42000D",
		"truncated entry": "06 04 42000DB2 07",
		"duplicate":       "06 04 42000DB2 06 04 42000DB3",
	} {
		var fe *FeatureError
		if _, err := ParseFeatures(unhex(t, in)); !errors.As(err, &fe) {
			t.Errorf("%s: %v, want *FeatureError", name, err)
		}
	}
}

func TestPINVerifyStructure(t *testing.T) {
	// HARDWARE.md §1's example for a fixed 6-digit ASCII PIN padded with FF, 30 s.
	v := &PINVerify{
		Timeout:       30 * time.Second,
		PINFormat:     PINFormat{FormatString: 0x82, PINBlockString: 0x06, MinDigits: 6, MaxDigits: 6, EntryValidation: 0x03},
		NumberMessage: 0x01, LangID: 0x0409, MsgIndex: 0,
		APDU: unhex(t, "00 20 00 00 06 FF FF FF FF FF FF"),
	}
	got, err := v.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "1E 1E 82 06 00 06 06 03 01 09 04 00 00 00 00 0B 00 00 00 | 00 20 00 00 06 FF FF FF FF FF FF")
	if !bytes.Equal(got, want) {
		t.Fatalf("structure\n got %x\nwant %x", got, want)
	}
	back, err := ParsePINVerify(got)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := back.Marshal()
	if !bytes.Equal(again, got) {
		t.Errorf("parse/marshal round trip: %x", again)
	}
	apdu, err := v.Fill([]byte("123456"))
	if err != nil || !bytes.Equal(apdu, unhex(t, "00 20 00 00 06 31 32 33 34 35 36")) {
		t.Errorf("fill: %x %v", apdu, err)
	}
	if _, err := v.Fill([]byte("12345")); err == nil {
		t.Error("fill accepted a PIN shorter than the minimum")
	}

	// Length checks as the drivers do them: exactly 19 + ulDataLength.
	if _, err := ParsePINVerify(got[:len(got)-1]); !errors.Is(err, ErrBadStructure) {
		t.Errorf("short structure: %v", err)
	}
	if _, err := ParsePINVerify(append(bytes.Clone(got), 0)); !errors.Is(err, ErrBadStructure) {
		t.Errorf("long structure: %v", err)
	}
}

func TestTimerOut(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want byte
	}{
		{0, 0}, {-time.Second, 0}, {time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2},
		{90 * time.Second, 90}, {255 * time.Second, 255}, {time.Hour, 255},
	} {
		if got := timerOut(c.d); got != c.want {
			t.Errorf("timerOut(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestPINModifyStructure(t *testing.T) {
	m := &PINModify{
		Timeout:            60 * time.Second,
		PINFormat:          PINFormat{FormatString: 0x82, PINBlockString: 0x0F, MinDigits: 6, MaxDigits: 15, EntryValidation: 0x02},
		InsertionOffsetOld: 0, InsertionOffsetNew: 0,
		ConfirmPIN:    ConfirmNewPIN,
		NumberMessage: 0x02, LangID: 0x0409, MsgIndex: [3]byte{1, 2, 0},
		APDU: unhex(t, "00 24 01 81 00"),
	}
	got, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, "3C 3C 82 0F 00 00 00 0F 06 01 02 02 09 04 01 02 00 00 00 00 05 00 00 00 | 00 24 01 81 00")
	if !bytes.Equal(got, want) {
		t.Fatalf("structure\n got %x\nwant %x", got, want)
	}
	back, err := ParsePINModify(got)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := back.Marshal(); !bytes.Equal(again, got) {
		t.Errorf("round trip %x", again)
	}
	apdu, err := m.Fill(nil, []byte("24681357"))
	if err != nil || !bytes.Equal(apdu, unhex(t, "00 24 01 81 08 3234363831333537")) {
		t.Errorf("fill: %x %v", apdu, err)
	}
	m.ConfirmPIN = ConfirmNewPIN | EnterOldPIN
	m.APDU = unhex(t, "00 24 00 81 00")
	apdu, err = m.Fill([]byte("123456"), []byte("654321"))
	if err != nil || !bytes.Equal(apdu, unhex(t, "00 24 00 81 0C 313233343536 363534333231")) {
		t.Errorf("fill old+new: %x %v", apdu, err)
	}
	if _, err := ParsePINModify(got[:23]); !errors.Is(err, ErrBadStructure) {
		t.Errorf("short header: %v", err)
	}
}

func TestFillFormats(t *testing.T) {
	for _, c := range []struct {
		name       string
		f          PINFormat
		tpl, pin   string
		want       string
		wantErrHas string
	}{
		{name: "BCD left, F padded", f: PINFormat{FormatString: 0x81, PINBlockString: 0x08, MinDigits: 4, MaxDigits: 12},
			tpl: "00 20 00 01 08 FFFFFFFFFFFFFFFF", pin: "1234", want: "00 20 00 01 08 1234FFFFFFFFFFFF"},
		{name: "BCD odd", f: PINFormat{FormatString: 0x81, PINBlockString: 0x08, MinDigits: 4, MaxDigits: 12},
			tpl: "00 20 00 01 08 FFFFFFFFFFFFFFFF", pin: "12345", want: "00 20 00 01 08 12345FFFFFFFFFFF"},
		{name: "ISO 9564 format 2: length nibble", f: PINFormat{FormatString: 0x89, PINBlockString: 0x47, PINLengthFormat: 0x04, MinDigits: 4, MaxDigits: 12},
			tpl: "00 20 00 80 08 20FFFFFFFFFFFFFF", pin: "1234", want: "00 20 00 80 08 241234FFFFFFFFFF"},
		{name: "ASCII right justified", f: PINFormat{FormatString: 0x86, PINBlockString: 0x08, MinDigits: 4, MaxDigits: 8},
			tpl: "00 20 00 00 08 0000000000000000", pin: "1234", want: "00 20 00 00 08 0000000031323334"},
		{name: "binary", f: PINFormat{FormatString: 0x80, PINBlockString: 0x04, MinDigits: 4, MaxDigits: 4},
			tpl: "00 20 00 00 04 FFFFFFFF", pin: "1290", want: "00 20 00 00 04 01020900"},
		{name: "bit position", f: PINFormat{FormatString: 0x02 | 8<<3, PINBlockString: 0x04, MinDigits: 4, MaxDigits: 4},
			tpl: "00 20 00 00 05 00FFFFFFFF", pin: "1234", want: "00 20 00 00 05 0031323334"},
		{name: "block does not fit", f: PINFormat{FormatString: 0x82, PINBlockString: 0x08, MinDigits: 4, MaxDigits: 8},
			tpl: "00 20 00 00 04 FFFFFFFF", pin: "1234", wantErrHas: "does not fit"},
		{name: "Lc mismatch", f: PINFormat{FormatString: 0x82, MinDigits: 4, MaxDigits: 8},
			tpl: "00 20 00 00 09 FFFFFFFF", pin: "1234", wantErrHas: "Lc"},
		{name: "not digits", f: PINFormat{FormatString: 0x82, MinDigits: 4, MaxDigits: 8},
			tpl: "00 20 00 00 00", pin: "12a4", wantErrHas: "digit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := &PINVerify{PINFormat: c.f, APDU: unhex(t, c.tpl)}
			got, err := v.Fill([]byte(c.pin))
			if c.wantErrHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErrHas) {
					t.Fatalf("fill: %x, %v; want error with %q", got, err, c.wantErrHas)
				}
				return
			}
			if err != nil || !bytes.Equal(got, unhex(t, c.want)) {
				t.Fatalf("fill: %x, %v; want %s", got, err, c.want)
			}
		})
	}
}

// TestResult maps every result a PIN pad returns (HARDWARE.md §1).
func TestResult(t *testing.T) {
	for _, c := range []struct {
		in   string
		want error
	}{
		{"9000", nil},
		{"63C0", pinpad.ErrPINBlocked},
		{"6983", pinpad.ErrPINBlocked},
		{"6985", pinpad.ErrNullPIN},
		{"6400", pinpad.ErrTimeout},
		{"6401", pinpad.ErrCancelled},
		{"6402", pinpad.ErrPINsDiffer},
		{"6403", pinpad.ErrPINLength},
		{"6B80", ErrStructureRejected},
	} {
		if err := Result("verify PIN", unhex(t, c.in)); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.in, err, c.want)
		}
	}
	for in, tries := range map[string]int{"63C1": 1, "63C2": 2, "63CF": 15} {
		var wp *pinpad.WrongPINError
		if err := Result("verify PIN", unhex(t, in)); !errors.As(err, &wp) || wp.Remaining != tries {
			t.Errorf("%s: %v, want %d tries", in, err, tries)
		}
	}
	var se *pinpad.StatusError
	if err := Result("verify PIN", unhex(t, "6A82")); !errors.As(err, &se) || se.SW != 0x6A82 || se.Op != "verify PIN" {
		t.Errorf("6A82: %v", err)
	}
	for _, in := range []string{"", "90", "900000"} {
		if err := Result("verify PIN", unhex(t, in)); err == nil {
			t.Errorf("%q: no error for a reply that is not two bytes", in)
		}
	}
}

func TestOutputCommand(t *testing.T) {
	got, err := OutputCommand("Insert 1. card\npress OK")
	if err != nil {
		t.Fatal(err)
	}
	text := "Insert 1. card\rpress OK"
	want := append(unhex(t, "02 01 1E 00 | 20 17 40 00 19 50 17"), text...)
	if !bytes.Equal(got, want) {
		t.Fatalf("output\n got %x\nwant %x", got, want)
	}
	if _, err := OutputCommand(strings.Repeat("x", MaxDisplayText+1)); err == nil {
		t.Error("text longer than the display accepted")
	}
	if b, _ := OutputCommand("ä"); !bytes.Contains(b, []byte("??")) {
		t.Errorf("non-ASCII not replaced: %x", b)
	}
	for in, want := range map[string]uint16{"01 02 02 00 90 00": 0x9000, "01 02 02 00 6D 00": 0x6D00} {
		if sw, err := MCTResponse(unhex(t, in)); err != nil || sw != want {
			t.Errorf("MCT %s: %04X %v", in, sw, err)
		}
	}
	for _, in := range []string{"", "01 02 03 00 90 00", "01 02 00 00"} {
		if _, err := MCTResponse(unhex(t, in)); err == nil {
			t.Errorf("MCT %q accepted", in)
		}
	}
}

func TestInputAndGetStatus(t *testing.T) {
	in, err := InputCommand("Write New Key\npress OK/Cancel", 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	text := "Write New Key\rpress OK/Cancel"
	want := append([]byte{0x02, 0x01, byte(11 + len(text)), 0x00, 0x20, 0x16, 0x50, 0x00, byte(5 + len(text)), 0x80, 0x01, 90, 0x50, byte(len(text))}, text...)
	if want = append(want, 0x01); !bytes.Equal(in, want) {
		t.Fatalf("INPUT\n got %X\nwant %X", in, want)
	}
	if _, err := InputCommand(strings.Repeat("x", 65), time.Second); err == nil {
		t.Fatal("65-byte text accepted")
	}
	for reply, key := range map[string]Key{"01020200 9000": KeyOK, "01020200 6401": KeyCancel, "01020200 6400": KeyTimeout,
		"01020300 37 9000": KeyDigit, "01020200 6D00": KeyNoInput} {
		if got, err := InputResult(unhex(t, reply)); err != nil || got != key {
			t.Errorf("%s: %v %v, want %v", reply, got, err, key)
		}
	}
	if _, err := InputResult(unhex(t, "01020200 6A00")); err == nil {
		t.Error("6A 00 taken as a key")
	}
	if !bytes.Equal(GetStatusCommand(), unhex(t, "02010500 2013004600")) {
		t.Fatalf("GET STATUS %X", GetStatusCommand())
	}
	long := append([]byte{0x01, 0x02, 29, 0x00, 0x46, 25}, "DESCTCJECA V3.0; Rev.  41"...)
	fw, err := ParseStatus(append(long, 0x90, 0x00))
	if err != nil || fw.String() != "3.0.41" || !fw.Older(MinPINDirectFirmware) {
		t.Fatalf("long form: %+v %v", fw, err)
	}
	short := append([]byte{0x01, 0x02, 19, 0x00, 0x46, 15}, "DESCTCJECA V3.0"...)
	if fw, err := ParseStatus(append(short, 0x90, 0x00)); err != nil || fw.Revision != -1 || fw.Major != 3 {
		t.Fatalf("short form: %+v %v", fw, err)
	}
	if _, err := ParseStatus(unhex(t, "01020200 6A00")); err == nil {
		t.Fatal("6A 00 taken as firmware")
	}
}
