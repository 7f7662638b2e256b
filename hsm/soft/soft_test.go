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

// material is for tests: the raw application key id.
func (h *HSM) material(t *testing.T, id string) []byte {
	t.Helper()
	raw, _ := hex.DecodeString(id)
	var m []byte
	err := h.db.View(func(tx *bolt.Tx) error {
		v := h.currentKeys(tx).Get(raw)
		if v == nil {
			return fmt.Errorf("no key %s", id)
		}
		e, err := decodeEntry(v)
		if err != nil {
			return err
		}
		m, err = h.unsealValue(e.sealed, []byte(adAppKey), raw)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// secrets is for tests: every raw key the store holds besides the MBK.
func (h *HSM) secrets(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, k := range mustKeys(t, h) {
		out = append(out, h.material(t, k.ID))
	}
	var sealed []byte
	h.db.View(func(tx *bolt.Tx) error {
		sealed = bytes.Clone(tx.Bucket(bucketSlot).Get(keySlotKey))
		return nil
	})
	if sealed != nil {
		k, err := h.unsealValue(sealed, []byte(adSlotKey))
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
	hsmtest.Run(t, hsmtest.Backend{
		Fresh: func(t *testing.T) hsm.HSM { return openT(t, t.TempDir()) },
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
	})
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

// TestWrongDeviceKey: a database opened with another data dir's device key refuses to unseal.
func TestWrongDeviceKey(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	h := openT(t, a)
	if err := h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t)); err != nil {
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
}

func TestNewerSchema(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir).Close()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte{0, 0, 0, 2}) })
	db.Close()
	if _, err := Open(dir); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("schema 2: %v", err)
	}
}

// bigBackup writes a backup of n synthetic keys under mbk: several chunks, several batches.
func bigBackup(t *testing.T, mbk []byte, n int) ([]byte, []hsm.KeyInfo) {
	t.Helper()
	kw, err := backup.NewKeyWrap(mbk)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Source: "synthetic", Content: ContentType})
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
			return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				if bytes.HasPrefix(name, []byte(keysPrefix)) && !bytes.Equal(name, tx.Bucket(bucketMeta).Get(keyKeys)) {
					t.Errorf("staged bucket %s left behind", name)
				}
				return nil
			})
		})
	}
	if err := h.Restore(t.Context(), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if got := mustKeys(t, h); !slices.Equal(got, want) {
		t.Fatalf("restored %d keys, want %d", len(got), len(want))
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
	if got := mustKeys(t, other); !slices.Equal(got, want) {
		t.Fatalf("second restore: %d keys, want %d", len(got), len(want))
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
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("keys.2")); return err })
	db.Close()
	h := openT(t, dir)
	h.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("keys.2")) != nil {
			t.Error("stale staged bucket kept")
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
		"duplicate id": {
			{ID: bytes.Repeat([]byte{1}, 16), Label: "a", Algorithm: hsm.AlgorithmAES256, Material: make([]byte, 32)},
			{ID: bytes.Repeat([]byte{1}, 16), Label: "b", Algorithm: hsm.AlgorithmAES256, Material: make([]byte, 32)},
		},
		"short key": {{ID: bytes.Repeat([]byte{1}, 16), Label: "a", Algorithm: hsm.AlgorithmAES256, Material: make([]byte, 16)}},
	} {
		var buf bytes.Buffer
		w, _ := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Content: ContentType})
		for i := range recs {
			backup.WriteRecord(w, &recs[i])
		}
		w.Close()
		if err := h.Restore(t.Context(), &buf); !errors.Is(err, backup.ErrBadRecord) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var buf bytes.Buffer
	w, _ := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Content: ContentType})
	w.Write([]byte{'K', 1, 16})
	w.Close()
	if err := h.Restore(t.Context(), &buf); !errors.Is(err, backup.ErrBadRecord) {
		t.Errorf("record cut short: %v", err)
	}
	if k := mustKeys(t, h); len(k) != 0 {
		t.Fatalf("refused restores left %d keys", len(k))
	}
}

// TestResetShredsFiles: the old device key and database bytes are gone from the data dir.
func TestResetShredsFiles(t *testing.T) {
	dir := t.TempDir()
	h := openT(t, dir)
	h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t))
	h.CreateKey(t.Context(), "k")
	oldKey, _ := os.ReadFile(filepath.Join(dir, deviceKeyFile))
	var sealedMBK []byte
	h.db.View(func(tx *bolt.Tx) error { sealedMBK = bytes.Clone(tx.Bucket(bucketMBK).Get(keySealed)); return nil })
	if err := h.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
	newKey, _ := os.ReadFile(filepath.Join(dir, deviceKeyFile))
	if bytes.Equal(oldKey, newKey) {
		t.Fatal("device key not replaced")
	}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, oldKey) || bytes.Contains(b, sealedMBK) {
			t.Errorf("%s still holds the old device key or sealed MBK", path)
		}
		return nil
	})
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
