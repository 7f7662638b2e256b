package ceremony

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestOpenStoreCreatesSchema(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	err = st.view(func(tx *bolt.Tx) error {
		if got := schemaOf(tx); got != schemaVersion {
			t.Errorf("schema = %d, want %d", got, schemaVersion)
		}
		for _, b := range [][]byte{bucketMeta, bucketState, bucketCeremonies, bucketAudit} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.commits.Load(); got != uint64(len(migrations)) {
		t.Errorf("commits = %d, want one per migration (%d)", got, len(migrations))
	}
}

// TestMigration1 runs the first migration on an empty file and checks what it leaves.
func TestMigration1(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(migrations[0].fn); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a migration interrupted before its version was written runs again.
	if err := db.Update(migrations[0].fn); err != nil {
		t.Fatalf("second run: %v", err)
	}
	db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketState, bucketCeremonies, bucketAudit} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		return nil
	})
}

func TestReopenKeepsSchemaAndRunsNoMigration(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	st.close()
	st, err = openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if got := st.commits.Load(); got != 0 {
		t.Errorf("reopen committed %d transactions, want 0", got)
	}
}

func TestOpenStoreRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	st.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion+1))
	})
	st.close()
	_, err = openStore(dir)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("err = %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenStoreLocked(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	_, err = openStore(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
}
