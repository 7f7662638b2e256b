package tcos

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/keyquorum/keyquorum/pinpad"
)

// TriesSource is one way of reading how many tries a PIN has left.
type TriesSource string

const (
	// TriesPWDD reads the records of EF_PWDD (5049) in the PIN's DF: a record A0 { 83 01 ref,
	// …, 90 … } whose tag 90 ends with the tries left. This is how OpenSC's pkcs15-tcos.c reads
	// TCOS 3 try counters [V]. It spends no try: it is a SELECT and READ RECORDs.
	TriesPWDD TriesSource = "pwdd"
	// TriesFCP reads the FCP of the PIN's own file (a SELECT with P2 04): tag 85 holds
	// 01 80 ref tries max, as netkey-tool reads TCOS 2 NetKey PIN files [V]. It spends no try.
	TriesFCP TriesSource = "fcp"
	// TriesVerify sends VERIFY 00 20 00 ref without data: ISO 7816-4 says the answer 63 Cx
	// counts nothing, but no public source says so for TCOS 3 [U]. A profile may use it only
	// when it declares the query safe ([Profile.VerifyQuerySafe]).
	TriesVerify TriesSource = "verify"
)

// SlotSpec is where one data slot lives in a profile.
type SlotSpec struct {
	// File is the slot's transparent EF in the profile's DF.
	File uint16
	// Size is the EF's size: a 2-byte length prefix and up to Size-2 bytes of data.
	Size int
	// PINRef is the reference of the PIN whose VERIFY opens READ and UPDATE of File: a local
	// PIN (0x80|n) of the DF, or a global one (00..0F).
	PINRef byte
	// PINFile is the PIN's own file in the DF (TCOS 2 NetKey: 5080, 5081), 0 when the card keeps
	// its PINs in EF_PWDD only. [TriesFCP] needs it.
	PINFile uint16
}

// ATRPattern matches an answer to reset: every bit set in Mask must equal Value's.
type ATRPattern struct {
	Value, Mask []byte
	// Note says where the pattern comes from.
	Note string
}

// Match reports whether atr fits the pattern.
func (p ATRPattern) Match(atr []byte) bool {
	if len(atr) != len(p.Value) {
		return false
	}
	for i, b := range atr {
		if b&p.Mask[i] != p.Value[i]&p.Mask[i] {
			return false
		}
	}
	return true
}

// Profile is a card layout: which DF holds Keyquorum's two data slots, each slot's EF, size and
// PIN, how PIN tries are read, and which answers to reset the layout is meant for. Shipped
// profiles are [Profiles]; an integrator can write one as a JSON file ([ParseProfile]).
type Profile struct {
	// Name identifies the profile (lower case letters, digits, '-').
	Name string
	// Description says what cards it is for, in a sentence.
	Description string
	// DF is the path from the MF to the DF holding the slots and their local PINs; empty for
	// the MF itself.
	DF []uint16
	// Share and User are the two slots.
	Share, User SlotSpec
	// Tries lists the ways to read a PIN's tries, in order; the first the card answers wins.
	// When none does, PINTries reports [pinpad.ErrTriesUnknown].
	Tries []TriesSource
	// VerifyQuerySafe declares that a VERIFY without data spends no try on these cards. Only
	// then may Tries list [TriesVerify].
	VerifyQuerySafe bool
	// MaxTries is the PIN's retry counter when full (3 on delivered cards [I]).
	MaxTries int
	// ATRs are the answers to reset of cards this profile is for.
	ATRs []ATRPattern
	// Source names what the layout rests on (a public source, or "own choice").
	Source string
}

// Slot returns the spec of a slot.
func (p *Profile) Slot(s pinpad.Slot) (SlotSpec, error) {
	switch s {
	case pinpad.SlotShare:
		return p.Share, nil
	case pinpad.SlotUser:
		return p.User, nil
	}
	return SlotSpec{}, fmt.Errorf("select slot: unknown %v", s)
}

// MatchATR reports whether the profile is meant for a card with this answer to reset.
func (p *Profile) MatchATR(atr []byte) bool {
	return slices.ContainsFunc(p.ATRs, func(a ATRPattern) bool { return a.Match(atr) })
}

// DFPath is the DF as a path string, "3F00/DF01" ("3F00" for the MF).
func (p *Profile) DFPath() string { return PathString(p.DF) }

// PathString prints a path below the MF as "3F00/DF01/4B01".
func PathString(path []uint16) string {
	var b strings.Builder
	b.WriteString("3F00")
	for _, f := range path {
		fmt.Fprintf(&b, "/%04X", f)
	}
	return b.String()
}

// TCOS 3 answers to reset. OpenSC's card-tcos.c lists three, all starting 3B BF [V]; a card
// whose ATR leaves out the (deprecated) interface byte TB1 starts 3B 9F and is one byte
// shorter, the historical bytes unchanged [I: ISO 7816-3 T0 coding; no public list shows one].
var (
	atrTCOS3 = ATRPattern{
		Value: mustHex("3B BF 00 00 81 31 FE 5D 00 64 00 00 00 00 31 C0 73 F7 01 D0 00 90 00 00"),
		Mask:  mustHex("FF FF 00 FF FF FF FF FF FF FF 00 00 00 00 FF FF FF FF FF FF FF FF FF 00"),
		Note:  "TCOS 3.0, OpenSC card-tcos.c (3B BF …)",
	}
	atrTCOS3NoTB1 = ATRPattern{
		Value: mustHex("3B 9F 00 81 31 FE 5D 00 64 00 00 00 00 31 C0 73 F7 01 D0 00 90 00 00"),
		Mask:  mustHex("FF FF 00 FF FF FF FF FF FF 00 00 00 00 FF FF FF FF FF FF FF FF FF 00"),
		Note:  "TCOS 3.0 without TB1 (3B 9F …) [I]",
	}
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// The system files of a TCOS 3 DF the profiles rely on.
const (
	// FilePWDD is EF_PWDD, the password records of a DF [V pkcs15-tcos.c].
	FilePWDD uint16 = 0x5049
	// FileDF01 is the DF of the NetKey application as netkey-tool selects it [V].
	FileDF01 uint16 = 0xDF01
)

// KeyquorumMF is the layout Keyquorum has used from the start: both slots in the MF behind
// local PINs 0x81 and 0x82 [U: our own choice; no delivered card is known to carry it].
func KeyquorumMF() *Profile {
	return &Profile{
		Name:        "keyquorum-mf",
		Description: "Keyquorum's own layout: EF 3F00/4B01 (share) and 3F00/4B02 (slot user) behind local PINs 81 and 82 of the MF",
		Share:       SlotSpec{File: FileShare, Size: SlotFileSize, PINRef: PINRefShare},
		User:        SlotSpec{File: FileUser, Size: SlotFileSize, PINRef: PINRefUser},
		Tries:       []TriesSource{TriesPWDD},
		MaxTries:    MaxTries,
		ATRs:        []ATRPattern{atrTCOS3, atrTCOS3NoTB1},
		Source:      "own choice [U]; tries from EF_PWDD as OpenSC pkcs15-tcos.c reads TCOS 3 [V]",
	}
}

// NetKeyDF01 keeps the slots in DF01 behind the DF's local PINs, the shape OpenSC's
// pkcs15-tcos.c and netkey-tool describe for NetKey cards: local PIN1 (0x81, PIN file 5081)
// opens the share slot, local PIN2 (0x83, TCOS 3 NetKey PIN2) the slot user. Tries come from
// DF01's EF_PWDD (TCOS 3), else from the PIN file's FCP tag 85 (TCOS 2 style) [V both].
func NetKeyDF01() *Profile {
	return &Profile{
		Name:        "netkey-df01",
		Description: "NetKey-shaped: EF 3F00/DF01/4B01 (share) behind DF01's local PIN 81 and 3F00/DF01/4B02 (slot user) behind local PIN 83",
		DF:          []uint16{FileDF01},
		Share:       SlotSpec{File: FileShare, Size: SlotFileSize, PINRef: 0x81, PINFile: 0x5081},
		User:        SlotSpec{File: FileUser, Size: SlotFileSize, PINRef: 0x83, PINFile: 0x5083},
		Tries:       []TriesSource{TriesPWDD, TriesFCP},
		MaxTries:    MaxTries,
		ATRs:        []ATRPattern{atrTCOS3, atrTCOS3NoTB1},
		Source:      "DF01 and local PINs 81/83 as in OpenSC pkcs15-tcos.c and netkey-tool [V]; slot files 4B01/4B02 our choice [U]",
	}
}

// DefaultProfile is the profile used when none is chosen.
const DefaultProfile = "keyquorum-mf"

// Profiles are the shipped profiles, the default first.
func Profiles() []*Profile { return []*Profile{KeyquorumMF(), NetKeyDF01()} }

// LookupProfile returns a shipped profile by name.
func LookupProfile(name string) (*Profile, bool) {
	for _, p := range Profiles() {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// ErrBadProfile is a profile file that cannot be used; the wrapping error says why.
var ErrBadProfile = errors.New("bad card profile")

// profileFile is the JSON form of a profile. Numbers that are card bytes are hex strings, as
// card tools print them.
type profileFile struct {
	Name            string          `json:"name"`
	Description     string          `json:"description"`
	DF              string          `json:"df"`
	Share           *slotFile       `json:"share"`
	User            *slotFile       `json:"user"`
	Tries           []TriesSource   `json:"tries"`
	VerifyQuerySafe bool            `json:"verify_query_safe,omitempty"`
	MaxTries        int             `json:"max_tries,omitempty"`
	ATRs            []atrPatternDoc `json:"atrs"`
	Source          string          `json:"source,omitempty"`
}

type slotFile struct {
	File    string `json:"file"`
	Size    int    `json:"size"`
	PIN     string `json:"pin"`
	PINFile string `json:"pin_file,omitempty"`
}

type atrPatternDoc struct {
	Value string `json:"value"`
	Mask  string `json:"mask,omitempty"`
	Note  string `json:"note,omitempty"`
}

// MarshalJSON writes the profile in the file form ParseProfile reads.
func (p *Profile) MarshalJSON() ([]byte, error) {
	f := profileFile{Name: p.Name, Description: p.Description, DF: p.DFPath(), Tries: p.Tries,
		VerifyQuerySafe: p.VerifyQuerySafe, MaxTries: p.MaxTries, Source: p.Source}
	slot := func(s SlotSpec) *slotFile {
		out := &slotFile{File: fmt.Sprintf("%04X", s.File), Size: s.Size, PIN: fmt.Sprintf("%02X", s.PINRef)}
		if s.PINFile != 0 {
			out.PINFile = fmt.Sprintf("%04X", s.PINFile)
		}
		return out
	}
	f.Share, f.User = slot(p.Share), slot(p.User)
	for _, a := range p.ATRs {
		f.ATRs = append(f.ATRs, atrPatternDoc{Value: strings.ToUpper(hex.EncodeToString(a.Value)), Mask: strings.ToUpper(hex.EncodeToString(a.Mask)), Note: a.Note})
	}
	return json.Marshal(f)
}

var profileName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// ParseProfile reads and validates a profile file. Every error wraps [ErrBadProfile] and names
// the field at fault.
func ParseProfile(b []byte) (*Profile, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadProfile, fmt.Sprintf(format, a...))
	}
	var f profileFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, bad("not a profile file: %v", err)
	}
	if dec.More() {
		return nil, bad("more than one JSON value")
	}
	p := &Profile{Name: f.Name, Description: f.Description, Tries: f.Tries, VerifyQuerySafe: f.VerifyQuerySafe, MaxTries: f.MaxTries, Source: f.Source}
	if !profileName.MatchString(f.Name) {
		return nil, bad("name %q: use 1 to 40 lower-case letters, digits and '-'", f.Name)
	}
	if _, ok := LookupProfile(f.Name); ok {
		return nil, bad("name %q is a shipped profile's: choose another", f.Name)
	}
	df, err := ParsePath(f.DF)
	if err != nil {
		return nil, bad("df: %v", err)
	}
	p.DF = df
	for _, s := range []struct {
		name string
		in   *slotFile
		out  *SlotSpec
	}{{"share", f.Share, &p.Share}, {"user", f.User, &p.User}} {
		if s.in == nil {
			return nil, bad("%s: missing", s.name)
		}
		fid, err := parseFID(s.in.File)
		if err != nil {
			return nil, bad("%s.file: %v", s.name, err)
		}
		if reservedFID(fid) {
			return nil, bad("%s.file %04X is a TCOS system file", s.name, fid)
		}
		if s.in.Size < 3 || s.in.Size > maxFileSize {
			return nil, bad("%s.size %d: want 3 to %d bytes", s.name, s.in.Size, maxFileSize)
		}
		ref, err := strconv.ParseUint(s.in.PIN, 16, 8)
		if err != nil || len(s.in.PIN) != 2 {
			return nil, bad("%s.pin %q: want a PIN reference as two hex digits (81 = local PIN 1)", s.name, s.in.PIN)
		}
		if r := byte(ref); r > 0x0F && (r < 0x81 || r > 0x8F) {
			return nil, bad("%s.pin %02X: want a global PIN 00..0F or a local PIN 81..8F", s.name, r)
		}
		*s.out = SlotSpec{File: fid, Size: s.in.Size, PINRef: byte(ref)}
		if s.in.PINFile != "" {
			pf, err := parseFID(s.in.PINFile)
			if err != nil {
				return nil, bad("%s.pin_file: %v", s.name, err)
			}
			s.out.PINFile = pf
		}
	}
	if p.Share.File == p.User.File {
		return nil, bad("share and user use the same file %04X", p.Share.File)
	}
	if p.Share.PINRef == p.User.PINRef {
		return nil, bad("share and user use the same PIN %02X: each slot needs its own", p.Share.PINRef)
	}
	if slices.Contains(p.DF, p.Share.File) || slices.Contains(p.DF, p.User.File) {
		return nil, bad("a slot file is also a DF of the path")
	}
	if len(p.Tries) == 0 {
		return nil, bad("tries: list at least one of pwdd, fcp, verify")
	}
	for i, t := range p.Tries {
		switch t {
		case TriesPWDD:
		case TriesFCP:
			if p.Share.PINFile == 0 || p.User.PINFile == 0 {
				return nil, bad("tries: fcp needs share.pin_file and user.pin_file")
			}
		case TriesVerify:
			if !p.VerifyQuerySafe {
				return nil, bad("tries: verify spends a try on some cards; list it only with \"verify_query_safe\": true, once checked on your cards")
			}
		default:
			return nil, bad("tries[%d] %q: want pwdd, fcp or verify", i, t)
		}
		if slices.Index(p.Tries, t) != i {
			return nil, bad("tries: %q listed twice", t)
		}
	}
	if p.MaxTries == 0 {
		p.MaxTries = MaxTries
	}
	if p.MaxTries < 1 || p.MaxTries > 15 {
		return nil, bad("max_tries %d: want 1 to 15", p.MaxTries)
	}
	if len(f.ATRs) == 0 {
		return nil, bad("atrs: list at least one answer to reset")
	}
	for i, a := range f.ATRs {
		v, err := hex.DecodeString(strings.ReplaceAll(a.Value, " ", ""))
		if err != nil || len(v) < 2 || len(v) > 33 {
			return nil, bad("atrs[%d].value: want 2 to 33 bytes in hex", i)
		}
		if v[0] != 0x3B && v[0] != 0x3F {
			return nil, bad("atrs[%d].value: an answer to reset starts 3B or 3F", i)
		}
		m := bytes.Repeat([]byte{0xFF}, len(v))
		if a.Mask != "" {
			m, err = hex.DecodeString(strings.ReplaceAll(a.Mask, " ", ""))
			if err != nil || len(m) != len(v) {
				return nil, bad("atrs[%d].mask: want %d bytes in hex, as long as the value", i, len(v))
			}
		}
		pat := ATRPattern{Value: v, Mask: m, Note: a.Note}
		if !IsTCOS(maskedExample(pat)) {
			return nil, bad("atrs[%d]: %s is not a TCOS 3 answer to reset", i, a.Value)
		}
		p.ATRs = append(p.ATRs, pat)
	}
	return p, nil
}

// maskedExample is the ATR the pattern matches with every free bit zero.
func maskedExample(p ATRPattern) []byte {
	out := make([]byte, len(p.Value))
	for i := range out {
		out[i] = p.Value[i] & p.Mask[i]
	}
	return out
}

// LoadProfile returns the shipped profile of this name, or reads a profile file when arg is a
// path (contains a '/' or ends ".json").
func LoadProfile(arg string) (*Profile, error) {
	if arg == "" {
		arg = DefaultProfile
	}
	if p, ok := LookupProfile(arg); ok {
		return p, nil
	}
	if !strings.ContainsRune(arg, '/') && !strings.HasSuffix(arg, ".json") {
		var names []string
		for _, p := range Profiles() {
			names = append(names, p.Name)
		}
		return nil, fmt.Errorf("%w: no shipped profile %q (shipped: %s; or give a profile file's path)", ErrBadProfile, arg, strings.Join(names, ", "))
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return nil, fmt.Errorf("read card profile: %w", err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", arg, err)
	}
	return p, nil
}

// ParsePath reads "3F00/DF01" (or "DF01", or "" / "3F00" for the MF) into the FIDs below the MF.
func ParsePath(s string) ([]uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	if strings.EqualFold(parts[0], "3F00") {
		parts = parts[1:]
	}
	if len(parts) > 4 {
		return nil, fmt.Errorf("path %q is deeper than 4 DFs", s)
	}
	var out []uint16
	for _, p := range parts {
		fid, err := parseFID(p)
		if err != nil {
			return nil, fmt.Errorf("path %q: %v", s, err)
		}
		if reservedFID(fid) {
			return nil, fmt.Errorf("path %q: %04X cannot be a DF", s, fid)
		}
		out = append(out, fid)
	}
	return out, nil
}

func parseFID(s string) (uint16, error) {
	if len(s) != 4 {
		return 0, fmt.Errorf("%q: want a file ID as four hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		return 0, fmt.Errorf("%q: want a file ID as four hex digits", s)
	}
	fid := uint16(v)
	if fid == 0x3F00 || fid == 0x3FFF || fid == 0xFFFF || fid == 0x0000 {
		return 0, fmt.Errorf("%04X is reserved (ISO 7816-4)", fid)
	}
	return fid, nil
}

// reservedFID names the TCOS system files a profile must not use for slots.
func reservedFID(fid uint16) bool {
	switch fid {
	case FileGDO, FilePWDD, 0x5349, 0x5000, 0x5001:
		return true
	}
	return false
}
