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
	if _, err := r.Control(CtlGetFeatureRequest, nil, 23); !errors.Is(err, ErrOutputTooLong) {
		t.Fatalf("short buffer: %v", err)
	}
}

// The fixed-length example of HARDWARE.md §1: six ASCII digits into an FF-padded block.
var verifyFixed = mustHex("1E 00 82 06 00 06 06 03 01 09 04 00 00 00 00 0B 00 00 00 00 20 00 00 06 FF FF FF FF FF FF")

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
		{"too short", verifyVariable, "123O", []byte{0x64, 0x03}},
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
	h = append(h, confirm, 0x02, 0x03, 0x09, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00)
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
