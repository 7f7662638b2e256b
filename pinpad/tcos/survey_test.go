package tcos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// surveyShapes are the virtual card shapes a survey must read right, with the verdict due.
func surveyShapes() []struct {
	name    string
	shape   vcard.Options
	foreign bool
	fits    string
	says    string
} {
	mf, nk := tcos.KeyquorumMF(), tcos.NetKeyDF01()
	return []struct {
		name    string
		shape   vcard.Options
		foreign bool
		fits    string
		says    string
	}{
		{"keyquorum-mf", vcard.Options{Profile: mf}, false, "keyquorum-mf", "fits profile keyquorum-mf"},
		{"netkey-df01", vcard.Options{Profile: nk}, false, "netkey-df01", "fits profile netkey-df01"},
		{"netkey PIN files", vcard.Options{Profile: nk, NoPWDD: true, PINFiles: true}, false, "netkey-df01", "fits profile netkey-df01"},
		{"query spends", vcard.Options{Profile: mf, VerifyQuery: vcard.QuerySpends}, false, "keyquorum-mf", "fits"},
		{"query 6700", vcard.Options{Profile: nk, VerifyQuery: vcard.QueryWrongLength}, false, "netkey-df01", "fits"},
		{"query 6A88", vcard.Options{Profile: mf, VerifyQuery: vcard.QueryRefNotFound}, false, "keyquorum-mf", "fits"},
		{"NullPIN", vcard.Options{Profile: nk, NullPIN: true}, false, "netkey-df01", "fits"},
		{"3B 9F ATR", vcard.Options{Profile: mf, ATR: tcos.ATRNoTB1}, false, "keyquorum-mf", "fits"},
		{"unpersonalised, preparable", vcard.Options{Creatable: true}, false, "", "Prepare cards can lay out a profile"},
		{"unpersonalised, locked", vcard.Options{}, false, "", "order cards personalised for a profile"},
		{"no PINs listed", vcard.Options{Profile: mf, NoPWDD: true}, false, "keyquorum-mf", "fits"},
		{"foreign", vcard.Options{}, true, "", "not a TCOS 3 card"},
	}
}

// recorder keeps every APDU a survey sends.
type recorder struct {
	vc   *vcard.Card
	sent [][]byte
}

func (r *recorder) Transmit(_ context.Context, apdu []byte) ([]byte, error) {
	r.sent = append(r.sent, bytes.Clone(apdu))
	return r.vc.Transmit(apdu)
}

// TestCardSurveyShapes surveys every virtual card shape: the right verdict, no PIN sent (no
// VERIFY or CHANGE, not even without data), nothing written (the card file is byte for byte
// what it was), no slot read.
func TestCardSurveyShapes(t *testing.T) {
	for _, c := range surveyShapes() {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "card")
			var vc *vcard.Card
			var err error
			if c.foreign {
				vc, err = vcard.NewForeign(path, nil)
			} else {
				vc, err = vcard.NewWith(path, c.shape)
			}
			if err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			r := &recorder{vc: vc}
			rep, err := tcos.Survey(context.Background(), r, vc.ATR(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Fits != c.fits || !strings.Contains(rep.Verdict, c.says) {
				var b bytes.Buffer
				rep.WriteText(&b)
				t.Fatalf("fits %q, verdict %q; want %q saying %q\n%s", rep.Fits, rep.Verdict, c.fits, c.says, b.String())
			}
			for _, apdu := range r.sent {
				switch apdu[1] {
				case 0xA4, 0xB2, 0xAA, 0xC0:
				case 0xB0: // EF_GDO only: the selected file is checked by the survey's guard
				default:
					t.Errorf("the survey sent %X", apdu)
				}
			}
			if rep.Commands != len(r.sent) {
				t.Errorf("report counts %d commands, %d were sent", rep.Commands, len(r.sent))
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(before, after) {
				t.Errorf("the card file changed (%v)", err)
			}
			for _, p := range vc.PINs() {
				if p.Presented != 0 || p.Spent != 0 {
					t.Errorf("PIN %02X: presented %d, spent %d", p.Ref, p.Presented, p.Spent)
				}
			}
			if !c.foreign && rep.Serial != vc.Serial() {
				t.Errorf("serial %q, want %s", rep.Serial, vc.Serial())
			}
			if c.shape.ATR != nil && rep.ATRForm != "3B 9F" {
				t.Errorf("ATR form %q", rep.ATRForm)
			}
			// Both forms carry no slot data: the JSON holds nothing of the slots' files.
			js, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			if !strings.Contains(text.String(), "verdict: "+rep.Verdict) || !json.Valid(js) {
				t.Errorf("report forms: %s / %s", text.String(), js)
			}
		})
	}
}

// TestCardSurveyGuard checks that a survey reads exactly one file's contents: EF_GDO.
func TestCardSurveyGuard(t *testing.T) {
	vc, err := vcard.New("", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{vc: vc}
	rep, err := tcos.Survey(context.Background(), r, vc.ATR(), []*tcos.Profile{tcos.KeyquorumMF()})
	if err != nil || rep.Fits != "keyquorum-mf" {
		t.Fatalf("%v, %+v", err, rep)
	}
	reads := 0
	for _, apdu := range r.sent {
		if apdu[1] == 0xB0 {
			reads++
		}
	}
	if reads != 1 {
		t.Errorf("%d READ BINARY, want 1 (EF_GDO)", reads)
	}
}
