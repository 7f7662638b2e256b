package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Help texts use one flag style: --name, as the operators type them (the flag package accepts
// -name too). A secret given through the environment (an approval token) is never printed: a
// help text says only that it is set.

// secretValue is a string flag whose value is a secret: its String (what the flag package
// prints as a default, and what a usage error could echo) never shows it.
type secretValue struct{ v *string }

func (s secretValue) String() string { return "" }
func (s secretValue) Set(v string) error {
	*s.v = v
	return nil
}

// secretVar registers a secret flag whose default comes from the environment variable env. The
// value is only read after parsing; the help says whether env is set, never its value.
func secretVar(fs *flag.FlagSet, p *string, name, env, usage string) {
	*p = os.Getenv(env)
	state := "not set"
	if *p != "" {
		state = "set"
	}
	fs.Var(secretValue{p}, name, fmt.Sprintf("%s (default: $%s, %s)", usage, env, state))
}

// printFlags prints fs's flags in the --name style, with their defaults, like
// flag.PrintDefaults.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n      %s", line, strings.ReplaceAll(usage, "\n", "\n      "))
		if _, secret := f.Value.(secretValue); !secret && f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "-1" {
			if name == "" || strings.Contains(f.DefValue, " ") || f.DefValue == "-" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
		}
		fmt.Fprintln(w)
	})
}

// parseFlags parses args with fs, mapping the flag package's outcomes to the CLI's: --help is
// errHelpShown (exit 0, the help was printed), any other parse error errUsage (exit 2, the
// flag package printed what was wrong and the usage).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return errHelpShown
	}
	return errUsage
}

// errHelpShown is --help: the help was printed, exit status 0. It wraps flag.ErrHelp, which
// the flag package returns for the same.
var errHelpShown = fmt.Errorf("help shown: %w", flag.ErrHelp)
