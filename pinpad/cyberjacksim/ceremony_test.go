package cyberjacksim_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/pinpad/pcsc"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// The whole product path with no hardware: the ceremony state machine on the production pcsc
// backend, through libpcsclite and a real pcscd, into the virtual cyberJack driver, which
// takes each PIN from its pad and puts it into the card's VERIFY itself. A scripted operator
// answers what a person would: the questions on the screen (a PC/SC pad cannot report OK), the
// cards, the PINs on the pad, the removals.

// padOperator acts on the ceremony's events.
type padOperator struct {
	t      testing.TB
	m      *ceremony.Manager
	pad    *cyberjacksim.Client
	queue  []string // card files to insert, in order
	actErr chan error
}

func (o *padOperator) run(ctx context.Context, sub *ceremony.Subscription) {
	defer close(o.actErr)
	last := ""
	for {
		var ev ceremony.Event
		select {
		case ev = <-sub.C():
		case <-ctx.Done():
			return
		}
		key := fmt.Sprintf("%s|%s|%s|%d", ev.Waiting, ev.Display, ev.Deadline, ev.CardsDone)
		if ev.Waiting == "" || key == last {
			continue
		}
		last = key
		if err := o.act(ev); err != nil {
			o.actErr <- fmt.Errorf("operator at %q (%s): %w", ev.Display, ev.Waiting, err)
			return
		}
	}
}

func (o *padOperator) act(ev ceremony.Event) error {
	switch ev.Waiting {
	case ceremony.WaitConfirm:
		// The custodian answers the question on the screen, the security key confirmed.
		return o.m.Answer("custodian at the pad", ceremony.Answer{Question: ev.Question.ID, OK: true, SteppedUp: true})
	case ceremony.WaitCard:
		if present, err := o.pad.Present(); err != nil || present {
			return err
		}
		if len(o.queue) == 0 {
			return fmt.Errorf("no card left to insert")
		}
		card := o.queue[0]
		o.queue = o.queue[1:]
		return o.pad.Insert(card)
	case ceremony.WaitPIN:
		return o.pad.Keys("123456", "OK")
	case ceremony.WaitRemoval:
		if present, err := o.pad.Present(); err != nil || !present {
			return err
		}
		return o.pad.Remove()
	}
	return nil
}

// generateOverPCSC runs one k-of-n Generate with read-back on fresh cards and returns its
// journal, the time it took and the APDUs the card answered.
func generateOverPCSC(tb testing.TB, k, n int) (ceremony.Journal, time.Duration, uint64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := tb.TempDir()
	term, err := pcsc.Open(ctx, pcsc.Options{Reader: readerName})
	if err != nil {
		tb.Fatal(err)
	}
	defer term.Close()
	h, err := soft.Open(filepath.Join(dir, "hsm"))
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	m, err := ceremony.Open(ctx, ceremony.Config{Dir: filepath.Join(dir, "ceremony"), Pad: term, HSM: h,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	defer m.Close()
	pad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		tb.Fatal(err)
	}
	defer pad.Close()

	var cards []string
	for i := range n {
		path := filepath.Join(dir, fmt.Sprintf("card%d.json", i+1))
		if _, err := vcard.New(path, nil); err != nil {
			tb.Fatal(err)
		}
		cards = append(cards, path)
	}
	// Write all n, then read back k of them in another order, as the manual allows.
	readBack := slices.Clone(cards[n-k:])
	slices.Reverse(readBack)
	// The operator has a control connection of its own: a Client serves one goroutine.
	opPad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		tb.Fatal(err)
	}
	defer opPad.Close()
	op := &padOperator{t: tb, m: m, pad: opPad, queue: append(slices.Clone(cards), readBack...), actErr: make(chan error, 1)}
	sub := m.Subscribe()
	defer sub.Close()
	opCtx, stopOp := context.WithCancel(ctx)
	go op.run(opCtx, sub)
	defer func() {
		stopOp()
		<-op.actErr
		// Take the last card out and wait until PC/SC has seen it go, as the ceremony does
		// between cards, so the next ceremony does not meet a card pcscd still thinks is in.
		if present, _ := pad.Present(); present {
			pad.Remove()
			if err := term.WaitForRemoval(ctx, "Remove card", 10*time.Second); err != nil {
				tb.Errorf("last card removal: %v", err)
			}
		}
	}()

	before, err := pad.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	began := time.Now()
	handle, err := m.Start(ctx, "admin over PC/SC", ceremony.Request{Kind: ceremony.KindGenerate, K: k, N: n, Label: "pcsc e2e"})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := handle.Wait(ctx); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			tb.Fatalf("generate over PC/SC: %v", err)
		}
	case err := <-op.actErr:
		tb.Fatalf("generate over PC/SC: %v", err)
	}
	took := time.Since(began)
	after, err := pad.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	ov, err := m.Overview(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if ov.Last == nil {
		tb.Fatal("no journal after the ceremony")
	}
	return *ov.Last, took, after.APDUs - before.APDUs
}

func TestCyberJackGenerateOverPCSC(t *testing.T) {
	needStack(t)
	j, took, apdus := generateOverPCSC(t, 2, 3)
	if j.Phase != ceremony.PhaseFinished || j.KeyID == "" {
		t.Fatalf("journal %+v", j)
	}
	written := 0
	for _, c := range j.Cards {
		if c.Role == ceremony.RoleShare && c.State == ceremony.CardWritten {
			written++
		}
	}
	if written != 3 {
		t.Fatalf("%d cards written: %+v", written, j.Cards)
	}
	confirmed := 0
	for _, p := range j.Participants {
		if p.Action == "confirm" {
			confirmed++
		}
	}
	if confirmed < 2 {
		t.Fatalf("the questions were not answered on the screen: %+v", j.Participants)
	}
	t.Logf("2-of-3 generate + read-back over pcscd + virtual cyberJack: %v, %d APDUs", took, apdus)
}

// BenchmarkCyberJackGenerate3of5 is a whole 3-of-5 Generate with read-back over pcscd and the
// virtual cyberJack, with no human delay. It reports the APDUs per ceremony, so the ceremony's
// cost can be set against that many APDU round trips (BenchmarkCyberJackAPDU).
func BenchmarkCyberJackGenerate3of5(b *testing.B) {
	if stack.err != nil {
		b.Skip(stack.err)
	}
	var total time.Duration
	var apdus uint64
	runs := 0
	for b.Loop() {
		_, took, n := generateOverPCSC(b, 3, 5)
		total += took
		apdus += n
		runs++
	}
	b.ReportMetric(total.Seconds()/float64(runs), "s/ceremony")
	b.ReportMetric(float64(apdus)/float64(runs), "apdus/ceremony")
}

// BenchmarkCyberJackAPDU measures one APDU round trip (SELECT MF) through ebfe/scard, pcscd and
// the virtual cyberJack driver, reporting the median and 99th percentile.
func BenchmarkCyberJackAPDU(b *testing.B) {
	if stack.err != nil {
		b.Skip(stack.err)
	}
	pad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		b.Fatal(err)
	}
	defer pad.Close()
	path := filepath.Join(b.TempDir(), "card.json")
	if _, err := vcard.New(path, nil); err != nil {
		b.Fatal(err)
	}
	if err := pad.Insert(path); err != nil {
		b.Fatal(err)
	}
	defer pad.Remove()
	sc, err := scard.EstablishContext()
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Release()
	reader := ""
	readers, _ := sc.ListReaders()
	for _, r := range readers {
		if len(r) >= len(readerName) && r[:len(readerName)] == readerName {
			reader = r
		}
	}
	var card *scard.Card
	for range 50 { // pcscd sees the insertion on its next poll
		if card, err = sc.Connect(reader, scard.ShareExclusive, scard.ProtocolAny); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer card.Disconnect(scard.ResetCard)
	selectMF := []byte{0x00, 0xA4, 0x00, 0x0C}
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := card.Transmit(selectMF); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "µs-median")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "µs-p99")
}
