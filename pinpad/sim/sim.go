// Package sim is the simulator backend of the pinpad room: a virtual PIN pad with a display,
// OK / Cancel / Clear and digit keys, one card slot, and virtual TCOS cards persisted under a
// data directory. It implements [pinpad.Terminal] for the ceremony, and an operator API
// (Insert, Remove, PressOK, TypeDigits, Watch, …) for tests and for the WebConf simulator
// panel.
//
// The cards are pinpad/vcard cards and the protocol spoken to them is the real pinpad/tcos
// code: the pad reads the PIN from the operator's keys and completes the same PC/SC part 10
// PIN structure a cyberJack receives ([part10.PINVerify.Fill]), so a ceremony run on the
// simulator exercises the code it runs on hardware, down to the APDUs.
//
// Semantics follow the operator manual (seed 003): WaitForCard shows "Insert 1. card press
// OK/Cancel" and returns once a card is in the slot and OK was pressed; a PIN entry puts the
// pad in [WaitPIN] until OK; Clear restarts the entry; Cancel ends any wait with
// [pinpad.ErrCancelled]; a pad timeout blanks the display. Removing the card during an
// operation gives [pinpad.ErrCardRemoved], unplugging the pad [pinpad.ErrReaderGone].
//
// What this package must never do: pass for real hardware (its Name says simulator), or be
// the backend of an appliance holding a real Backup Key: its card files hold PINs and slot data
// as a chip would, protected only by file permissions.
package sim

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// Wait says what the pad is waiting for.
type Wait int

const (
	WaitNone Wait = iota
	WaitOK
	WaitCard
	WaitPIN
	WaitRemoval
)

func (w Wait) String() string {
	switch w {
	case WaitNone:
		return "none"
	case WaitOK:
		return "ok"
	case WaitCard:
		return "card"
	case WaitPIN:
		return "pin"
	case WaitRemoval:
		return "removal"
	}
	return fmt.Sprintf("wait(%d)", int(w))
}

// State is what an operator sees of the pad.
type State struct {
	// Display is the text on the pad's display; lines are separated by "\n".
	Display string
	// Waiting is what the pad waits for; Deadline is when that wait times out (zero: none).
	Waiting  Wait
	Deadline time.Time
	// Inserted is the serial of the card in the slot, "" when empty.
	Inserted string
	// Plugged is false while the pad is unplugged.
	Plugged bool
}

// CardInfo describes one virtual card.
type CardInfo struct {
	Serial  string
	Foreign bool
	// Tries and Blocked per slot; empty for a foreign card.
	Tries   map[pinpad.Slot]int
	Blocked map[pinpad.Slot]bool
}

// Errors of the operator API.
var (
	ErrUnknownCard  = errors.New("no virtual card with this serial")
	ErrSlotOccupied = errors.New("a card is already in the slot: remove it first")
	ErrSlotEmpty    = errors.New("the slot is empty")
	ErrNotPIN       = errors.New("the pad is not asking for a PIN")
	ErrNotDigits    = errors.New("only the digits 0-9 can be typed")
)

// Option configures a Pad.
type Option func(*options)

type options struct {
	defaultTimeout time.Duration
	name           string
	profile        *tcos.Profile
}

// WithDefaultTimeout sets the pad's own timeout, used for any wait whose caller passes a
// timeout of zero (the "reader default" of a PIN structure). The default is 60 s.
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.defaultTimeout = d
		}
	}
}

// WithName sets the name the pad reports.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithProfile sets the card profile the pad reads cards with and lays out new cards in
// (default: tcos.KeyquorumMF).
func WithProfile(p *tcos.Profile) Option {
	return func(o *options) {
		if p != nil {
			o.profile = p
		}
	}
}

// Keys of the pad besides the digits.
const (
	keyOK     = 'O'
	keyCancel = 'C'
	keyClear  = 'X'
)

const welcome = "REINER SCT\ncyberJack e-com"

// Pad is the virtual PIN pad. It is safe for concurrent use: the operator API and the
// Terminal methods may be called from different goroutines.
type Pad struct {
	dir  string
	opts options

	mu       sync.Mutex
	cards    map[string]*vcard.Card
	state    State
	inserted *vcard.Card
	gen      uint64 // counts insertions and removals: a card session of another gen is gone
	epoch    uint64 // counts unplugs: a session of another epoch lost its reader
	keys     []byte // keys pressed during the current wait
	changed  chan struct{}
	watchers map[*watcher]struct{}
}

// Open opens the virtual pad whose cards live under dir (created if missing), loading every
// card saved there.
func Open(dir string, opts ...Option) (*Pad, error) {
	o := options{defaultTimeout: 60 * time.Second, name: "Keyquorum simulator (virtual cyberJack e-com)", profile: tcos.KeyquorumMF()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	// A save cut short by a crash leaves a temporary card file: it is no card, and it holds
	// PINs and shares, so it goes before anything else.
	if err := vcard.RemoveTemp(dir); err != nil {
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.card"))
	if err != nil {
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	p := &Pad{
		dir:      dir,
		opts:     o,
		cards:    map[string]*vcard.Card{},
		state:    State{Display: welcome, Plugged: true},
		changed:  make(chan struct{}),
		watchers: map[*watcher]struct{}{},
	}
	for _, path := range paths {
		c, err := vcard.Load(path)
		if err != nil {
			return nil, fmt.Errorf("open simulator: %w", err)
		}
		p.cards[c.Serial()] = c
	}
	return p, nil
}

// notify publishes a change of state. The caller holds p.mu.
func (p *Pad) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
	for w := range p.watchers {
		w.push(p.state)
	}
}

func newSerial() ([]byte, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

func (p *Pad) newCard(foreign bool, o *vcard.Options) (string, error) {
	sn, err := newSerial()
	if err != nil {
		return "", fmt.Errorf("new card: %w", err)
	}
	serial := strings.ToUpper(hex.EncodeToString(sn))
	path := filepath.Join(p.dir, serial+".card")
	var c *vcard.Card
	switch {
	case foreign:
		c, err = vcard.NewForeign(path, sn)
	case o != nil:
		shaped := *o
		shaped.Serial = sn
		c, err = vcard.NewWith(path, shaped)
	default:
		c, err = vcard.NewWith(path, vcard.Options{Serial: sn, Profile: p.opts.profile})
	}
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	p.cards[serial] = c
	p.notify()
	p.mu.Unlock()
	return serial, nil
}

// NewCard makes a TCOS card laid out in the pad's profile, both slots empty, both slot PINs
// 123456, and returns its serial.
func (p *Pad) NewCard() (string, error) { return p.newCard(false, nil) }

// NewShapedCard makes a TCOS card of the shape o describes (its serial is ignored: a new one
// is drawn) and returns its serial.
func (p *Pad) NewShapedCard(o vcard.Options) (string, error) { return p.newCard(false, &o) }

// NewForeignCard makes a card that is not a TCOS card (another ATR).
func (p *Pad) NewForeignCard() (string, error) { return p.newCard(true, nil) }

// Profile is the card profile the pad reads cards with.
func (p *Pad) Profile() *tcos.Profile { return p.opts.profile }

// VirtualCard returns the virtual card with this serial, for tests that inspect its state.
func (p *Pad) VirtualCard(serial string) (*vcard.Card, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cards[strings.ToUpper(serial)]
	return c, ok
}

// Insert puts the card with this serial into the slot.
func (p *Pad) Insert(serial string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cards[strings.ToUpper(serial)]
	if !ok {
		return fmt.Errorf("insert card %s: %w", serial, ErrUnknownCard)
	}
	if p.inserted != nil {
		return fmt.Errorf("insert card %s: %w", serial, ErrSlotOccupied)
	}
	c.Reset()
	p.inserted = c
	p.gen++
	p.state.Inserted = c.Serial()
	p.notify()
	return nil
}

// Remove takes the card out of the slot.
func (p *Pad) Remove() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inserted == nil {
		return fmt.Errorf("remove card: %w", ErrSlotEmpty)
	}
	p.inserted.Reset()
	p.inserted = nil
	p.gen++
	p.state.Inserted = ""
	p.notify()
	return nil
}

// Unplug disconnects the pad: every wait and card session ends with [pinpad.ErrReaderGone]
// until Plug. A card in the slot stays there, unpowered.
func (p *Pad) Unplug() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.state.Plugged {
		return
	}
	if p.inserted != nil {
		p.inserted.Reset()
	}
	p.epoch++
	p.state.Plugged = false
	p.state.Display = ""
	p.notify()
}

// Plug connects the pad again.
func (p *Pad) Plug() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state.Plugged {
		return
	}
	p.state.Plugged = true
	p.state.Display = welcome
	p.notify()
}

// press records a key for the current wait; a key pressed while nothing waits does nothing,
// as on the real pad.
func (p *Pad) press(k byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state.Waiting == WaitNone || !p.state.Plugged {
		return
	}
	p.keys = append(p.keys, k)
	p.notify()
}

// PressOK presses the green OK key.
func (p *Pad) PressOK() { p.press(keyOK) }

// PressCancel presses the red Cancel key.
func (p *Pad) PressCancel() { p.press(keyCancel) }

// PressClear presses the yellow Clear key.
func (p *Pad) PressClear() { p.press(keyClear) }

// TypeDigits types digits during a PIN entry ([ErrNotPIN] otherwise).
func (p *Pad) TypeDigits(d string) error {
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return fmt.Errorf("type digits: %w", ErrNotDigits)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state.Waiting != WaitPIN || !p.state.Plugged {
		return fmt.Errorf("type digits: %w", ErrNotPIN)
	}
	p.keys = append(p.keys, d...)
	p.notify()
	return nil
}

// State returns the pad's current state.
func (p *Pad) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Cards lists the virtual cards, by serial.
func (p *Pad) Cards() []CardInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]CardInfo, 0, len(p.cards))
	for serial, c := range p.cards {
		info := CardInfo{Serial: serial, Foreign: c.Foreign()}
		if !c.Foreign() {
			info.Tries = map[pinpad.Slot]int{}
			info.Blocked = map[pinpad.Slot]bool{}
			for _, s := range []pinpad.Slot{pinpad.SlotShare, pinpad.SlotUser} {
				spec, _ := p.opts.profile.Slot(s)
				n, _ := c.Tries(spec.PINRef)
				info.Tries[s] = n
				info.Blocked[s] = n == 0
			}
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b CardInfo) int { return strings.Compare(a.Serial, b.Serial) })
	return out
}

// Name is the pad's name; it says simulator.
func (p *Pad) Name() string { return p.opts.name }

// Show puts text on the display.
func (p *Pad) Show(ctx context.Context, text string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("show text: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.state.Plugged {
		return pinpad.ErrReaderGone
	}
	p.state.Display = text
	p.notify()
	return nil
}

// Close releases the terminal. The virtual pad holds nothing a caller must give back, so the
// pad stays usable: the simulator panel keeps operating it.
func (p *Pad) Close() error { return nil }

// step is one look at the pad during a wait, under p.mu, with the keys pressed since the last
// look. done ends the wait with err.
type step func(keys []byte) (done bool, err error)

// await runs one wait: it shows text, sets Waiting and the deadline, and calls look after every
// change until look is done, the timeout passes ([pinpad.ErrTimeout], display blanked), ctx
// ends, or the pad is unplugged ([pinpad.ErrReaderGone]).
func (p *Pad) await(ctx context.Context, op string, w Wait, text string, timeout time.Duration, look step) error {
	if timeout <= 0 {
		timeout = p.opts.defaultTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.state.Plugged {
		return pinpad.ErrReaderGone
	}
	epoch := p.epoch
	p.keys = nil
	p.state.Waiting, p.state.Display, p.state.Deadline = w, text, time.Now().Add(timeout)
	p.notify()
	defer func() {
		clear(p.keys)
		p.keys = nil
		p.state.Waiting, p.state.Deadline = WaitNone, time.Time{}
		p.notify()
	}()
	for {
		if !p.state.Plugged || p.epoch != epoch {
			return pinpad.ErrReaderGone
		}
		keys := p.keys
		p.keys = nil
		done, err := look(keys)
		clear(keys)
		if done {
			return err
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
			p.mu.Lock()
		case <-timer.C:
			p.mu.Lock()
			p.state.Display = ""
			return pinpad.ErrTimeout
		case <-ctx.Done():
			p.mu.Lock()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
	}
}

// WaitForOK shows text and waits for OK (nil) or Cancel.
func (p *Pad) WaitForOK(ctx context.Context, text string, timeout time.Duration) error {
	return p.await(ctx, "wait for OK", WaitOK, text, timeout, func(keys []byte) (bool, error) {
		for _, k := range keys {
			switch k {
			case keyOK:
				return true, nil
			case keyCancel:
				return true, pinpad.ErrCancelled
			}
		}
		return false, nil
	})
}

// WaitForCard shows text and returns once a card is in the slot and OK was pressed. A card
// that is not a TCOS card gives [pinpad.ErrNotTCOS].
func (p *Pad) WaitForCard(ctx context.Context, text string, timeout time.Duration) (pinpad.Card, error) {
	var h *session
	err := p.await(ctx, "wait for card", WaitCard, text, timeout, func(keys []byte) (bool, error) {
		for _, k := range keys {
			switch {
			case k == keyCancel:
				return true, pinpad.ErrCancelled
			case k == keyOK && p.inserted != nil:
				h = &session{pad: p, card: p.inserted, gen: p.gen, epoch: p.epoch}
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	c, err := tcos.OpenProfile(ctx, h, h.card.ATR(), h, p.opts.profile)
	if err != nil {
		h.close()
		return nil, err
	}
	return &card{Card: c, s: h}, nil
}

// WaitForRemoval shows text and waits until the slot is empty.
func (p *Pad) WaitForRemoval(ctx context.Context, text string, timeout time.Duration) error {
	return p.await(ctx, "wait for card removal", WaitRemoval, text, timeout, func(keys []byte) (bool, error) {
		if p.inserted == nil {
			return true, nil
		}
		if slices.Contains(keys, keyCancel) {
			return true, pinpad.ErrCancelled
		}
		return false, nil
	})
}

// card is a card session: the tcos protocol over a session with the virtual card.
type card struct {
	*tcos.Card
	s *session
}

// Close resets the card so a verified PIN does not outlive the session.
func (c *card) Close() error {
	c.s.close()
	return nil
}

// session is one connection to the card in the slot: the transport for tcos and the pad's
// secure PIN entry for that card.
type session struct {
	pad    *Pad
	card   *vcard.Card
	gen    uint64
	epoch  uint64
	closed bool // guarded by pad.mu
}

var errSessionClosed = errors.New("the card session is closed")

// alive reports why the session can no longer reach its card. The caller holds pad.mu.
func (s *session) alive() error {
	switch {
	case s.closed:
		return errSessionClosed
	case !s.pad.state.Plugged || s.epoch != s.pad.epoch:
		return pinpad.ErrReaderGone
	case s.gen != s.pad.gen:
		return pinpad.ErrCardRemoved
	}
	return nil
}

func (s *session) close() {
	s.pad.mu.Lock()
	defer s.pad.mu.Unlock()
	if s.alive() == nil {
		s.card.Reset()
	}
	s.closed = true
}

// Transmit sends one APDU to the virtual card, if it is still in the slot.
func (s *session) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transmit apdu: %w", err)
	}
	s.pad.mu.Lock()
	err := s.alive()
	s.pad.mu.Unlock()
	if err != nil {
		return nil, err
	}
	resp, err := s.card.Transmit(apdu)
	if err != nil {
		return nil, fmt.Errorf("transmit apdu: %w", err)
	}
	return resp, nil
}

// Pad results (PC/SC part 10) for entries that end without a PIN.
var (
	resTimeout   = []byte{0x64, 0x00}
	resCancelled = []byte{0x64, 0x01}
	resDiffer    = []byte{0x64, 0x02}
	resLength    = []byte{0x64, 0x03}
	resRejected  = []byte{0x6B, 0x80}
)

// readPIN runs one PIN entry: digits up to the format's maximum, Clear to start again, OK to
// finish, Cancel to abort. It returns the digits, or the pad result that ended the entry.
func (s *session) readPIN(ctx context.Context, prompt string, f part10.PINFormat, timeout time.Duration) ([]byte, []byte, error) {
	digits := make([]byte, 0, 16)
	var result []byte
	err := s.pad.await(ctx, "enter PIN", WaitPIN, prompt, timeout, func(keys []byte) (bool, error) {
		if err := s.alive(); err != nil {
			return true, err
		}
		for _, k := range keys {
			switch {
			case k == keyCancel:
				result = resCancelled
				return true, nil
			case k == keyClear:
				clear(digits)
				digits = digits[:0]
			case k == keyOK:
				if len(digits) < f.MinDigits || len(digits) > f.MaxDigits {
					result = resLength
				}
				return true, nil
			case k >= '0' && k <= '9' && len(digits) < f.MaxDigits:
				digits = append(digits, k)
			}
		}
		shown := prompt
		if len(digits) > 0 {
			shown += " " + strings.Repeat("*", len(digits))
		}
		if s.pad.state.Display != shown {
			s.pad.state.Display = shown
			s.pad.notify()
		}
		return false, nil
	})
	if errors.Is(err, pinpad.ErrTimeout) {
		clear(digits)
		return nil, resTimeout, nil
	}
	if err != nil || result != nil {
		clear(digits)
		return nil, result, err
	}
	s.pad.mu.Lock()
	s.pad.state.Display = "Please wait"
	s.pad.notify()
	s.pad.mu.Unlock()
	return digits, nil, nil
}

// send transmits a completed PIN command and reduces the card's response to the two bytes a pad returns.
func (s *session) send(ctx context.Context, apdu []byte) ([]byte, error) {
	defer clear(apdu)
	resp, err := s.Transmit(ctx, apdu)
	if err != nil {
		return nil, err
	}
	if len(resp) < 2 {
		return resRejected, nil
	}
	sw := resp[len(resp)-2:]
	clear(resp[:len(resp)-2])
	return []byte{sw[0], sw[1]}, nil
}

// VerifyPIN is the pad's VERIFY_PIN_DIRECT: the operator types the PIN, the pad completes the
// command with it and sends it to the card.
func (s *session) VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error) {
	pin, res, err := s.readPIN(ctx, "Enter PIN", v.PINFormat, v.Timeout)
	if err != nil || res != nil {
		return res, err
	}
	apdu, err := v.Fill(pin)
	clear(pin)
	if err != nil {
		return resRejected, nil
	}
	return s.send(ctx, apdu)
}

// ModifyPIN is the pad's MODIFY_PIN_DIRECT: old PIN if asked, new PIN, new PIN again if asked.
func (s *session) ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error) {
	var old []byte
	if m.ConfirmPIN&part10.EnterOldPIN != 0 {
		var res []byte
		var err error
		old, res, err = s.readPIN(ctx, "Enter old PIN", m.PINFormat, m.Timeout)
		if err != nil || res != nil {
			return res, err
		}
		defer clear(old)
	}
	pin, res, err := s.readPIN(ctx, "Enter new PIN", m.PINFormat, m.Timeout)
	if err != nil || res != nil {
		return res, err
	}
	defer clear(pin)
	if m.ConfirmPIN&part10.ConfirmNewPIN != 0 {
		again, res, err := s.readPIN(ctx, "Confirm new PIN", m.PINFormat, m.Timeout)
		if err != nil || res != nil {
			return res, err
		}
		same := subtle.ConstantTimeCompare(again, pin) == 1
		clear(again)
		if !same {
			return resDiffer, nil
		}
	}
	apdu, err := m.Fill(old, pin)
	if err != nil {
		return resRejected, nil
	}
	return s.send(ctx, apdu)
}

// ErrReaderBusy is a survey asked for while a ceremony holds the card.
var ErrReaderBusy = errors.New("the card is in use by a ceremony: survey it when the ceremony has ended")

// SurveyCard surveys the card in the slot (tcos.Survey: no PIN, nothing written) against the
// shipped profiles and the pad's own. [pinpad.ErrNoCard] when the slot is empty.
func (p *Pad) SurveyCard(ctx context.Context) (*tcos.SurveyReport, error) {
	p.mu.Lock()
	if !p.state.Plugged {
		p.mu.Unlock()
		return nil, pinpad.ErrReaderGone
	}
	if p.inserted == nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("survey: %w", pinpad.ErrNoCard)
	}
	if p.state.Waiting != WaitNone {
		p.mu.Unlock()
		return nil, ErrReaderBusy
	}
	h := &session{pad: p, card: p.inserted, gen: p.gen, epoch: p.epoch}
	p.mu.Unlock()
	defer h.close()
	return tcos.Survey(ctx, h, h.card.ATR(), SurveyProfiles(p.opts.profile))
}

// SurveyProfiles are the profiles a survey checks: the shipped ones and p when it is not one.
func SurveyProfiles(p *tcos.Profile) []*tcos.Profile {
	ps := tcos.Profiles()
	if p != nil && !slices.ContainsFunc(ps, func(q *tcos.Profile) bool { return q.Name == p.Name }) {
		ps = append(ps, p)
	}
	return ps
}
