package tcos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// FuzzATR checks that recognising an ATR never panics and accepts only 24-byte answers that
// keep the mask's fixed bytes.
func FuzzATR(f *testing.F) {
	f.Add(tcos.ATR)
	f.Add(tcos.ATRNoTB1)
	f.Fuzz(func(t *testing.T, atr []byte) {
		if !tcos.IsTCOS(atr) {
			return
		}
		hist := []byte{0x31, 0xC0, 0x73, 0xF7, 0x01, 0xD0, 0x00, 0x90, 0x00}
		bf := len(atr) == 24 && atr[1] == 0xBF && bytes.Equal(atr[14:23], hist)
		nf := len(atr) == 23 && atr[1] == 0x9F && bytes.Equal(atr[13:22], hist)
		if atr[0] != 0x3B || !bf && !nf {
			t.Fatalf("accepted %x", atr)
		}
	})
}

// FuzzProfile checks that a profile file either parses into a profile that keeps the rules
// (distinct slots and PINs, the data-less VERIFY only when declared safe, TCOS ATRs) or is
// refused with ErrBadProfile; and that a parsed profile survives its own JSON form.
func FuzzProfile(f *testing.F) {
	for _, p := range tcos.Profiles() {
		b, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		// Shipped names are refused for files: rename it.
		f.Add(bytes.Replace(b, []byte(p.Name), []byte("custom"), 1))
	}
	f.Add([]byte(verifySafe))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := tcos.ParseProfile(b)
		if err != nil {
			if !errors.Is(err, tcos.ErrBadProfile) {
				t.Fatalf("error %v does not wrap ErrBadProfile", err)
			}
			return
		}
		if p.Share.File == p.User.File || p.Share.PINRef == p.User.PINRef || len(p.ATRs) == 0 || len(p.Tries) == 0 {
			t.Fatalf("accepted %+v", p)
		}
		if slices.Contains(p.Tries, tcos.TriesVerify) && !p.VerifyQuerySafe {
			t.Fatal("accepted the VERIFY query without verify_query_safe")
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := tcos.ParseProfile(again)
		if err != nil {
			t.Fatalf("own form %s refused: %v", again, err)
		}
		if q.DFPath() != p.DFPath() || q.Share != p.Share || q.User != p.User || !slices.Equal(q.Tries, p.Tries) {
			t.Fatalf("round trip changed %+v to %+v", p, q)
		}
	})
}

// FuzzPWDDRecord checks the EF_PWDD record decoder: no panic, tries within a counter's range.
func FuzzPWDDRecord(f *testing.F) {
	f.Add([]byte("\xa0\x07\x83\x01\x81\x90\x02\x03\x03"))
	f.Add([]byte("\xa0\x0a\x83\x01\x83\x84\x01\x00\x90\x02\x03\x01"))
	f.Add([]byte("\xa1\x03\x83\x01\x81"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := tcos.ParsePWDDRecord(b)
		if err == nil && (r.Tries < -1 || r.Tries > 15) {
			t.Fatalf("tries %d", r.Tries)
		}
	})
}

// FuzzFCP checks the FCP decoder and the PIN file's try counter (tag 85).
func FuzzFCP(f *testing.F) {
	f.Add([]byte("\x62\x0b\x80\x02\x04\x00\x82\x01\x01\x83\x02\x4b\x01"))
	f.Add([]byte("\x62\x0e\x82\x01\x05\x83\x02\x50\x81\x85\x05\x01\x80\x01\x02\x03"))
	f.Add([]byte("\x62\x13\x82\x01\x38\x83\x02\x3f\x00\x86\x0c\xe0\x00\x00\x00\xff\xff\xe2\x00\x00\x00\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fcp, err := tcos.ParseFCP(b)
		if err != nil {
			return
		}
		if fcp.Size > 0xFFFFFF {
			t.Fatalf("size %d", fcp.Size)
		}
		if n, err := tcos.PINFileTries(fcp); err == nil && (n < 0 || n > 15) {
			t.Fatalf("tries %d", n)
		}
	})
}

// replay is a card whose responses come from the fuzzer: each is a length byte and that many
// bytes; when they run out the card answers 6D 00.
type replay struct{ data []byte }

func (r *replay) Transmit(_ context.Context, apdu []byte) ([]byte, error) {
	if len(apdu) < 4 {
		panic("tcos sent an APDU shorter than a header")
	}
	if len(apdu) > 5 && int(apdu[4]) != len(apdu)-5 && int(apdu[4]) != len(apdu)-6 {
		panic("tcos sent an APDU whose Lc does not match its data")
	}
	if len(r.data) == 0 {
		return []byte{0x6D, 0x00}, nil
	}
	n := int(r.data[0])
	r.data = r.data[1:]
	n = min(n, len(r.data))
	resp := bytes.Clone(r.data[:n])
	r.data = r.data[n:]
	return resp, nil
}

// FuzzResponses feeds arbitrary card responses to everything tcos parses: GET RESPONSE and
// Le corrections, the FCP, EF_GDO, the try counter and a slot's length prefix and data.
func FuzzResponses(f *testing.F) {
	// A well-behaved card: select MF, FCP of GDO, GDO, PIN status, FCP of the share file,
	// length 3, the data.
	f.Add([]byte("\x02\x90\x00" +
		"\x0f\x62\x0b\x80\x02\x00\x04\x82\x01\x01\x83\x02\x2f\x02\x90\x00" +
		"\x06\x5a\x02\xca\xfe\x90\x00" +
		"\x02\x63\xc2" +
		"\x0f\x62\x0b\x80\x02\x04\x00\x82\x01\x01\x83\x02\x4b\x01\x90\x00" +
		"\x04\x00\x03\x90\x00" +
		"\x05abc\x90\x00"))
	// GET RESPONSE and a wrong Le.
	f.Add([]byte("\x02\x90\x00\x08\x62\x0b\x80\x02\x00\x04\x61\x07\x09\x82\x01\x01\x83\x02\x2f\x02\x90\x00\x02\x6c\x04\x06\x5a\x02\xca\xfe\x90\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		c, err := tcos.Open(ctx, &replay{data: data}, tcos.ATR, nil)
		if err != nil {
			return
		}
		if c.Serial() == "" {
			t.Fatal("opened a card with an empty serial")
		}
		if n, err := c.PINTries(ctx, pinpad.SlotShare); err == nil && (n < 0 || n > 15) {
			t.Fatalf("tries %d", n)
		}
		if b, err := c.Read(ctx, pinpad.SlotShare); err == nil && (len(b) == 0 || len(b) > 0x7FFF) {
			t.Fatalf("read %d bytes", len(b))
		}
		c.Write(ctx, pinpad.SlotUser, []byte("x"))
	})
}

// readsOnly fails the test on any command a survey must not send.
type readsOnly struct {
	t  *testing.T
	tr tcos.Transport
}

func (r readsOnly) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	switch apdu[1] {
	case 0xA4, 0xB0, 0xB2, 0xC0, 0xAA:
	default:
		r.t.Fatalf("the survey sent %X", apdu)
	}
	return r.tr.Transmit(ctx, apdu)
}

// FuzzSurvey feeds arbitrary card answers to the survey: it never panics, never sends anything
// but reads, and ends.
func FuzzSurvey(f *testing.F) {
	f.Add([]byte("\x02\x90\x00\x0f\x62\x0b\x80\x02\x00\x04\x82\x01\x01\x83\x02\x2f\x02\x90\x00\x06\x5a\x02\xca\xfe\x90\x00" +
		"\x10\x62\x0e\x82\x01\x38\x83\x02\x3f\x00\x86\x06\xe0\x00\x00\x00\xff\xff\x90\x00" +
		"\x02\x90\x00\x06\xdf\x01\x50\x49\x90\x00\x02\x6a\x82"))
	f.Add([]byte("\x02\x90\x00\x02\x61\x05\x07\x62\x03\x80\x01\x03\x90\x00\x05\x5a\x01\x01\x90\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := tcos.Survey(context.Background(), readsOnly{t, &replay{data: data}}, tcos.ATR, nil)
		if err != nil {
			return
		}
		if rep.Verdict == "" || len(rep.Profiles) != len(tcos.Profiles()) {
			t.Fatalf("report %+v", rep)
		}
	})
}
