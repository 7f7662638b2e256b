// Package pcsc is the pinpad backend for a real PIN-pad reader (a Reiner SCT cyberJack e-com)
// through PC/SC, on github.com/ebfe/scard and pcsc-lite.
//
// A [Terminal] looks its reader up by name prefix on every operation, so it works with a reader
// plugged in after the service started and follows one unplugged and plugged in again
// ([pinpad.ErrNoReader] meanwhile). It sees cards come and go with SCardGetStatusChange
// (cancelled through context.AfterFunc → SCardCancel), reads the pad's OK and Cancel keys with
// CT-BCS INPUT and its firmware with CT-BCS GET STATUS through MCT_UNIVERSAL, and has PINs
// entered on the pad with PC/SC part 10 VERIFY_PIN_DIRECT / MODIFY_PIN_DIRECT, whose control
// codes come from the reader's feature list. Text goes to the display with CT-BCS OUTPUT where
// the reader offers it. [Diagnose] reports all of that byte for byte for field support.
//
// What this package must never do: accept a PIN from the host. A reader without
// VERIFY_PIN_DIRECT is refused for PIN entry ([pinpad.ErrNoPINPad]), as is one whose firmware
// refuses it ([pinpad.FirmwareError]); PINs are typed on the pad or not at all. It must never
// log APDUs that carry slot data either: only the diagnosis, which sends none, logs exchanges.
package pcsc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// DefaultReader is the name prefix of Reiner SCT's cyberJack readers under pcsc-lite
// ("REINER SCT cyberJack ecom_a 00 00"), as OpenSC matches them.
const DefaultReader = "REINER SCT cyberJack"

// inputChunk bounds one CT-BCS INPUT. The host cannot abort an INPUT the pad is running, so a
// longer wait is a series of INPUTs and a cancelled context is noticed within this time; it is
// also the INPUT timeout Reiner's driver uses when none is given.
const inputChunk = 15 * time.Second

// presenceGrace is how long, after OK was pressed at "Insert N. card", a card that pcscd has
// not reported yet is waited for: pcscd's event thread waits for the reader while INPUT runs.
const presenceGrace = 2 * time.Second

// Options configure a Terminal.
type Options struct {
	// Reader is a reader name or a prefix of one; DefaultReader when empty.
	Reader string
	// Logger receives debug records of the part 10 exchanges (no PINs, no slot data).
	Logger *slog.Logger
	// Profile is the card layout cards are read with; tcos.KeyquorumMF when nil.
	Profile *tcos.Profile
}

// Terminal is a PIN-pad reader reached through PC/SC. It implements [pinpad.Terminal].
//
// It follows the reader rather than holding it: every operation looks the reader up by its
// name prefix, so a service can start before the reader is plugged in ([pinpad.ErrNoReader]
// until then), and a reader unplugged and plugged in again — perhaps under another name, as
// pcscd numbers readers — is found again. Features and firmware are read again whenever the
// reader found is not the one seen before.
type Terminal struct {
	prefix  string
	log     *slog.Logger
	profile *tcos.Profile

	state     sync.Mutex // guards name and connected, read by Name and Status at any time
	name      string     // the reader's full name, the last one seen
	connected bool

	// Establishing a PC/SC context costs a round trip to pcscd (about 1 ms on a busy machine),
	// and a card movement takes a dozen calls: so the terminal keeps one context for its short
	// calls and one for its waits (which it cancels), made again when pcscd restarted.
	pcMu   sync.Mutex
	pc     *scard.Context // short calls: list, status, connect, control
	waitMu sync.Mutex
	waitPC *scard.Context // SCardGetStatusChange, cancelled through SCardCancel

	mu       sync.Mutex       // one reader operation at a time
	features part10.Features  // nil until read
	firmware *part10.Firmware // nil until read, or unreadable
	active   *card            // the connected card session, if any
	noOutput bool             // the display answered 6D 00 once: do not ask again
	noInput  bool             // INPUT answered 6D 00 (no MKT_COMP): the keys cannot be read

	// newPad makes the PIN entry of a card session. Production code always uses the reader's
	// part 10 pad; the integration test replaces it (see pcsc_test.go), since vpcd has no pad.
	newPad func(h handle, f part10.Features, log *slog.Logger) tcos.PINPad
}

// Open prepares the PIN pad whose name starts with opts.Reader. A reader that is not connected
// yet is not an error: operations report [pinpad.ErrNoReader] until it is plugged in. When the
// reader is there, its features and firmware are read now, so a problem shows at start.
func Open(ctx context.Context, opts Options) (*Terminal, error) {
	if opts.Reader == "" {
		opts.Reader = DefaultReader
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Profile == nil {
		opts.Profile = tcos.KeyquorumMF()
	}
	t := &Terminal{prefix: opts.Reader, log: opts.Logger, profile: opts.Profile, newPad: newPartTenPad}
	if _, err := t.context(); err != nil {
		return nil, fmt.Errorf("open reader: %w", err)
	}

	if _, err := t.readerFeatures(ctx); err != nil {
		if !errors.Is(err, pinpad.ErrNoReader) && !errors.Is(err, pinpad.ErrReaderGone) {
			return nil, err
		}
		t.log.InfoContext(ctx, "no PIN pad connected yet; it is used once plugged in", "reader", t.prefix)
		return t, nil
	}
	if fw, err := t.Firmware(ctx); err == nil {
		t.log.InfoContext(ctx, "PIN pad firmware", "reader", t.Name(), "firmware", fw.String())
	}
	return t, nil
}

func newPartTenPad(h handle, f part10.Features, log *slog.Logger) tcos.PINPad {
	if _, ok := f.Code(part10.FeatureVerifyPINDirect); !ok {
		return nil // tcos then refuses PIN entry with pinpad.ErrNoPINPad
	}
	return &pad{h: h, features: f, log: log}
}

// context returns the terminal's PC/SC context for short calls, established on first use.
func (t *Terminal) context() (*scard.Context, error) {
	t.pcMu.Lock()
	defer t.pcMu.Unlock()
	if t.pc == nil {
		sc, err := scard.EstablishContext()
		if err != nil {
			return nil, mapError("connect to pcscd", err)
		}
		t.pc = sc
	}
	return t.pc, nil
}

// stale reports whether err means a PC/SC context is no longer valid (pcscd restarted).
func stale(err error) bool {
	return errors.Is(err, scard.ErrInvalidHandle) || errors.Is(err, scard.ErrNoService) || errors.Is(err, scard.ErrServiceStopped)
}

// contextFailed drops the short-call context when err says pcscd no longer knows it.
func (t *Terminal) contextFailed(sc *scard.Context, err error) {
	if !stale(err) {
		return
	}
	t.pcMu.Lock()
	defer t.pcMu.Unlock()
	if t.pc == sc {
		t.pc.Release()
		t.pc = nil
	}
}

// withContext runs f on the short-call context, once more on a fresh one if pcscd restarted.
func (t *Terminal) withContext(f func(sc *scard.Context) error) error {
	for try := 0; ; try++ {
		sc, err := t.context()
		if err != nil {
			return err
		}
		err = f(sc)
		if err == nil || !stale(err) || try > 0 {
			return err
		}
		t.contextFailed(sc, err)
	}
}

// resolve finds the reader now: the first whose name starts with the prefix and that pcscd
// reports available. A reader other than the last one seen has its features read again.
func (t *Terminal) resolve() (string, error) {
	var name string
	err := t.withContext(func(sc *scard.Context) error {
		var err error
		name, err = findReader(sc, t.prefix)
		return err
	})
	t.state.Lock()
	if err != nil {
		if t.connected {
			t.log.Info("PIN pad disconnected", "reader", t.name)
		}
		t.connected = false
		t.state.Unlock()
		return "", err
	}
	other := name != t.name
	if other || !t.connected {
		t.log.Info("PIN pad connected", "reader", name)
	}
	t.name, t.connected = name, true
	t.state.Unlock()
	if other {
		// Another reader, or the same one under another name: nothing known of it holds.
		t.mu.Lock()
		t.features, t.firmware, t.noOutput, t.noInput = nil, nil, false, false
		t.mu.Unlock()
	}
	return name, nil
}

// findReader returns the first available reader whose name starts with prefix.
func findReader(sc *scard.Context, prefix string) (string, error) {
	readers, err := sc.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return "", pinpad.ErrNoReader
	}
	if err != nil {
		return "", mapError("list readers", err)
	}
	for _, r := range readers {
		if !strings.HasPrefix(r, prefix) {
			continue
		}
		// A reader pcscd still lists but cannot reach (unplugged, not yet removed) is not there.
		rs := []scard.ReaderState{{Reader: r, CurrentState: scard.StateUnaware}}
		if err := sc.GetStatusChange(rs, 0); err != nil && !errors.Is(err, scard.ErrTimeout) {
			continue
		}
		if rs[0].EventState&(scard.StateUnknown|scard.StateUnavailable|scard.StateIgnore) != 0 {
			continue
		}
		return r, nil
	}
	return "", pinpad.ErrNoReader
}

// Name is the reader's full PC/SC name, or the name prefix it is looked for by while none
// has been seen.
func (t *Terminal) Name() string {
	t.state.Lock()
	defer t.state.Unlock()
	if t.name == "" {
		return t.prefix
	}
	return t.name
}

// Status looks for the reader now: its name, or [pinpad.ErrNoReader] when none is connected.
func (t *Terminal) Status(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return t.resolve()
}

// Features returns the reader's part 10 features.
func (t *Terminal) Features(ctx context.Context) (part10.Features, error) {
	return t.readerFeatures(ctx)
}

// readerFeatures finds the reader and reads its feature list (once per reader seen).
func (t *Terminal) readerFeatures(ctx context.Context) (part10.Features, error) {
	if _, err := t.resolve(); err != nil {
		return nil, err
	}
	return t.cachedFeatures(ctx)
}

// cachedFeatures reads the feature list of the reader resolved last, once, through a direct
// connection (no card needed) or the connected card's handle.
func (t *Terminal) cachedFeatures(ctx context.Context) (part10.Features, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.features != nil {
		return t.features, nil
	}
	var f part10.Features
	err := t.withHandle(ctx, func(h handle) error {
		var err error
		f, _, err = readFeatures(h)
		return err
	})
	if err != nil {
		return nil, err
	}
	t.features = f
	t.log.DebugContext(ctx, "reader features", "reader", t.Name(), "features", f.String())
	return f, nil
}

// Firmware reads the reader's firmware version with CT-BCS GET STATUS (20 13 00 46 00) through
// MCT_UNIVERSAL, once per reader seen.
func (t *Terminal) Firmware(ctx context.Context) (part10.Firmware, error) {
	f, err := t.readerFeatures(ctx)
	if err != nil {
		return part10.Firmware{}, err
	}
	return t.readFirmware(ctx, f)
}

func (t *Terminal) readFirmware(ctx context.Context, f part10.Features) (part10.Firmware, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.firmware != nil {
		return *t.firmware, nil
	}
	code, ok := f.Code(part10.FeatureMCTUniversal)
	if !ok {
		return part10.Firmware{}, errors.New("read firmware: the reader offers no MCT_UNIVERSAL")
	}
	var fw part10.Firmware
	err := t.withHandle(ctx, func(h handle) error {
		out, err := h.Control(code, part10.GetStatusCommand())
		if err != nil {
			return mapError("read firmware", err)
		}
		fw, err = part10.ParseStatus(out)
		return err
	})
	if err != nil {
		return part10.Firmware{}, err
	}
	t.firmware = &fw
	return fw, nil
}

// withHandle runs f on the connected card's handle, or on a direct connection to the reader
// opened for the call. The caller holds t.mu.
func (t *Terminal) withHandle(ctx context.Context, f func(h handle) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.active != nil {
		return f(t.active.h)
	}
	var h *scard.Card
	err := t.withContext(func(sc *scard.Context) error {
		var err error
		h, err = sc.Connect(t.Name(), scard.ShareDirect, scard.ProtocolUndefined)
		return err
	})
	if err != nil {
		return mapError("connect to reader", err)
	}
	defer h.Disconnect(scard.LeaveCard)
	return f(h)
}

// Show writes text on the pad's display: [pinpad.ErrNoDisplay] when the reader has no
// MCT_UNIVERSAL or its firmware lacks the display module (6D 00).
func (t *Terminal) Show(ctx context.Context, text string) error {
	if _, err := t.resolve(); err != nil {
		return err
	}
	return t.showText(ctx, text)
}

// showText is Show on the reader resolved last.
func (t *Terminal) showText(ctx context.Context, text string) error {
	f, err := t.cachedFeatures(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noOutput {
		return pinpad.ErrNoDisplay
	}
	err = t.withHandle(ctx, func(h handle) error { return show(h, f, text) })
	if errors.Is(err, pinpad.ErrNoDisplay) {
		t.noOutput = true
	}
	return err
}

// showBestEffort shows a prompt on the reader resolved last; a pad without a usable display
// leaves it to WebConf.
func (t *Terminal) showBestEffort(ctx context.Context, text string) {
	if err := t.showText(ctx, text); err != nil && !errors.Is(err, pinpad.ErrNoDisplay) {
		t.log.DebugContext(ctx, "show text", "err", err)
	}
}

// errNoInput is a reader that cannot report its keys: no MCT_UNIVERSAL, or INPUT answered
// 6D 00 (firmware without MKT_COMP).
var errNoInput = errors.New("the PIN pad cannot report its keys")

// input runs one CT-BCS INPUT on the reader resolved last: text on the display, one key awaited
// for at most d.
func (t *Terminal) input(ctx context.Context, text string, d time.Duration) (part10.Key, error) {
	f, err := t.cachedFeatures(ctx)
	if err != nil {
		return 0, err
	}
	code, ok := f.Code(part10.FeatureMCTUniversal)
	if !ok {
		return 0, errNoInput
	}
	if len(text) > part10.MaxDisplayText {
		// The display's limit: a longer prompt is cut rather than the question lost.
		text = text[:part10.MaxDisplayText]
	}
	cmd, err := part10.InputCommand(text, d)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noInput {
		return 0, errNoInput
	}
	var key part10.Key
	err = t.withHandle(ctx, func(h handle) error {
		out, err := h.Control(code, cmd)
		if err != nil {
			return mapError("wait for a key", err)
		}
		key, err = part10.InputResult(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	t.log.DebugContext(ctx, "pad key", "text", text, "key", key)
	if key == part10.KeyNoInput {
		t.noInput = true
		return 0, errNoInput
	}
	return key, nil
}

// waitKey shows text and reads the pad's keys with CT-BCS INPUT until OK (and accept, when
// given, takes it), Cancel ([pinpad.ErrCancelled]), the timeout ([pinpad.ErrTimeout]) or ctx
// ends. A reader that cannot report its keys returns errNoInput.
func (t *Terminal) waitKey(ctx context.Context, op, text string, timeout time.Duration, accept func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return pinpad.ErrTimeout
		}
		key, err := t.input(ctx, text, min(left, inputChunk))
		if err != nil {
			return err
		}
		switch key {
		case part10.KeyCancel:
			return pinpad.ErrCancelled
		case part10.KeyOK:
			if accept == nil {
				return nil
			}
			if ok, err := accept(); ok || err != nil {
				return err
			}
		}
		// A timeout of one INPUT, a digit, or OK that accept did not take: ask again.
	}
}

// WaitForOK shows text and reads the pad's OK and Cancel keys with CT-BCS INPUT (Reiner's
// driver on readers with the MKT_COMP module). A reader that cannot report its keys gets the
// text shown and [pinpad.ErrNoOKKey]: the caller asks on the WebConf screen instead.
func (t *Terminal) WaitForOK(ctx context.Context, text string, timeout time.Duration) error {
	if _, err := t.resolve(); err != nil {
		return err
	}
	err := t.waitKey(ctx, "wait for OK", text, timeout, nil)
	if errors.Is(err, errNoInput) {
		t.showBestEffort(ctx, text)
		return pinpad.ErrNoOKKey
	}
	return err
}

// waitState blocks in SCardGetStatusChange until done says the reader's state is the one
// wanted. The wait has its own PC/SC context, cancelled when ctx ends or the timeout passes.
func (t *Terminal) waitState(ctx context.Context, op string, timeout time.Duration, done func(scard.StateFlag) bool) error {
	t.waitMu.Lock()
	defer t.waitMu.Unlock()
	if t.waitPC == nil {
		sc, err := scard.EstablishContext()
		if err != nil {
			return mapError("connect to pcscd", err)
		}
		t.waitPC = sc
	}
	sc := t.waitPC
	stop := context.AfterFunc(ctx, func() { sc.Cancel() })
	defer stop()
	deadline := time.Now().Add(timeout)
	rs := []scard.ReaderState{{Reader: t.Name(), CurrentState: scard.StateUnaware}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return pinpad.ErrTimeout
		}
		err := sc.GetStatusChange(rs, left)
		switch {
		case errors.Is(err, scard.ErrTimeout):
			return pinpad.ErrTimeout
		case errors.Is(err, scard.ErrCancelled):
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", op, ctx.Err())
			}
			// A cancel meant for an earlier wait on this context, which ended just before it
			// fired: wait again.
			continue
		case stale(err):
			t.waitPC.Release()
			t.waitPC = nil
			return mapError(op, err)
		case err != nil:
			return mapError(op, err)
		}
		ev := rs[0].EventState
		if ev&(scard.StateUnknown|scard.StateUnavailable) != 0 {
			return pinpad.ErrReaderGone
		}
		if done(ev) {
			return nil
		}
		// The upper 16 bits count events; handing the state back waits for the next change.
		rs[0].CurrentState = ev &^ scard.StateChanged
	}
}

func present(ev scard.StateFlag) bool { return ev&scard.StatePresent != 0 }

// powered is a card pcscd has powered: present and not mute. Right after the reader comes back
// (plugged in again) a card can be present but not yet powered by pcscd's event thread.
func powered(ev scard.StateFlag) bool { return present(ev) && ev&scard.StateMute == 0 }

// WaitForCard shows text ("Insert 1. card press OK/Cancel") and returns once a card is in the
// slot and OK was pressed on the pad, as on the simulator; Cancel on the pad ends the wait
// with [pinpad.ErrCancelled]. OK with the slot still empty asks again. A reader that cannot
// report its keys takes the card's insertion as the operator's answer. The card is then
// connected exclusively; one that is not TCOS gives [pinpad.ErrNotTCOS].
func (t *Terminal) WaitForCard(ctx context.Context, text string, timeout time.Duration) (pinpad.Card, error) {
	f, err := t.readerFeatures(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := f.Code(part10.FeatureMCTUniversal); ok {
		if _, err := t.readFirmware(ctx, f); err != nil {
			t.log.DebugContext(ctx, "read firmware", "err", err)
		}
	}
	accept := func() (bool, error) {
		err := t.waitState(ctx, "wait for card", presenceGrace, powered)
		if errors.Is(err, pinpad.ErrTimeout) {
			// A card still mute after the grace is connected anyway, so pcscd's error for it
			// reaches the operator; an empty slot asks again.
			if t.waitState(ctx, "wait for card", 10*time.Millisecond, present) == nil {
				return true, nil
			}
			t.log.DebugContext(ctx, "OK pressed with no card in the slot")
			return false, nil
		}
		return err == nil, err
	}
	err = t.waitKey(ctx, "wait for card", text, timeout, accept)
	if errors.Is(err, errNoInput) {
		t.showBestEffort(ctx, text)
		err = t.waitState(ctx, "wait for card", timeout, present)
	}
	if err != nil {
		return nil, err
	}
	return t.connect(ctx, f)
}

func (t *Terminal) connect(ctx context.Context, f part10.Features) (pinpad.Card, error) {
	// A card session has a PC/SC context of its own: releasing it ends the session in pcscd
	// even when the disconnect itself fails (the reader unplugged meanwhile), so the exclusive
	// hold on the card never outlives the session.
	sc, err := scard.EstablishContext()
	if err != nil {
		return nil, mapError("connect to pcscd", err)
	}
	h, err := sc.Connect(t.Name(), scard.ShareExclusive, scard.ProtocolAny)
	if err != nil {
		sc.Release()
		return nil, mapError("connect to card", err)
	}
	st, err := h.Status()
	if err != nil {
		h.Disconnect(scard.LeaveCard)
		sc.Release()
		return nil, mapError("read card status", err)
	}
	c := &card{t: t, sc: sc, h: h}
	p := t.newPad(h, f, t.log)
	if pp, ok := p.(*pad); ok {
		t.mu.Lock()
		pp.firmware = t.firmware // read at Open or at the reader's first use, when it has MCT
		t.mu.Unlock()
	}
	tc, err := tcos.OpenProfile(ctx, transport{h: h}, st.Atr, p, t.profile)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Card = tc
	t.mu.Lock()
	t.active = c
	t.mu.Unlock()
	return c, nil
}

// removalKeysAfter is how long WaitForRemoval watches only the slot. A card still in after that
// has the pad's Cancel key watched too, with INPUTs of one second between looks at the slot:
// while an INPUT runs, pcscd cannot ask the reader about the card, so a removal is then seen up
// to a second late, which the first seconds after the prompt are spared.
const removalKeysAfter = 2 * time.Second

// WaitForRemoval shows text and waits until the slot is empty. Cancel on the pad ends the wait
// with [pinpad.ErrCancelled] once the card has stayed in for a moment (see removalKeysAfter).
func (t *Terminal) WaitForRemoval(ctx context.Context, text string, timeout time.Duration) error {
	if _, err := t.resolve(); err != nil {
		return err
	}
	t.showBestEffort(ctx, text)
	const op = "wait for card removal"
	empty := func(ev scard.StateFlag) bool { return ev&scard.StateEmpty != 0 }
	deadline := time.Now().Add(timeout)
	err := t.waitState(ctx, op, min(timeout, removalKeysAfter), empty)
	if !errors.Is(err, pinpad.ErrTimeout) || timeout <= removalKeysAfter {
		return err
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return pinpad.ErrTimeout
		}
		key, err := t.input(ctx, text, min(left, time.Second))
		switch {
		case errors.Is(err, errNoInput):
			return t.waitState(ctx, op, left, empty)
		case err != nil:
			return err
		case key == part10.KeyCancel:
			return pinpad.ErrCancelled
		}
		// pcscd looks at the slot again once the INPUT has let go of the reader.
		if err := t.waitState(ctx, op, 200*time.Millisecond, empty); !errors.Is(err, pinpad.ErrTimeout) {
			return err
		}
	}
}

// Close releases the reader, ending a card session still open, and its PC/SC contexts.
func (t *Terminal) Close() error {
	t.mu.Lock()
	c := t.active
	t.mu.Unlock()
	var err error
	if c != nil {
		err = c.Close()
	}
	t.pcMu.Lock()
	if t.pc != nil {
		t.pc.Release()
		t.pc = nil
	}
	t.pcMu.Unlock()
	t.waitMu.Lock()
	if t.waitPC != nil {
		t.waitPC.Release()
		t.waitPC = nil
	}
	t.waitMu.Unlock()
	return err
}

// card is a card session: tcos over an exclusive PC/SC connection.
type card struct {
	*tcos.Card
	t    *Terminal
	sc   *scard.Context
	h    *scard.Card
	once sync.Once
}

// Close disconnects with a reset, so the verified PIN does not outlive the session.
func (c *card) Close() error {
	var err error
	c.once.Do(func() {
		c.t.mu.Lock()
		if c.t.active == c {
			c.t.active = nil
		}
		c.t.mu.Unlock()
		if e := c.h.Disconnect(scard.ResetCard); e != nil && !errors.Is(e, scard.ErrRemovedCard) {
			err = mapError("disconnect card", e)
		}
		c.sc.Release()
	})
	return err
}
