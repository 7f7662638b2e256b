package soft

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
)

var _ hsm.SlotKeyCarrier = (*HSM)(nil)

// TestSlotKeyTravels: a slot credential issued by one HSM activates its slot on another HSM of
// the same MBK once the slot key was carried over wrapped under the MBK; an HSM of another MBK
// cannot import it, and changes nothing.
func TestSlotKeyTravels(t *testing.T) {
	ctx := context.Background()
	mbk := make([]byte, 32)
	rand.Read(mbk)
	open := func(key []byte) *HSM {
		h, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		if err := h.LoadBackupKey(ctx, key); err != nil {
			t.Fatal(err)
		}
		return h
	}
	a, b := open(mbk), open(mbk)
	if w, err := a.ExportSlotKey(ctx); err != nil || w != nil {
		t.Fatalf("export before any credential: %x %v", w, err)
	}
	cred, err := a.IssueSlotCredential(ctx, 3, "CARD-0001")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ActivateSlot(ctx, 3, "CARD-0001", cred); !errors.Is(err, hsm.ErrCredentialInvalid) {
		t.Fatalf("before the import: %v", err)
	}
	wrapped, err := a.ExportSlotKey(ctx)
	if err != nil || len(wrapped) != hsm.SlotKeySize+8 {
		t.Fatalf("export: %d bytes, %v", len(wrapped), err)
	}
	other := make([]byte, 32)
	rand.Read(other)
	c := open(other)
	own, _ := c.IssueSlotCredential(ctx, 1, "CARD-C")
	if err := c.ImportSlotKey(ctx, wrapped); !errors.Is(err, hsm.ErrSlotKeyInvalid) {
		t.Fatalf("import under another MBK: %v", err)
	}
	if err := c.ActivateSlot(ctx, 1, "CARD-C", own); err != nil {
		t.Fatalf("C's own credential after the refused import: %v", err)
	}
	if err := b.ImportSlotKey(ctx, wrapped); err != nil {
		t.Fatal(err)
	}
	if err := b.ActivateSlot(ctx, 3, "CARD-0001", cred); err != nil {
		t.Fatalf("after the import: %v", err)
	}
	if again, _ := b.ExportSlotKey(ctx); !bytes.Equal(again, wrapped) {
		t.Fatal("the imported key does not export as the same wrapped key")
	}
	if bytes.Contains(wrapped, mbk) {
		t.Fatal("the MBK in the wrapped key")
	}
}
