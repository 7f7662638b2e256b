package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

func TestCardProfilesCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"card", "profiles", "-json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	// The JSON form is a list of profile files: each, renamed, reads back.
	var files []json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &files); err != nil || len(files) != len(tcos.Profiles()) {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	for i, f := range files {
		renamed := strings.Replace(string(f), tcos.Profiles()[i].Name, "site-"+tcos.Profiles()[i].Name, 1)
		if _, err := tcos.ParseProfile([]byte(renamed)); err != nil {
			t.Errorf("profile %d: %v", i, err)
		}
	}
}

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
		{[]string{"reader", "diagnose", "-profile", "bogus"}, 2, `no shipped profile "bogus"`},
		{[]string{"card"}, 2, "keyquorum card survey [-reader PREFIX]"},
		{[]string{"card", "survey", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"card", "survey", "-profile", "nosuch"}, 2, `no shipped profile "nosuch"`},
		{[]string{"card", "profiles", "-x"}, 2, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(ctx, c.args, &stdout, &stderr); code != c.code || !strings.Contains(stderr.String(), c.stderrIn) {
			t.Errorf("keyquorum %v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.stderrIn)
		}
	}
}
