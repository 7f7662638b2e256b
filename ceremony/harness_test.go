package ceremony

// The test harness: a real journal, the simulator pad (pinpad/sim, the real TCOS protocol code
// against virtual cards), the soft HSM, and an automated operator that watches the pad and
// inserts cards, types PINs and presses keys as a custodian would. Test-only code.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/sharing"
)

const testPIN = "123456"

// testTimeouts are short so that timeouts are tested in milliseconds, long enough that a busy CI
// machine does not time out a custodian who acts at once.
var testTimeouts = Timeouts{OK: 3 * time.Second, Card: 3 * time.Second, PIN: 3 * time.Second, Removal: 3 * time.Second}

// syncBuffer is a log sink several goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// hookPad wraps the simulator pad so a test can act at an exact point of a card operation
// (pull the card out between the write and the read-back, unplug the reader before a write).
// The effects are the simulator's own: its Remove and Unplug.
type hookPad struct {
	*sim.Pad
	mu   sync.Mutex
	hook func(op string, c pinpad.Card) // op: "write", "read"; called before the operation
}

func (h *hookPad) setHook(f func(op string, c pinpad.Card)) {
	h.mu.Lock()
	h.hook = f
	h.mu.Unlock()
}

func (h *hookPad) WaitForCard(ctx context.Context, text string, timeout time.Duration) (pinpad.Card, error) {
	c, err := h.Pad.WaitForCard(ctx, text, timeout)
	if err != nil {
		return nil, err
	}
	return &hookCard{Card: c, pad: h}, nil
}

type hookCard struct {
	pinpad.Card
	pad *hookPad
}

func (c *hookCard) call(op string) {
	c.pad.mu.Lock()
	f := c.pad.hook
	c.pad.mu.Unlock()
	if f != nil {
		f(op, c.Card)
	}
}

func (c *hookCard) Write(ctx context.Context, slot pinpad.Slot, data []byte) error {
	c.call("write")
	return c.Card.Write(ctx, slot, data)
}

func (c *hookCard) Read(ctx context.Context, slot pinpad.Slot) ([]byte, error) {
	c.call("read")
	return c.Card.Read(ctx, slot)
}

// rule lets a test take over the operator for some states. It returns true when it handled s.
type rule func(o *operator, s sim.State) bool

// operator is the automated custodian. It watches the pad and, once per wait, does what a
// custodian does: OK to confirmations, the next card from its queue and OK to "Insert", the
// card's PIN and OK to "Enter PIN", takes the card out when asked.
type operator struct {
	t   testing.TB
	pad *sim.Pad

	mu      sync.Mutex
	queue   []string            // cards to insert, in order
	pins    map[string]string   // the PIN each card has now (default testPIN)
	typed   map[string][]string // PINs to type for a card before its right one (wrong PINs)
	newPINs map[string]string   // the new PIN a PIN change sets
	rules   []rule
	actions []string
	lastKey string
	paused  bool
	slot    pinpad.Slot // the slot a direct read or write verifies; 0 in ceremonies

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

func newOperator(t testing.TB, pad *sim.Pad) *operator {
	ctx, cancel := context.WithCancel(context.Background())
	o := &operator{t: t, pad: pad, pins: map[string]string{}, typed: map[string][]string{}, newPINs: map[string]string{}, cancel: cancel}
	ch := pad.Watch(ctx)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for range ch {
			o.step()
		}
	}()
	return o
}

func (o *operator) stop() {
	o.cancel()
	o.wg.Wait()
}

// use queues cards to insert.
func (o *operator) use(serials ...string) {
	o.mu.Lock()
	o.queue = append(o.queue, serials...)
	o.mu.Unlock()
	o.poke()
}

// with runs f with the operator held, to change its queue or PINs consistently.
func (o *operator) with(f func(o *operator)) {
	o.mu.Lock()
	f(o)
	o.mu.Unlock()
	o.poke()
}

func (o *operator) addRule(r rule) {
	o.mu.Lock()
	o.rules = append(o.rules, r)
	o.mu.Unlock()
}

func (o *operator) setPaused(p bool) {
	o.mu.Lock()
	o.paused = p
	o.lastKey = ""
	o.mu.Unlock()
	o.poke()
}

// poke makes the operator look at the pad again (after its queue changed).
func (o *operator) poke() {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.step()
	}()
}

func (o *operator) did(format string, a ...any) {
	o.actions = append(o.actions, fmt.Sprintf(format, a...))
}

// pinOf is the PIN of a card: pins[serial/slot] when the slot being verified is known (direct
// reads and writes of the harness), else pins[serial], else the delivery PIN.
func (o *operator) pinOf(serial string) string {
	if o.slot != 0 {
		if p, ok := o.pins[fmt.Sprintf("%s/%d", serial, o.slot)]; ok {
			return p
		}
	}
	if p, ok := o.pins[serial]; ok {
		return p
	}
	return testPIN
}

func (o *operator) setSlot(s pinpad.Slot) {
	o.mu.Lock()
	o.slot = s
	o.mu.Unlock()
}

// step acts on the pad's current state, once per wait (a wait is known by its deadline).
func (o *operator) step() {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.pad.State()
	if s.Waiting == sim.WaitNone || o.paused {
		return
	}
	key := fmt.Sprintf("%d/%d/%s", s.Waiting, s.Deadline.UnixNano(), firstLine(s.Display))
	if key == o.lastKey {
		return
	}
	for _, r := range o.rules {
		if r(o, s) {
			o.lastKey = key
			return
		}
	}
	switch s.Waiting {
	case sim.WaitOK:
		o.did("ok %q", s.Display)
		o.pad.PressOK()
	case sim.WaitCard:
		if s.Inserted == "" {
			if len(o.queue) == 0 {
				return // no card at hand: the wait runs out, or the test queues one
			}
			serial := o.queue[0]
			o.queue = o.queue[1:]
			if err := o.pad.Insert(serial); err != nil {
				o.t.Errorf("operator: %v", err)
				return
			}
			o.did("insert %s", serial)
		}
		o.pad.PressOK()
	case sim.WaitPIN:
		serial := s.Inserted
		var pin string
		switch {
		case strings.HasPrefix(s.Display, "Enter new PIN"), strings.HasPrefix(s.Display, "Confirm new PIN"):
			pin = o.newPINs[serial]
		case len(o.typed[serial]) > 0:
			pin = o.typed[serial][0]
			o.typed[serial] = o.typed[serial][1:]
		default:
			pin = o.pinOf(serial)
		}
		if err := o.pad.TypeDigits(pin); err != nil {
			return // the entry ended meanwhile
		}
		o.did("pin %s", serial)
		o.pad.PressOK()
	case sim.WaitRemoval:
		if s.Inserted != "" {
			o.pad.Remove()
			o.did("remove %s", s.Inserted)
		}
	}
	o.lastKey = key
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

// env is one appliance under test: journal dir, soft HSM, simulator pad and cards, operator.
type env struct {
	t       testing.TB
	root    string
	dir     string // the ceremony data dir: searched for secrets after every test
	hsmDir  string // the soft HSM's dir: searched too (the MBK must only be there sealed)
	padDir  string // the virtual cards: they hold shares, as real cards do
	pad     *sim.Pad
	hook    *hookPad
	hsm     *soft.HSM
	m       *Manager
	op      *operator
	logs    *syncBuffer
	events  *eventLog
	secrets [][]byte // bytes that must appear nowhere but on the cards
	timeout Timeouts
	wrap    func(Pad) Pad  // changes how the pad behaves (e.g. like a PC/SC pad)
	profile *tcos.Profile  // the card profile of the pad; nil: the default
	shape   *vcard.Options // the shape of new cards; nil: the profile's layout
}

type envOption func(*env)

func withTimeouts(t Timeouts) envOption { return func(e *env) { e.timeout = t } }

// withPad makes the Manager see the simulator pad through wrap.
func withPad(wrap func(Pad) Pad) envOption { return func(e *env) { e.wrap = wrap } }

// withProfile reads cards with the card profile p (and lays out new cards in it).
func withProfile(p *tcos.Profile) envOption { return func(e *env) { e.profile = p } }

// withShape makes every new card of the shape o.
func withShape(o vcard.Options) envOption { return func(e *env) { e.shape = &o } }

// withRoot opens the env on an existing root (a data dir a crashed child process left).
func withRoot(root string) envOption { return func(e *env) { e.root = root } }

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, logs: &syncBuffer{}, timeout: testTimeouts}
	for _, o := range opts {
		o(e)
	}
	if e.root == "" {
		e.root = t.TempDir()
	}
	e.dir, e.hsmDir, e.padDir = filepath.Join(e.root, "ceremony"), filepath.Join(e.root, "hsm"), filepath.Join(e.root, "cards")
	pad, err := sim.Open(e.padDir, sim.WithProfile(e.profile))
	if err != nil {
		t.Fatal(err)
	}
	e.pad = pad
	e.hook = &hookPad{Pad: pad}
	e.op = newOperator(t, pad)
	e.open()
	t.Cleanup(func() {
		e.close()
		if !t.Failed() {
			e.assertNoSecrets()
		}
		e.op.stop()
	})
	return e
}

// open opens the HSM and the Manager on the env's dirs (again, after close: a restart).
func (e *env) open() {
	e.t.Helper()
	h, err := soft.Open(e.hsmDir)
	if err != nil {
		e.t.Fatal(err)
	}
	e.hsm = h
	var pad Pad = e.hook
	if e.wrap != nil {
		pad = e.wrap(pad)
	}
	m, err := Open(context.Background(), Config{Dir: e.dir, Pad: pad, HSM: h, Timeouts: e.timeout,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
	e.events = collect(m)
}

func (e *env) close() {
	if e.m != nil {
		e.m.Close()
		e.events.wait()
		e.m = nil
	}
	if e.hsm != nil {
		e.hsm.Close()
		e.hsm = nil
	}
}

func (e *env) restart() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) newCards(n int) []string {
	e.t.Helper()
	out := make([]string, n)
	for i := range out {
		var s string
		var err error
		if e.shape != nil {
			s, err = e.pad.NewShapedCard(*e.shape)
		} else {
			s, err = e.pad.NewCard()
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

func (e *env) start(op string, req Request) *Handle {
	e.t.Helper()
	h, err := e.m.Start(context.Background(), op, req)
	if err != nil {
		e.t.Fatalf("start %s: %v", req.Kind, err)
	}
	return h
}

// wait waits for the ceremony to end (bounded) and returns its journal and error.
func (e *env) wait(h *Handle) (Journal, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	j, err := h.Wait(ctx)
	if ctx.Err() != nil {
		e.t.Fatalf("ceremony %d did not end; pad %+v; operator did %v", h.ID(), e.pad.State(), e.op.actions)
	}
	return j, err
}

func (e *env) mustSucceed(h *Handle) Journal {
	e.t.Helper()
	j, err := e.wait(h)
	if err != nil || j.Status != StatusDone {
		e.t.Fatalf("ceremony %d: status %s, err %v, last error %q; operator did %v", j.ID, j.Status, err, j.LastError, e.op.actions)
	}
	return j
}

// harvest reads every card's share slot (with the operator typing the PINs) and records the
// shares, the records and every key they reconstruct as secrets that must appear nowhere else.
// nullPIN reports whether the slot's PIN of a virtual card is still in its transport state.
func (e *env) nullPIN(serial string, slot pinpad.Slot) bool {
	c, ok := e.pad.VirtualCard(serial)
	spec, err := e.pad.Profile().Slot(slot)
	if !ok || err != nil {
		return false
	}
	for _, p := range c.PINs() {
		if p.Ref == spec.PINRef && p.Null {
			return true
		}
	}
	return false
}

func (e *env) harvest() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s := e.pad.State().Inserted; s != "" {
		e.pad.Remove()
	}
	sets := map[sharing.SetID][]*sharing.Record{}
	for _, info := range e.pad.Cards() {
		if info.Foreign {
			continue
		}
		for _, slot := range []pinpad.Slot{pinpad.SlotShare, pinpad.SlotUser} {
			if info.Blocked[slot] || e.nullPIN(info.Serial, slot) {
				continue // a slot behind a PIN never set holds nothing
			}
			data := e.readSlot(ctx, info.Serial, slot)
			if len(data) == 0 {
				continue
			}
			e.secrets = append(e.secrets, data)
			if slot != pinpad.SlotShare {
				continue
			}
			if rec, err := sharing.Unmarshal(data); err == nil {
				e.secrets = append(e.secrets, bytes.Clone(rec.Share))
				sets[rec.SetID] = append(sets[rec.SetID], rec)
			}
		}
	}
	for _, recs := range sets {
		seen := map[int]bool{}
		var uniq []*sharing.Record
		for _, r := range recs {
			if !seen[r.Index] {
				seen[r.Index] = true
				uniq = append(uniq, r)
			}
		}
		if len(uniq) >= uniq[0].K {
			if key, err := sharing.Combine(uniq); err == nil {
				// The authenticator key is derived from the MBK: it is as secret.
				e.secrets = append(e.secrets, key, hsm.AuthenticatorKeyOf(key))
			}
		}
	}
}

// readSlot reads one slot of one card straight through the simulator (no ceremony).
func (e *env) readSlot(ctx context.Context, serial string, slot pinpad.Slot) []byte {
	e.t.Helper()
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	e.op.setSlot(slot)
	defer e.op.setSlot(0)
	e.op.use(serial)
	card, err := e.pad.WaitForCard(ctx, "harvest", 5*time.Second)
	if err != nil {
		e.t.Fatalf("harvest %s: %v", serial, err)
	}
	defer func() {
		card.Close()
		e.pad.Remove()
	}()
	if err := card.VerifyPIN(ctx, slot, 5*time.Second); err != nil {
		e.t.Fatalf("harvest %s: verify PIN: %v", serial, err)
	}
	data, err := card.Read(ctx, slot)
	if errors.Is(err, pinpad.ErrEmpty) {
		return nil
	}
	if err != nil {
		return nil // a damaged slot holds nothing to look for
	}
	return data
}

// assertNoSecrets searches the ceremony data dir, the HSM dir, the logs and the events for the
// MBK, the shares, the share records and slot credentials, raw and in the usual encodings.
func (e *env) assertNoSecrets() {
	e.t.Helper()
	e.harvest()
	if len(e.secrets) == 0 {
		return
	}
	haystacks := map[string][]byte{"logs": e.logs.Bytes(), "events": e.events.dump()}
	for _, dir := range []string{e.dir, e.hsmDir} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				haystacks[p] = b
			}
			return nil
		})
	}
	assertAbsent(e.t, e.secrets, haystacks)
}

func assertAbsent(t testing.TB, secrets [][]byte, haystacks map[string][]byte) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 8 {
			continue
		}
		forms := [][]byte{s, []byte(hex.EncodeToString(s)), []byte(strings.ToUpper(hex.EncodeToString(s))),
			[]byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawStdEncoding.EncodeToString(s)),
			[]byte(base64.URLEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s))}
		for name, h := range haystacks {
			for _, f := range forms {
				if bytes.Contains(h, f) {
					t.Errorf("secret of %d bytes found in %s", len(s), name)
				}
			}
		}
	}
}

// eventLog keeps every event a subscriber saw.
type eventLog struct {
	mu   sync.Mutex
	evs  []Event
	done chan struct{}
}

func collect(m *Manager) *eventLog {
	l := &eventLog{done: make(chan struct{})}
	s := m.Subscribe()
	go func() {
		defer close(l.done)
		for ev := range s.C() {
			l.mu.Lock()
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *eventLog) wait() { <-l.done }

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

func (l *eventLog) any(f func(Event) bool) bool {
	for _, ev := range l.all() {
		if f(ev) {
			return true
		}
	}
	return false
}

// waitFor waits until an event satisfying f arrived.
func (l *eventLog) waitFor(t testing.TB, what string, f func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range l.all() {
			if f(ev) {
				return ev
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no event %s", what)
	return Event{}
}

func (l *eventLog) dump() []byte {
	var b bytes.Buffer
	for _, ev := range l.all() {
		fmt.Fprintf(&b, "%+v\n", ev)
	}
	return b.Bytes()
}

func (l *eventLog) problems() []string {
	var out []string
	for _, ev := range l.all() {
		if ev.Type == EventProblem || ev.Type == EventStalled {
			out = append(out, ev.Error)
		}
	}
	return out
}

// writeSlot writes data to one slot of one card straight through the simulator (no ceremony):
// how a test forges or copies card contents.
func (e *env) writeSlot(serial string, slot pinpad.Slot, data []byte) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	e.op.setSlot(slot)
	defer e.op.setSlot(0)
	e.op.use(serial)
	card, err := e.pad.WaitForCard(ctx, "forge", 5*time.Second)
	if err != nil {
		e.t.Fatalf("forge %s: %v", serial, err)
	}
	defer func() {
		card.Close()
		e.pad.Remove()
	}()
	if err := card.VerifyPIN(ctx, slot, 5*time.Second); err != nil {
		e.t.Fatalf("forge %s: %v", serial, err)
	}
	if err := card.Write(ctx, slot, data); err != nil {
		e.t.Fatalf("forge %s: %v", serial, err)
	}
}

// recorder is a testing.TB that only records failures, to test the harness's own checks.
type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

// The secret search must find a secret however it was written down.
func TestSecretSearchFindsPlantedSecrets(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	for name, h := range map[string][]byte{
		"raw":    append([]byte("x"), secret...),
		"hex":    []byte("mbk=" + hex.EncodeToString(secret)),
		"HEX":    []byte(strings.ToUpper(hex.EncodeToString(secret))),
		"base64": []byte(`{"k":"` + base64.StdEncoding.EncodeToString(secret) + `"}`),
	} {
		r := &recorder{TB: t}
		assertAbsent(r, [][]byte{secret}, map[string][]byte{name: h})
		if len(r.failed) == 0 {
			t.Errorf("%s: planted secret not found", name)
		}
	}
	r := &recorder{TB: t}
	assertAbsent(r, [][]byte{secret}, map[string][]byte{"clean": []byte("nothing here")})
	if len(r.failed) != 0 {
		t.Errorf("false alarm: %v", r.failed)
	}
}

// The harvest finds the shares and the key of a generation, so the search has something to
// look for.
func TestHarvestFindsKeyAndShares(t *testing.T) {
	e := newEnv(t)
	e.generate(2, 3)
	e.harvest()
	// 3 records + 3 shares + 1 key + its authenticator key
	if len(e.secrets) != 8 {
		t.Fatalf("harvested %d secrets, want 8", len(e.secrets))
	}
	e.secrets = nil
}
