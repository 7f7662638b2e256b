// Package vcard is a virtual TCOS 3.0 smart card at the APDU level: its answer to reset, a
// serial number in EF_GDO, the two PIN-protected data slots of Keyquorum's card layout, PINs
// with a retry counter that blocks after three wrong entries, and a file that keeps all of it
// between runs.
//
// One implementation serves every place a card is emulated: the simulator backend
// (pinpad/sim) runs the real pinpad/tcos protocol code against it, cmd/cardsim serves it to
// pcscd through vpcd, and the virtual cyberJack reader driver inserts it by path. A card is
// safe for concurrent use, though only one reader holds it at a time.
//
// It answers the commands pinpad/tcos sends (SELECT, READ BINARY, UPDATE BINARY, VERIFY,
// CHANGE REFERENCE DATA) with the status words a TCOS card gives; anything else is 6D 00.
// A "foreign" card has another card's ATR and knows none of it: it stands for a card that is
// not a card of this appliance.
//
// What this package must never do: pass for a real card. The card file is the card: it holds
// the PINs and the slot data as they would sit in the chip, so it is written with mode 0600
// and belongs only in a simulator's or a test's data directory, never on a production
// appliance.
package vcard

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// DefaultPIN is the PIN of both slots on a new card, as on delivered cards (seed 003).
var defaultPIN = []byte("123456")

// ForeignATR is what a foreign card answers to reset: a YubiKey 5's ATR, a card that is
// plainly not TCOS.
var ForeignATR = []byte{0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0,
	0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40}

const fileVersion = 1

// state is what the card file holds.
type state struct {
	Version int                  `json:"version"`
	Serial  []byte               `json:"serial"`
	Foreign bool                 `json:"foreign,omitempty"`
	PINs    map[string]*pinState `json:"pins,omitempty"`  // key: reference in hex, "81"
	Files   map[string][]byte    `json:"files,omitempty"` // key: FID in hex, "4B01"
}

type pinState struct {
	PIN   []byte `json:"pin"`
	Tries int    `json:"tries"`
}

// Card is one virtual card.
type Card struct {
	mu       sync.Mutex
	path     string // "" keeps the card in memory only
	st       state
	selected uint16 // FileMF or an EF
	verified map[byte]bool
}

// New makes a blank TCOS card: the given serial (random 8 bytes when nil), both slot PINs
// 123456 with three tries, both slots empty. With a path, the card is saved there (0600) and
// every change after is saved before the card answers.
func New(path string, serial []byte) (*Card, error) {
	if serial == nil {
		serial = make([]byte, 8)
		if _, err := rand.Read(serial); err != nil {
			return nil, fmt.Errorf("new card: %w", err)
		}
	}
	gdo := append([]byte{0x5A, byte(len(serial))}, serial...)
	c := &Card{path: path, st: state{
		Version: fileVersion,
		Serial:  bytes.Clone(serial),
		PINs: map[string]*pinState{
			refKey(tcos.PINRefShare): {PIN: bytes.Clone(defaultPIN), Tries: tcos.MaxTries},
			refKey(tcos.PINRefUser):  {PIN: bytes.Clone(defaultPIN), Tries: tcos.MaxTries},
		},
		Files: map[string][]byte{
			fidKey(tcos.FileGDO):   gdo,
			fidKey(tcos.FileShare): make([]byte, tcos.SlotFileSize),
			fidKey(tcos.FileUser):  make([]byte, tcos.SlotFileSize),
		},
	}}
	c.Reset()
	if err := c.save(); err != nil {
		return nil, err
	}
	return c, nil
}

// NewForeign makes a card that is not a TCOS card; serial only names it for the simulator.
func NewForeign(path string, serial []byte) (*Card, error) {
	if serial == nil {
		serial = make([]byte, 8)
		if _, err := rand.Read(serial); err != nil {
			return nil, fmt.Errorf("new card: %w", err)
		}
	}
	c := &Card{path: path, st: state{Version: fileVersion, Serial: bytes.Clone(serial), Foreign: true}}
	c.Reset()
	if err := c.save(); err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads a card saved by New or NewForeign; later changes are saved to the same path.
func Load(path string) (*Card, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load card: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("load card %s: %w", filepath.Base(path), err)
	}
	if st.Version != fileVersion {
		return nil, fmt.Errorf("load card %s: file version %d, want %d", filepath.Base(path), st.Version, fileVersion)
	}
	if len(st.Serial) == 0 {
		return nil, fmt.Errorf("load card %s: no serial", filepath.Base(path))
	}
	for ref, p := range st.PINs {
		if p == nil || p.Tries < 0 || p.Tries > tcos.MaxTries {
			return nil, fmt.Errorf("load card %s: bad PIN %s", filepath.Base(path), ref)
		}
	}
	for fid, f := range st.Files {
		if f == nil {
			return nil, fmt.Errorf("load card %s: file %s has no contents", filepath.Base(path), fid)
		}
	}
	c := &Card{path: path, st: st}
	c.Reset()
	return c, nil
}

func refKey(ref byte) string   { return fmt.Sprintf("%02X", ref) }
func fidKey(fid uint16) string { return fmt.Sprintf("%04X", fid) }

// tempPattern names the temporary file a save writes before renaming it over the card file.
const tempPattern = ".card-*"

// RemoveTemp removes the temporary files that saves in dir left behind when the process died
// between writing one and renaming it: they hold a card's PINs and slot data, and are never a
// card. Call it before any card of dir is used (the simulator does when it opens).
func RemoveTemp(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, tempPattern))
	if err != nil {
		return fmt.Errorf("remove temporary card files: %w", err)
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove temporary card files: %w", err)
		}
	}
	return nil
}

// save writes the card file atomically. The caller holds c.mu (or owns c exclusively).
func (c *Card) save() error {
	if c.path == "" {
		return nil
	}
	b, err := json.Marshal(&c.st)
	if err != nil {
		return fmt.Errorf("save card: %w", err)
	}
	defer clear(b)
	tmp, err := os.CreateTemp(filepath.Dir(c.path), tempPattern)
	if err != nil {
		return fmt.Errorf("save card: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save card: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save card: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save card: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save card: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return fmt.Errorf("save card: %w", err)
	}
	return nil
}

// ATR is the card's answer to reset.
func (c *Card) ATR() []byte {
	if c.st.Foreign { // fixed at creation: no lock needed
		return bytes.Clone(ForeignATR)
	}
	return bytes.Clone(tcos.ATR)
}

// Serial is the card's serial number in upper-case hex, as tcos reports it.
func (c *Card) Serial() string { return strings.ToUpper(hex.EncodeToString(c.st.Serial)) }

// Foreign reports whether this is a non-TCOS card.
func (c *Card) Foreign() bool { return c.st.Foreign }

// Path is the card file ("" for a card in memory).
func (c *Card) Path() string { return c.path }

// Reset is a power cycle: verified PINs and the selected file are forgotten.
func (c *Card) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.selected = tcos.FileMF
	c.verified = map[byte]bool{}
}

// Tries reports the tries left of a PIN (0: blocked) and whether the card has that PIN.
func (c *Card) Tries(ref byte) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.st.PINs[refKey(ref)]
	if !ok {
		return 0, false
	}
	return p.Tries, true
}

// Status words the card answers.
var (
	swOK             = []byte{0x90, 0x00}
	swEndOfFile      = []byte{0x62, 0x82}
	swWrongLength    = []byte{0x67, 0x00}
	swSecurity       = []byte{0x69, 0x82}
	swBlocked        = []byte{0x69, 0x83}
	swNoCurrentEF    = []byte{0x69, 0x86}
	swWrongData      = []byte{0x6A, 0x80}
	swFuncNotSupp    = []byte{0x6A, 0x81}
	swFileNotFound   = []byte{0x6A, 0x82}
	swWrongP1P2      = []byte{0x6A, 0x86}
	swRefNotFound    = []byte{0x6A, 0x88}
	swWrongOffset    = []byte{0x6B, 0x00}
	swINSNotSupp     = []byte{0x6D, 0x00}
	swCLANotSupp     = []byte{0x6E, 0x00}
	errSaveFailed    = errors.New("virtual card: state not saved")
	errEmptyCommand  = errors.New("virtual card: command shorter than a header")
	errWrongCardData = errors.New("virtual card: Lc does not match the data")
)

// command is a parsed short APDU.
type command struct {
	cla, ins, p1, p2 byte
	data             []byte
	le               int // -1: none; 256 for 00
}

func parse(apdu []byte) (command, error) {
	if len(apdu) < 4 {
		return command{}, errEmptyCommand
	}
	cmd := command{cla: apdu[0], ins: apdu[1], p1: apdu[2], p2: apdu[3], le: -1}
	body := apdu[4:]
	switch {
	case len(body) == 0:
	case len(body) == 1:
		cmd.le = int(body[0])
		if cmd.le == 0 {
			cmd.le = 256
		}
	default:
		lc := int(body[0])
		if lc == 0 || len(body) < 1+lc || len(body) > 2+lc {
			return command{}, errWrongCardData
		}
		cmd.data = body[1 : 1+lc]
		if len(body) == 2+lc {
			cmd.le = int(body[1+lc])
			if cmd.le == 0 {
				cmd.le = 256
			}
		}
	}
	return cmd, nil
}

// Transmit runs one command APDU and returns the response APDU. The error is only for a card
// that cannot keep its state (its file cannot be written): the caller sees a dead card, as
// with a chip that fails.
func (c *Card) Transmit(apdu []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd, err := parse(apdu)
	if err != nil {
		return bytes.Clone(swWrongLength), nil
	}
	if c.st.Foreign {
		if cmd.ins == 0xA4 {
			return bytes.Clone(swFileNotFound), nil
		}
		return bytes.Clone(swINSNotSupp), nil
	}
	if cmd.cla != 0x00 {
		return bytes.Clone(swCLANotSupp), nil
	}
	switch cmd.ins {
	case 0xA4:
		return c.selectFile(cmd), nil
	case 0xB0:
		return c.readBinary(cmd), nil
	case 0xD6:
		return c.updateBinary(cmd)
	case 0x20:
		return c.verify(cmd)
	case 0x24:
		return c.changeReferenceData(cmd)
	}
	return bytes.Clone(swINSNotSupp), nil
}

func (c *Card) selectFile(cmd command) []byte {
	var fid uint16
	switch {
	case cmd.p1 == 0x00 && len(cmd.data) == 0:
		fid = tcos.FileMF
	case (cmd.p1 == 0x00 || cmd.p1 == 0x02 || cmd.p1 == 0x08 || cmd.p1 == 0x09) && len(cmd.data) == 2:
		fid = uint16(cmd.data[0])<<8 | uint16(cmd.data[1])
	case cmd.p1 == 0x08 && len(cmd.data) == 4 && cmd.data[0] == 0x3F && cmd.data[1] == 0x00:
		fid = uint16(cmd.data[2])<<8 | uint16(cmd.data[3])
	case cmd.p1 == 0x00 || cmd.p1 == 0x02 || cmd.p1 == 0x08 || cmd.p1 == 0x09:
		return bytes.Clone(swWrongLength)
	default:
		return bytes.Clone(swWrongP1P2)
	}
	if fid != tcos.FileMF {
		if _, ok := c.st.Files[fidKey(fid)]; !ok {
			return bytes.Clone(swFileNotFound)
		}
	}
	c.selected = fid
	switch cmd.p2 &^ 0x03 {
	case 0x0C:
		return bytes.Clone(swOK)
	case 0x04, 0x00:
		return append(c.fcp(fid), swOK...)
	}
	return bytes.Clone(swWrongP1P2)
}

// fcp is the FCP template of a file: size (80), descriptor (82: transparent EF or DF), FID (83).
func (c *Card) fcp(fid uint16) []byte {
	if fid == tcos.FileMF {
		return []byte{0x62, 0x07, 0x82, 0x01, 0x38, 0x83, 0x02, 0x3F, 0x00}
	}
	n := len(c.st.Files[fidKey(fid)])
	return []byte{0x62, 0x0B, 0x80, 0x02, byte(n >> 8), byte(n), 0x82, 0x01, 0x01, 0x83, 0x02, byte(fid >> 8), byte(fid)}
}

// pinFor names the PIN a file's READ and UPDATE need (0: none).
func pinFor(fid uint16) byte {
	switch fid {
	case tcos.FileShare:
		return tcos.PINRefShare
	case tcos.FileUser:
		return tcos.PINRefUser
	}
	return 0
}

func (c *Card) currentEF() ([]byte, []byte) {
	if c.selected == tcos.FileMF {
		return nil, swNoCurrentEF
	}
	if ref := pinFor(c.selected); ref != 0 && !c.verified[ref] {
		return nil, swSecurity
	}
	return c.st.Files[fidKey(c.selected)], nil
}

func (c *Card) readBinary(cmd command) []byte {
	if cmd.p1&0x80 != 0 {
		return bytes.Clone(swFuncNotSupp) // short EF identifiers: not used by tcos
	}
	file, sw := c.currentEF()
	if sw != nil {
		return bytes.Clone(sw)
	}
	off := int(cmd.p1)<<8 | int(cmd.p2)
	if off > len(file) {
		return bytes.Clone(swWrongOffset)
	}
	n := cmd.le
	if n < 0 {
		n = 256
	}
	if off+n > len(file) {
		return append(bytes.Clone(file[off:]), swEndOfFile...)
	}
	return append(bytes.Clone(file[off:off+n]), swOK...)
}

func (c *Card) updateBinary(cmd command) ([]byte, error) {
	if cmd.p1&0x80 != 0 {
		return bytes.Clone(swFuncNotSupp), nil
	}
	if c.selected == tcos.FileGDO {
		return bytes.Clone(swSecurity), nil // the serial is written once, by the manufacturer
	}
	file, sw := c.currentEF()
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if len(cmd.data) == 0 {
		return bytes.Clone(swWrongLength), nil
	}
	off := int(cmd.p1)<<8 | int(cmd.p2)
	if off+len(cmd.data) > len(file) {
		return bytes.Clone(swWrongOffset), nil
	}
	copy(file[off:], cmd.data)
	if err := c.save(); err != nil {
		return nil, fmt.Errorf("%w: %v", errSaveFailed, err)
	}
	return bytes.Clone(swOK), nil
}

func (c *Card) pin(ref byte) (*pinState, []byte) {
	p, ok := c.st.PINs[refKey(ref)]
	if !ok {
		return nil, swRefNotFound
	}
	return p, nil
}

func validPIN(pin []byte) bool {
	if len(pin) < tcos.MinPINDigits || len(pin) > tcos.MaxPINDigits {
		return false
	}
	for _, d := range pin {
		if d < '0' || d > '9' {
			return false
		}
	}
	return true
}

// wrong counts one wrong PIN and answers 63 Cx (63 C0 on the try that blocks it).
func (c *Card) wrong(p *pinState, ref byte) ([]byte, error) {
	p.Tries--
	c.verified[ref] = false
	if err := c.save(); err != nil {
		return nil, fmt.Errorf("%w: %v", errSaveFailed, err)
	}
	return []byte{0x63, 0xC0 | byte(p.Tries)}, nil
}

func (c *Card) verify(cmd command) ([]byte, error) {
	if cmd.p1 != 0x00 {
		return bytes.Clone(swWrongP1P2), nil
	}
	p, sw := c.pin(cmd.p2)
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if len(cmd.data) == 0 { // status only: spends no try
		switch {
		case p.Tries == 0:
			return bytes.Clone(swBlocked), nil
		case c.verified[cmd.p2]:
			return bytes.Clone(swOK), nil
		}
		return []byte{0x63, 0xC0 | byte(p.Tries)}, nil
	}
	if p.Tries == 0 {
		return bytes.Clone(swBlocked), nil
	}
	if len(cmd.data) != len(p.PIN) || subtle.ConstantTimeCompare(cmd.data, p.PIN) != 1 {
		return c.wrong(p, cmd.p2)
	}
	c.verified[cmd.p2] = true
	if p.Tries != tcos.MaxTries {
		p.Tries = tcos.MaxTries
		if err := c.save(); err != nil {
			return nil, fmt.Errorf("%w: %v", errSaveFailed, err)
		}
	}
	return bytes.Clone(swOK), nil
}

// changeReferenceData sets a new PIN: P1 01 after a VERIFY (data: the new PIN), P1 00 with the
// old PIN first (data: old ‖ new, split at the stored PIN's length, as TCOS does).
func (c *Card) changeReferenceData(cmd command) ([]byte, error) {
	p, sw := c.pin(cmd.p2)
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if p.Tries == 0 {
		return bytes.Clone(swBlocked), nil
	}
	var newPIN []byte
	switch cmd.p1 {
	case 0x01:
		if !c.verified[cmd.p2] {
			return bytes.Clone(swSecurity), nil
		}
		newPIN = cmd.data
	case 0x00:
		if len(cmd.data) <= len(p.PIN) || subtle.ConstantTimeCompare(cmd.data[:len(p.PIN)], p.PIN) != 1 {
			return c.wrong(p, cmd.p2)
		}
		newPIN = cmd.data[len(p.PIN):]
	default:
		return bytes.Clone(swWrongP1P2), nil
	}
	if !validPIN(newPIN) {
		return bytes.Clone(swWrongData), nil
	}
	clear(p.PIN)
	p.PIN = bytes.Clone(newPIN)
	p.Tries = tcos.MaxTries
	if err := c.save(); err != nil {
		return nil, fmt.Errorf("%w: %v", errSaveFailed, err)
	}
	return bytes.Clone(swOK), nil
}
