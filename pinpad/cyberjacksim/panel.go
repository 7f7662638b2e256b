package cyberjacksim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// Panel is the person at a virtual cyberJack served by the driver inside pcscd: it keeps a rack
// of virtual cards in a directory, inserts and removes them, and presses the pad's keys, all
// through the driver's control socket. It offers the simulator panel's operations, so WebConf
// can run the real pcsc path by hand (`keyquorum serve --pinpad pcsc --virtual-reader SOCKET`).
// Unplug and Plug pull and put back the virtual reader's cable: pcscd then sees it unavailable.
type Panel struct {
	dir string
	log *slog.Logger

	mu       sync.Mutex // one control exchange at a time
	c        *Client
	inserted string
	profile  *tcos.Profile // the layout of new cards; nil: tcos.KeyquorumMF
}

// SetProfile lays new cards out in profile p (the card profile the service reads cards in).
func (p *Panel) SetProfile(prof *tcos.Profile) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.profile = prof
}

func (p *Panel) layout() *tcos.Profile {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.profile == nil {
		return tcos.KeyquorumMF()
	}
	return p.profile
}

// OpenPanel connects to the driver's control socket and keeps the card rack in dir.
func OpenPanel(dir, socket string, log *slog.Logger) (*Panel, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open virtual card rack: %w", err)
	}
	c, err := Dial(socket)
	if err != nil {
		return nil, err
	}
	return &Panel{dir: dir, log: log, c: c}, nil
}

// Close closes the control connection.
func (p *Panel) Close() error { return p.c.Close() }

func (p *Panel) path(serial string) string { return filepath.Join(p.dir, serial+".card") }

// NewCard makes a blank TCOS card in the rack (both PINs 123456), laid out in the panel's
// card profile.
func (p *Panel) NewCard() (string, error) {
	prof := p.layout()
	return p.newCard(func(path string, serial []byte) (*vcard.Card, error) {
		return vcard.NewWith(path, vcard.Options{Serial: serial, Profile: prof})
	})
}

// NewShapedCard makes a TCOS card of the shape o describes (o.Serial is drawn anew).
func (p *Panel) NewShapedCard(o vcard.Options) (string, error) {
	return p.newCard(func(path string, serial []byte) (*vcard.Card, error) {
		o.Serial = serial
		return vcard.NewWith(path, o)
	})
}

// Profile is the card profile new cards are laid out in.
func (p *Panel) Profile() *tcos.Profile { return p.layout() }

// NewForeignCard makes a card that is not a TCOS card.
func (p *Panel) NewForeignCard() (string, error) { return p.newCard(vcard.NewForeign) }

func (p *Panel) newCard(create func(string, []byte) (*vcard.Card, error)) (string, error) {
	serial := randomSerial()
	if serial == nil {
		return "", errors.New("new card: no randomness")
	}
	name := strings.ToUpper(hex.EncodeToString(serial))
	if _, err := create(p.path(name), serial); err != nil {
		return "", err
	}
	return name, nil
}

func randomSerial() []byte {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil
	}
	return b
}

// Insert puts the rack's card serial into the reader.
func (p *Panel) Insert(serial string) error {
	if !validSerial(serial) {
		return sim.ErrUnknownCard
	}
	if _, err := os.Stat(p.path(serial)); err != nil {
		return sim.ErrUnknownCard
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.c.Insert(p.path(serial)); err != nil {
		return fmt.Errorf("insert card: %w", err)
	}
	p.inserted = serial
	return nil
}

// Remove takes the card out of the reader.
func (p *Panel) Remove() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inserted = ""
	if err := p.c.Remove(); err != nil {
		return sim.ErrSlotEmpty
	}
	return nil
}

// Unplug pulls the virtual reader's cable.
func (p *Panel) Unplug() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.c.Unplug(); err != nil {
		p.log.Warn("unplug the virtual cyberJack", "err", err)
	}
}

// Plug puts the virtual reader's cable back in.
func (p *Panel) Plug() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.c.Plug(); err != nil {
		p.log.Warn("plug in the virtual cyberJack", "err", err)
	}
}

// PressOK, PressCancel and PressClear press a key during a PIN entry or card request; pressed at
// any other time they do nothing, as on the real pad.
func (p *Panel) PressOK()     { p.press("OK") }
func (p *Panel) PressCancel() { p.press("CANCEL") }
func (p *Panel) PressClear()  { p.press("CLEAR") }

// TypeDigits types digits into the PIN entry in progress.
func (p *Panel) TypeDigits(d string) error {
	if d == "" || strings.Trim(d, "0123456789") != "" {
		return sim.ErrNotDigits
	}
	if err := p.press(d); err != nil {
		return sim.ErrNotPIN
	}
	return nil
}

func (p *Panel) press(keys string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.Press(keys)
}

// State is the virtual pad as the simulator panel shows it.
func (p *Panel) State() sim.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := sim.State{Plugged: true}
	rs, err := p.c.State()
	if err != nil {
		st.Display = "virtual cyberJack: " + err.Error()
		return st
	}
	st.Plugged = rs.Plugged
	st.Display = strings.ReplaceAll(rs.Display, "\r", "\n")
	switch {
	case rs.Kind == "card", rs.Kind == "key" && strings.HasPrefix(rs.Entry, "Insert"):
		st.Waiting = sim.WaitCard
	case rs.Kind == "key":
		st.Waiting = sim.WaitOK
	case rs.Kind == "pin":
		st.Waiting = sim.WaitPIN
	}
	if rs.Present {
		st.Inserted = p.inserted
	} else {
		p.inserted = ""
	}
	return st
}

// Watch sends the state whenever it changes, until ctx ends. The driver is polled: its state
// lives in another process.
func (p *Panel) Watch(ctx context.Context) <-chan sim.State {
	ch := make(chan sim.State, 1)
	go func() {
		defer close(ch)
		var last sim.State
		first := true
		t := time.NewTicker(150 * time.Millisecond)
		defer t.Stop()
		for {
			if st := p.State(); first || st != last {
				first, last = false, st
				select {
				case ch <- st:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// Cards lists the rack.
func (p *Panel) Cards() []sim.CardInfo {
	files, _ := filepath.Glob(filepath.Join(p.dir, "*.card"))
	slices.Sort(files)
	var out []sim.CardInfo
	for _, f := range files {
		c, err := vcard.Load(f)
		if err != nil {
			// The rack shows the cards it can read; the operator finds why one is missing here.
			p.log.Warn("virtual card left out of the rack", "file", filepath.Base(f), "err", err)
			continue
		}
		info := sim.CardInfo{Serial: strings.TrimSuffix(filepath.Base(f), ".card"), Foreign: c.Foreign()}
		if !c.Foreign() {
			info.Tries, info.Blocked = map[pinpad.Slot]int{}, map[pinpad.Slot]bool{}
			prof := p.layout()
			for slot, ref := range map[pinpad.Slot]byte{pinpad.SlotShare: prof.Share.PINRef, pinpad.SlotUser: prof.User.PINRef} {
				n, _ := c.Tries(ref)
				info.Tries[slot], info.Blocked[slot] = n, n == 0
			}
		}
		out = append(out, info)
	}
	return out
}

func validSerial(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
