package soft

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
)

func openT(t *testing.T, dir string) *HSM {
	t.Helper()
	h, err := Open(dir, WithSource("test-node"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// entryOf is for tests: the entry of the key (secret or private) with CKA_ID id (hex).
func (h *HSM) entryOf(t *testing.T, class uint32, id string) *entry {
	t.Helper()
	raw, _ := hex.DecodeString(id)
	var found *entry
	err := h.db.View(func(tx *bolt.Tx) error {
		return forEachObject(tx, func(e *entry) error {
			if e.rec.Class == class && bytes.Equal(e.rec.Attr(hsm.AttrID), raw) {
				found = e
			}
			return nil
		})
	})
	if err != nil || found == nil {
		t.Fatalf("no key %s: %v", id, err)
	}
	return found
}

// material is for tests: the raw material of the secret key id.
func (h *HSM) material(t *testing.T, id string) []byte {
	t.Helper()
	m, err := h.unsealObject(h.entryOf(t, hsm.ClassSecretKey, id))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// secrets is for tests: every raw key the store holds besides the MBK.
func (h *HSM) secrets(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	h.db.View(func(tx *bolt.Tx) error {
		return forEachObject(tx, func(e *entry) error {
			if m, err := h.unsealObject(e); err == nil && m != nil {
				out = append(out, m)
			}
			return nil
		})
	})
	var sealed []byte
	h.db.View(func(tx *bolt.Tx) error {
		sealed = bytes.Clone(tx.Bucket(bucketSlot).Get(keySlotKey))
		return nil
	})
	if sealed != nil {
		k, err := h.unsealValue(h.own, sealed, []byte(adSlotKey))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func mustKeys(t *testing.T, h *HSM) []hsm.KeyInfo {
	t.Helper()
	k, err := h.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestContract(t *testing.T) {
	b := hsmtest.Backend{
		Populate:    populate,
		Locked:      locked,
		SameResults: sameResults,
		Fresh:       func(t *testing.T) hsm.HSM { return openT(t, t.TempDir()) },
		Reopen: func(t *testing.T, h hsm.HSM) hsm.HSM {
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			return openT(t, h.(*HSM).dir)
		},
		Fingerprint: func(t *testing.T, h hsm.HSM, id string) []byte {
			m := h.(*HSM).material(t, id)
			block, err := aes.NewCipher(m)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]byte, 16)
			block.Encrypt(out, out)
			return out
		},
		Dirs:        func(h hsm.HSM) []string { return []string{h.(*HSM).dir} },
		Secrets:     func(t *testing.T, h hsm.HSM) [][]byte { return h.(*HSM).secrets(t) },
		ContentType: ContentType,
	}
	hsmtest.Run(t, b)
	hsmtest.RunObjects(t, b)
}

func TestDeviceKeyFile(t *testing.T) {
	dir := t.TempDir()
	h := openT(t, dir)
	path := filepath.Join(dir, deviceKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("device key file mode %v, %d bytes", fi.Mode().Perm(), fi.Size())
	}
	if fi, _ := os.Stat(filepath.Join(dir, dbFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v", fi.Mode().Perm())
	}
	h.Close()

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrDeviceKey) {
		t.Fatalf("device key readable by others: %v", err)
	}
	os.Chmod(path, 0o600)
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrDeviceKey) {
		t.Fatalf("device key of 5 bytes: %v", err)
	}
}

// TestWrongDeviceKey: a database opened with another data dir's device key refuses to unseal
// the operator's objects; with another own key it does not open.
func TestWrongDeviceKey(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	h := openT(t, a)
	if err := h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateObject(t.Context(), hsm.ObjectSpec{Kind: "AES-256", Label: "operator's"}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	openT(t, b).Close()
	key, _ := os.ReadFile(filepath.Join(b, deviceKeyFile))
	if err := os.WriteFile(filepath.Join(a, deviceKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	h = openT(t, a)
	if err := h.Backup(t.Context(), &bytes.Buffer{}); !errors.Is(err, ErrSealed) {
		t.Fatalf("backup with a foreign device key: %v", err)
	}
	h.Close()
	key, _ = os.ReadFile(filepath.Join(b, ownKeyFile))
	os.WriteFile(filepath.Join(a, ownKeyFile), key, 0o600)
	if _, err := Open(a); !errors.Is(err, ErrDeviceKey) {
		t.Fatalf("open with a foreign own key: %v", err)
	}
}

func TestNewerSchema(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir).Close()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte{0, 0, 0, 3}) })
	db.Close()
	if _, err := Open(dir); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("schema 3: %v", err)
	}
}

// bigBackup writes a backup of n synthetic keys under mbk: several chunks, several batches. Its
// content is key records, as the backups of earlier versions hold, which restore still reads.
func bigBackup(t *testing.T, mbk []byte, n int) ([]byte, []hsm.KeyInfo) {
	t.Helper()
	kw, err := backup.NewKeyWrap(mbk)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Source: "synthetic", Content: contentTypeV1})
	if err != nil {
		t.Fatal(err)
	}
	var infos []hsm.KeyInfo
	for i := range n {
		id := make([]byte, 16)
		id[0], id[1] = byte(i>>8), byte(i)
		rec := backup.KeyRecord{ID: id, Label: fmt.Sprintf("key %d", i), Algorithm: hsm.AlgorithmAES256, Material: bytes.Repeat([]byte{byte(i)}, 32)}
		if err := backup.WriteRecord(w, &rec); err != nil {
			t.Fatal(err)
		}
		infos = append(infos, hsm.KeyInfo{ID: hex.EncodeToString(id), Label: rec.Label, Algorithm: hsm.AlgorithmAES256})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), infos
}

// TestRestoreIsAllOrNothing: a backup that fails after several batches were staged leaves the
// key database as it was, and no staged bucket behind.
func TestRestoreIsAllOrNothing(t *testing.T) {
	mbk := hsmtest.NewMBK(t)
	b, want := bigBackup(t, mbk, 3000) // ~190 KiB: 3 chunks, 12 batches
	h := openT(t, t.TempDir())
	if err := h.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
	mine, err := h.CreateKey(t.Context(), "mine")
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{len(b) - 1, len(b) - 10000} {
		err := h.Restore(t.Context(), bytes.NewReader(b[:cut]))
		if !errors.Is(err, hsm.ErrBackupTruncated) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if k := mustKeys(t, h); len(k) != 1 || k[0] != mine {
			t.Fatalf("after a failed restore: %d keys", len(k))
		}
		h.db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketStaging) != nil {
				t.Error("staging bucket left behind")
			}
			if tx.Bucket(bucketMeta).Get(keyJournal) == nil {
				t.Error("no journal of the restore that stopped")
			}
			return nil
		})
		if p, err := h.PendingRestore(t.Context()); err != nil || p == nil || p.Backup.Source != "synthetic" {
			t.Errorf("pending restore: %v, %v", p, err)
		}
	}
	if err := h.Restore(t.Context(), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if got := mustKeys(t, h); len(got) != len(want)+1 {
		t.Fatalf("restored %d keys, want %d and the one made before", len(got), len(want))
	}
	if p, err := h.PendingRestore(t.Context()); err != nil || p != nil {
		t.Fatalf("pending restore after it finished: %v, %v", p, err)
	}
	if m := h.material(t, want[7].ID); !bytes.Equal(m, bytes.Repeat([]byte{7}, 32)) {
		t.Fatal("restored key material differs")
	}
	// Backing up 3000 keys crosses batches; the result restores to the same keys elsewhere.
	var again bytes.Buffer
	if err := h.Backup(t.Context(), &again); err != nil {
		t.Fatal(err)
	}
	other := openT(t, t.TempDir())
	other.LoadBackupKey(t.Context(), mbk)
	if err := other.Restore(t.Context(), &again); err != nil {
		t.Fatal(err)
	}
	if got := mustKeys(t, other); !slices.Equal(got, mustKeys(t, h)) {
		t.Fatalf("second restore: %d keys, want %d", len(got), len(want)+1)
	}
}

// TestStaleStagingDropped: a restore killed mid-way leaves a staged bucket; Open drops it.
func TestStaleStagingDropped(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir).Close()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketStaging); return err })
	db.Close()
	h := openT(t, dir)
	h.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketStaging) != nil {
			t.Error("stale staging bucket kept")
		}
		return nil
	})
}

func TestRestoreRefusesBadRecords(t *testing.T) {
	mbk := hsmtest.NewMBK(t)
	kw, _ := backup.NewKeyWrap(mbk)
	h := openT(t, t.TempDir())
	h.LoadBackupKey(t.Context(), mbk)
	for name, recs := range map[string][]backup.KeyRecord{
		"short key": {{ID: bytes.Repeat([]byte{1}, 16), Label: "a", Algorithm: hsm.AlgorithmAES256, Material: make([]byte, 16)}},
	} {
		var buf bytes.Buffer
		w, _ := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Content: contentTypeV1})
		for i := range recs {
			backup.WriteRecord(w, &recs[i])
		}
		w.Close()
		if err := h.Restore(t.Context(), &buf); !errors.Is(err, backup.ErrBadRecord) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var buf bytes.Buffer
	w, _ := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Content: contentTypeV1})
	w.Write([]byte{'K', 1, 16})
	w.Close()
	if err := h.Restore(t.Context(), &buf); !errors.Is(err, backup.ErrBadRecord) {
		t.Errorf("record cut short: %v", err)
	}
	if k := mustKeys(t, h); len(k) != 0 {
		t.Fatalf("refused restores left %d keys", len(k))
	}
}

// TestResetShredsFiles: a factory reset replaces own.key, and the old one is in no file; the
// operator's objects stay. Wipe replaces the device key and the database too.
func TestResetShredsFiles(t *testing.T) {
	dir := t.TempDir()
	h := openT(t, dir)
	h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t))
	h.CreateKey(t.Context(), "k")
	if _, err := h.CreateObject(t.Context(), hsm.ObjectSpec{Kind: "AES-128", Label: "operator's"}); err != nil {
		t.Fatal(err)
	}
	oldOwn, _ := os.ReadFile(filepath.Join(dir, ownKeyFile))
	oldDevice, _ := os.ReadFile(filepath.Join(dir, deviceKeyFile))
	if err := h.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
	newOwn, _ := os.ReadFile(filepath.Join(dir, ownKeyFile))
	if bytes.Equal(oldOwn, newOwn) {
		t.Fatal("own key not replaced")
	}
	if k := mustKeys(t, h); len(k) != 1 || k[0].Label != "operator's" {
		t.Fatalf("keys after reset: %v", k)
	}
	noneHolds := func(secrets ...[]byte) {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, _ := os.ReadFile(path)
			for _, s := range secrets {
				if bytes.Contains(b, s) {
					t.Errorf("%s still holds an old store key", path)
				}
			}
			return nil
		})
	}
	noneHolds(oldOwn)
	if err := h.Wipe(t.Context()); err != nil {
		t.Fatal(err)
	}
	if k := mustKeys(t, h); len(k) != 0 {
		t.Fatalf("keys after wipe: %v", k)
	}
	noneHolds(oldOwn, oldDevice)
}

// TestResetCutShort: a reset killed after it marked the database finishes at the next Open.
func TestResetCutShort(t *testing.T) {
	dir := t.TempDir()
	h := openT(t, dir)
	h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t))
	h.CreateKey(t.Context(), "k")
	h.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyResetting, []byte{1}) })
	h.Close()
	h = openT(t, dir)
	if _, err := h.BackupKeyID(t.Context()); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("MBK after a reset cut short: %v", err)
	}
	if k := mustKeys(t, h); len(k) != 0 {
		t.Fatalf("keys after a reset cut short: %v", k)
	}
}

// TestMigrateSchema1: a data dir of schema 1 opens with its MBK, slot key and keys.
func TestMigrateSchema1(t *testing.T) {
	dir := t.TempDir()
	h := openT(t, dir)
	h.Close()
	key, _ := os.ReadFile(filepath.Join(dir, deviceKeyFile))
	dev, _ := newGCM(key)
	os.Remove(filepath.Join(dir, ownKeyFile))
	os.Remove(filepath.Join(dir, dbFile))
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	mbk := hsmtest.NewMBK(t)
	aes := bytes.Repeat([]byte{7}, 32)
	id := bytes.Repeat([]byte{1}, 16)
	v1 := &HSM{seal: dev}
	sealedMBK, _ := v1.sealValue(dev, mbk, []byte(adMBK))
	sealedKey, _ := v1.sealValue(dev, aes, []byte(adAppKey), id)
	kid := hsm.KeyIDOf(mbk)
	err = db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket(bucketMeta)
		m.Put(keySchema, []byte{0, 0, 0, 1})
		m.Put(keyKeys, []byte("keys.3"))
		b, _ := tx.CreateBucket(bucketMBK)
		b.Put(keySealed, sealedMBK)
		b.Put(keyID, kid[:])
		tx.CreateBucket(bucketSlot)
		k, _ := tx.CreateBucket([]byte("keys.3"))
		return k.Put(id, append([]byte{1, 1, 3, 'o', 'l', 'd'}, sealedKey...))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	h = openT(t, dir)
	if err := h.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatalf("the migrated MBK: %v", err)
	}
	k := mustKeys(t, h)
	if len(k) != 1 || k[0].Label != "old" || !bytes.Equal(h.material(t, k[0].ID), aes) {
		t.Fatalf("migrated keys: %v", k)
	}
	if !h.entryOf(t, hsm.ClassSecretKey, k[0].ID).rec.Object().Managed {
		t.Fatal("a migrated key is not Keyquorum's")
	}
}

func TestConcurrentUse(t *testing.T) {
	h := openT(t, t.TempDir())
	mbk := hsmtest.NewMBK(t)
	h.LoadBackupKey(t.Context(), mbk)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 5 {
				if _, err := h.CreateKey(context.Background(), fmt.Sprintf("k%d-%d", i, j)); err != nil {
					t.Error(err)
				}
				var buf bytes.Buffer
				if err := h.Backup(context.Background(), &buf); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if k := mustKeys(t, h); len(k) != 20 {
		t.Fatalf("%d keys, want 20", len(k))
	}
}

func TestActiveSlots(t *testing.T) {
	h := openT(t, t.TempDir())
	for _, slot := range []uint{5, 2} {
		c, err := h.IssueSlotCredential(t.Context(), slot, "CARD")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.ActivateSlot(t.Context(), slot, "CARD", c); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.ActiveSlots(); !slices.Equal(got, []uint{2, 5}) {
		t.Fatalf("active slots %v", got)
	}
	h.Reset(t.Context())
	if got := h.ActiveSlots(); len(got) != 0 {
		t.Fatalf("active slots after reset %v", got)
	}
}
