// Package pcsc is the pinpad backend for a real PIN-pad reader (a Reiner SCT cyberJack e-com)
// through PC/SC, on github.com/ebfe/scard and pcsc-lite.
//
// A [Terminal] picks its reader by name prefix, sees cards come and go with
// SCardGetStatusChange (each wait on its own PC/SC context, cancelled through
// context.AfterFunc → SCardCancel), and has PINs entered on the pad with PC/SC part 10
// VERIFY_PIN_DIRECT / MODIFY_PIN_DIRECT, whose control codes come from the reader's feature
// list. Text goes to the display with CT-BCS OUTPUT through MCT_UNIVERSAL where the reader
// offers it. [Diagnose] reports all of that byte for byte for field support.
//
// What this package must never do: accept a PIN from the host. A reader without
// VERIFY_PIN_DIRECT is refused for PIN entry ([pinpad.ErrNoPINPad]); PINs are typed on the pad
// or not at all. It must never log APDUs that carry slot data either: only the diagnosis,
// which sends none, logs exchanges.
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
type Terminal struct {
	name    string
	log     *slog.Logger
	profile *tcos.Profile

	mu       sync.Mutex
	features part10.Features // nil until read
	active   *card           // the connected card session, if any
	noOutput bool            // the display answered 6D 00 once: do not ask again

	// newPad makes the PIN entry of a card session. Production code always uses the reader's
	// part 10 pad; the integration test replaces it (see pcsc_test.go), since vpcd has no pad.
	newPad func(h handle, f part10.Features, log *slog.Logger) tcos.PINPad
}

// Open finds the first reader whose name starts with opts.Reader and reads its features.
// [pinpad.ErrNoReader] when none matches.
func Open(ctx context.Context, opts Options) (*Terminal, error) {
	if opts.Reader == "" {
		opts.Reader = DefaultReader
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sc, err := scard.EstablishContext()
	if err != nil {
		return nil, fmt.Errorf("open reader: %w", mapError("connect to pcscd", err))
	}
	defer sc.Release()
	name, err := findReader(sc, opts.Reader)
	if err != nil {
		return nil, err
	}
	if opts.Profile == nil {
		opts.Profile = tcos.KeyquorumMF()
	}
	t := &Terminal{name: name, log: opts.Logger, profile: opts.Profile, newPad: newPartTenPad}
	if _, err := t.readerFeatures(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

func newPartTenPad(h handle, f part10.Features, log *slog.Logger) tcos.PINPad {
	if _, ok := f.Code(part10.FeatureVerifyPINDirect); !ok {
		return nil // tcos then refuses PIN entry with pinpad.ErrNoPINPad
	}
	return &pad{h: h, features: f, log: log}
}

// findReader returns the first reader whose name starts with prefix.
func findReader(sc *scard.Context, prefix string) (string, error) {
	readers, err := sc.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return "", pinpad.ErrNoReader
	}
	if err != nil {
		return "", mapError("list readers", err)
	}
	for _, r := range readers {
		if strings.HasPrefix(r, prefix) {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w: none named %q", pinpad.ErrNoReader, prefix)
}

// Name is the reader's full PC/SC name.
func (t *Terminal) Name() string { return t.name }

// Features returns the reader's part 10 features.
func (t *Terminal) Features(ctx context.Context) (part10.Features, error) {
	return t.readerFeatures(ctx)
}

// readerFeatures reads the feature list once, through a direct connection (no card needed)
// or the connected card's handle.
func (t *Terminal) readerFeatures(ctx context.Context) (part10.Features, error) {
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
	t.log.DebugContext(ctx, "reader features", "reader", t.name, "features", f.String())
	return f, nil
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
	sc, err := scard.EstablishContext()
	if err != nil {
		return mapError("connect to pcscd", err)
	}
	defer sc.Release()
	h, err := sc.Connect(t.name, scard.ShareDirect, scard.ProtocolUndefined)
	if err != nil {
		return mapError("connect to reader", err)
	}
	defer h.Disconnect(scard.LeaveCard)
	return f(h)
}

// Show writes text on the pad's display: [pinpad.ErrNoDisplay] when the reader has no
// MCT_UNIVERSAL or its firmware lacks the display module (6D 00).
func (t *Terminal) Show(ctx context.Context, text string) error {
	f, err := t.readerFeatures(ctx)
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

// showBestEffort shows a prompt; a pad without a usable display leaves it to WebConf.
func (t *Terminal) showBestEffort(ctx context.Context, text string) {
	if err := t.Show(ctx, text); err != nil && !errors.Is(err, pinpad.ErrNoDisplay) {
		t.log.DebugContext(ctx, "show text", "err", err)
	}
}

// WaitForOK shows text and returns [pinpad.ErrNoOKKey]: PC/SC gives the host no standard way
// to read the pad's OK and Cancel keys outside a PIN entry, so the confirmation is asked on the
// WebConf screen. [U] a CT-BCS INPUT through MCT might do it on the e-com; untested.
func (t *Terminal) WaitForOK(ctx context.Context, text string, timeout time.Duration) error {
	t.showBestEffort(ctx, text)
	return pinpad.ErrNoOKKey
}

// waitState blocks in SCardGetStatusChange until done says the reader's state is the one
// wanted. The wait has its own PC/SC context, cancelled when ctx ends or the timeout passes.
func (t *Terminal) waitState(ctx context.Context, op string, timeout time.Duration, done func(scard.StateFlag) bool) error {
	sc, err := scard.EstablishContext()
	if err != nil {
		return mapError("connect to pcscd", err)
	}
	defer sc.Release()
	stop := context.AfterFunc(ctx, func() { sc.Cancel() })
	defer stop()
	deadline := time.Now().Add(timeout)
	rs := []scard.ReaderState{{Reader: t.name, CurrentState: scard.StateUnaware}}
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
			return fmt.Errorf("%s: %w", op, err)
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

// WaitForCard shows text and waits until a card is in the slot, then connects to it
// exclusively. The OK key cannot be read through PC/SC (see WaitForOK): the card's insertion
// is the operator's answer. A card that is not TCOS gives [pinpad.ErrNotTCOS].
func (t *Terminal) WaitForCard(ctx context.Context, text string, timeout time.Duration) (pinpad.Card, error) {
	f, err := t.readerFeatures(ctx)
	if err != nil {
		return nil, err
	}
	t.showBestEffort(ctx, text)
	present := func(ev scard.StateFlag) bool { return ev&scard.StatePresent != 0 }
	if err := t.waitState(ctx, "wait for card", timeout, present); err != nil {
		return nil, err
	}
	return t.connect(ctx, f)
}

func (t *Terminal) connect(ctx context.Context, f part10.Features) (pinpad.Card, error) {
	sc, err := scard.EstablishContext()
	if err != nil {
		return nil, mapError("connect to pcscd", err)
	}
	h, err := sc.Connect(t.name, scard.ShareExclusive, scard.ProtocolAny)
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
	tc, err := tcos.OpenProfile(ctx, transport{h: h}, st.Atr, t.newPad(h, f, t.log), t.profile)
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

// WaitForRemoval shows text and waits until the slot is empty.
func (t *Terminal) WaitForRemoval(ctx context.Context, text string, timeout time.Duration) error {
	t.showBestEffort(ctx, text)
	return t.waitState(ctx, "wait for card removal", timeout, func(ev scard.StateFlag) bool {
		return ev&scard.StateEmpty != 0
	})
}

// Close releases the reader, ending a card session still open.
func (t *Terminal) Close() error {
	t.mu.Lock()
	c := t.active
	t.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
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
