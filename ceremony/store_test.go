package ceremony

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

func TestOpenStoreCreatesSchema(t *testing.T) {
	dir := t.TempDir()
	st, err := journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.View(func(tx *bolt.Tx) error {
		if got := journal.SchemaOf(tx); got != journal.SchemaVersion {
			t.Errorf("schema = %d, want %d", got, journal.SchemaVersion)
		}
		for _, b := range [][]byte{journal.BucketMeta, journal.BucketState, journal.BucketCeremonies, journal.BucketAudit, journal.BucketSets} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Commits.Load(); got != uint64(len(journal.Migrations)) {
		t.Errorf("commits = %d, want one per journal.Migration (%d)", got, len(journal.Migrations))
	}
}

// TestMigration1 runs the first migration on an empty file and checks what it leaves.
func TestMigration1(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(journal.Migrations[0].Fn); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a migration interrupted before its version was written runs again.
	if err := db.Update(journal.Migrations[0].Fn); err != nil {
		t.Fatalf("second run: %v", err)
	}
	db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{journal.BucketMeta, journal.BucketState, journal.BucketCeremonies, journal.BucketAudit} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		return nil
	})
}

// TestMigration2 runs the second migration on a schema-1 journal that knows the key set of its
// loaded key, and on one that does not: the first gets that set registered as current, with the
// serials it knew and no authenticators.
func TestMigration2(t *testing.T) {
	open1 := func(t *testing.T) *bolt.DB {
		db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.Update(journal.Migrations[0].Fn); err != nil {
			t.Fatal(err)
		}
		return db
	}
	t.Run("without a key set", func(t *testing.T) {
		db := open1(t)
		if err := db.Update(journal.Migrations[1].Fn); err != nil {
			t.Fatal(err)
		}
		db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(journal.BucketSets) == nil {
				t.Error("sets bucket missing")
			}
			if s, err := journal.CurrentSet(tx); err != nil || s != nil {
				t.Errorf("current set %+v, %v", s, err)
			}
			return nil
		})
	})
	t.Run("with a key set", func(t *testing.T) {
		db := open1(t)
		loaded := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		ks := KeySet{SetID: "00112233445566778899aabbccddeeff", KeyID: "0102030405060708", K: 2, N: 3, Label: "appliance-1",
			Ceremony: 4, Loaded: loaded, Cards: []CardEntry{
				{Serial: "A1", Index: 1, Role: RoleShare, State: CardWritten, Time: loaded},
				{Serial: "B2", Index: 2, Role: RoleShare, State: CardWritten, Time: loaded},
				{Serial: "C3", Index: 3, Role: RoleShare, State: CardWritten, Time: loaded},
				{Serial: "A1", Index: 1, Role: RoleRead, State: CardRead, Time: loaded.Add(time.Minute)},
			}}
		if err := db.Update(func(tx *bolt.Tx) error { return journal.PutJSON(tx.Bucket(journal.BucketState), journal.KeyKeySet, ks) }); err != nil {
			t.Fatal(err)
		}
		for range 2 { // idempotent: an interrupted migration runs again
			if err := db.Update(journal.Migrations[1].Fn); err != nil {
				t.Fatal(err)
			}
		}
		db.View(func(tx *bolt.Tx) error {
			s, err := journal.CurrentSet(tx)
			if err != nil || s == nil {
				t.Fatalf("current set %+v, %v", s, err)
			}
			if s.SetID != ks.SetID || s.KeyID != ks.KeyID || s.K != 2 || s.N != 3 || s.Label != "appliance-1" ||
				s.Origin != OriginMigration || s.Ceremony != 4 || len(s.Shares) != 3 {
				t.Fatalf("registered %+v", s)
			}
			for i, sh := range s.Shares {
				if sh.Index != i+1 || sh.Serial != []string{"A1", "B2", "C3"}[i] || sh.Authenticator != "" {
					t.Errorf("share %+v", sh)
				}
			}
			sets, _ := journal.AllSets(tx)
			if len(sets) != 1 {
				t.Errorf("%d sets", len(sets))
			}
			return nil
		})
	})
	t.Run("opening a schema-1 file upgrades it", func(t *testing.T) {
		dir := t.TempDir()
		db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			if err := journal.Migrations[0].Fn(tx); err != nil {
				return err
			}
			if err := tx.Bucket(journal.BucketMeta).Put(journal.KeySchema, binary.BigEndian.AppendUint32(nil, 1)); err != nil {
				return err
			}
			return journal.PutJSON(tx.Bucket(journal.BucketState), journal.KeyKeySet, KeySet{SetID: "00112233445566778899aabbccddeeff", KeyID: "0102030405060708", K: 2, N: 2})
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		st, err := journal.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if got := st.Commits.Load(); got != uint64(len(journal.Migrations)-1) {
			t.Errorf("upgrade committed %d transactions, want one per journal.Migration after the first (%d)", got, len(journal.Migrations)-1)
		}
		st.View(func(tx *bolt.Tx) error {
			if journal.SchemaOf(tx) != journal.SchemaVersion {
				t.Errorf("schema %d", journal.SchemaOf(tx))
			}
			if s, _ := journal.CurrentSet(tx); s == nil || s.SetID != "00112233445566778899aabbccddeeff" {
				t.Errorf("current set %+v", s)
			}
			return nil
		})
	})
}

func TestReopenKeepsSchemaAndRunsNoMigration(t *testing.T) {
	dir := t.TempDir()
	st, err := journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := st.Commits.Load(); got != 0 {
		t.Errorf("reopen committed %d transactions, want 0", got)
	}
}

func TestOpenStoreRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	st, err := journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(journal.BucketMeta).Put(journal.KeySchema, binary.BigEndian.AppendUint32(nil, journal.SchemaVersion+1))
	})
	st.Close()
	_, err = journal.Open(dir)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("err = %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenStoreLocked(t *testing.T) {
	dir := t.TempDir()
	st, err := journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = journal.Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
}
