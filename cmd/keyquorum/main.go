// Command keyquorum is the Keyquorum service and its command line.
//
//	keyquorum <command> [subcommand] [flags]
//
// Each command is an entry in the commands table below: a name, a one-line summary and a
// function that parses its own flags with the standard flag package. Adding a command is
// adding an entry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one top-level command of the binary.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is the dispatch table.
var commands = map[string]command{
	"reader": {summary: "examine PIN-pad readers (reader diagnose)", run: runReader},
	"serve":  {summary: "run WebConf, the browser interface of the key ceremonies (HTTPS, client certificates)", run: runServe},

	// Client subcommands: they call a running service's JSON API (cli.go, client.go).
	"status":   {summary: "show the master backup key, the card set, the ceremonies and the HSM's keys", run: runStatus},
	"ceremony": {summary: "start, watch and steer ceremonies (start, watch, state, cancel, retry, resume, answer)", run: runCeremony},
	"backup":   {summary: "download a backup of the HSM, encrypted under the master backup key (backup -o FILE)", run: runBackup},
	"restore":  {summary: "restore a backup into the HSM (restore FILE)", run: runRestore},
	"audit":    {summary: "verify, export or checkpoint the authenticated audit log (audit verify, audit export, audit checkpoint)", run: runAudit},
	"card":     {summary: "show the card in the PIN pad (card info), check one card alone (card check), read a card without a PIN and say which card profile fits it (card survey, card profiles)", run: runCardAll},
	"cluster":  {summary: "cluster nodes (add-node on a node, join on the new one, sync and status to stay in step)", run: runCluster},
	"hsm":      {summary: "the HSM's objects: list them and whether backups carry them, create or import (hsm objects, create, import)", run: runHSM},

	"version": {summary: "print the version and the commit this binary was built from", run: runVersion},
}

// errUsage marks a usage error: the message was printed, exit status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "keyquorum: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil, errors.Is(err, errHelpShown), errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "keyquorum %s: %v\n", args[0], err)
	// An error that knows its exit status (the client subcommands: exitCodesHelp) says it.
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: keyquorum <command> [arguments]\n\ncommands:\n")
	defer fmt.Fprintf(w, "\n'keyquorum COMMAND --help' explains a command, its flags and its exit status.\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
}
