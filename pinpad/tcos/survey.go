package tcos

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/keyquorum/keyquorum/pinpad"
)

// A survey reads a card without a PIN and without changing anything, and says which profile
// fits it or what is missing. Its report is safe to mail to support: it holds no PIN (none is
// ever sent: the survey sends no VERIFY, not even one without data) and no slot data (no slot
// file is read; only EF_GDO, the serial, is read with READ BINARY).

// SurveyReport is what a survey found. Its JSON form is `keyquorum card survey --json`.
type SurveyReport struct {
	ATR string `json:"atr"`
	// ATRForm says which TCOS 3 form the ATR has ("3B BF", "3B 9F"), or "not TCOS 3".
	ATRForm string `json:"atr_form"`
	TCOS    bool   `json:"tcos"`
	// ATRProfiles are the profiles whose ATR patterns match.
	ATRProfiles []string `json:"atr_profiles"`
	Serial      string   `json:"serial,omitempty"`
	SerialError string   `json:"serial_error,omitempty"`
	// Directories are the DF listings (80 AA) of the MF and of each profile's DF.
	Directories []SurveyDir `json:"directories,omitempty"`
	// Files are the FCPs of every file a profile names (SELECT with P2 04).
	Files []SurveyFile `json:"files,omitempty"`
	// PWDD are the EF_PWDD records of the MF and each profile's DF.
	PWDD []SurveyPWDD `json:"pwdd,omitempty"`
	// Preparable says whether the MF's access rules let CREATE FILE (80 E0) run without a key,
	// "unknown" when the MF's FCP carries no rule for it.
	Preparable string `json:"preparable"`
	// Profiles is each profile's fit: what is there and what is missing.
	Profiles []SurveyFit `json:"profiles"`
	// Fits names the profile that fits ("" for none); Verdict says it in a sentence.
	Fits    string `json:"fits"`
	Verdict string `json:"verdict"`
	// Commands counts the APDUs sent (all of them reads).
	Commands int `json:"commands"`
}

// SurveyDir is one LIST DIRECTORY.
type SurveyDir struct {
	Path  string   `json:"path"`
	DFs   []string `json:"dfs,omitempty"`
	EFs   []string `json:"efs,omitempty"`
	Error string   `json:"error,omitempty"`
}

// SurveyFile is one SELECT with its FCP.
type SurveyFile struct {
	Path  string `json:"path"`
	Found bool   `json:"found"`
	// Status is the SELECT's status word when the file was not found or not selectable.
	Status string `json:"status,omitempty"`
	Kind   string `json:"kind,omitempty"` // DF, EF, PIN file, EF_PWDD
	Size   int    `json:"size,omitempty"`
	// Prop is tag 85, Rules tag 86, in hex: file status and access rules, no secrets.
	Prop  string `json:"prop,omitempty"`
	Rules string `json:"rules,omitempty"`
	// Tries is the try counter a PIN file's tag 85 holds (-1: none).
	Tries int    `json:"tries,omitempty"`
	Error string `json:"error,omitempty"`
}

// SurveyPWDD is EF_PWDD of one DF.
type SurveyPWDD struct {
	DF      string      `json:"df"`
	Records []SurveyPIN `json:"records,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// SurveyPIN is one password record: its reference and tries, never its contents.
type SurveyPIN struct {
	Ref   string `json:"ref"`
	Tries int    `json:"tries"`
}

// SurveyFit is how one profile fits the card.
type SurveyFit struct {
	Profile string   `json:"profile"`
	Fits    bool     `json:"fits"`
	Found   []string `json:"found,omitempty"`
	Missing []string `json:"missing,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// readOnly is the transport a survey runs on: it lets through only the commands that read
// (SELECT, READ BINARY of EF_GDO, READ RECORD, GET RESPONSE, LIST DIRECTORY) and counts them.
// Anything else is a bug of the survey and fails instead of reaching the card.
type readOnly struct {
	tr       Transport
	n        int
	gdoOnly  bool // READ BINARY only while EF_GDO is the selected file
	selected []byte
}

var errSurveyWrite = errors.New("survey: refused to send a command that is not a read")

func (r *readOnly) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	if len(apdu) < 4 {
		return nil, errSurveyWrite
	}
	switch cla, ins := apdu[0], apdu[1]; {
	case cla == 0x00 && ins == 0xA4:
		r.selected = append(r.selected[:0], apdu[4:]...)
	case cla == 0x00 && ins == 0xB0:
		// EF_GDO is selected by path 2F02 (and only that file is ever read).
		if len(r.selected) < 3 || r.selected[0] != 0x02 || r.selected[1] != 0x2F || r.selected[2] != 0x02 {
			return nil, errSurveyWrite
		}
	case cla == 0x00 && (ins == 0xB2 || ins == 0xC0):
	case cla == 0x80 && ins == 0xAA:
	default:
		return nil, errSurveyWrite
	}
	r.n++
	return r.tr.Transmit(ctx, apdu)
}

// Survey reads the card behind tr (answer to reset atr) against profiles (the shipped ones
// when nil). It fails only when the card is gone (removed, reader unplugged, ctx ended); a
// card's refusals are findings.
func Survey(ctx context.Context, tr Transport, atr []byte, profiles []*Profile) (*SurveyReport, error) {
	if profiles == nil {
		profiles = Profiles()
	}
	rep := &SurveyReport{ATR: strings.ToUpper(hex.EncodeToString(atr)), TCOS: IsTCOS(atr), Preparable: "unknown"}
	switch {
	case atrTCOS3.Match(atr):
		rep.ATRForm = "3B BF"
	case atrTCOS3NoTB1.Match(atr):
		rep.ATRForm = "3B 9F"
	default:
		rep.ATRForm = "not TCOS 3"
	}
	for _, p := range profiles {
		if p.MatchATR(atr) {
			rep.ATRProfiles = append(rep.ATRProfiles, p.Name)
		}
	}
	if !rep.TCOS {
		rep.Verdict = "not a TCOS 3 card: " + pinpad.ErrNotTCOS.Error()
		for _, p := range profiles {
			rep.Profiles = append(rep.Profiles, SurveyFit{Profile: p.Name, Missing: []string{"a TCOS 3 answer to reset"}})
		}
		return rep, nil
	}
	ro := &readOnly{tr: tr}
	c := &Card{tr: ro, prof: KeyquorumMF(), atr: atr}
	defer func() { rep.Commands = ro.n }()
	hard := func(err error) bool {
		return errors.Is(err, pinpad.ErrCardRemoved) || errors.Is(err, pinpad.ErrReaderGone) || ctx.Err() != nil || errors.Is(err, errSurveyWrite)
	}

	// The serial.
	if err := c.selectMF(ctx); err != nil {
		if hard(err) {
			return nil, err
		}
		rep.SerialError = err.Error()
	} else if gdo, err := c.readFile(ctx, []uint16{FileGDO}, "read serial number"); err != nil {
		if hard(err) {
			return nil, err
		}
		rep.SerialError = err.Error()
	} else if sn, err := ParseGDO(gdo); err != nil {
		rep.SerialError = err.Error()
	} else {
		rep.Serial = strings.ToUpper(hex.EncodeToString(sn))
	}

	// look reads the FCP of a file once (a SELECT, never its contents).
	seen := map[string]*SurveyFile{}
	look := func(path []uint16, kind string) (*SurveyFile, error) {
		key := PathString(path)
		if f, ok := seen[key]; ok {
			return f, nil
		}
		sf := &SurveyFile{Path: key, Tries: -1}
		f, err := c.SelectFCP(ctx, path)
		var se *pinpad.StatusError
		switch {
		case hard(err):
			return nil, err
		case errors.As(err, &se):
			sf.Status = fmt.Sprintf("%04X", se.SW)
		case err != nil:
			sf.Found, sf.Error = true, err.Error()
		default:
			sf.Found, sf.Kind, sf.Size = true, kind, f.Size
			if f.IsDF() {
				sf.Kind = "DF"
			}
			sf.Prop, sf.Rules = strings.ToUpper(hex.EncodeToString(f.Prop)), strings.ToUpper(hex.EncodeToString(f.Rules))
			if n, err := PINFileTries(f); err == nil {
				sf.Kind, sf.Tries = "PIN file", n
			}
		}
		seen[key] = sf
		rep.Files = append(rep.Files, *sf)
		return sf, nil
	}
	// The MF: its access rules for CREATE FILE, its directory and EF_PWDD.
	if f, err := c.SelectFCP(ctx, nil); err == nil {
		rep.Preparable = createRule(f.Rules)
	} else if hard(err) {
		return nil, err
	}
	dfs := [][]uint16{nil}
	for _, p := range profiles {
		if len(p.DF) > 0 && !slices.ContainsFunc(dfs, func(d []uint16) bool { return slices.Equal(d, p.DF) }) {
			dfs = append(dfs, p.DF)
		}
	}
	for _, df := range dfs {
		d, err := c.listDir(ctx, df)
		if hard(err) {
			return nil, err
		}
		rep.Directories = append(rep.Directories, d)
		for _, fid := range append(slices.Clone(d.DFs), d.EFs...) {
			v, err := strconv.ParseUint(fid, 16, 16)
			if err != nil {
				continue
			}
			kind := "EF"
			if slices.Contains(d.DFs, fid) {
				kind = "DF"
			}
			if _, err := look(append(slices.Clone(df), uint16(v)), kind); err != nil {
				return nil, err
			}
		}
		pw := SurveyPWDD{DF: PathString(df)}
		recs, err := c.ReadPWDD(ctx, df)
		switch {
		case hard(err):
			return nil, err
		case err != nil:
			pw.Error = err.Error()
		}
		for _, r := range recs {
			pw.Records = append(pw.Records, SurveyPIN{Ref: fmt.Sprintf("%02X", r.Ref), Tries: r.Tries})
		}
		rep.PWDD = append(rep.PWDD, pw)
	}

	for _, p := range profiles {
		fit := SurveyFit{Profile: p.Name}
		if !slices.Contains(rep.ATRProfiles, p.Name) {
			fit.Missing = append(fit.Missing, "an answer to reset the profile lists")
		}
		if len(p.DF) > 0 {
			f, err := look(p.DF, "DF")
			if err != nil {
				return nil, err
			}
			if f.Found && f.Kind == "DF" {
				fit.Found = append(fit.Found, "DF "+f.Path)
			} else {
				fit.Missing = append(fit.Missing, "DF "+f.Path)
			}
		}
		var unseen []string
		var pw *SurveyPWDD
		for i := range rep.PWDD {
			if rep.PWDD[i].DF == p.DFPath() {
				pw = &rep.PWDD[i]
			}
		}
		for _, s := range []struct {
			name string
			spec SlotSpec
		}{{"share", p.Share}, {"slot user", p.User}} {
			f, err := look(append(slices.Clone(p.DF), s.spec.File), "EF")
			if err != nil {
				return nil, err
			}
			switch {
			case !f.Found || f.Kind != "EF":
				fit.Missing = append(fit.Missing, fmt.Sprintf("%s file %s", s.name, f.Path))
			case f.Size < 3:
				fit.Missing = append(fit.Missing, fmt.Sprintf("%s file %s of %d bytes (too small)", s.name, f.Path, f.Size))
			default:
				fit.Found = append(fit.Found, fmt.Sprintf("%s file %s (%d bytes)", s.name, f.Path, f.Size))
				if f.Size != s.spec.Size {
					fit.Notes = append(fit.Notes, fmt.Sprintf("%s file holds %d bytes, the profile says %d", s.name, f.Size, s.spec.Size))
				}
			}
			// The PIN: in EF_PWDD, or in its PIN file.
			pin := fmt.Sprintf("%s PIN %02X", s.name, s.spec.PINRef)
			known := false
			if pw != nil {
				for _, r := range pw.Records {
					if r.Ref == fmt.Sprintf("%02X", s.spec.PINRef) {
						known = true
						fit.Found = append(fit.Found, fmt.Sprintf("%s in EF_PWDD (%d tries left)", pin, r.Tries))
					}
				}
			}
			if !known && s.spec.PINFile != 0 {
				pf, err := look(append(slices.Clone(p.DF), s.spec.PINFile), "PIN file")
				if err != nil {
					return nil, err
				}
				if pf.Found && pf.Tries >= 0 {
					known = true
					fit.Found = append(fit.Found, fmt.Sprintf("%s in PIN file %s (%d tries left)", pin, pf.Path, pf.Tries))
				}
			}
			// A PIN the card does not list may still be there: only a VERIFY would tell, and
			// the survey sends none. The ceremony then says "tries unknown".
			if !known {
				unseen = append(unseen, pin+" not seen (no EF_PWDD record or PIN file names it): its tries will be unknown")
			}
		}
		fit.Fits = len(fit.Missing) == 0
		if fit.Fits { // on a card that lacks the files, unseen PINs say nothing more
			fit.Notes = append(fit.Notes, unseen...)
		}
		if fit.Fits && rep.Fits == "" {
			rep.Fits = p.Name
		}
		rep.Profiles = append(rep.Profiles, fit)
	}
	rep.Verdict = verdict(rep)
	return rep, nil
}

// createRule reads the MF's access rule for CREATE FILE (INS E0): "yes" when no PIN or key is
// needed, "no: …" naming what is, "unknown" without a rule [I: rule layout from
// cyberflex-shell tcos_card.py: INS, password mask, global key mask, local key mask, SM].
func createRule(rules []byte) string {
	for ; len(rules) >= 6; rules = rules[6:] {
		if rules[0]&^0x01 != 0xE0 {
			continue
		}
		if rules[1] == 0 && rules[2] == 0 && rules[3] == 0 {
			return "yes"
		}
		return fmt.Sprintf("no: CREATE FILE needs PIN mask %02X, global key mask %02X, local key mask %02X", rules[1], rules[2], rules[3])
	}
	return "unknown"
}

func verdict(rep *SurveyReport) string {
	if rep.Fits != "" {
		return fmt.Sprintf("the card fits profile %s: use keyquorum serve --card-profile %s", rep.Fits, rep.Fits)
	}
	var b strings.Builder
	b.WriteString("no profile fits")
	for _, f := range rep.Profiles {
		fmt.Fprintf(&b, "; %s lacks %s", f.Profile, strings.Join(f.Missing, ", "))
	}
	switch {
	case strings.HasPrefix(rep.Preparable, "yes"):
		b.WriteString(". The card lets files be created without a key: Prepare cards can lay out a profile on it")
	case strings.HasPrefix(rep.Preparable, "no"):
		b.WriteString(". The card does not let files be created without the issuer's key (" + rep.Preparable + "): order cards personalised for a profile (send the issuer its profile file) instead")
	default:
		b.WriteString(". Whether the card lets files be created is unknown (the MF's FCP has no rule for it)")
	}
	return b.String()
}

// listDir lists the DFs and EFs of a DF with TCOS's LIST DIRECTORY (80 AA 01/02) [V OpenSC
// tcos_list_files].
func (c *Card) listDir(ctx context.Context, df []uint16) (SurveyDir, error) {
	d := SurveyDir{Path: PathString(df)}
	var sw uint16
	var err error
	if len(df) == 0 {
		_, sw, err = c.transmit(ctx, []byte{0x00, 0xA4, 0x00, 0x0C})
	} else {
		_, sw, err = c.transmit(ctx, selectPathAPDU(df, false))
	}
	if err != nil {
		return d, err
	}
	if sw != swOK {
		d.Error = fmt.Sprintf("select: status %04X", sw)
		return d, nil
	}
	for _, p1 := range []byte{0x01, 0x02} {
		data, sw, err := c.transmit(ctx, []byte{0x80, 0xAA, p1, 0x00, 0x00})
		if err != nil {
			return d, err
		}
		if sw == swFileNotFound || sw == 0x6A88 {
			continue
		}
		if sw != swOK || len(data)%2 != 0 {
			d.Error = fmt.Sprintf("list directory %02X: status %04X", p1, sw)
			continue
		}
		for i := 0; i+1 < len(data); i += 2 {
			fid := fmt.Sprintf("%02X%02X", data[i], data[i+1])
			if p1 == 0x01 {
				d.DFs = append(d.DFs, fid)
			} else {
				d.EFs = append(d.EFs, fid)
			}
		}
	}
	return d, nil
}

// WriteText prints the report for people, in the order it was found.
func (rep *SurveyReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "ATR: %s (%s)\n", rep.ATR, rep.ATRForm)
	fmt.Fprintf(w, "  profiles listing this ATR: %s\n", orNone(rep.ATRProfiles))
	if rep.Serial != "" {
		fmt.Fprintf(w, "serial (EF_GDO): %s\n", rep.Serial)
	} else if rep.SerialError != "" {
		fmt.Fprintf(w, "serial (EF_GDO): %s\n", rep.SerialError)
	}
	for _, d := range rep.Directories {
		fmt.Fprintf(w, "directory %s: DFs %s, EFs %s", d.Path, orNone(d.DFs), orNone(d.EFs))
		if d.Error != "" {
			fmt.Fprintf(w, " (%s)", d.Error)
		}
		fmt.Fprintln(w)
	}
	for _, p := range rep.PWDD {
		fmt.Fprintf(w, "EF_PWDD of %s:", p.DF)
		if p.Error != "" {
			fmt.Fprintf(w, " %s", p.Error)
		}
		for _, r := range p.Records {
			fmt.Fprintf(w, " PIN %s %d tries;", r.Ref, r.Tries)
		}
		fmt.Fprintln(w)
	}
	for _, f := range rep.Files {
		switch {
		case !f.Found && f.Status != "":
			fmt.Fprintf(w, "file %s: not there (status %s)\n", f.Path, f.Status)
		case f.Error != "":
			fmt.Fprintf(w, "file %s: %s\n", f.Path, f.Error)
		default:
			fmt.Fprintf(w, "file %s: %s", f.Path, f.Kind)
			if f.Size >= 0 && f.Kind == "EF" {
				fmt.Fprintf(w, ", %d bytes", f.Size)
			}
			if f.Prop != "" {
				fmt.Fprintf(w, ", status %s", f.Prop)
			}
			if f.Rules != "" {
				fmt.Fprintf(w, ", access rules %s", f.Rules)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "CREATE FILE without a key: %s\n", rep.Preparable)
	for _, f := range rep.Profiles {
		mark := "does not fit"
		if f.Fits {
			mark = "fits"
		}
		fmt.Fprintf(w, "profile %s: %s\n", f.Profile, mark)
		for _, s := range f.Found {
			fmt.Fprintf(w, "  found   %s\n", s)
		}
		for _, s := range f.Missing {
			fmt.Fprintf(w, "  missing %s\n", s)
		}
		for _, s := range f.Notes {
			fmt.Fprintf(w, "  note    %s\n", s)
		}
	}
	fmt.Fprintf(w, "verdict: %s\n", rep.Verdict)
	fmt.Fprintf(w, "(%d commands sent, all reads; no PIN was asked for and no slot was read)\n", rep.Commands)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}
