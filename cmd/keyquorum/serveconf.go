package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
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

// printServeSettings prints the settings in effect (from the command line, the configuration
// file or the defaults), for `serve --check`. None is a secret (the PKCS#11 PIN stays in the
// file --pin-file names), so all can be shown.
func printServeSettings(w io.Writer, c *serveConfig) error {
	fmt.Fprintln(w, "configuration is valid; settings in effect:")
	rows := []struct{ name, value string }{
		{"data", c.dataDir}, {"listen", c.listen}, {"host", strings.Join(c.hosts, ",")},
		{"pinpad", c.pinpad}, {"reader", c.reader}, {"virtual-reader", c.virtual},
		{"hsm", c.hsm}, {"pkcs11-module", c.pkcs11Module}, {"slot", c.slot}, {"pin-file", c.pinFile},
		{"ca-bundle", c.caBundle}, {"crl", strings.Join(c.crls, ",")},
		{"webauthn-aaguids", strings.Join(c.attest.AAGUIDs, ",")}, {"webauthn-attestation-formats", strings.Join(c.attest.Formats, ",")},
		{"webauthn-attestation-roots", c.attestRoots},
		{"max-upload", strconv.FormatInt(c.maxUpload, 10)}, {"log-format", c.logFormat},
		{"v", strconv.FormatBool(c.verbose)}, {"recover-admin", strconv.FormatBool(c.recoverAdmin)},
		{"allow-soft-hsm-with-real-cards", strconv.FormatBool(c.softReal)},
		{"node-name", c.nodeName}, {"cluster-address", c.clusterAddr}, {"cluster-offer-interval", c.offerEvery.String()},
	}
	for _, r := range rows {
		if r.value != "" {
			fmt.Fprintf(w, "  %s = %s\n", r.name, r.value)
		}
	}
	return nil
}
