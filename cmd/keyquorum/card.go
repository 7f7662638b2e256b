package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/keyquorum/keyquorum/pinpad/pcsc"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

const cardUsage = `usage: keyquorum card survey [-reader PREFIX] [-profile NAME|FILE]... [-json]
       keyquorum card profiles [-json]

survey reads the card in the PIN-pad reader without a PIN and without changing anything: its
ATR, serial, directories, file control parameters and PIN try records, and says which card
profile fits it or what is missing. No PIN is asked for and no slot is read, so the report can
be mailed to support. profiles lists the shipped card profiles (-json: as profile files, a
start for writing your own).
`

// runCardAll adds the local "card survey" and "card profiles" (they talk to the reader
// directly, like "reader diagnose") to the server's "card info" and "card check".
func runCardAll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "survey" || args[0] == "profiles") {
		return runCardLocal(ctx, args, stdout, stderr)
	}
	err := runCard(ctx, args, stdout, stderr)
	if len(args) == 0 {
		fmt.Fprint(stderr, "\n"+cardUsage)
	}
	return err
}

// runCardLocal is "keyquorum card survey" and "keyquorum card profiles".
func runCardLocal(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "survey":
		return runCardSurvey(ctx, args[1:], stdout, stderr)
	case "profiles":
		fs := flag.NewFlagSet("card profiles", flag.ContinueOnError)
		fs.SetOutput(stderr)
		asJSON := fs.Bool("json", false, "print the profiles as profile files (JSON)")
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage
		}
		if fs.NArg() != 0 {
			fmt.Fprintf(stderr, "card profiles: unexpected argument %q\n", fs.Arg(0))
			return errUsage
		}
		return printProfiles(stdout, tcos.Profiles(), *asJSON)
	}
	fmt.Fprint(stderr, cardUsage)
	return errUsage
}

func printProfiles(w io.Writer, ps []*tcos.Profile, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(ps)
	}
	for _, p := range ps {
		fmt.Fprintf(w, "%s: %s\n", p.Name, p.Description)
		fmt.Fprintf(w, "  DF %s; share %s/%04X (%d bytes, PIN %02X); slot user %s/%04X (%d bytes, PIN %02X)\n",
			p.DFPath(), p.DFPath(), p.Share.File, p.Share.Size, p.Share.PINRef, p.DFPath(), p.User.File, p.User.Size, p.User.PINRef)
		var tries []string
		for _, t := range p.Tries {
			tries = append(tries, string(t))
		}
		fmt.Fprintf(w, "  PIN tries from: %s; source: %s\n", strings.Join(tries, ", "), p.Source)
	}
	return nil
}

type profileList []*tcos.Profile

func (l *profileList) String() string { return "" }
func (l *profileList) Set(s string) error {
	p, err := tcos.LoadProfile(s)
	if err != nil {
		return err
	}
	*l = append(*l, p)
	return nil
}

func runCardSurvey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("card survey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reader := fs.String("reader", pcsc.DefaultReader, "reader name or name prefix")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var profiles profileList
	fs.Var(&profiles, "profile", "a card profile to check the card against, a shipped name or a profile file; repeat for more (default: every shipped profile)")
	if err := fs.Parse(args); err != nil {
		return errUsage // the flag package printed what was wrong
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "card survey: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	var ps []*tcos.Profile
	if len(profiles) > 0 {
		ps = profiles
	}
	rep, err := pcsc.Survey(ctx, *reader, ps)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.WriteText(stdout)
	return nil
}
