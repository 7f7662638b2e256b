package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
)

// cardCheck runs `keyquorum card check` (approved as cliApproved does) while the pad is driven with card.
func (n *node) cardCheck(ctx context.Context, card string, extra ...string) (string, string, int, error) {
	dctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var derr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		derr = n.drive(dctx, []string{card})
	}()
	out, errOut, code := n.cliApproved(ctx, "ceremony."+string(ceremony.KindCardCheck), append([]string{"card", "check"}, extra...)...)
	cancel()
	wg.Wait()
	return out, errOut, code, derr
}

// TestReissueAndCardCheckCLI: `ceremony start reissue` turns a 2-of-3 set into 3-of-5 through
// a running keyquorum serve, `status` shows the new set, and `card check` names a new card
// intact (exit 0) and an old one of the retired set (exit 1), in words and as JSON.
func TestReissueAndCardCheckCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := nodeT(t, "a", filepath.Join(t.TempDir(), "a"))
	old, err := a.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, a, []string{old[0], old[1], old[2], old[0], old[1]}, "generate", "-k", "2", "-n", "3", "-label", "dc-1")
	before := mustStatus(t, a)

	if out, code, err := a.ceremony(ctx, nil, "reissue", "-k", "4", "-n", "3"); err != nil || code != 1 || !strings.Contains(out, "4 of 3 is not a possible quorum") {
		t.Fatalf("bad quorum: exit %d, %v\n%s", code, err, out)
	}
	fresh, err := a.newCards(5)
	if err != nil {
		t.Fatal(err)
	}
	out, code, err := a.ceremony(ctx, append([]string{old[0], old[1]}, fresh...), "reissue", "-k", "3", "-n", "5")
	if err != nil || code != 0 || !strings.Contains(out, "reissue ceremony #") || !strings.Contains(out, "Card set re-issued") {
		t.Fatalf("reissue: exit %d, %v\n%s", code, err, out)
	}
	after := mustStatus(t, a)
	if after.BackupKeyID != before.BackupKeyID || after.KeySet == nil || after.KeySet.K != 3 || after.KeySet.N != 5 ||
		after.KeySet.SetID == before.KeySet.SetID || after.KeySet.Label != "dc-1" {
		t.Fatalf("status after the re-issue: %+v (before %+v)", after.KeySet, before.KeySet)
	}

	stdout, stderr, code, err := a.cardCheck(ctx, fresh[2])
	if err != nil || code != 0 || !strings.Contains(stdout, "verdict: intact") || !strings.Contains(stdout, "intact share 3 of the current set") {
		t.Fatalf("check of a new card: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	stdout, stderr, code, err = a.cardCheck(ctx, old[2], "--json")
	if err != nil || code != 1 {
		t.Fatalf("check of an old card: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	var c ceremony.CardCheck
	if err := json.Unmarshal([]byte(stdout), &c); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if c.Verdict != ceremony.VerdictRetired || c.Serial != old[2] || c.SetID != before.KeySet.SetID || !strings.Contains(c.Detail, "this card belongs to a retired set") {
		t.Fatalf("old card: %+v", c)
	}
	if !strings.Contains(stderr, old[2]+": retired") {
		t.Fatalf("stderr %q", stderr)
	}
}
