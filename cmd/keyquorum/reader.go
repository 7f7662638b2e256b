package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/pcsc"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// runReader is "keyquorum reader diagnose": a report for field support of the PIN-pad reader,
// with the exact bytes of every exchange (the PIN is typed on the pad and never seen here).
func runReader(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "diagnose" {
		fmt.Fprintf(stderr, "usage: keyquorum reader diagnose [-reader PREFIX] [-profile NAME|FILE] [-verify] [-slot share|user] [-timeout 90s]\n")
		return errUsage
	}
	fs := flag.NewFlagSet("reader diagnose", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reader := fs.String("reader", pcsc.DefaultReader, "reader name or name prefix")
	verify := fs.Bool("verify", false, "also verify a PIN typed on the pad (a wrong PIN spends a try)")
	slot := fs.String("slot", "share", "slot whose PIN to check: share or user")
	timeout := fs.Duration("timeout", 90*time.Second, "PIN entry timeout on the pad")
	profile := fs.String("profile", tcos.DefaultProfile, "card profile to read the card with: a shipped name or a profile file")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage // the flag package printed what was wrong
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "reader diagnose: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	var s pinpad.Slot
	switch *slot {
	case "share":
		s = pinpad.SlotShare
	case "user":
		s = pinpad.SlotUser
	default:
		fmt.Fprintf(stderr, "reader diagnose: -slot must be share or user\n")
		return errUsage
	}
	p, err := tcos.LoadProfile(*profile)
	if err != nil {
		fmt.Fprintf(stderr, "reader diagnose: -profile: %v\n", err)
		return errUsage
	}
	return pcsc.Diagnose(ctx, stdout, pcsc.DiagnoseOptions{Reader: *reader, VerifyPIN: *verify, Slot: s, Timeout: *timeout, Profile: p})
}
