package ceremony

import (
	"context"
	"strings"
	"testing"
)

// TestImportSetsSaysWhatGoes: taking over a peer's registry replaces this appliance's whole;
// a set known only here (a re-issue made here, not on the peer) goes, and the operator is told
// which, in words.
func TestImportSetsSaysWhatGoes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	old, gen := e.generate(2, 3)
	peers, err := e.m.ExportSets()
	if err != nil {
		t.Fatal(err)
	}
	_, j := e.reissue(2, 3, old[0], old[1])
	said, err := e.m.ImportSets(ctx, peers)
	if err != nil {
		t.Fatal(err)
	}
	if len(said) != 1 || !strings.Contains(said[0], j.SetID[:8]) || !strings.Contains(said[0], "known only here") {
		t.Fatalf("what the take-over said: %q", said)
	}
	if cs := e.currentSet(); cs == nil || cs.SetID != gen.SetID {
		t.Fatalf("current set after the take-over: %+v", cs)
	}
	// The same registry again: nothing goes, nothing said.
	if said, err := e.m.ImportSets(ctx, peers); err != nil || len(said) != 0 {
		t.Fatalf("taking over the same registry again: %q, %v", said, err)
	}
}
