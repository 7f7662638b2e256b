package operator

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestOperatorCap: once the list holds maxOperators operators, an unknown certificate is
// answered as a role-less operator without being recorded (no write per request), a known one
// is still recorded, and the count survives a restart.
func TestOperatorCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "operators.db")
	ops, err := OpenOperators(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	known := Identity{ID: fmt.Sprintf("%064x", 0), Subject: "CN=operator 0", Issuer: "CN=bench"}
	err = ops.db.Update(func(tx *bolt.Tx) error {
		for i := range maxOperators - 1 {
			op, err := newOperator(Identity{ID: fmt.Sprintf("%064x", i), Subject: fmt.Sprintf("CN=operator %d", i), Issuer: "CN=bench"}, now)
			if err != nil {
				return err
			}
			if err := putOperator(tx, op); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ops.Close()
	if ops, err = OpenOperators(path); err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	count := func() int {
		n := 0
		ops.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketOps).Stats().KeyN; return nil })
		return n
	}
	// One more fits, then the list is full.
	if _, err := ops.Seen(Identity{ID: "last", Subject: "CN=last", Issuer: "CN=bench"}, now); err != nil {
		t.Fatal(err)
	}
	if count() != maxOperators {
		t.Fatalf("%d operators recorded", count())
	}
	txid := func() int {
		id := 0
		ops.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before := txid()
	for i := range 5 {
		// legacyID: a certificate that could take over an entry of schema 1 (there is none).
		op, err := ops.Seen(Identity{ID: fmt.Sprintf("stranger-%d", i), Subject: "CN=stranger", Issuer: "CN=elsewhere", legacyID: fmt.Sprintf("legacy-%d", i)}, now)
		if err != nil || op.Role != RoleNone || op.Subject != "CN=stranger" {
			t.Errorf("unknown certificate on a full list: %+v %v", op, err)
		}
	}
	if count() != maxOperators || txid() != before {
		t.Errorf("a full list recorded unknown certificates: %d operators, %d writes", count(), txid()-before)
	}
	// A known operator is still seen and recorded.
	if op, err := ops.Seen(known, now.Add(time.Hour)); err != nil || !op.LastSeen.Equal(now.Add(time.Hour).UTC()) {
		t.Errorf("known operator on a full list: %+v %v", op, err)
	}
}
