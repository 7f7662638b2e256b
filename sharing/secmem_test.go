package sharing

import (
	"bytes"
	"testing"

	"github.com/keyquorum/keyquorum/internal/secmem"
)

// TestSharesInLockedMemory: the shares of the records Split and Unmarshal make live in locked
// memory where the system allows it (internal/secmem), and Zero wipes and frees them.
func TestSharesInLockedMemory(t *testing.T) {
	locked, why := secmem.Status()
	if !locked {
		t.Logf("memory cannot be locked here (%s): checking the zeroing only", why)
	}
	secret := bytes.Repeat([]byte{0x5A}, 32)
	records, err := Split(secret, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	data, err := records[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range append(records, back) {
		if r.mem == nil || r.mem.Locked() != locked || &r.mem.Bytes()[0] != &r.Share[0] {
			t.Fatalf("record %d: share not in a secmem buffer (locked %v)", i, r.mem.Locked())
		}
	}
	got, err := Combine(records[:2])
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("combine: %v", err)
	}
	Zero(got)
	share := records[1].Share
	records[1].Zero()
	if records[1].Share != nil || records[1].mem != nil {
		t.Error("a zeroed record still has its share")
	}
	if !bytes.Equal(share, make([]byte, len(share))) {
		t.Errorf("share memory after Zero: %x", share)
	}
	records[1].Zero() // twice is harmless
	for _, r := range append(records, back) {
		r.Zero()
	}
}
