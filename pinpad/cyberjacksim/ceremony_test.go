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
// answers what a person would: the questions on the pad (read by the host with CT-BCS INPUT), the
// cards, OK and Cancel and the PINs on the pad, the removals.

// padOperator acts on the ceremony's events.
type padOperator struct {
	t      testing.TB
	m      *ceremony.Manager
	pad    *cyberjacksim.Client
	queue  []string // card files to insert, in order
	actErr chan error
	// noKeys is a reader whose keys the host cannot read (no MKT_COMP): questions are answered
	// on the screen and the insertion answers "Insert N. card".
	noKeys bool
	// rule sees every event first; handled skips the default action.
	rule func(o *padOperator, ev ceremony.Event) (handled bool, err error)
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
	if o.rule != nil {
		if handled, err := o.rule(o, ev); handled || err != nil {
			return err
		}
	}
	if ev.Waiting == ceremony.WaitOK || ev.Waiting == ceremony.WaitCard {
		// An unplugged reader asks nothing: the ceremony stalls next.
		if st, err := o.pad.State(); err != nil || !st.Plugged {
			return err
		}
	}
	switch ev.Waiting {
	case ceremony.WaitOK:
		return o.pad.Keys("OK") // the pad's own OK, read by the host through CT-BCS INPUT
	case ceremony.WaitConfirm:
		// The custodian answers the question on the screen, the security key confirmed.
		return o.m.Answer("custodian at the screen", ceremony.Answer{Question: ev.Question.ID, OK: true, SteppedUp: true})
	case ceremony.WaitCard:
		present, err := o.pad.Present()
		if err != nil {
			return err
		}
		if !present {
			if len(o.queue) == 0 {
				return fmt.Errorf("no card left to insert")
			}
			card := o.queue[0]
			o.queue = o.queue[1:]
			if err := o.pad.Insert(card); err != nil {
				return err
			}
		}
		if o.noKeys {
			return nil
		}
		return o.pad.Keys("OK")
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

// pcscCeremony is a ceremony manager on the production pcsc backend over the test's pcscd, with
// fresh cards and an operator at the virtual pad.
type pcscCeremony struct {
	m     *ceremony.Manager
	term  *pcsc.Terminal
	pad   *cyberjacksim.Client // the test's own control connection
	op    *padOperator
	cards []string
}

// newPCSCCeremony opens the terminal, a soft HSM and a manager with timeouts (zero: the
// defaults), and makes n fresh cards.
func newPCSCCeremony(tb testing.TB, ctx context.Context, n int, timeouts ceremony.Timeouts) *pcscCeremony {
	tb.Helper()
	dir := tb.TempDir()
	term, err := pcsc.Open(ctx, pcsc.Options{Reader: readerName})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { term.Close() })
	h, err := soft.Open(filepath.Join(dir, "hsm"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	m, err := ceremony.Open(ctx, ceremony.Config{Dir: filepath.Join(dir, "ceremony"), Pad: term, HSM: h,
		Timeouts: timeouts, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	pad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pad.Close() })
	// The operator has a control connection of its own: a Client serves one goroutine.
	opPad, err := cyberjacksim.Dial(stack.control)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { opPad.Close() })
	c := &pcscCeremony{m: m, term: term, pad: pad, op: &padOperator{t: tb, m: m, pad: opPad, actErr: make(chan error, 1)}}
	for i := range n {
		path := filepath.Join(dir, fmt.Sprintf("card%d.json", i+1))
		if _, err := vcard.New(path, nil); err != nil {
			tb.Fatal(err)
		}
		c.cards = append(c.cards, path)
	}
	return c
}

// run starts req, lets the operator act until the ceremony ends, and returns its journal and
// error, the time it took and the APDUs the card answered. The last card is taken out and
// pcscd seen to notice, so the next ceremony does not meet a card pcscd still thinks is in.
func (c *pcscCeremony) run(tb testing.TB, ctx context.Context, req ceremony.Request) (ceremony.Journal, error, time.Duration, uint64) {
	tb.Helper()
	sub := c.m.Subscribe()
	defer sub.Close()
	opCtx, stopOp := context.WithCancel(ctx)
	go c.op.run(opCtx, sub)
	defer func() {
		stopOp()
		<-c.op.actErr
		c.pad.Plug()
		if present, _ := c.pad.Present(); present {
			c.pad.Remove()
			if err := c.term.WaitForRemoval(ctx, "Remove card", 10*time.Second); err != nil {
				tb.Errorf("last card removal: %v", err)
			}
		}
	}()
	before, err := c.pad.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	began := time.Now()
	handle, err := c.m.Start(ctx, "admin over PC/SC", req)
	if err != nil {
		tb.Fatal(err)
	}
	type result struct {
		j   ceremony.Journal
		err error
	}
	done := make(chan result, 1)
	go func() { j, err := handle.Wait(ctx); done <- result{j, err} }()
	var res result
	select {
	case res = <-done:
	case err := <-c.op.actErr:
		tb.Fatalf("%s over PC/SC: %v", req.Kind, err)
	}
	took := time.Since(began)
	after, err := c.pad.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return res.j, res.err, took, after.APDUs - before.APDUs
}

// generateOverPCSC runs one k-of-n Generate with read-back on fresh cards and returns its
// journal, the time it took and the APDUs the card answered.
func generateOverPCSC(tb testing.TB, k, n int) (ceremony.Journal, time.Duration, uint64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newPCSCCeremony(tb, ctx, n, ceremony.Timeouts{})
	// Write all n, then read back k of them in another order, as the manual allows.
	readBack := slices.Clone(c.cards[n-k:])
	slices.Reverse(readBack)
	c.op.queue = append(slices.Clone(c.cards), readBack...)
	j, err, took, apdus := c.run(tb, ctx, ceremony.Request{Kind: ceremony.KindGenerate, K: k, N: n, Label: "pcsc e2e"})
	if err != nil {
		tb.Fatalf("generate over PC/SC: %v", err)
	}
	return j, took, apdus
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
	// The questions were answered on the pad (CT-BCS INPUT), not on the screen.
	for _, p := range j.Participants {
		if p.Action == "confirm" || p.Action == "decline" {
			t.Fatalf("a question went to the screen although the pad reports its keys: %+v", j.Participants)
		}
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
