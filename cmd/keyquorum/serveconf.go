package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
)

// A serve configuration file holds serve's flags, one per line, so that a system service can be
// configured without editing its unit (/etc/keyquorum/keyquorum.conf in the Debian package):
//
//	# comment
//	listen = 0.0.0.0:8443
//	host = kq1.example.org
//	host = kq1            (a repeatable flag is repeated)
//	v = true
//
// Every serve flag may appear, by its name without dashes. A flag given on the command line
// wins over the file (the whole flag: a --host on the command line replaces every host line).
// Two flags cannot come from a file: --config itself, and --recover-admin, a one-time action
// that a file would repeat at every start.
var notInConfigFile = map[string]string{
	"config":        "a configuration file cannot name another one",
	"recover-admin": "it is a one-time action: give --recover-admin on the command line of one start, never in the file",
}

// applyConfigFile sets the flags of fs from the file at path, except those in cmdline (set on the
// command line). Errors name the file and the line.
func applyConfigFile(fs *flag.FlagSet, path string, cmdline map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read configuration file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s:%d: %q is not \"name = value\"", path, n, line)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		name = strings.TrimLeft(name, "-")
		if why, refused := notInConfigFile[name]; refused {
			return fmt.Errorf("%s:%d: %s cannot be set in the file: %s", path, n, name, why)
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("%s:%d: %q is not a serve flag (keyquorum serve --help lists them)", path, n, name)
		}
		if cmdline[name] {
			continue
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, n, name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read configuration file %s: %w", path, err)
	}
	return nil
}
