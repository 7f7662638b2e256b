package cyberjacksim

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// recordingCard answers every APDU with a fixed status word and remembers what it got.
type recordingCard struct {
	atr  []byte
	got  [][]byte
	resp []byte
}

func (c *recordingCard) ATR() []byte { return c.atr }
func (c *recordingCard) Transmit(apdu []byte) ([]byte, error) {
	c.got = append(c.got, bytes.Clone(apdu))
	return c.resp, nil
}

var tcosATR = mustHex("3BBF96008131FE5D0064041103013" + "1C073F701D00090007D")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func newPoweredReader(t *testing.T, opts Options) (*Reader, *recordingCard) {
	t.Helper()
	r := NewReader(opts)
	card := &recordingCard{atr: tcosATR, resp: []byte{0x90, 0x00}}
	if err := r.Insert(card); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PowerUp(); err != nil {
		t.Fatal(err)
	}
	return r, card
}

// typeAfterPrompt waits for each of the next len(entries) PIN entries and types into it.
func typeAfterPrompt(t *testing.T, r *Reader, entries ...[]Key) <-chan []string {
	prompts := make(chan []string, 1)
	go func() {
		var seen []string
		seq := 0
		for _, keys := range entries {
			prompt, s, err := r.WaitEntry(seq, 5*time.Second)
			if err != nil {
				t.Error(err)
				break
			}
			seq = s
			seen = append(seen, prompt)
			for _, k := range keys {
				if err := r.Press(k); err != nil {
					t.Error(err)
				}
			}
		}
		prompts <- seen
	}()
	return prompts
}

func keys(s string) []Key {
	var out []Key
	for _, c := range s {
		switch c {
		case 'O':
			out = append(out, KeyOK)
		case 'C':
			out = append(out, KeyCancel)
		case 'X':
			out = append(out, KeyClear)
		default:
			out = append(out, Key(c))
		}
	}
	return out
}

func TestFeatureList(t *testing.T) {
	r := NewReader(Options{})
	got, err := r.Control(CtlGetFeatureRequest, nil, 256)
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex("0604 42000DB2 0704 42000DB3 0804 42000DB4 0904 42000DB5")
	if !bytes.Equal(got, want) {
		t.Fatalf("features %X, want %X", got, want)
	}
	if _, err := r.Control(0x42000000+3400+1, nil, 256); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown control code: %v", err)
	}
	// Reiner's driver: a buffer under 24 bytes is IFD_COMMUNICATION_ERROR (ifd.cpp p10GetFeatures).
	if _, err := r.Control(CtlGetFeatureRequest, nil, 23); !errors.Is(err, ErrDriver) {
		t.Fatalf("short buffer: %v", err)
	}
}

// The fixed-length example of HARDWARE.md §1: six ASCII digits into an FF-padded block, ended
// at the sixth digit (condition 01, as Reiner's builder sets for a fixed length).
var verifyFixed = mustHex("1E 00 82 06 00 06 06 01 01 09 04 00 00 00 00 0B 00 00 00 00 20 00 00 06 FF FF FF FF FF FF")

// Reiner's own variable-length form: template 00 20 00 00 00, the reader sets Lc.
var verifyVariable = mustHex("1E 00 82 0F 00 0F 06 02 01 09 04 00 00 00 00 05 00 00 00 00 20 00 00 00")

func TestVerifyPINBuildsTheAPDU(t *testing.T) {
	for _, tc := range []struct {
		name      string
		structure []byte
		typed     string
		want      []byte
	}{
		{"fixed, auto-submit at max length", verifyFixed, "123456", mustHex("00 20 00 00 06 31 32 33 34 35 36")},
		{"fixed, after Clear", verifyFixed, "99X123456", mustHex("00 20 00 00 06 31 32 33 34 35 36")},
		{"variable, OK", verifyVariable, "12345678O", mustHex("00 20 00 00 08 31 32 33 34 35 36 37 38")},
		{
			"ISO 9564 format 2, BCD with length nibble",
			mustHex("1E 00 89 47 04 0C 04 02 01 09 04 00 00 00 00 0D 00 00 00 00 20 00 81 08 20 FF FF FF FF FF FF FF"),
			"1234O",
			mustHex("00 20 00 81 08 24 12 34 FF FF FF FF FF"),
		},
		{
			"ISO 9564 format 2, odd BCD",
			mustHex("1E 00 89 47 04 0C 04 02 01 09 04 00 00 00 00 0D 00 00 00 00 20 00 81 08 20 FF FF FF FF FF FF FF"),
			"12345O",
			mustHex("00 20 00 81 08 25 12 34 5F FF FF FF FF"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, card := newPoweredReader(t, Options{})
			prompts := typeAfterPrompt(t, r, keys(tc.typed))
			got, err := r.Control(CtlVerifyPINDirect, tc.structure, 2)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte{0x90, 0x00}) {
				t.Fatalf("result %X", got)
			}
			if len(card.got) != 1 || !bytes.Equal(card.got[0], tc.want) {
				t.Fatalf("card got %X, want %X", card.got, tc.want)
			}
			if p := <-prompts; len(p) != 1 || p[0] != "Enter PIN" {
				t.Fatalf("prompts %q", p)
			}
		})
	}
}

func TestVerifyPINPadResults(t *testing.T) {
	oneSecond := bytes.Clone(verifyVariable)
	oneSecond[0] = 1
	for _, tc := range []struct {
		name      string
		structure []byte
		typed     string
		want      []byte
	}{
		{"cancel", verifyVariable, "12C", []byte{0x64, 0x01}},
		// No 64 03 from Reiner's driver: OK before the minimum is not taken, the pad times out.
		{"too short", oneSecond, "123O", []byte{0x64, 0x00}},
		{"timeout", oneSecond, "", []byte{0x64, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, card := newPoweredReader(t, Options{})
			typeAfterPrompt(t, r, keys(tc.typed))
			got, err := r.Control(CtlVerifyPINDirect, tc.structure, 2)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %X %v, want %X", got, err, tc.want)
			}
			if len(card.got) != 0 {
				t.Fatalf("card got an APDU: %X", card.got)
			}
		})
	}
}

func TestVerifyPINPassesTheCardsAnswer(t *testing.T) {
	r, card := newPoweredReader(t, Options{})
	card.resp = []byte{0x63, 0xC2}
	typeAfterPrompt(t, r, keys("000000O"))
	got, err := r.Control(CtlVerifyPINDirect, verifyVariable, 2)
	if err != nil || !bytes.Equal(got, []byte{0x63, 0xC2}) {
		t.Fatalf("got %X %v", got, err)
	}
}

func TestPINStructureLengthChecked(t *testing.T) {
	r, _ := newPoweredReader(t, Options{})
	for _, in := range [][]byte{verifyFixed[:len(verifyFixed)-1], append(bytes.Clone(verifyFixed), 0), verifyFixed[:10]} {
		if _, err := r.Control(CtlVerifyPINDirect, in, 2); !errors.Is(err, ErrBadStructure) {
			t.Fatalf("%d-byte verify structure: %v", len(in), err)
		}
		if _, err := r.Control(CtlModifyPINDirect, in, 2); !errors.Is(err, ErrBadStructure) {
			t.Fatalf("%d-byte modify structure: %v", len(in), err)
		}
	}
}

func TestVerifyPINWithoutCard(t *testing.T) {
	r := NewReader(Options{})
	if _, err := r.Control(CtlVerifyPINDirect, verifyFixed, 2); !errors.Is(err, ErrNoCard) {
		t.Fatalf("got %v", err)
	}
}

// modifyStructure builds a PIN_MODIFY_STRUCTURE for variable-length ASCII PINs.
func modifyStructure(confirm byte, apdu []byte) []byte {
	h := mustHex("1E 00 82 0F 00 00 00 0F 06")
	h = append(h, confirm, 0x02, 0xFF, 0x09, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00)
	h = append(h, byte(len(apdu)), 0, 0, 0)
	return append(h, apdu...)
}

func TestModifyPIN(t *testing.T) {
	tpl := mustHex("00 24 01 00 00")
	t.Run("new and confirm", func(t *testing.T) {
		r, card := newPoweredReader(t, Options{})
		prompts := typeAfterPrompt(t, r, keys("654321O"), keys("654321O"))
		got, err := r.Control(CtlModifyPINDirect, modifyStructure(0x01, tpl), 2)
		if err != nil || !bytes.Equal(got, []byte{0x90, 0x00}) {
			t.Fatalf("got %X %v", got, err)
		}
		if want := mustHex("00 24 01 00 06 36 35 34 33 32 31"); !bytes.Equal(card.got[0], want) {
			t.Fatalf("card got %X, want %X", card.got[0], want)
		}
		if p := <-prompts; strings.Join(p, "|") != "Enter new PIN|Confirm new PIN" {
			t.Fatalf("prompts %q", p)
		}
	})
	t.Run("old, new and confirm", func(t *testing.T) {
		r, card := newPoweredReader(t, Options{})
		typeAfterPrompt(t, r, keys("123456O"), keys("654321O"), keys("654321O"))
		got, err := r.Control(CtlModifyPINDirect, modifyStructure(0x03, mustHex("00 24 00 00 00")), 2)
		if err != nil || !bytes.Equal(got, []byte{0x90, 0x00}) {
			t.Fatalf("got %X %v", got, err)
		}
		if want := mustHex("00 24 00 00 0C 31 32 33 34 35 36 36 35 34 33 32 31"); !bytes.Equal(card.got[0], want) {
			t.Fatalf("card got %X, want %X", card.got[0], want)
		}
	})
	t.Run("confirmation differs", func(t *testing.T) {
		r, card := newPoweredReader(t, Options{})
		typeAfterPrompt(t, r, keys("654321O"), keys("654322O"))
		got, err := r.Control(CtlModifyPINDirect, modifyStructure(0x01, tpl), 2)
		if err != nil || !bytes.Equal(got, []byte{0x64, 0x02}) {
			t.Fatalf("got %X %v", got, err)
		}
		if len(card.got) != 0 {
			t.Fatal("card got an APDU although the PINs differ")
		}
	})
}

func mct(cmd []byte) []byte {
	return append([]byte{2, 1, byte(len(cmd)), byte(len(cmd) >> 8)}, cmd...)
}

func TestOutputThroughMCTUniversal(t *testing.T) {
	text := "Insert 1. card\rpress OK/Cancel"
	cmd := append([]byte{0x20, 0x17, 0x40, 0x00, byte(2 + len(text)), 0x50, byte(len(text))}, text...)
	r := NewReader(Options{})
	got, err := r.Control(CtlMCTUniversal, mct(cmd), 64)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 2, 2, 0, 0x90, 0x00}; !bytes.Equal(got, want) {
		t.Fatalf("got %X, want %X", got, want)
	}
	if r.Display() != text || len(r.Outputs()) != 1 {
		t.Fatalf("display %q, outputs %q", r.Display(), r.Outputs())
	}

	noMKT := NewReader(Options{NoMKTComp: true})
	got, err = noMKT.Control(CtlMCTUniversal, mct(cmd), 64)
	if err != nil || !bytes.Equal(got, []byte{1, 2, 2, 0, 0x6D, 0x00}) {
		t.Fatalf("without MKT_COMP: %X %v", got, err)
	}
	if len(noMKT.Outputs()) != 0 {
		t.Fatal("text reached the display of firmware without MKT_COMP")
	}

	// MCT_READER_DIRECT takes the bare command.
	if got, _ := r.Control(CtlMCTReaderDirect, cmd, 64); !bytes.Equal(got, []byte{0x90, 0x00}) {
		t.Fatalf("reader direct: %X", got)
	}
	long := append([]byte{0x20, 0x17, 0x40, 0x00, 67, 0x50, 65}, strings.Repeat("x", 65)...)
	if got, _ := r.Control(CtlMCTReaderDirect, long, 64); !bytes.Equal(got, swWrongLength) {
		t.Fatalf("65-byte text: %X", got)
	}
	if _, err := r.Control(CtlMCTUniversal, []byte{2, 1, 9, 0, 0x20}, 64); !errors.Is(err, ErrBadStructure) {
		t.Fatalf("bad MCT length: %v", err)
	}
}

func TestRequestAndEjectICC(t *testing.T) {
	r := NewReader(Options{})
	card := &recordingCard{atr: tcosATR}
	go func() {
		time.Sleep(100 * time.Millisecond)
		r.Insert(card)
	}()
	got, err := r.Control(CtlMCTReaderDirect, mustHex("20 12 01 01 03 80 01 05 00"), 64)
	if err != nil || !bytes.Equal(got, append(bytes.Clone(tcosATR), 0x90, 0x01)) {
		t.Fatalf("request ICC: %X %v", got, err)
	}
	if got, _ := r.Control(CtlMCTReaderDirect, mustHex("20 12 01 01 00"), 64); !bytes.Equal(got, swAlready) {
		t.Fatalf("second request: %X", got)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		r.Remove()
	}()
	if got, _ := r.Control(CtlMCTReaderDirect, mustHex("20 15 01 00 03 80 01 05"), 64); !bytes.Equal(got, swAsyncCard) {
		t.Fatalf("eject: %X", got)
	}
	// No card arrives within a second.
	if got, _ := r.Control(CtlMCTReaderDirect, mustHex("20 12 01 00 03 80 01 01"), 64); !bytes.Equal(got, swNoCard) {
		t.Fatalf("request without card: %X", got)
	}
	// Cancel on the pad ends the wait.
	go func() {
		r.WaitEntry(0, 5*time.Second)
		r.Press(KeyCancel)
	}()
	if got, _ := r.Control(CtlMCTReaderDirect, mustHex("20 12 01 00 03 80 01 05"), 64); !bytes.Equal(got, swCancelled) {
		t.Fatalf("request cancelled: %X", got)
	}
}

func TestHistoricalBytes(t *testing.T) {
	got := historicalBytes(tcosATR)
	if want := mustHex("00 64 04 11 03 01 31 C0 73 F7 01 D0 00 90 00"); !bytes.Equal(got, want) {
		t.Fatalf("historical bytes %X, want %X", got, want)
	}
}

func TestKeysOutsideEntryRefused(t *testing.T) {
	r := NewReader(Options{})
	if err := r.Press('1'); err == nil {
		t.Fatal("key accepted with no PIN entry running")
	}
	if err := r.Press('a'); err == nil {
		t.Fatal("unknown key accepted")
	}
}

// input builds CT-BCS INPUT 20 16 50 P2 with tag 80 (seconds) and tag 50 (text), Le 01.
func input(p2 byte, seconds byte, text string) []byte {
	data := append([]byte{0x80, 0x01, seconds, 0x50, byte(len(text))}, text...)
	cmd := append([]byte{0x20, 0x16, 0x50, p2, byte(len(data))}, data...)
	return append(cmd, 0x01)
}

func TestInputReadsOKAndCancel(t *testing.T) {
	const text = "Write New Key\rpress OK/Cancel"
	for _, tc := range []struct {
		name  string
		typed string
		want  []byte
	}{
		{"OK", "O", []byte{0x90, 0x00}},
		{"Cancel", "C", []byte{0x64, 0x01}},
		{"Clear is asked again, then OK", "XO", []byte{0x90, 0x00}},
		{"a digit is returned", "7", []byte{'7', 0x90, 0x00}},
		{"nobody", "", []byte{0x64, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(Options{})
			prompts := typeAfterPrompt(t, r, keys(tc.typed))
			got, err := r.Control(CtlMCTUniversal, mct(input(0x00, 1, text)), 64)
			if err != nil {
				t.Fatal(err)
			}
			if want := append([]byte{1, 2, byte(len(tc.want)), 0}, tc.want...); !bytes.Equal(got, want) {
				t.Fatalf("got %X, want %X", got, want)
			}
			if p := <-prompts; len(p) != 1 || p[0] != text {
				t.Fatalf("prompts %q", p)
			}
			if r.EntryKind() != "" {
				t.Fatal("the entry outlived INPUT")
			}
		})
	}
}

func TestInputAsReinersDriverChecksIt(t *testing.T) {
	r := NewReader(Options{})
	for _, tc := range []struct {
		name string
		cmd  []byte
		want []byte
	}{
		{"no Le", mustHex("20 16 50 00 03 80 01 01"), swWrongLength},
		{"P1 not 50", mustHex("20 16 40 00 03 80 01 01 01"), swBadParam},
		{"P2 low nibble 3", mustHex("20 16 50 03 03 80 01 01 01"), swBadParam},
		{"raw key codes need Le 01", mustHex("20 16 50 10 03 80 01 01 02"), swBadParam},
		{"tag 80 of two bytes", mustHex("20 16 50 00 04 80 02 01 01 01"), swWrongLength},
	} {
		got, err := r.Control(CtlMCTReaderDirect, tc.cmd, 64)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %X %v, want %X", tc.name, got, err, tc.want)
		}
	}
	if _, err := r.Control(CtlMCTReaderDirect, input(0, 1, strings.Repeat("x", 65)), 64); !errors.Is(err, ErrDriver) {
		t.Errorf("65-byte text: %v", err)
	}
	// Without a tag 80 the first key is awaited 15 s (Reiner's default): Cancel ends it early.
	go func() {
		r.WaitEntry(0, 5*time.Second)
		r.Press(KeyCancel)
	}()
	if got, _ := r.Control(CtlMCTReaderDirect, mustHex("20 16 50 00 01"), 64); !bytes.Equal(got, swCancelled) {
		t.Errorf("INPUT without data: %X", got)
	}
	noMKT := NewReader(Options{NoMKTComp: true})
	if got, _ := noMKT.Control(CtlMCTReaderDirect, input(0, 1, "x"), 64); !bytes.Equal(got, swBadINS) {
		t.Errorf("INPUT without MKT_COMP: %X, want 6D00", got)
	}
}

func TestGetStatusReportsFirmware(t *testing.T) {
	r := NewReader(Options{Firmware: Firmware{Version: 0x30, Revision: 41}})
	got, err := r.Control(CtlMCTReaderDirect, mustHex("20 13 00 46 00"), 256)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x46, 25}, "DESCTCJECA V3.0; Rev.  41"...)
	if want = append(want, 0x90, 0x00); !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	// A reply buffer under 29 bytes gets the short form without the revision.
	if got, _ := r.Control(CtlMCTReaderDirect, mustHex("20 13 00 46 00"), 20); !bytes.Equal(got[:2], []byte{0x46, 15}) {
		t.Fatalf("short form %q", got)
	}
	if fw, err := ParseFirmware("3.0.41"); err != nil || fw != r.firmware() || fw.PINDirectSupported() {
		t.Fatalf("parse 3.0.41: %v %v", fw, err)
	}
	for _, bad := range []string{"3.0", "3.0.x", "30.0.1", "3.0.045"} {
		if _, err := ParseFirmware(bad); err == nil {
			t.Errorf("firmware %q accepted", bad)
		}
	}
}

func TestOldFirmwareRefusesSecurePINEntry(t *testing.T) {
	r, card := newPoweredReader(t, Options{Firmware: OldFirmware})
	if _, err := r.Control(CtlVerifyPINDirect, verifyVariable, 2); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("verify on 3.0.41: %v", err)
	}
	if _, err := r.Control(CtlModifyPINDirect, modifyStructure(0x01, mustHex("00 24 01 00 00")), 2); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("modify on 3.0.41: %v", err)
	}
	// The feature list is the same: the driver does not look at the firmware there.
	if got, err := r.Control(CtlGetFeatureRequest, nil, 256); err != nil || len(got) != 24 {
		t.Fatalf("features %X %v", got, err)
	}
	if len(card.got) != 0 {
		t.Fatal("the card got an APDU")
	}
}

func TestStructuresOtherThanReinersAreRefused(t *testing.T) {
	modifyOld := modifyStructure(0x01, mustHex("00 24 01 00 00"))
	modifyOld[11], modifyOld[14], modifyOld[15] = 0x02, 0x01, 0x02 // bNumberMessage 02, indexes 01 02 00
	verifyFF := bytes.Clone(verifyVariable)
	verifyFF[8] = 0xFF
	bits := bytes.Clone(verifyVariable)
	bits[2] = 0x02 // bit units
	right := bytes.Clone(verifyVariable)
	right[2] = 0x86 // right justified
	german := bytes.Clone(verifyVariable)
	german[9], german[10] = 0x07, 0x04
	timeoutCond := bytes.Clone(verifyVariable)
	timeoutCond[7] = 0x06
	prologue := bytes.Clone(verifyVariable)
	prologue[13] = 0x40
	for name, s := range map[string][]byte{"verify bNumberMessage FF": verifyFF, "bit units": bits,
		"right justified": right, "wLangId 0407": german, "condition 06": timeoutCond, "bTeoPrologue": prologue} {
		r, card := newPoweredReader(t, Options{})
		got, err := r.Control(CtlVerifyPINDirect, s, 2)
		if err != nil || !bytes.Equal(got, swRejected) || len(card.got) != 0 {
			t.Errorf("%s: %X %v, want 6B80 and nothing sent", name, got, err)
		}
		if _, seq := r.Entry(); seq != 0 {
			t.Errorf("%s: a PIN entry started", name)
		}
	}
	r, _ := newPoweredReader(t, Options{})
	if got, err := r.Control(CtlModifyPINDirect, modifyOld, 2); err != nil || !bytes.Equal(got, swRejected) {
		t.Errorf("modify with messages 02 / 01 02 00: %X %v, want 6B80", got, err)
	}
}

func TestUnplugEndsWaitsAndOperations(t *testing.T) {
	r, _ := newPoweredReader(t, Options{})
	r.Poll()
	events := make(chan struct{})
	go func() {
		r.WaitEvent(10 * time.Second)
		close(events)
	}()
	pin := make(chan error, 1)
	go func() {
		_, err := r.Control(CtlVerifyPINDirect, verifyVariable, 2)
		pin <- err
	}()
	if _, _, err := r.WaitEntry(0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	r.Unplug()
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("WaitEvent did not return on unplug")
	}
	if err := <-pin; !errors.Is(err, ErrUnplugged) {
		t.Fatalf("PIN entry during unplug: %v", err)
	}
	if time.Since(began) > 2*time.Second {
		t.Fatal("unplug was noticed late")
	}
	if _, err := r.Poll(); !errors.Is(err, ErrUnplugged) {
		t.Fatalf("poll while unplugged: %v", err)
	}
	for name, err := range map[string]error{
		"transmit": func() error { _, err := r.Transmit([]byte{0, 0xA4, 0, 0x0C}); return err }(),
		"control":  func() error { _, err := r.Control(CtlGetFeatureRequest, nil, 256); return err }(),
		"power":    func() error { _, err := r.PowerUp(); return err }(),
	} {
		if !errors.Is(err, ErrUnplugged) {
			t.Errorf("%s while unplugged: %v", name, err)
		}
	}
	r.Plug()
	if present, err := r.Poll(); err != nil || !present {
		t.Fatalf("after plug: %v %v (the card stays in the slot)", present, err)
	}
	// WaitEvent returns at once for a change the last poll did not see, and waits otherwise.
	r.Remove()
	began = time.Now()
	r.WaitEvent(5 * time.Second)
	r.Poll()
	r.WaitEvent(200 * time.Millisecond)
	if took := time.Since(began); took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("WaitEvent took %v", took)
	}
}
