package tcos_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIsTCOS(t *testing.T) {
	for atr, want := range map[string]bool{
		// The three TCOS 3 ATRs OpenSC lists.
		"3BBF96008131FE5D00640411030131C073F701D00090007D":  true,
		"3BBF96008131FE5D006404110 40F31C073F701D000900074": true,
		"3BBFB6008131FE5D00640428030231C073F701D000900067":  true,
		// The same without TB1 (3B 9F).
		"3B9F968131FE5D00640411030131C073F701D00090005D":   true,
		"3B9F968131FE5D00640411030131C073F701D000900000":   true, // the check byte is not checked
		"3B9F96008131FE5D00640411030131C073F701D00090005D": false,
		// TCOS 2, a YubiKey, a truncated and an extended ATR.
		"3BBA96008131865D0064057B0203318090007D":             false,
		"3BFD1300008131FE158073C021C057597562694B657940":     false,
		"3BBF96008131FE5D00640411030131C073F701D0009000":     false,
		"3BBF96008131FE5D00640411030131C073F701D00090007D00": false,
		"": false,
	} {
		if got := tcos.IsTCOS(unhex(t, atr)); got != want {
			t.Errorf("IsTCOS(%s) = %v", atr, got)
		}
	}
	if !tcos.IsTCOS(tcos.ATR) || !tcos.IsTCOS(tcos.ATRNoTB1) {
		t.Error("the package's own ATRs are not TCOS")
	}
}

// script is a transport that answers from a table and records what it was sent.
type script struct {
	sent    [][]byte
	answers map[string]string // command hex -> response hex
	next    func(apdu []byte) ([]byte, error)
}

func (s *script) Transmit(_ context.Context, apdu []byte) ([]byte, error) {
	s.sent = append(s.sent, bytes.Clone(apdu))
	if r, ok := s.answers[strings.ToUpper(hex.EncodeToString(apdu))]; ok {
		return hex.DecodeString(strings.ReplaceAll(r, " ", ""))
	}
	if s.next != nil {
		return s.next(apdu)
	}
	return []byte{0x6D, 0x00}, nil
}

// TestErrors maps the status words of the card to the errors the ceremony sees, with no
// hardware (as piv-go's TestErrors does): each is the answer to the PIN status query, the
// select of a slot file, or its read.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		sw   string
		want error
	}{
		{"6983", pinpad.ErrPINBlocked},
		{"63C0", pinpad.ErrPINBlocked},
		{"6985", pinpad.ErrNullPIN},
		{"6982", pinpad.ErrAccessDenied},
		{"6581", pinpad.ErrMemory},
		{"6A84", pinpad.ErrTooLarge},
		{"6A82", pinpad.ErrNotPersonalised},
		{"6700", pinpad.ErrWrongLength},
	}
	for _, c := range cases {
		t.Run(c.sw, func(t *testing.T) {
			tr := newCard(t)
			card, err := tcos.Open(ctx, tr, tcos.ATR, nil)
			if err != nil {
				t.Fatal(err)
			}
			tr.answers["00A40804024B0100"] = c.sw
			_, err = card.Read(ctx, pinpad.SlotShare)
			if !errors.Is(err, c.want) {
				t.Errorf("read with select answering %s: %v, want %v", c.sw, err, c.want)
			}
		})
	}
	t.Run("wrong PIN", func(t *testing.T) {
		tr := newCard(t)
		card, _ := tcos.Open(ctx, tr, tcos.ATR, nil)
		tr.answers["00A40804024B0100"] = "63C2"
		var wp *pinpad.WrongPINError
		if _, err := card.Read(ctx, pinpad.SlotShare); !errors.As(err, &wp) || wp.Remaining != 2 {
			t.Errorf("63 C2: %v", err)
		}
	})
	t.Run("other", func(t *testing.T) {
		tr := newCard(t)
		card, _ := tcos.Open(ctx, tr, tcos.ATR, nil)
		tr.answers["00A40804024B0100"] = "6F00"
		var se *pinpad.StatusError
		if _, err := card.Read(ctx, pinpad.SlotShare); !errors.As(err, &se) || se.SW != 0x6F00 || se.Op != "read backup key share" {
			t.Errorf("6F 00: %v", err)
		}
	})
}

// newCard is a script in front of a blank virtual card.
func newCard(t *testing.T) *script {
	t.Helper()
	vc, err := vcard.New("", unhex(t, "1122334455667788"))
	if err != nil {
		t.Fatal(err)
	}
	return &script{answers: map[string]string{}, next: vc.Transmit}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	tr := newCard(t)
	card, err := tcos.Open(ctx, tr, tcos.ATR, nil)
	if err != nil {
		t.Fatal(err)
	}
	if card.Serial() != "1122334455667788" {
		t.Errorf("serial %q", card.Serial())
	}
	want := []string{"00A4000C", "00A40804022F0200", "00B000000A"}
	if len(tr.sent) != len(want) {
		t.Fatalf("sent %x", tr.sent)
	}
	for i, w := range want {
		if got := strings.ToUpper(hex.EncodeToString(tr.sent[i])); got != w {
			t.Errorf("APDU %d: %s, want %s", i, got, w)
		}
	}
	if _, err := tcos.Open(ctx, tr, vcard.ForeignATR, nil); !errors.Is(err, pinpad.ErrNotTCOS) {
		t.Errorf("foreign ATR: %v", err)
	}
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 0); !errors.Is(err, pinpad.ErrNoPINPad) {
		t.Errorf("verify without pad: %v", err)
	}
}

func TestGetResponseAndWrongLe(t *testing.T) {
	ctx := context.Background()
	tr := &script{answers: map[string]string{
		"00A4000C": "9000",
		// The FCP comes in two parts (61 xx), the file with a corrected Le (6C xx).
		"00A40804022F0200": "620B80020004" + "6107",
		"00C0000007":       "82010183022F029000",
		"00B0000004":       "6C03",
		"00B0000003":       "5A01AB9000",
	}}
	card, err := tcos.Open(ctx, tr, tcos.ATR, nil)
	if err == nil {
		// The file claims 4 bytes but the card corrects Le to 3: a short read is refused.
		t.Fatalf("short read accepted: serial %s", card.Serial())
	}
	if !errors.Is(err, tcos.ErrBadRecord) {
		t.Fatalf("short read: %v", err)
	}
	var sent []string
	for _, a := range tr.sent {
		sent = append(sent, strings.ToUpper(hex.EncodeToString(a)))
	}
	if got := strings.Join(sent, " "); got != "00A4000C 00A40804022F0200 00C0000007 00B0000004 00B0000003" {
		t.Errorf("sent %s", got)
	}

	tr.answers["00A40804022F0200"] = "620B80020003" + "6107"
	tr.sent = nil
	card, err = tcos.Open(ctx, tr, tcos.ATR, nil)
	if err != nil || card.Serial() != "AB" {
		t.Fatalf("open: %v", err)
	}
}

// pinOK is a pad that verifies "123456" as a pad would, by completing the structure.
type pinOK struct{ tr tcos.Transport }

func (p pinOK) VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error) {
	apdu, err := v.Fill([]byte("123456"))
	if err != nil {
		return nil, err
	}
	resp, err := p.tr.Transmit(ctx, apdu)
	if err != nil {
		return nil, err
	}
	return resp[len(resp)-2:], nil
}

func (p pinOK) ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error) {
	return []byte{0x6B, 0x80}, nil
}

func TestWriteReadChunks(t *testing.T) {
	ctx := context.Background()
	tr := newCard(t)
	card, err := tcos.Open(ctx, tr, tcos.ATR, pinOK{tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := card.VerifyPIN(ctx, pinpad.SlotUser, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := card.Read(ctx, pinpad.SlotUser); !errors.Is(err, pinpad.ErrEmpty) {
		t.Fatalf("blank slot: %v", err)
	}
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 100) // 700 bytes
	tr.sent = nil
	if err := card.Write(ctx, pinpad.SlotUser, data); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range tr.sent {
		h := strings.ToUpper(hex.EncodeToString(a))
		if len(a) > 5 && a[1] == 0xD6 {
			h = h[:10] + "+" // header only: the data is checked by reading back
		}
		got = append(got, h)
	}
	want := []string{
		"00A40804024B0200", // select slot user file, FCP
		"00D6000002+",      // length 0 first
		"00D60002FF+",      // 255 bytes at 2
		"00D60101FF+",      // 255 bytes at 257
		"00D60200BE+",      // 190 bytes at 512
		"00D6000002+",      // then the length
		"00B0000002",       // read back: length
		"00B00002FF", "00B00101FF", "00B00200BE",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("APDUs\n got %v\nwant %v", got, want)
	}
	back, err := card.Read(ctx, pinpad.SlotUser)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("read: %v", err)
	}
	if err := card.Write(ctx, pinpad.SlotUser, make([]byte, tcos.MaxData+1)); !errors.Is(err, pinpad.ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	if err := card.Write(ctx, pinpad.SlotUser, make([]byte, tcos.MaxData)); err != nil {
		t.Errorf("largest: %v", err)
	}
	if err := card.Write(ctx, pinpad.SlotUser, nil); err != nil {
		t.Errorf("empty the slot: %v", err)
	}
	if _, err := card.Read(ctx, pinpad.SlotUser); !errors.Is(err, pinpad.ErrEmpty) {
		t.Errorf("emptied slot: %v", err)
	}
	// The share slot has its own PIN, not verified here.
	if err := card.Write(ctx, pinpad.SlotShare, data); !errors.Is(err, pinpad.ErrAccessDenied) {
		t.Errorf("share slot without its PIN: %v", err)
	}
}

func TestWriteVerifyFails(t *testing.T) {
	ctx := context.Background()
	tr := newCard(t)
	card, _ := tcos.Open(ctx, tr, tcos.ATR, pinOK{tr})
	card.VerifyPIN(ctx, pinpad.SlotShare, 0)
	// A card that stores something else than it was sent: flip a bit of every data chunk.
	next := tr.next
	tr.next = func(apdu []byte) ([]byte, error) {
		if apdu[1] == 0xD6 && apdu[3] != 0x00 {
			apdu = bytes.Clone(apdu)
			apdu[5] ^= 0x01
		}
		return next(apdu)
	}
	if err := card.Write(ctx, pinpad.SlotShare, []byte("record")); !errors.Is(err, pinpad.ErrWriteVerify) {
		t.Errorf("write: %v, want ErrWriteVerify", err)
	}
	// A card whose length prefix is beyond the file.
	tr.next = next
	tr.answers["00B0000002"] = "FFFF9000"
	if _, err := card.Read(ctx, pinpad.SlotShare); !errors.Is(err, tcos.ErrBadRecord) {
		t.Errorf("bad length: %v", err)
	}
}

// verifySafe is a profile file that declares the data-less VERIFY safe and reads tries only
// with it.
const verifySafe = `{"name": "verify-safe", "df": "3F00", "tries": ["verify"], "verify_query_safe": true,
  "share": {"file": "4B01", "size": 1024, "pin": "81"}, "user": {"file": "4B02", "size": 1024, "pin": "82"},
  "atrs": [{"value": "3BBF96008131FE5D00640411030131C073F701D00090007D"}]}`

func TestPINTries(t *testing.T) {
	ctx := context.Background()
	safe, err := tcos.ParseProfile([]byte(verifySafe))
	if err != nil {
		t.Fatal(err)
	}
	// The data-less VERIFY, where the profile declares it safe.
	for sw, want := range map[string]int{"63C3": 3, "63C1": 1, "9000": 3, "6983": 0, "63C0": 0} {
		tr := newCard(t)
		card, _ := tcos.OpenProfile(ctx, tr, tcos.ATR, nil, safe)
		tr.answers["00200081"] = sw
		if n, err := card.PINTries(ctx, pinpad.SlotShare); n != want || err != nil {
			t.Errorf("%s: %d, %v; want %d", sw, n, err, want)
		}
	}
	tr := newCard(t)
	card, _ := tcos.OpenProfile(ctx, tr, tcos.ATR, nil, safe)
	tr.answers["00200082"] = "6985"
	if _, err := card.PINTries(ctx, pinpad.SlotUser); !errors.Is(err, pinpad.ErrNullPIN) {
		t.Errorf("NullPIN: %v", err)
	}
	for _, sw := range []string{"6700", "6A88", "6D00"} {
		tr.answers["00200082"] = sw
		if _, err := card.PINTries(ctx, pinpad.SlotUser); !errors.Is(err, pinpad.ErrTriesUnknown) {
			t.Errorf("%s: %v, want ErrTriesUnknown", sw, err)
		}
	}
	if _, err := card.PINTries(ctx, pinpad.Slot(9)); err == nil {
		t.Error("unknown slot accepted")
	}

	// The default profile reads EF_PWDD and never sends a data-less VERIFY.
	tr = newCard(t)
	card, _ = tcos.Open(ctx, tr, tcos.ATR, nil)
	tr.sent = nil
	if n, err := card.PINTries(ctx, pinpad.SlotUser); n != 3 || err != nil {
		t.Fatalf("EF_PWDD: %d, %v", n, err)
	}
	want := []string{"00A4080C025049", "00B2010400", "00B2020400", "00B2030400"}
	for i, apdu := range tr.sent {
		if got := strings.ToUpper(hex.EncodeToString(apdu)); i >= len(want) || got != want[i] {
			t.Errorf("APDU %d: %s, want %v", i, got, want)
		}
	}
	// Records of another kind are skipped; a card without EF_PWDD has unknown tries, as does
	// one whose records name other PINs.
	tr.answers["00B2010400"] = "A1028301 9000"
	tr.answers["00B2020400"] = "A007 830182 90020301 9000"
	if n, err := card.PINTries(ctx, pinpad.SlotUser); n != 1 || err != nil {
		t.Errorf("EF_PWDD with a foreign record: %d, %v", n, err)
	}
	tr.answers["00A4080C025049"] = "6A82"
	var unknown *tcos.TriesUnknownError
	if _, err := card.PINTries(ctx, pinpad.SlotUser); !errors.As(err, &unknown) || !errors.Is(err, pinpad.ErrTriesUnknown) {
		t.Errorf("no EF_PWDD: %v", err)
	}
	for _, apdu := range tr.sent {
		if apdu[1] == 0x20 {
			t.Fatalf("sent a VERIFY: %X", apdu)
		}
	}
	// A removed card is not "unknown".
	tr.next = func([]byte) ([]byte, error) { return nil, pinpad.ErrCardRemoved }
	delete(tr.answers, "00A4080C025049")
	if _, err := card.PINTries(ctx, pinpad.SlotUser); !errors.Is(err, pinpad.ErrCardRemoved) {
		t.Errorf("removed: %v", err)
	}

	// A TCOS 2 style PIN file: tag 85 01 80 ref tries max.
	nk := tcos.NetKeyDF01()
	vc, err := vcard.NewWith("", vcard.Options{Profile: nk, NoPWDD: true, PINFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	tr = &script{answers: map[string]string{}, next: vc.Transmit}
	card, err = tcos.OpenProfile(ctx, tr, tcos.ATR, nil, nk)
	if err != nil {
		t.Fatal(err)
	}
	tr.answers["00A4080404DF01508100"] = "620E 820105 83025081 8505018001020 3 9000"
	if n, err := card.PINTries(ctx, pinpad.SlotShare); n != 2 || err != nil {
		t.Errorf("FCP tag 85: %d, %v", n, err)
	}
	if n, err := card.PINTries(ctx, pinpad.SlotUser); n != 3 || err != nil {
		t.Errorf("FCP tag 85 of the virtual card: %d, %v", n, err)
	}
}

func TestParsers(t *testing.T) {
	for in, want := range map[string]string{
		"5A0A01020304050607080910":       "01020304050607080910",
		"0000" + "5A021234":              "1234",
		"7F2103010203" + "5A01FF" + "00": "FF",
		"4F020102" + "5A8102AABB":        "AABB",
	} {
		got, err := tcos.ParseGDO(unhex(t, in))
		if err != nil || hex.EncodeToString(got) != strings.ToLower(want) {
			t.Errorf("ParseGDO(%s) = %x, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "5A", "5A05AABB", "4F020102", "5A00", "5A83000001AA", "1F"} {
		if _, err := tcos.ParseGDO(unhex(t, in)); err == nil {
			t.Errorf("ParseGDO(%s) accepted", in)
		}
	}
	for in, want := range map[string]int{
		"620B80020400820101830245 01": 1024,
		"62058101FF8000":              255, // an empty 80 is no size
		"6207810203008201 01":         0x300,
		"62088102030080 020010":       0x10,
	} {
		got, err := tcos.ParseFCPSize(unhex(t, in))
		if err != nil || got != want {
			t.Errorf("ParseFCPSize(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "6F00", "6203820101", "620580020400"} {
		if _, err := tcos.ParseFCPSize(unhex(t, in)); err == nil {
			t.Errorf("ParseFCPSize(%s) accepted", in)
		}
	}
}
