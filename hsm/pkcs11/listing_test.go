//go:build cgo

package pkcs11

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
)

// carriedListing is what a cluster node's digest takes of the object store (cluster.current):
// the identity and carried attributes of every object a backup carries, never a value.
func carriedListing(t *testing.T, h *HSM) string {
	t.Helper()
	objs, err := h.Objects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, o := range objs {
		if o.Own || !o.Carried {
			continue
		}
		b, _ := json.Marshal(o.Attrs)
		lines = append(lines, o.Identity()+" "+string(b))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestPKCS11ListingSurvivesRestore: two tokens of one MBK list the same carried objects with
// the same attributes once one restored the other's backup — what lets two cluster nodes on
// PKCS#11 HSMs compare the digests of their shared state and find them in step.
func TestPKCS11ListingSurvivesRestore(t *testing.T) {
	a, b := freshHSM(t), freshHSM(t)
	mbk := hsmtest.NewMBK(t)
	for _, h := range []*HSM{a, b} {
		if err := h.LoadBackupKey(t.Context(), bytes.Clone(mbk)); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"payments", "signing"} {
		if _, err := a.CreateKey(t.Context(), l); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := a.Backup(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	la, lb := carriedListing(t, a), carriedListing(t, b)
	if la == "" || la != lb {
		t.Fatalf("listings differ after the restore:\nA:\n%s\nB:\n%s", la, lb)
	}
	var _ hsm.ObjectStore = a
}
