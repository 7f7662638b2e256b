package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDispatchAndReaderUsage(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		args     []string
		code     int
		stderrIn string
	}{
		{nil, 2, "usage: keyquorum <command>"},
		{[]string{"help"}, 0, "reader"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"reader"}, 2, "keyquorum reader diagnose [flags]"},
		{[]string{"reader", "--help"}, 0, "exit status:"},
		{[]string{"reader", "diagnose", "--help"}, 0, "Writes a report for field support"},
		{[]string{"reader", "diagnose", "-slot", "both"}, 2, "--slot must be share or user"},
		{[]string{"reader", "diagnose", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"reader", "diagnose", "-nosuchflag"}, 2, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(ctx, c.args, &stdout, &stderr); code != c.code || !strings.Contains(stderr.String(), c.stderrIn) {
			t.Errorf("keyquorum %v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.stderrIn)
		}
	}
}
