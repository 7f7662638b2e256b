package soft

import (
	"bytes"
	"context"
	"testing"

	"github.com/keyquorum/keyquorum/internal/secmem"
)

// TestMBKInLockedMemory: the MBK the soft HSM unseals for a backup, a restore or an
// authenticator is in locked memory where the system allows it (internal/secmem) and zeroed
// when the call is done with it.
func TestMBKInLockedMemory(t *testing.T) {
	h, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mbk := bytes.Repeat([]byte{0x3C}, 32)
	if err := h.LoadBackupKey(context.Background(), mbk); err != nil {
		t.Fatal(err)
	}
	locked, why := secmem.Status()
	if !locked {
		t.Logf("memory cannot be locked here (%s): checking the zeroing only", why)
	}
	b, err := h.mbk()
	if err != nil || b == nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), mbk) || b.Locked() != locked {
		t.Fatalf("unsealed MBK: equal %v, locked %v (want %v)", bytes.Equal(b.Bytes(), mbk), b.Locked(), locked)
	}
	mem := b.Bytes()
	b.Free()
	if !bytes.Equal(mem, make([]byte, 32)) {
		t.Errorf("MBK memory after Free: %x", mem)
	}
}
