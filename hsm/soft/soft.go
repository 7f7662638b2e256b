// Package soft is the embedded software HSM, Keyquorum's default: an [hsm.HSM] (with
// [hsm.KeyStore] and [hsm.Authenticator]) whose keys live in a bbolt database in the data dir,
// every secret in it sealed under a device key.
//
// # Files
//
//	<dir>/device.key  32 random bytes, mode 0600, made on first Open: the device key
//	<dir>/hsm.db      the bbolt key store, mode 0600
//
// The device key stands in for an HSM's internal storage key: whoever reads the data dir owns
// the soft HSM, which is why a real appliance uses hsm/pkcs11. What the device key protects
// against is a copy of hsm.db alone, a backup of the data dir without the key file, and old
// pages of the database after a factory reset: [HSM.Reset] overwrites and replaces the device
// key, so nothing sealed under the old one can be opened again.
//
// # Bucket tree (schema 1)
//
//	meta
//	  schema     uint32, big-endian: 1
//	  keys       name of the bucket holding the key database, "keys.<generation>"
//	mbk
//	  sealed     the MBK, sealed (additional data "keyquorum mbk")
//	  id         its key ID, 8 bytes (not secret)
//	slot
//	  key        the slot credential key, sealed (additional data "keyquorum slot key")
//	keys.<generation>
//	  <id>       16-byte key ID -> 1 version | 1 algorithm | 1 label length | label | sealed key
//	             (additional data "keyquorum app key" and the key ID)
//
// The authenticator key ([hsm.Authenticator]) is not stored: it is derived from the unsealed MBK
// for each call.
//
// Sealed means AES-256-GCM under the device key: a random 12-byte nonce, then the ciphertext.
// A restore writes the new key database into the next generation's bucket in batches and
// switches meta/keys to it in one last transaction, so a restore cut short (bad backup, crash)
// leaves the old database in place; Open removes the leftover bucket.
//
// # What this package must never do
//
// Write a key unsealed, keep the MBK in memory between calls (it is unsealed for each use and
// zeroed after), or do I/O to the caller's reader or writer inside a bbolt transaction.
package soft

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/slotcred"
)

// ContentType names the content of a soft HSM backup.
const ContentType = "keyquorum/soft-keys/1"

const (
	deviceKeyFile = "device.key"
	dbFile        = "hsm.db"
	schemaVersion = 1
	keyIDSize     = 16
	batchSize     = 256

	adMBK     = "keyquorum mbk"
	adSlotKey = "keyquorum slot key"
	adAppKey  = "keyquorum app key"
)

var (
	bucketMeta = []byte("meta")
	bucketMBK  = []byte("mbk")
	bucketSlot = []byte("slot")
	keySchema  = []byte("schema")
	keyKeys    = []byte("keys")
	keySealed  = []byte("sealed")
	keyID      = []byte("id")
	keySlotKey = []byte("key")
	keysPrefix = "keys."
)

// ErrNewerSchema means the data dir was written by a newer Keyquorum.
var ErrNewerSchema = errors.New("hsm data was written by a newer keyquorum: upgrade before opening it")

// ErrDeviceKey means the device key file is unusable: wrong size, or readable by others.
var ErrDeviceKey = errors.New("device key file is unusable")

// Option configures [Open].
type Option func(*HSM)

// WithSource names this node in the backups it writes. The default is the host name.
func WithSource(name string) Option { return func(h *HSM) { h.source = name } }

// HSM is the soft HSM. It implements [hsm.HSM] and [hsm.KeyStore].
type HSM struct {
	dir    string
	source string

	// mu orders operations: Backup holds it shared so that its batches see one database;
	// everything that changes keys holds it exclusively.
	mu     sync.RWMutex
	db     *bolt.DB
	seal   cipher.AEAD // under the device key
	active map[uint]string
	closed bool
}

var (
	_ hsm.HSM           = (*HSM)(nil)
	_ hsm.KeyStore      = (*HSM)(nil)
	_ hsm.Authenticator = (*HSM)(nil)
)

// Open opens the soft HSM in dir, creating dir, the device key and the database if needed.
func Open(dir string, opts ...Option) (*HSM, error) {
	h := &HSM{dir: dir, active: map[uint]string{}}
	if name, err := os.Hostname(); err == nil {
		h.source = name
	}
	for _, o := range opts {
		o(h)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open soft hsm: %w", err)
	}
	if err := h.open(); err != nil {
		return nil, fmt.Errorf("open soft hsm: %w", err)
	}
	return h, nil
}

func (h *HSM) open() error {
	key, err := loadDeviceKey(filepath.Join(h.dir, deviceKeyFile))
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	hsm.Zero(key)
	if err != nil {
		return err
	}
	if h.seal, err = cipher.NewGCM(block); err != nil {
		return err
	}
	db, err := bolt.Open(filepath.Join(h.dir, dbFile), 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%s is in use by another process", filepath.Join(h.dir, dbFile))
	}
	if err != nil {
		return err
	}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return err
	}
	h.db = db
	return nil
}

// initSchema creates the buckets of a new database, checks the schema of an old one and drops
// a key database generation left behind by an interrupted restore.
func initSchema(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if v := meta.Get(keySchema); v != nil {
		if len(v) != 4 {
			return errors.New("hsm data has a damaged schema version")
		}
		if binary.BigEndian.Uint32(v) > schemaVersion {
			return ErrNewerSchema
		}
		// Schema 1 is the first: no migrations yet. A later one adds them here, in order.
	} else if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion)); err != nil {
		return err
	}
	for _, b := range [][]byte{bucketMBK, bucketSlot} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	current := meta.Get(keyKeys)
	if current == nil {
		current = []byte(keysPrefix + "1")
		if err := meta.Put(keyKeys, current); err != nil {
			return err
		}
	}
	if _, err := tx.CreateBucketIfNotExists(current); err != nil {
		return err
	}
	var stale [][]byte
	err = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if bytes.HasPrefix(name, []byte(keysPrefix)) && !bytes.Equal(name, current) {
			stale = append(stale, bytes.Clone(name))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range stale {
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
	}
	return nil
}

// loadDeviceKey reads the device key, or makes it if the file does not exist.
func loadDeviceKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			f.Close()
			return nil, err
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			hsm.Zero(key)
			return nil, fmt.Errorf("write device key: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			hsm.Zero(key)
			return nil, fmt.Errorf("write device key: %w", err)
		}
		return key, f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create device key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read device key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600", ErrDeviceKey, path, fi.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read device key: %w", err)
	}
	if len(key) != 32 {
		hsm.Zero(key)
		return nil, fmt.Errorf("%w: %s holds %d bytes, want 32", ErrDeviceKey, path, len(key))
	}
	return key, nil
}

// sealValue encrypts a secret under the device key.
func (h *HSM) sealValue(secret []byte, ad ...[]byte) ([]byte, error) {
	out := make([]byte, 12, 12+len(secret)+16)
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return h.seal.Seal(out, out[:12], secret, bytes.Join(ad, nil)), nil
}

// ErrSealed means a sealed value in the database did not open under the device key: the
// database and the device key file do not belong together, or the database is damaged.
var ErrSealed = errors.New("a sealed key in the hsm database does not open under the device key: hsm.db and device.key do not belong together, or hsm.db is damaged")

func (h *HSM) unsealValue(sealed []byte, ad ...[]byte) ([]byte, error) {
	if len(sealed) < 12+16 {
		return nil, ErrSealed
	}
	out, err := h.seal.Open(nil, sealed[:12], sealed[12:], bytes.Join(ad, nil))
	if err != nil {
		return nil, ErrSealed
	}
	return out, nil
}

func (h *HSM) check(ctx context.Context) error {
	if h.closed {
		return hsm.ErrClosed
	}
	return ctx.Err()
}

// mbk returns the unsealed MBK, or nil if none is set. The caller zeroes it.
func (h *HSM) mbk() ([]byte, error) {
	var sealed []byte
	if err := h.db.View(func(tx *bolt.Tx) error {
		sealed = bytes.Clone(tx.Bucket(bucketMBK).Get(keySealed))
		return nil
	}); err != nil {
		return nil, err
	}
	if sealed == nil {
		return nil, nil
	}
	return h.unsealValue(sealed, []byte(adMBK))
}

// LoadBackupKey implements [hsm.HSM].
func (h *HSM) LoadBackupKey(ctx context.Context, mbk []byte) error {
	if len(mbk) != hsm.KeySize {
		return fmt.Errorf("load backup key: %w", hsm.ErrKeySize)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	old, err := h.mbk()
	if err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	if old != nil {
		same := subtle.ConstantTimeCompare(old, mbk) == 1
		hsm.Zero(old)
		if same {
			return nil
		}
		return fmt.Errorf("load backup key: %w", hsm.ErrBackupKeySet)
	}
	sealed, err := h.sealValue(mbk, []byte(adMBK))
	if err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	id := hsm.KeyIDOf(mbk)
	err = h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMBK)
		if err := b.Put(keySealed, sealed); err != nil {
			return err
		}
		return b.Put(keyID, id[:])
	})
	if err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	return nil
}

// BackupKeyID implements [hsm.HSM].
func (h *HSM) BackupKeyID(ctx context.Context) (hsm.KeyID, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var id hsm.KeyID
	if err := h.check(ctx); err != nil {
		return id, fmt.Errorf("read backup key id: %w", err)
	}
	err := h.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMBK).Get(keyID)
		if v == nil {
			return hsm.ErrNoBackupKey
		}
		copy(id[:], v)
		return nil
	})
	if err != nil {
		return id, fmt.Errorf("read backup key id: %w", err)
	}
	return id, nil
}

// keyWrap returns the in-memory wrapper of the MBK; the unsealed MBK is zeroed at once.
func (h *HSM) keyWrap() (*backup.KeyWrap, error) {
	mbk, err := h.mbk()
	if err != nil {
		return nil, err
	}
	if mbk == nil {
		return nil, hsm.ErrNoBackupKey
	}
	defer hsm.Zero(mbk)
	return backup.NewKeyWrap(mbk)
}

func (h *HSM) currentKeys(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(tx.Bucket(bucketMeta).Get(keyKeys))
}

// entry is a key database value, decoded; material is still sealed.
type entry struct {
	label  string
	sealed []byte
}

func encodeEntry(label string, sealed []byte) []byte {
	b := []byte{1, 1, byte(len(label))}
	b = append(b, label...)
	return append(b, sealed...)
}

func decodeEntry(v []byte) (entry, error) {
	if len(v) < 3 || v[0] != 1 || v[1] != 1 || len(v) < 3+int(v[2]) {
		return entry{}, errors.New("hsm database holds a damaged key entry")
	}
	l := int(v[2])
	return entry{label: string(v[3 : 3+l]), sealed: bytes.Clone(v[3+l:])}, nil
}

// CreateKey implements [hsm.KeyStore].
func (h *HSM) CreateKey(ctx context.Context, label string) (hsm.KeyInfo, error) {
	if err := hsm.ValidateLabel(label); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	id := make([]byte, keyIDSize)
	key := make([]byte, 32)
	defer hsm.Zero(key)
	if _, err := rand.Read(id); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	if _, err := rand.Read(key); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	sealed, err := h.sealValue(key, []byte(adAppKey), id)
	if err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	err = h.db.Update(func(tx *bolt.Tx) error {
		return h.currentKeys(tx).Put(id, encodeEntry(label, sealed))
	})
	if err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	return hsm.KeyInfo{ID: hex.EncodeToString(id), Label: label, Algorithm: hsm.AlgorithmAES256}, nil
}

// Keys implements [hsm.KeyStore].
func (h *HSM) Keys(ctx context.Context) ([]hsm.KeyInfo, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	var keys []hsm.KeyInfo
	err := h.db.View(func(tx *bolt.Tx) error {
		return h.currentKeys(tx).ForEach(func(k, v []byte) error {
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			keys = append(keys, hsm.KeyInfo{ID: hex.EncodeToString(k), Label: e.label, Algorithm: hsm.AlgorithmAES256})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// Backup implements [hsm.HSM]. The key database is read in batches (no I/O to w inside a
// transaction); holding the lock shared keeps the batches one consistent database.
func (h *HSM) Backup(ctx context.Context, w io.Writer) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	kw, err := h.keyWrap()
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	bw, err := backup.NewWriter(ctx, w, kw, backup.Header{Source: h.source, Content: ContentType})
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("back up: %w", err)
		}
		var batch []backup.KeyRecord
		err := h.db.View(func(tx *bolt.Tx) error {
			c := h.currentKeys(tx).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(batch) < batchSize; k, v = c.Next() {
				e, err := decodeEntry(v)
				if err != nil {
					return err
				}
				material, err := h.unsealValue(e.sealed, []byte(adAppKey), k)
				if err != nil {
					return err
				}
				batch = append(batch, backup.KeyRecord{ID: bytes.Clone(k), Label: e.label, Algorithm: hsm.AlgorithmAES256, Material: material})
			}
			return nil
		})
		if err == nil {
			for i := range batch {
				if err = backup.WriteRecord(bw, &batch[i]); err != nil {
					break
				}
			}
		}
		for i := range batch {
			batch[i].Zero()
		}
		if err != nil {
			return fmt.Errorf("back up: %w", err)
		}
		if len(batch) < batchSize {
			break
		}
		after = batch[len(batch)-1].ID
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	return nil
}

// Restore implements [hsm.HSM]: the key database is replaced only once the whole backup was
// read and authenticated.
func (h *HSM) Restore(ctx context.Context, r io.Reader) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	kw, err := h.keyWrap()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	br, err := backup.NewReader(ctx, r, kw)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if c := br.Header().Content; c != ContentType {
		return &hsm.ContentError{Got: c, Want: ContentType}
	}
	var current, next []byte
	err = h.db.Update(func(tx *bolt.Tx) error {
		current = bytes.Clone(tx.Bucket(bucketMeta).Get(keyKeys))
		gen, err := strconv.ParseUint(strings.TrimPrefix(string(current), keysPrefix), 10, 64)
		if err != nil {
			return fmt.Errorf("hsm database names a bad key bucket %q", current)
		}
		next = []byte(keysPrefix + strconv.FormatUint(gen+1, 10))
		if tx.Bucket(next) != nil {
			if err := tx.DeleteBucket(next); err != nil {
				return err
			}
		}
		_, err = tx.CreateBucket(next)
		return err
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := h.stage(ctx, br, next); err != nil {
		if derr := h.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(next) }); derr != nil {
			return fmt.Errorf("restore: %w (and the staged keys could not be dropped: %v; they are dropped at the next start)", err, derr)
		}
		return fmt.Errorf("restore: %w", err)
	}
	err = h.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keyKeys, next); err != nil {
			return err
		}
		return tx.DeleteBucket(current)
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// stage reads key records and writes them, sealed, into bucket in batches.
func (h *HSM) stage(ctx context.Context, br *backup.Reader, bucket []byte) error {
	rr := backup.NewRecordReader(br)
	done := false
	for !done {
		if err := ctx.Err(); err != nil {
			return err
		}
		type sealedRecord struct{ id, value []byte }
		var batch []sealedRecord
		for len(batch) < batchSize {
			rec, err := rr.Next()
			if err == io.EOF {
				done = true
				break
			}
			if err != nil {
				return err
			}
			if len(rec.ID) != keyIDSize || len(rec.Material) != 32 {
				rec.Zero()
				return fmt.Errorf("%w: key %x is not a 16-byte ID with a 32-byte AES key", backup.ErrBadRecord, rec.ID)
			}
			sealed, err := h.sealValue(rec.Material, []byte(adAppKey), rec.ID)
			rec.Zero()
			if err != nil {
				return err
			}
			batch = append(batch, sealedRecord{rec.ID, encodeEntry(rec.Label, sealed)})
		}
		err := h.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for _, r := range batch {
				if b.Get(r.id) != nil {
					return fmt.Errorf("%w: key %x appears twice", backup.ErrBadRecord, r.id)
				}
				if err := b.Put(r.id, r.value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// slotMAC returns the MAC of the slot credentials, making the slot key on first use when
// create is set.
func (h *HSM) slotMAC(create bool) (slotcred.MAC, error) {
	var sealed []byte
	err := h.db.View(func(tx *bolt.Tx) error {
		sealed = bytes.Clone(tx.Bucket(bucketSlot).Get(keySlotKey))
		return nil
	})
	if err != nil {
		return nil, err
	}
	var key []byte
	switch {
	case sealed != nil:
		if key, err = h.unsealValue(sealed, []byte(adSlotKey)); err != nil {
			return nil, err
		}
	case !create:
		return nil, hsm.ErrCredentialInvalid
	default:
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if sealed, err = h.sealValue(key, []byte(adSlotKey)); err != nil {
			hsm.Zero(key)
			return nil, err
		}
		err = h.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSlot).Put(keySlotKey, sealed) })
		if err != nil {
			hsm.Zero(key)
			return nil, err
		}
	}
	// The HMAC state keeps the key's pads, not the key: zero the key once the MAC is built.
	m := hmac.New(sha256.New, key)
	hsm.Zero(key)
	return func(msg []byte) ([]byte, error) {
		m.Reset()
		m.Write(msg)
		return m.Sum(nil), nil
	}, nil
}

// IssueSlotCredential implements [hsm.HSM].
func (h *HSM) IssueSlotCredential(ctx context.Context, slot uint, cardSerial string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	mac, err := h.slotMAC(true)
	if err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	return slotcred.Issue(slot, cardSerial, mac)
}

// ActivateSlot implements [hsm.HSM].
func (h *HSM) ActivateSlot(ctx context.Context, slot uint, cardSerial string, credential []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("activate slot %d: %w", slot, err)
	}
	mac, err := h.slotMAC(false)
	if err != nil {
		return fmt.Errorf("activate slot %d: %w", slot, err)
	}
	if err := slotcred.Check(slot, cardSerial, credential, mac); err != nil {
		return err
	}
	h.active[slot] = cardSerial
	return nil
}

// ActiveSlots lists the slots activated since Open, in order.
func (h *HSM) ActiveSlots() []uint {
	h.mu.RLock()
	defer h.mu.RUnlock()
	slots := make([]uint, 0, len(h.active))
	for s := range h.active {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots
}

// Reset implements [hsm.HSM]: the device key and the database are overwritten and removed,
// then made anew. Anything sealed under the old device key, in old database pages or in a copy
// of hsm.db, cannot be opened again. (On flash storage or a copy-on-write file system the
// overwrite may not reach the old blocks; destroying the device key is what counts.)
func (h *HSM) Reset(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("reset hsm: %w", err)
	}
	if err := h.db.Close(); err != nil {
		return fmt.Errorf("reset hsm: %w", err)
	}
	h.db, h.seal = nil, nil
	clear(h.active)
	for _, name := range []string{deviceKeyFile, dbFile} {
		if err := shred(filepath.Join(h.dir, name)); err != nil {
			h.closed = true
			return fmt.Errorf("reset hsm: %w (the hsm is closed; open it again)", err)
		}
	}
	if err := h.open(); err != nil {
		h.closed = true
		return fmt.Errorf("reset hsm: %w (the hsm is closed; open it again)", err)
	}
	return nil
}

// shred overwrites a file with zeros, syncs it and removes it.
func shred(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	zeros := make([]byte, 64<<10)
	for off := int64(0); off < fi.Size(); off += int64(len(zeros)) {
		n := min(int64(len(zeros)), fi.Size()-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("overwrite %s: %w", filepath.Base(path), err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("overwrite %s: %w", filepath.Base(path), err)
	}
	return os.Remove(path)
}

// Close implements [hsm.HSM].
func (h *HSM) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	h.seal = nil
	clear(h.active)
	if h.db == nil {
		return nil
	}
	return h.db.Close()
}

// Authenticate implements [hsm.Authenticator]: the authentication key is derived from the MBK,
// unsealed for the call and zeroed after; nothing of it is stored.
func (h *HSM) Authenticate(ctx context.Context, msg []byte) ([]byte, error) {
	if err := hsm.ValidateAuthenticated(msg); err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	mbk, err := h.mbk()
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if mbk == nil {
		return nil, fmt.Errorf("authenticate: %w", hsm.ErrNoBackupKey)
	}
	tag := hsm.AuthenticatorOf(mbk, msg)
	hsm.Zero(mbk)
	return tag, nil
}

// CheckAuthenticator implements [hsm.Authenticator].
func (h *HSM) CheckAuthenticator(ctx context.Context, msg, tag []byte) error {
	want, err := h.Authenticate(ctx, msg)
	if err != nil {
		return fmt.Errorf("check authenticator: %w", errors.Unwrap(err))
	}
	if !hmac.Equal(want, tag) {
		return fmt.Errorf("check authenticator: %w", hsm.ErrAuthenticatorMismatch)
	}
	return nil
}
