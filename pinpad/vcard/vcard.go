// Package vcard is a virtual TCOS 3.0 smart card at the APDU level: its answer to reset, a
// serial number in EF_GDO, a file tree of DFs and EFs, PINs local to their DF with a retry
// counter that blocks after three wrong entries, EF_PWDD records that tell those counters, and
// a file that keeps all of it between runs.
//
// A card is made in one of the shapes the code must survive ([Options]): laid out as one of
// the card profiles of pinpad/tcos (the MF layout, a NetKey-shaped DF01), or unpersonalised;
// its data-less VERIFY answering as ISO 7816-4 says (63 Cx, no try spent), spending a try, or
// refusing (67 00, 6A 88); its PINs in their NullPIN (transport) state; its ATR in the 3B BF
// or the 3B 9F form; CREATE FILE allowed or not.
//
// One implementation serves every place a card is emulated: the simulator backend
// (pinpad/sim) runs the real pinpad/tcos protocol code against it, cmd/cardsim serves it to
// pcscd through vpcd, and the virtual cyberJack reader driver inserts it by path. A card is
// safe for concurrent use, though only one reader holds it at a time.
//
// It answers SELECT (by FID, by path from the MF or the current DF), READ / UPDATE BINARY,
// READ RECORD, VERIFY, CHANGE REFERENCE DATA, TCOS's LIST DIRECTORY (80 AA), CREATE FILE
// (80 E0) and APPEND RECORD to EF_PWDD (a new PIN in NullPIN state) with the status words a
// TCOS card gives; anything else is 6D 00. A "foreign" card has another card's ATR and knows
// none of it: it stands for a card that is not a card of this appliance.
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
	"slices"
	"strings"
	"sync"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// defaultPIN is the PIN of both slots on a new card, as on delivered cards (seed 003).
var defaultPIN = []byte("123456")

// ForeignATR is what a foreign card answers to reset: a YubiKey 5's ATR, a card that is
// plainly not TCOS.
var ForeignATR = []byte{0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0,
	0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40}

// fileVersion 2 keeps a file tree; version 1 files (the MF layout only) are still read.
const fileVersion = 2

// VerifyQuery is how a card answers a VERIFY without data.
type VerifyQuery string

const (
	// QueryStatus answers 63 Cx (90 00 when verified) and spends nothing, as ISO 7816-4 says.
	QueryStatus VerifyQuery = ""
	// QuerySpends counts the query as a wrong try: the card some TCOS 3 cards might be.
	QuerySpends VerifyQuery = "spends"
	// QueryWrongLength answers 67 00.
	QueryWrongLength VerifyQuery = "6700"
	// QueryRefNotFound answers 6A 88.
	QueryRefNotFound VerifyQuery = "6a88"
)

// Options shape a new card.
type Options struct {
	// Serial is the card's serial; random 8 bytes when nil.
	Serial []byte
	// Profile lays the card out: its DF, slot EFs and PINs (123456, three tries). Nil leaves
	// the card unpersonalised: an MF with EF_GDO and EF_PWDD, nothing else.
	Profile *tcos.Profile
	// ATR is the answer to reset; tcos.ATR when nil.
	ATR []byte
	// VerifyQuery is how the data-less VERIFY behaves.
	VerifyQuery VerifyQuery
	// NullPIN leaves the slot PINs in their NullPIN (transport) state: no value until the
	// first CHANGE REFERENCE DATA 00 24 00 ref with six 00 bytes and the new PIN.
	NullPIN bool
	// NoPWDD leaves out EF_PWDD in the profile's DF (a TCOS 2 style card: tries only in the
	// PIN files' FCP).
	NoPWDD bool
	// PINFiles adds a PIN file per slot where the profile names one (FCP tag 85 01 80 ref
	// tries max, as netkey-tool reads).
	PINFiles bool
	// Creatable lets CREATE FILE and APPEND RECORD to EF_PWDD work without administrative
	// rights (an unpersonalised card that can be prepared). Otherwise they answer 69 82.
	Creatable bool
}

// state is what the card file holds.
type state struct {
	Version     int                  `json:"version"`
	Serial      []byte               `json:"serial"`
	Foreign     bool                 `json:"foreign,omitempty"`
	ATR         []byte               `json:"atr,omitempty"`
	VerifyQuery VerifyQuery          `json:"verify_query,omitempty"`
	Creatable   bool                 `json:"creatable,omitempty"`
	Files       map[string]*vfile    `json:"files,omitempty"` // key: path "3F00/DF01/4B01" (v1: FID)
	PINs        map[string]*pinState `json:"pins,omitempty"`  // key: "3F00/DF01:81" (v1: ref)
}

type vfile struct {
	DF   bool   `json:"df,omitempty"`
	Data []byte `json:"data,omitempty"`
	// Read and Update name the PIN (a ref of the file's DF) READ / UPDATE need; 0: none.
	// PINFile > 0 makes the file the PIN file of that ref; PWDD makes it EF_PWDD.
	Read    byte   `json:"read,omitempty"`
	Update  byte   `json:"update,omitempty"`
	PINFile byte   `json:"pin_file,omitempty"`
	PWDD    bool   `json:"pwdd,omitempty"`
	Name    []byte `json:"name,omitempty"`
	Rules   []byte `json:"rules,omitempty"`
}

type pinState struct {
	PIN   []byte `json:"pin"`
	Tries int    `json:"tries"`
	Max   int    `json:"max,omitempty"`
	Null  bool   `json:"null,omitempty"`
	// Spent counts tries a data-less VERIFY took (QuerySpends); Presented counts commands that
	// carried a PIN (VERIFY with data, CHANGE REFERENCE DATA). Tests read both.
	Spent     int `json:"spent,omitempty"`
	Presented int `json:"presented,omitempty"`
}

const mf = "3F00"

// Card is one virtual card.
type Card struct {
	mu       sync.Mutex
	path     string // "" keeps the card in memory only
	st       state
	curDF    string // path of the current DF
	curEF    string // path of the current EF, "" when a DF was selected last
	verified map[string]bool
}

// New makes a TCOS card in the keyquorum-mf layout: the given serial (random 8 bytes when nil),
// both slot PINs 123456 with three tries, both slots empty. With a path, the card is saved
// there (0600) and every change after is saved before the card answers.
func New(path string, serial []byte) (*Card, error) {
	return NewWith(path, Options{Serial: serial, Profile: tcos.KeyquorumMF()})
}

// NewWith makes a card of the shape o describes.
func NewWith(path string, o Options) (*Card, error) {
	serial := o.Serial
	if serial == nil {
		serial = make([]byte, 8)
		if _, err := rand.Read(serial); err != nil {
			return nil, fmt.Errorf("new card: %w", err)
		}
	}
	if o.ATR != nil && !tcos.IsTCOS(o.ATR) {
		return nil, fmt.Errorf("new card: ATR %X is not a TCOS 3 answer to reset", o.ATR)
	}
	switch o.VerifyQuery {
	case QueryStatus, QuerySpends, QueryWrongLength, QueryRefNotFound:
	default:
		return nil, fmt.Errorf("new card: unknown verify query %q", o.VerifyQuery)
	}
	gdo := append([]byte{0x5A, byte(len(serial))}, serial...)
	st := state{
		Version: fileVersion, Serial: bytes.Clone(serial), ATR: bytes.Clone(o.ATR),
		VerifyQuery: o.VerifyQuery, Creatable: o.Creatable,
		Files: map[string]*vfile{
			mf + "/2F02": {Data: gdo},
			mf + "/5049": {PWDD: true},
		},
		PINs: map[string]*pinState{},
	}
	if p := o.Profile; p != nil {
		df := mf
		for _, f := range p.DF {
			df = fmt.Sprintf("%s/%04X", df, f)
			st.Files[df] = &vfile{DF: true}
		}
		if o.NoPWDD {
			delete(st.Files, df+"/5049")
		} else {
			st.Files[df+"/5049"] = &vfile{PWDD: true}
		}
		for _, s := range []tcos.SlotSpec{p.Share, p.User} {
			st.Files[fmt.Sprintf("%s/%04X", df, s.File)] = &vfile{Data: make([]byte, s.Size), Read: s.PINRef, Update: s.PINRef}
			pin := &pinState{PIN: bytes.Clone(defaultPIN), Tries: p.MaxTries, Max: p.MaxTries}
			if o.NullPIN {
				pin.PIN, pin.Null = nil, true
			}
			st.PINs[pinKey(df, s.PINRef)] = pin
			if o.PINFiles && s.PINFile != 0 {
				st.Files[fmt.Sprintf("%s/%04X", df, s.PINFile)] = &vfile{PINFile: s.PINRef}
			}
		}
	}
	c := &Card{path: path, st: st}
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

// Load reads a card saved by New, NewWith or NewForeign; later changes are saved to the same
// path.
func Load(path string) (*Card, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load card: %w", err)
	}
	defer clear(b)
	st, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("load card %s: %w", filepath.Base(path), err)
	}
	c := &Card{path: path, st: st}
	c.Reset()
	return c, nil
}

// decode reads a card file, version 1 or 2, and checks it.
func decode(b []byte) (state, error) {
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return state{}, err
	}
	var st state
	switch v.Version {
	case 1:
		var v1 stateV1
		if err := json.Unmarshal(b, &v1); err != nil {
			return state{}, err
		}
		st = upgrade(v1)
	case fileVersion:
		if err := json.Unmarshal(b, &st); err != nil {
			return state{}, err
		}
	default:
		return state{}, fmt.Errorf("file version %d, want %d", v.Version, fileVersion)
	}
	if len(st.Serial) == 0 {
		return state{}, errors.New("no serial")
	}
	if st.ATR != nil && !tcos.IsTCOS(st.ATR) {
		return state{}, errors.New("the ATR is not a TCOS 3 answer to reset")
	}
	switch st.VerifyQuery {
	case QueryStatus, QuerySpends, QueryWrongLength, QueryRefNotFound:
	default:
		return state{}, fmt.Errorf("unknown verify query %q", st.VerifyQuery)
	}
	for key, p := range st.PINs {
		_, _, ok := splitPINKey(key)
		if p == nil || !ok || p.Tries < 0 || p.Max > 15 || p.Tries > p.Max || !p.Null && len(p.PIN) == 0 {
			return state{}, fmt.Errorf("bad PIN %s", key)
		}
	}
	for key, f := range st.Files {
		if f == nil || !validFileKey(key) || key == mf {
			return state{}, fmt.Errorf("bad file %s", key)
		}
		if parent := parentOf(key); parent != mf {
			if d, ok := st.Files[parent]; !ok || d == nil || !d.DF {
				return state{}, fmt.Errorf("file %s has no DF %s", key, parent)
			}
		}
	}
	return st, nil
}

// stateV1 is the first card file format: FIDs under the MF, PINs of the MF.
type stateV1 struct {
	Version int                  `json:"version"`
	Serial  []byte               `json:"serial"`
	Foreign bool                 `json:"foreign,omitempty"`
	PINs    map[string]*pinState `json:"pins,omitempty"`  // key: reference in hex, "81"
	Files   map[string][]byte    `json:"files,omitempty"` // key: FID in hex, "4B01"
}

// upgrade turns a version 1 file into version 2: the keyquorum-mf layout, EF_PWDD in the MF.
func upgrade(v1 stateV1) state {
	st := state{Version: fileVersion, Serial: v1.Serial, Foreign: v1.Foreign, Files: map[string]*vfile{}, PINs: map[string]*pinState{}}
	if v1.Foreign {
		return st
	}
	st.Files[mf+"/5049"] = &vfile{PWDD: true}
	for fid, data := range v1.Files {
		if data == nil {
			st.Files[mf+"/"+strings.ToUpper(fid)] = nil // a file without contents: decode refuses it
			continue
		}
		f := &vfile{Data: data}
		switch strings.ToUpper(fid) {
		case "4B01":
			f.Read, f.Update = tcos.PINRefShare, tcos.PINRefShare
		case "4B02":
			f.Read, f.Update = tcos.PINRefUser, tcos.PINRefUser
		}
		st.Files[mf+"/"+strings.ToUpper(fid)] = f
	}
	for ref, p := range v1.PINs {
		if p != nil {
			p.Max = tcos.MaxTries
		}
		st.PINs[mf+":"+strings.ToUpper(ref)] = p
	}
	return st
}

func pinKey(df string, ref byte) string { return fmt.Sprintf("%s:%02X", df, ref) }

func splitPINKey(key string) (df string, ref byte, ok bool) {
	df, r, found := strings.Cut(key, ":")
	b, err := hex.DecodeString(r)
	if !found || err != nil || len(b) != 1 || strings.ToUpper(r) != r || !validFileKey(df) {
		return "", 0, false
	}
	return df, b[0], true
}

func validFileKey(key string) bool {
	parts := strings.Split(key, "/")
	if parts[0] != mf || len(parts) > 6 {
		return false
	}
	for _, p := range parts[1:] {
		if b, err := hex.DecodeString(p); err != nil || len(b) != 2 || strings.ToUpper(p) != p {
			return false
		}
	}
	return true
}

func parentOf(key string) string {
	if i := strings.LastIndexByte(key, '/'); i > 0 {
		return key[:i]
	}
	return mf
}

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

// saved saves the state and answers sw.
func (c *Card) saved(sw []byte) ([]byte, error) {
	if err := c.save(); err != nil {
		return nil, fmt.Errorf("%w: %v", errSaveFailed, err)
	}
	return bytes.Clone(sw), nil
}

// ATR is the card's answer to reset.
func (c *Card) ATR() []byte {
	switch {
	case c.st.Foreign: // fixed at creation: no lock needed
		return bytes.Clone(ForeignATR)
	case c.st.ATR != nil:
		return bytes.Clone(c.st.ATR)
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
	c.curDF, c.curEF = mf, ""
	c.verified = map[string]bool{}
}

// PINInfo is what the card knows of one PIN.
type PINInfo struct {
	DF               string
	Ref              byte
	Tries, Max       int
	Null             bool
	Spent, Presented int
}

// PINs describes every PIN of the card, by DF path and reference.
func (c *Card) PINs() []PINInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.st.PINs))
	for k := range c.st.PINs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []PINInfo
	for _, k := range keys {
		df, r, _ := splitPINKey(k)
		p := c.st.PINs[k]
		out = append(out, PINInfo{DF: df, Ref: r, Tries: p.Tries, Max: p.Max, Null: p.Null, Spent: p.Spent, Presented: p.Presented})
	}
	return out
}

// PIN describes the first PIN with this reference (in path order) and whether the card has one.
func (c *Card) PIN(ref byte) (PINInfo, bool) {
	for _, p := range c.PINs() {
		if p.Ref == ref {
			return p, true
		}
	}
	return PINInfo{}, false
}

// FileData returns a copy of a transparent file's contents by path ("3F00/DF01/4B01").
func (c *Card) FileData(path string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.st.Files[strings.ToUpper(path)]
	if !ok || f.DF || f.PWDD || f.PINFile != 0 {
		return nil, false
	}
	return bytes.Clone(f.Data), true
}

// Tries reports the tries left of a PIN (0: blocked) and whether the card has that PIN.
func (c *Card) Tries(ref byte) (int, bool) {
	p, ok := c.PIN(ref)
	return p.Tries, ok
}

// Status words the card answers.
var (
	swOK             = []byte{0x90, 0x00}
	swEndOfFile      = []byte{0x62, 0x82}
	swWrongLength    = []byte{0x67, 0x00}
	swSecurity       = []byte{0x69, 0x82}
	swBlocked        = []byte{0x69, 0x83}
	swConditions     = []byte{0x69, 0x85}
	swNoCurrentEF    = []byte{0x69, 0x86}
	swWrongData      = []byte{0x6A, 0x80}
	swFuncNotSupp    = []byte{0x6A, 0x81}
	swFileNotFound   = []byte{0x6A, 0x82}
	swRecNotFound    = []byte{0x6A, 0x83}
	swNoMemory       = []byte{0x6A, 0x84}
	swWrongP1P2      = []byte{0x6A, 0x86}
	swRefNotFound    = []byte{0x6A, 0x88}
	swFileExists     = []byte{0x6A, 0x89}
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
	switch {
	case cmd.cla == 0x80:
		switch cmd.ins {
		case 0xAA:
			return c.listDirectory(cmd), nil
		case 0xE0:
			return c.createFile(cmd)
		}
		return bytes.Clone(swINSNotSupp), nil
	case cmd.cla != 0x00:
		return bytes.Clone(swCLANotSupp), nil
	}
	switch cmd.ins {
	case 0xA4:
		return c.selectFile(cmd), nil
	case 0xB0:
		return c.readBinary(cmd), nil
	case 0xB2:
		return c.readRecord(cmd), nil
	case 0xD6:
		return c.updateBinary(cmd)
	case 0xE2:
		return c.appendRecord(cmd)
	case 0x20:
		return c.verify(cmd)
	case 0x24:
		return c.changeReferenceData(cmd)
	}
	return bytes.Clone(swINSNotSupp), nil
}

func fidsOf(data []byte) ([]string, bool) {
	if len(data)%2 != 0 {
		return nil, false
	}
	var out []string
	for i := 0; i < len(data); i += 2 {
		out = append(out, fmt.Sprintf("%02X%02X", data[i], data[i+1]))
	}
	return out, true
}

func (c *Card) selectFile(cmd command) []byte {
	var target string
	switch cmd.p1 {
	case 0x00, 0x02:
		switch {
		case len(cmd.data) == 0 && cmd.p1 == 0x00:
			target = mf
		case len(cmd.data) == 2:
			fid := fmt.Sprintf("%02X%02X", cmd.data[0], cmd.data[1])
			if fid == mf {
				target = mf
			} else {
				target = c.curDF + "/" + fid
			}
		default:
			return bytes.Clone(swWrongLength)
		}
	case 0x08, 0x09:
		fids, ok := fidsOf(cmd.data)
		if !ok || len(fids) == 0 {
			return bytes.Clone(swWrongLength)
		}
		base := c.curDF
		if cmd.p1 == 0x08 {
			base = mf
			if fids[0] == mf {
				fids = fids[1:]
			}
		}
		target = strings.Join(append([]string{base}, fids...), "/")
	default:
		return bytes.Clone(swWrongP1P2)
	}
	f, ok := c.st.Files[target]
	if target != mf && !ok {
		return bytes.Clone(swFileNotFound)
	}
	switch cmd.p2 &^ 0x03 {
	case 0x0C, 0x04, 0x00:
	default:
		return bytes.Clone(swWrongP1P2)
	}
	if target == mf || f.DF {
		c.curDF, c.curEF = target, ""
	} else {
		c.curDF, c.curEF = parentOf(target), target
	}
	if cmd.p2&^0x03 == 0x0C {
		return bytes.Clone(swOK)
	}
	return append(c.fcp(target), swOK...)
}

func tlv(tag byte, v []byte) []byte { return append([]byte{tag, byte(len(v))}, v...) }

// fcp is the FCP template of a file: size (80), descriptor (82: transparent EF 01, linear
// variable TLV EF 05, DF 38), FID (83), DF name (84), status (85; a PIN file's try counter),
// access rules (86).
func (c *Card) fcp(key string) []byte {
	fid, _ := hex.DecodeString(key[len(key)-4:])
	var body []byte
	f := c.st.Files[key]
	switch {
	case key == mf || f.DF:
		body = append(tlv(0x82, []byte{0x38}), tlv(0x83, fid)...)
		if f != nil && len(f.Name) > 0 {
			body = append(body, tlv(0x84, f.Name)...)
		}
		if key == mf {
			body = append(body, tlv(0x86, c.mfRules())...)
		}
	case f.PINFile != 0:
		p := c.st.PINs[pinKey(parentOf(key), f.PINFile)]
		tries, maxTries := 0, 0
		if p != nil {
			tries, maxTries = p.Tries, p.Max
		}
		body = append(append(tlv(0x82, []byte{0x05}), tlv(0x83, fid)...), tlv(0x85, []byte{0x01, 0x80, f.PINFile & 0x7F, byte(tries), byte(maxTries)})...)
	case f.PWDD:
		body = append(tlv(0x82, []byte{0x05}), tlv(0x83, fid)...)
	default:
		n := len(f.Data)
		body = append(append(tlv(0x80, []byte{byte(n >> 8), byte(n)}), tlv(0x82, []byte{0x01})...), tlv(0x83, fid)...)
		if len(f.Rules) > 0 {
			body = append(body, tlv(0x86, f.Rules)...)
		}
	}
	return tlv(0x62, body)
}

// mfRules are the MF's access rules for CREATE FILE (E0) and APPEND RECORD (E2): free on a
// card that allows preparing, else behind the global key 1 (an issuer's administrative key).
func (c *Card) mfRules() []byte {
	if c.st.Creatable {
		return []byte{0xE0, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xE2, 0x00, 0x00, 0x00, 0xFF, 0xFF}
	}
	return []byte{0xE0, 0x00, 0x02, 0x00, 0xFF, 0xFF, 0xE2, 0x00, 0x02, 0x00, 0xFF, 0xFF}
}

func (c *Card) currentEF() (*vfile, []byte) {
	if c.curEF == "" {
		return nil, swNoCurrentEF
	}
	return c.st.Files[c.curEF], nil
}

// allowed checks a file's access rule: the PIN ref of its DF (or a global one of the MF)
// must be verified.
func (c *Card) allowed(ref byte) bool {
	if ref == 0 {
		return true
	}
	df := parentOf(c.curEF)
	if ref&0x80 == 0 {
		df = mf
	}
	return c.verified[pinKey(df, ref)]
}

func (c *Card) readBinary(cmd command) []byte {
	if cmd.p1&0x80 != 0 {
		return bytes.Clone(swFuncNotSupp) // short EF identifiers: not used by tcos
	}
	f, sw := c.currentEF()
	if sw != nil {
		return bytes.Clone(sw)
	}
	if f.PWDD || f.PINFile != 0 {
		return bytes.Clone(swNoCurrentEF) // 69 86: not a transparent file
	}
	if !c.allowed(f.Read) {
		return bytes.Clone(swSecurity)
	}
	off := int(cmd.p1)<<8 | int(cmd.p2)
	if off > len(f.Data) {
		return bytes.Clone(swWrongOffset)
	}
	n := cmd.le
	if n < 0 {
		n = 256
	}
	if off+n > len(f.Data) {
		return append(bytes.Clone(f.Data[off:]), swEndOfFile...)
	}
	return append(bytes.Clone(f.Data[off:off+n]), swOK...)
}

func (c *Card) updateBinary(cmd command) ([]byte, error) {
	if cmd.p1&0x80 != 0 {
		return bytes.Clone(swFuncNotSupp), nil
	}
	f, sw := c.currentEF()
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if c.curEF == mf+"/2F02" || f.PWDD || f.PINFile != 0 {
		return bytes.Clone(swSecurity), nil // the serial is written once, by the manufacturer
	}
	if !c.allowed(f.Update) {
		return bytes.Clone(swSecurity), nil
	}
	if len(cmd.data) == 0 {
		return bytes.Clone(swWrongLength), nil
	}
	off := int(cmd.p1)<<8 | int(cmd.p2)
	if off+len(cmd.data) > len(f.Data) {
		return bytes.Clone(swWrongOffset), nil
	}
	copy(f.Data[off:], cmd.data)
	return c.saved(swOK)
}

// pwddRecords are EF_PWDD's records for the PINs of a DF, in reference order:
// A0 L { 83 01 ref, 90 02 max tries } [V tags: OpenSC pkcs15-tcos.c; the two bytes of tag 90
// are this model's choice, OpenSC reads the last one].
func (c *Card) pwddRecords(df string) [][]byte {
	var refs []byte
	for k := range c.st.PINs {
		if d, ref, _ := splitPINKey(k); d == df {
			refs = append(refs, ref)
		}
	}
	slices.Sort(refs)
	var out [][]byte
	for _, ref := range refs {
		p := c.st.PINs[pinKey(df, ref)]
		body := append(tlv(0x83, []byte{ref}), tlv(0x90, []byte{byte(p.Max), byte(p.Tries)})...)
		out = append(out, tlv(0xA0, body))
	}
	return out
}

func (c *Card) readRecord(cmd command) []byte {
	f, sw := c.currentEF()
	if sw != nil {
		return bytes.Clone(sw)
	}
	if !f.PWDD {
		return bytes.Clone(swNoCurrentEF)
	}
	if cmd.p2 != 0x04 || cmd.p1 == 0 {
		return bytes.Clone(swWrongP1P2)
	}
	recs := c.pwddRecords(parentOf(c.curEF))
	if int(cmd.p1) > len(recs) {
		return bytes.Clone(swRecNotFound)
	}
	rec := recs[cmd.p1-1]
	if cmd.le >= 0 && cmd.le != 256 && cmd.le != len(rec) {
		return []byte{0x6C, byte(len(rec))}
	}
	return append(rec, swOK...)
}

// listDirectory is TCOS's 80 AA: P1 01 the DFs, P1 02 the EFs of the current DF, as FIDs;
// 6A 82 when there are none [V OpenSC tcos_list_files].
func (c *Card) listDirectory(cmd command) []byte {
	if cmd.p1 != 0x01 && cmd.p1 != 0x02 {
		return bytes.Clone(swWrongP1P2)
	}
	var keys []string
	for k, f := range c.st.Files {
		if parentOf(k) == c.curDF && f.DF == (cmd.p1 == 0x01) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []byte
	for _, k := range keys {
		b, _ := hex.DecodeString(k[len(k)-4:])
		out = append(out, b...)
	}
	if len(out) == 0 {
		return bytes.Clone(swFileNotFound)
	}
	return append(out, swOK...)
}

// createFile is TCOS's CREATE FILE 80 E0 00 00 Lc 6F{81 size, 82 descriptor, 83 FID, [84
// name], [85], [86 rules]} [V OpenSC tcos_construct_fci], in the current DF. The new file is
// selected; a new DF gets an empty EF_PWDD [U: what TCOS creates with a DF]. READ / UPDATE
// rules (tag 86 entries B0 / D6) name a local PIN k by bit 0x01<<k of the password mask [I:
// cyberflex-shell tcos_card.py].
func (c *Card) createFile(cmd command) ([]byte, error) {
	if !c.st.Creatable {
		return bytes.Clone(swSecurity), nil
	}
	if cmd.p1 != 0 || cmd.p2 != 0 {
		return bytes.Clone(swWrongP1P2), nil
	}
	tags, ok := parseFCI(cmd.data)
	if !ok {
		return bytes.Clone(swWrongData), nil
	}
	fid, desc := tags[0x83], tags[0x82]
	if len(fid) != 2 || len(desc) == 0 {
		return bytes.Clone(swWrongData), nil
	}
	key := fmt.Sprintf("%s/%02X%02X", c.curDF, fid[0], fid[1])
	if _, exists := c.st.Files[key]; exists || key == mf+"/3F00" || strings.Count(key, "/") > 4 {
		return bytes.Clone(swFileExists), nil
	}
	f := &vfile{Rules: bytes.Clone(tags[0x86])}
	if desc[0]&0x38 == 0x38 {
		f.DF, f.Name = true, bytes.Clone(tags[0x84])
		c.st.Files[key+"/5049"] = &vfile{PWDD: true}
	} else {
		size := 0
		for _, b := range tags[0x81] {
			size = size<<8 | int(b)
		}
		if size == 0 || len(tags[0x81]) > 2 {
			return bytes.Clone(swWrongData), nil
		}
		if size > 8192 {
			return bytes.Clone(swNoMemory), nil
		}
		f.Data = make([]byte, size)
		for r := f.Rules; len(r) >= 6; r = r[6:] {
			ref := ruleRef(r[1])
			switch r[0] &^ 0x01 {
			case 0xB0:
				f.Read = ref
			case 0xD6:
				f.Update = ref
			}
		}
	}
	c.st.Files[key] = f
	if f.DF {
		c.curDF, c.curEF = key, ""
	} else {
		c.curEF = key
	}
	return c.saved(swOK)
}

// ruleRef turns a rule's password mask into a PIN ref: bit 0x01<<k local PIN k, 0x10<<k
// global PIN k [I].
func ruleRef(mask byte) byte {
	for k := range 4 {
		if mask&(0x01<<k) != 0 {
			return 0x80 | byte(k)
		}
		if mask&(0x10<<k) != 0 {
			return byte(k)
		}
	}
	return 0
}

func parseFCI(b []byte) (map[byte][]byte, bool) {
	if len(b) < 2 || b[0] != 0x6F || int(b[1]) != len(b)-2 {
		return nil, false
	}
	out := map[byte][]byte{}
	for b = b[2:]; len(b) > 0; {
		if len(b) < 2 || int(b[1]) > len(b)-2 {
			return nil, false
		}
		out[b[0]] = b[2 : 2+int(b[1])]
		b = b[2+int(b[1]):]
	}
	return out, true
}

// appendRecord adds a password record to the current EF_PWDD: A0 { 83 01 ref, 90 02 max max }
// creates that PIN in the DF in its NullPIN state [U: how TCOS creates a PIN object; this
// model takes no PIN value from the host, so the first PIN is set on the pad].
func (c *Card) appendRecord(cmd command) ([]byte, error) {
	f, sw := c.currentEF()
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if !f.PWDD {
		return bytes.Clone(swNoCurrentEF), nil
	}
	if !c.st.Creatable {
		return bytes.Clone(swSecurity), nil
	}
	if cmd.p1 != 0 || cmd.p2 != 0 {
		return bytes.Clone(swWrongP1P2), nil
	}
	if len(cmd.data) < 2 || cmd.data[0] != 0xA0 {
		return bytes.Clone(swWrongData), nil
	}
	tags, ok := parseFCI(append([]byte{0x6F}, cmd.data[1:]...))
	if !ok || len(tags[0x83]) != 1 || len(tags[0x90]) != 2 {
		return bytes.Clone(swWrongData), nil
	}
	ref, maxTries := tags[0x83][0], int(tags[0x90][0])
	if ref&0x80 == 0 || maxTries < 1 || maxTries > 15 {
		return bytes.Clone(swWrongData), nil
	}
	key := pinKey(parentOf(c.curEF), ref)
	if _, exists := c.st.PINs[key]; exists {
		return bytes.Clone(swFileExists), nil
	}
	c.st.PINs[key] = &pinState{Tries: maxTries, Max: maxTries, Null: true}
	return c.saved(swOK)
}

// pin finds a PIN: a local one (0x80 set) in the current DF, a global one in the MF.
func (c *Card) pin(ref byte) (string, *pinState, []byte) {
	df := c.curDF
	if ref&0x80 == 0 {
		df = mf
	}
	key := pinKey(df, ref)
	p, ok := c.st.PINs[key]
	if !ok {
		return "", nil, swRefNotFound
	}
	return key, p, nil
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
func (c *Card) wrong(p *pinState, key string) ([]byte, error) {
	p.Tries--
	c.verified[key] = false
	return c.saved([]byte{0x63, 0xC0 | byte(p.Tries)})
}

func (c *Card) verify(cmd command) ([]byte, error) {
	if cmd.p1 != 0x00 {
		return bytes.Clone(swWrongP1P2), nil
	}
	if len(cmd.data) == 0 {
		switch c.st.VerifyQuery {
		case QueryWrongLength:
			return bytes.Clone(swWrongLength), nil
		case QueryRefNotFound:
			return bytes.Clone(swRefNotFound), nil
		}
	}
	key, p, sw := c.pin(cmd.p2)
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if len(cmd.data) == 0 { // status only
		switch {
		case p.Null:
			return bytes.Clone(swConditions), nil
		case p.Tries == 0:
			return bytes.Clone(swBlocked), nil
		case c.verified[key]:
			return bytes.Clone(swOK), nil
		case c.st.VerifyQuery == QuerySpends:
			p.Spent++
			return c.wrong(p, key)
		}
		return []byte{0x63, 0xC0 | byte(p.Tries)}, nil
	}
	p.Presented++
	switch {
	case p.Null:
		return c.saved(swConditions)
	case p.Tries == 0:
		return c.saved(swBlocked)
	case len(cmd.data) != len(p.PIN) || subtle.ConstantTimeCompare(cmd.data, p.PIN) != 1:
		return c.wrong(p, key)
	}
	c.verified[key] = true
	p.Tries = p.Max
	return c.saved(swOK)
}

// changeReferenceData sets a new PIN: P1 01 after a VERIFY (data: the new PIN), P1 00 with the
// old PIN first (data: old ‖ new, split at the stored PIN's length, as TCOS does). A PIN in its
// NullPIN state takes P1 00 with six 00 bytes as the old PIN [V netkey-tool].
func (c *Card) changeReferenceData(cmd command) ([]byte, error) {
	key, p, sw := c.pin(cmd.p2)
	if sw != nil {
		return bytes.Clone(sw), nil
	}
	if cmd.p1 != 0x00 && cmd.p1 != 0x01 {
		return bytes.Clone(swWrongP1P2), nil
	}
	if len(cmd.data) > 0 {
		p.Presented++
	}
	var newPIN []byte
	switch {
	case p.Tries == 0:
		return c.saved(swBlocked)
	case p.Null && cmd.p1 == 0x00 && len(cmd.data) > 6 && bytes.Equal(cmd.data[:6], make([]byte, 6)):
		newPIN = cmd.data[6:]
	case p.Null:
		return c.saved(swConditions)
	case cmd.p1 == 0x01:
		if !c.verified[key] {
			return c.saved(swSecurity)
		}
		newPIN = cmd.data
	default: // P1 00: old ‖ new
		if len(cmd.data) <= len(p.PIN) || subtle.ConstantTimeCompare(cmd.data[:len(p.PIN)], p.PIN) != 1 {
			return c.wrong(p, key)
		}
		newPIN = cmd.data[len(p.PIN):]
	}
	if !validPIN(newPIN) {
		return c.saved(swWrongData)
	}
	clear(p.PIN)
	p.PIN = bytes.Clone(newPIN)
	p.Tries, p.Null = p.Max, false
	return c.saved(swOK)
}
