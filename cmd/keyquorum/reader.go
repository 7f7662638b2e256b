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

const readerUsage = `usage: keyquorum reader <subcommand> [flags]

Examines the PIN-pad reader this appliance talks to through PC/SC (pcscd), without a running
service: for setting up a reader and for field support.

subcommands:
  keyquorum reader diagnose [flags]   report the reader's features, the card in it and the exact
                                      bytes of every exchange

'keyquorum reader diagnose --help' shows its flags.

` + readerExitHelp

const readerDiagnoseUsage = `usage: keyquorum reader diagnose [flags]

Writes a report for field support of the PIN-pad reader to stdout: the reader's name, its PC/SC
features (PIN verification and modification on the pad, display), the card in it, with the exact
bytes of every exchange. With --verify it also has a PIN typed on the pad and verified: the PIN
never reaches this program, but a wrong one spends one of the card's tries.

flags:
`

const readerExitHelp = `exit status:
  0  done: the report was written
  1  the reader could not be examined (no pcscd, no such reader, the card refused); the
     report says how far it got
  2  usage error: nothing was done
`

// runReader is "keyquorum reader diagnose": a report for field support of the PIN-pad reader,
// with the exact bytes of every exchange (the PIN is typed on the pad and never seen here).
func runReader(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, readerUsage)
		return errUsage
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stderr, readerUsage)
		return errHelpShown
	case args[0] != "diagnose":
		fmt.Fprintf(stderr, "keyquorum reader: unknown subcommand %q ('keyquorum reader --help' lists them)\n", args[0])
		return errUsage
	}
	fs := flag.NewFlagSet("reader diagnose", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reader := fs.String("reader", pcsc.DefaultReader, "reader `name` or name prefix")
	verify := fs.Bool("verify", false, "also verify a PIN typed on the pad (a wrong PIN spends a try)")
	slot := fs.String("slot", "share", "`slot` whose PIN to check: share or user")
	timeout := fs.Duration("timeout", 90*time.Second, "PIN entry `timeout` on the pad")
	profile := fs.String("profile", tcos.DefaultProfile, "card `profile` to read the card with: a shipped name or a profile file")
	fs.Usage = func() {
		fmt.Fprint(stderr, readerDiagnoseUsage)
		printFlags(stderr, fs)
		fmt.Fprint(stderr, "\n"+readerExitHelp)
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "keyquorum reader diagnose: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	var s pinpad.Slot
	switch *slot {
	case "share":
		s = pinpad.SlotShare
	case "user":
		s = pinpad.SlotUser
	default:
		fmt.Fprintf(stderr, "keyquorum reader diagnose: --slot must be share or user\n")
		return errUsage
	}
	p, err := tcos.LoadProfile(*profile)
	if err != nil {
		fmt.Fprintf(stderr, "reader diagnose: -profile: %v\n", err)
		return errUsage
	}
	return pcsc.Diagnose(ctx, stdout, pcsc.DiagnoseOptions{Reader: *reader, VerifyPIN: *verify, Slot: s, Timeout: *timeout, Profile: p})
}
