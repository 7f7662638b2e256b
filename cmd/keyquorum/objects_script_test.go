package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/soft"
)

// cmdHSMObject puts objects into a node's soft HSM before its service starts, as other
// software would:
//
//	hsmobject NAME KIND LABEL [locked]
//
// KIND is one of hsm.CreatableKinds; "locked" makes a key that is not extractable, which no
// backup can carry.
func cmdHSMObject(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 3, "hsmobject NAME KIND LABEL [locked]")
	h, err := soft.Open(filepath.Join(ts.MkAbs(a[0]), "hsm"))
	ts.Check(err)
	defer h.Close()
	locked := len(a) > 3 && a[3] == "locked"
	if len(a) > 3 && !locked {
		ts.Fatalf("hsmobject: the fourth argument can only be \"locked\"")
	}
	_, err = h.CreateObject(context.Background(), hsm.ObjectSpec{Kind: a[1], Label: strings.ReplaceAll(a[2], "_", " "), NotExtractable: locked})
	ts.Check(err)
}

// TestCLIBackupRefused runs testdata/backup_refused: a backup refused for an object that cannot
// leave the HSM exits 1 with the problem's code, names the object and writes nothing to -o;
// skipping, previewing, restoring and making equal from the command line.
func TestCLIBackupRefused(t *testing.T) {
	testscript.Run(t, scriptParams(filepath.Join("testdata", "backup_refused")))
}
