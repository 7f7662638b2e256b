package cyberjacksim_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/pinpad/pcsc"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// TestCyberJackCardShapes runs a 2-of-3 Generate, a factory reset and a Load over pcscd and
// the virtual cyberJack (the real part 10 PIN path) on card shapes of issue 16: each shipped
// profile on cards whose data-less VERIFY spends a try (none may be spent), and a
// NetKey-shaped card with the 3B 9F ATR whose query answers 6A 88.
func TestCyberJackCardShapes(t *testing.T) {
	needStack(t)
	nk := tcos.NetKeyDF01()
	for _, c := range []struct {
		name  string
		prof  *tcos.Profile
		shape vcard.Options
	}{
		{"keyquorum-mf, query spends", tcos.KeyquorumMF(), vcard.Options{Profile: tcos.KeyquorumMF(), VerifyQuery: vcard.QuerySpends}},
		{"netkey-df01, query spends", nk, vcard.Options{Profile: nk, VerifyQuery: vcard.QuerySpends}},
		{"netkey-df01, 3B 9F, 6A88", nk, vcard.Options{Profile: nk, ATR: tcos.ATRNoTB1, VerifyQuery: vcard.QueryRefNotFound}},
	} {
		t.Run(c.name, func(t *testing.T) { shapeOverPCSC(t, c.prof, c.shape) })
	}
}

func shapeOverPCSC(t *testing.T, prof *tcos.Profile, shape vcard.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	term, err := pcsc.Open(ctx, pcsc.Options{Reader: readerName, Profile: prof})
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	h, err := soft.Open(filepath.Join(dir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	m, err := ceremony.Open(ctx, ceremony.Config{Dir: filepath.Join(dir, "ceremony"), Pad: term, HSM: h, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		t.Fatal(err)
	}
	defer pad.Close()
	var cards []string
	for i := range 3 {
		path := filepath.Join(dir, fmt.Sprintf("card%d.json", i+1))
		if _, err := vcard.NewWith(path, shape); err != nil {
			t.Fatal(err)
		}
		cards = append(cards, path)
	}
	opPad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		t.Fatal(err)
	}
	defer opPad.Close()
	// Generate: the three cards, then two read back; Load: two others.
	queue := append(slices.Clone(cards), cards[2], cards[1], cards[0], cards[2])
	op := &padOperator{t: t, m: m, pad: opPad, queue: queue, actErr: make(chan error, 1)}
	sub := m.Subscribe()
	defer sub.Close()
	opCtx, stopOp := context.WithCancel(ctx)
	go op.run(opCtx, sub)
	defer func() {
		stopOp()
		<-op.actErr
		if present, _ := pad.Present(); present {
			pad.Remove()
			if err := term.WaitForRemoval(ctx, "Remove card", 10*time.Second); err != nil {
				t.Errorf("last card removal: %v", err)
			}
		}
	}()
	run := func(req ceremony.Request) ceremony.Journal {
		t.Helper()
		handle, err := m.Start(ctx, "admin over PC/SC", req)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		var j ceremony.Journal
		go func() { var err error; j, err = handle.Wait(ctx); done <- err }()
		select {
		case err := <-done:
			if err != nil || j.Status != ceremony.StatusDone {
				t.Fatalf("%s over PC/SC: %v, %s", req.Kind, err, j.LastError)
			}
		case err := <-op.actErr:
			t.Fatalf("%s over PC/SC: %v", req.Kind, err)
		}
		return j
	}
	gen := run(ceremony.Request{Kind: ceremony.KindGenerate, K: 2, N: 3, Label: "shapes"})
	for _, c := range gen.Cards {
		if c.Role == ceremony.RoleShare && c.Profile != prof.Name {
			t.Errorf("card %s written with profile %q", c.Serial, c.Profile)
		}
	}
	run(ceremony.Request{Kind: ceremony.KindFactoryReset})
	load := run(ceremony.Request{Kind: ceremony.KindLoad})
	if load.KeyID != gen.KeyID {
		t.Fatalf("loaded %s, generated %s", load.KeyID, gen.KeyID)
	}
	for _, path := range cards {
		vc, err := vcard.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range vc.PINs() {
			if p.Spent != 0 || p.Tries != p.Max {
				t.Errorf("card %s PIN %02X: %d tries spent by queries, %d of %d left", vc.Serial(), p.Ref, p.Spent, p.Tries, p.Max)
			}
		}
	}
}

// TestCyberJackFirstPIN sets the first PIN of a NetKey-shaped card in its NullPIN state on the
// virtual cyberJack's pad, through PC/SC part 10 MODIFY_PIN_DIRECT with the template
// 00 24 00 ref 06 000000000000 the pad appends the PIN to.
func TestCyberJackFirstPIN(t *testing.T) {
	needStack(t)
	nk := tcos.NetKeyDF01()
	term, err := pcsc.Open(t.Context(), pcsc.Options{Reader: readerName, Profile: nk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	pad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pad.Close() })
	path := filepath.Join(t.TempDir(), "card.json")
	if _, err := vcard.NewWith(path, vcard.Options{Profile: nk, NullPIN: true}); err != nil {
		t.Fatal(err)
	}
	r := &rig{term: term, pad: pad, card: path}
	card := r.insert(t)
	typed := typeOnPad(t, stack.control, keys("123456", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); !errors.Is(err, pinpad.ErrNullPIN) {
		t.Fatalf("verify in NullPIN state: %v", err)
	}
	<-typed
	typed = typeOnPad(t, stack.control, keys("24681357", "OK"), keys("24681357", "OK"))
	if err := card.SetFirstPIN(t.Context(), pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("first PIN: %v", err)
	}
	if err := <-typed; err != nil {
		t.Fatal(err)
	}
	typed = typeOnPad(t, stack.control, keys("24681357", "OK"))
	if err := card.VerifyPIN(t.Context(), pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatalf("verify the first PIN: %v", err)
	}
	<-typed
	if err := card.Write(t.Context(), pinpad.SlotShare, []byte("share record")); err != nil {
		t.Fatalf("write: %v", err)
	}
	r.remove(t, card)
	vc, err := vcard.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := vc.PIN(nk.Share.PINRef); p.Null || p.Tries != 3 || p.Spent != 0 {
		t.Errorf("share PIN after the first PIN: %+v", p)
	}
}
