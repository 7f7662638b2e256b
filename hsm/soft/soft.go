// Package soft is the embedded software HSM, Keyquorum's default: an [hsm.HSM] (with
// [hsm.KeyStore], [hsm.ObjectStore], [hsm.ObjectCreator] and [hsm.Authenticator]) whose objects
// live in a bbolt database in the data dir, every secret in it sealed under a store key.
//
// It holds the kinds of objects a PKCS#11 token holds, described by the same model (hsm.Object,
// PKCS#11 attributes): RSA, EC (P-256, P-384) and Ed25519 key pairs, AES keys of every length,
// generic secrets, X.509 certificates and data objects, made on the HSM page or the CLI
// ([HSM.CreateObject]) or imported ([HSM.ImportObject]: PKCS#8, PEM certificates).
//
// # Files
//
//	<dir>/device.key  32 random bytes, mode 0600, made on first Open: seals the objects an
//	                  operator made or imported
//	<dir>/own.key     32 random bytes, mode 0600: seals Keyquorum's own secrets (the MBK, the slot
//	                  credential key) and the application keys it created ([HSM.CreateKey])
//	<dir>/hsm.db      the bbolt store, mode 0600
//
// The store keys stand in for an HSM's internal storage key: whoever reads the data dir owns
// the soft HSM, which is why a real appliance uses hsm/pkcs11. What they protect against is a
// copy of hsm.db alone, a backup of the data dir without the key files, and old pages of the
// database after a factory reset: [HSM.Reset] overwrites and replaces own.key, so nothing of
// Keyquorum's sealed under the old one can be opened again, while the operator's objects stay;
// [HSM.Wipe] replaces both keys and the database.
//
// # Bucket tree (schema 2)
//
//	meta
//	  schema     uint32, big-endian: 2
//	  ownkey     fingerprint of own.key (HMAC-SHA256(own key, "keyquorum own key id"), 8 bytes)
//	  resetting  present while a factory reset runs; Open finishes it
//	  restore    the journal of a restore in progress: backup ID, creation time, source, make
//	             equal, records staged so far, start time
//	mbk
//	  sealed     the MBK, sealed under the own key (additional data "keyquorum mbk")
//	  id         its key ID, 8 bytes (not secret)
//	slot
//	  key        the slot credential key, sealed under the own key ("keyquorum slot key")
//	objects
//	  <handle>   16 random bytes -> an object entry (see objects.go): version 2, the sealed key
//	             material (additional data "keyquorum object" and the handle), the object record
//	staging      a restore's objects while the backup is read
//
// Schema 1 (AES-256 keys in keys.<generation>, everything under the device key) is migrated on
// Open. The authenticator key ([hsm.Authenticator]) is not stored: it is derived from the
// unsealed MBK for each call.
//
// Sealed means AES-256-GCM: a random 12-byte nonce, then the ciphertext. In backups, key material
// is wrapped under the MBK with AES Key Wrap with Padding (RFC 5649, the same as PKCS#11
// CKM_AES_KEY_WRAP_PAD): a secret key's value, a private key's PKCS#8 DER. A restore seals the
// backup's objects into the staging bucket in batches and changes the objects in one last
// transaction, so a restore cut short (bad backup, crash) leaves the store as it was; Open drops
// the staging bucket and the journal names the restore until it is run again.
//
// # What this package must never do
//
// Write a key unsealed, keep the MBK in memory between calls (it is unsealed for each use into
// locked memory, internal/secmem, and zeroed after), or do I/O to the caller's reader or writer
// inside a bbolt transaction. (The sealing keys' AES schedules live in Go's heap for the life of
// the HSM: they cannot be locked one by one; see internal/secmem.)
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
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/slotcred"
	"github.com/keyquorum/keyquorum/internal/secmem"
)

// ContentType names the content of a soft HSM backup: object records (hsm/backup) whose key
// material is wrapped under the MBK with RFC 5649. Backups of content "keyquorum/soft-keys/1"
// (AES-256 keys only, from earlier versions) are restored too.
const ContentType = "keyquorum/soft-objects/2"

const (
	contentTypeV1 = "keyquorum/soft-keys/1"
	deviceKeyFile = "device.key"
	ownKeyFile    = "own.key"
	dbFile        = "hsm.db"
	schemaVersion = 2
	keyIDSize     = 16
	batchSize     = 256

	adMBK     = "keyquorum mbk"
	adSlotKey = "keyquorum slot key"
	adAppKey  = "keyquorum app key" // schema 1
	adObject  = "keyquorum object"
)

var (
	bucketMeta    = []byte("meta")
	bucketMBK     = []byte("mbk")
	bucketSlot    = []byte("slot")
	bucketObjects = []byte("objects")
	bucketStaging = []byte("staging")
	keySchema     = []byte("schema")
	keyKeys       = []byte("keys") // schema 1
	keyOwnKey     = []byte("ownkey")
	keyResetting  = []byte("resetting")
	keyJournal    = []byte("restore")
	keySealed     = []byte("sealed")
	keyID         = []byte("id")
	keySlotKey    = []byte("key")
	keysPrefix    = "keys." // schema 1
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
	seal   cipher.AEAD // under the device key: other objects
	own    cipher.AEAD // under the own key: the MBK, the slot key, the keys Keyquorum created
	ownFP  []byte      // fingerprint of the own key
	active map[uint]string
	closed bool
}

var (
	_ hsm.HSM           = (*HSM)(nil)
	_ hsm.KeyStore      = (*HSM)(nil)
	_ hsm.Authenticator = (*HSM)(nil)
	_ hsm.ObjectStore   = (*HSM)(nil)
	_ hsm.ObjectCreator = (*HSM)(nil)
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
	h.seal, err = newGCM(key)
	hsm.Zero(key)
	if err != nil {
		return err
	}
	db, err := bolt.Open(filepath.Join(h.dir, dbFile), 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%s is in use by another process", filepath.Join(h.dir, dbFile))
	}
	if err != nil {
		return err
	}
	h.db = db
	if err := h.openOwnKey(); err != nil {
		db.Close()
		h.db = nil
		return err
	}
	if err := db.Update(h.initSchema); err != nil {
		db.Close()
		h.db = nil
		return err
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func ownFingerprint(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("keyquorum own key id"))
	return m.Sum(nil)[:8]
}

// openOwnKey loads the own key, finishing a factory reset that was cut short: a database marked
// "resetting" that still names the current own key gets a new one.
func (h *HSM) openOwnKey() error {
	path := filepath.Join(h.dir, ownKeyFile)
	var resetting, fp []byte
	h.db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			resetting, fp = bytes.Clone(m.Get(keyResetting)), bytes.Clone(m.Get(keyOwnKey))
		}
		return nil
	})
	_, statErr := os.Stat(path)
	switch {
	case resetting != nil && statErr == nil:
		key, err := loadDeviceKey(path)
		if err != nil {
			return err
		}
		old := bytes.Equal(ownFingerprint(key), fp)
		hsm.Zero(key)
		if old {
			if err := shred(path); err != nil {
				return fmt.Errorf("finish factory reset: %w", err)
			}
		}
	case statErr != nil && fp != nil && resetting == nil:
		return fmt.Errorf("%w: %s is missing, and with it the keys sealed under it (only a factory reset makes a new one)", ErrDeviceKey, path)
	}
	key, err := loadDeviceKey(path)
	if err != nil {
		return err
	}
	h.ownFP = ownFingerprint(key)
	h.own, err = newGCM(key)
	hsm.Zero(key)
	if err == nil && fp != nil && resetting == nil && !bytes.Equal(fp, h.ownFP) {
		return fmt.Errorf("%w: %s does not belong to %s", ErrDeviceKey, path, dbFile)
	}
	return err
}

// initSchema creates the buckets of a new database, migrates an older one, finishes a factory
// reset cut short, and drops the staging bucket of a restore cut short (its journal stays, so
// that the restore is named as pending).
func (h *HSM) initSchema(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	for _, b := range [][]byte{bucketMBK, bucketSlot, bucketObjects} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	if v := meta.Get(keySchema); v != nil {
		if len(v) != 4 {
			return errors.New("hsm data has a damaged schema version")
		}
		switch n := binary.BigEndian.Uint32(v); {
		case n > schemaVersion:
			return ErrNewerSchema
		case n == 1:
			if err := h.migrate1(tx); err != nil {
				return fmt.Errorf("migrate hsm data from schema 1: %w", err)
			}
		}
	}
	if err := meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion)); err != nil {
		return err
	}
	if meta.Get(keyResetting) != nil {
		if err := clearOwn(tx); err != nil {
			return err
		}
		if err := meta.Delete(keyResetting); err != nil {
			return err
		}
	}
	if err := meta.Put(keyOwnKey, h.ownFP); err != nil {
		return err
	}
	if tx.Bucket(bucketStaging) != nil {
		return tx.DeleteBucket(bucketStaging)
	}
	return nil
}

// migrate1 turns a schema 1 database into schema 2: the MBK and the slot key are sealed again
// under the own key, the application keys become objects Keyquorum manages.
func (h *HSM) migrate1(tx *bolt.Tx) error {
	reseal := func(b *bolt.Bucket, k []byte, ad string) error {
		v := b.Get(k)
		if v == nil {
			return nil
		}
		secret, err := h.unsealValue(h.seal, v, []byte(ad))
		if err != nil {
			return err
		}
		defer hsm.Zero(secret)
		sealed, err := h.sealValue(h.own, secret, []byte(ad))
		if err != nil {
			return err
		}
		return b.Put(k, sealed)
	}
	if err := reseal(tx.Bucket(bucketMBK), keySealed, adMBK); err != nil {
		return err
	}
	if err := reseal(tx.Bucket(bucketSlot), keySlotKey, adSlotKey); err != nil {
		return err
	}
	meta := tx.Bucket(bucketMeta)
	var old [][]byte
	tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if bytes.HasPrefix(name, []byte(keysPrefix)) {
			old = append(old, bytes.Clone(name))
		}
		return nil
	})
	if cur := tx.Bucket(meta.Get(keyKeys)); cur != nil {
		err := cur.ForEach(func(id, v []byte) error {
			if len(v) < 3 || v[0] != 1 || v[1] != 1 || len(v) < 3+int(v[2]) {
				return errors.New("hsm database holds a damaged key entry")
			}
			label := string(v[3 : 3+int(v[2])])
			key, err := h.unsealValue(h.seal, v[3+int(v[2]):], []byte(adAppKey), id)
			if err != nil {
				return err
			}
			defer hsm.Zero(key)
			_, err = h.putObject(tx.Bucket(bucketObjects), nil, appKeyRecord(label, id, len(key)), key)
			return err
		})
		if err != nil {
			return err
		}
	}
	for _, name := range old {
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
	}
	return meta.Delete(keyKeys)
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

// sealValue encrypts a secret under a store key (the device key or the own key).
func (h *HSM) sealValue(key cipher.AEAD, secret []byte, ad ...[]byte) ([]byte, error) {
	out := make([]byte, 12, 12+len(secret)+16)
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return key.Seal(out, out[:12], secret, bytes.Join(ad, nil)), nil
}

// ErrSealed means a sealed value in the database did not open under the device key: the
// database and the device key file do not belong together, or the database is damaged.
var ErrSealed = errors.New("a sealed key in the hsm database does not open under the device key: hsm.db and device.key do not belong together, or hsm.db is damaged")

func (h *HSM) unsealValue(key cipher.AEAD, sealed []byte, ad ...[]byte) ([]byte, error) {
	if len(sealed) < 12+16 {
		return nil, ErrSealed
	}
	out, err := key.Open(nil, sealed[:12], sealed[12:], bytes.Join(ad, nil))
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

// mbk returns the unsealed MBK in locked memory (internal/secmem), or nil if none is set. The
// caller frees it.
func (h *HSM) mbk() (*secmem.Buf, error) {
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
	if len(sealed) != 12+hsm.KeySize+16 {
		return nil, ErrSealed
	}
	buf := secmem.New(hsm.KeySize)
	out, err := h.own.Open(buf.Bytes()[:0], sealed[:12], sealed[12:], []byte(adMBK))
	if err != nil || len(out) != hsm.KeySize {
		buf.Free()
		return nil, ErrSealed
	}
	return buf, nil
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
		same := subtle.ConstantTimeCompare(old.Bytes(), mbk) == 1
		old.Free()
		if same {
			return nil
		}
		return fmt.Errorf("load backup key: %w", hsm.ErrBackupKeySet)
	}
	sealed, err := h.sealValue(h.own, mbk, []byte(adMBK))
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
	defer mbk.Free()
	return backup.NewKeyWrap(mbk.Bytes())
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
		if key, err = h.unsealValue(h.own, sealed, []byte(adSlotKey)); err != nil {
			return nil, err
		}
	case !create:
		return nil, hsm.ErrCredentialInvalid
	default:
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if sealed, err = h.sealValue(h.own, key, []byte(adSlotKey)); err != nil {
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

// Wipe implements [hsm.ObjectStore]: the device key, the own key and the database are
// overwritten and removed, then made anew. Anything sealed under the old keys, in old database
// pages or in a copy of hsm.db, cannot be opened again. (On flash storage or a copy-on-write file
// system the overwrite may not reach the old blocks; destroying the keys is what counts.)
func (h *HSM) Wipe(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("wipe hsm: %w", err)
	}
	if err := h.db.Close(); err != nil {
		return fmt.Errorf("wipe hsm: %w", err)
	}
	h.db, h.seal, h.own = nil, nil, nil
	clear(h.active)
	for _, name := range []string{deviceKeyFile, ownKeyFile, dbFile} {
		if err := shred(filepath.Join(h.dir, name)); err != nil {
			h.closed = true
			return fmt.Errorf("wipe hsm: %w (the hsm is closed; open it again)", err)
		}
	}
	if err := h.open(); err != nil {
		h.closed = true
		return fmt.Errorf("wipe hsm: %w (the hsm is closed; open it again)", err)
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
	h.seal, h.own = nil, nil
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
	tag := hsm.AuthenticatorOf(mbk.Bytes(), msg)
	mbk.Free()
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

// ExportSlotKey implements [hsm.SlotKeyCarrier]: the slot key, unsealed for the moment it is
// wrapped under the MBK, then zeroed.
func (h *HSM) ExportSlotKey(ctx context.Context) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("export slot key: %w", err)
	}
	kw, err := h.keyWrap()
	if err != nil {
		return nil, fmt.Errorf("export slot key: %w", err)
	}
	var sealed []byte
	if err := h.db.View(func(tx *bolt.Tx) error {
		sealed = bytes.Clone(tx.Bucket(bucketSlot).Get(keySlotKey))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("export slot key: %w", err)
	}
	if sealed == nil {
		return nil, nil
	}
	key, err := h.unsealValue(h.own, sealed, []byte(adSlotKey))
	if err != nil {
		return nil, fmt.Errorf("export slot key: %w", err)
	}
	defer hsm.Zero(key)
	return kw.WrapKey(ctx, key)
}

// ImportSlotKey implements [hsm.SlotKeyCarrier].
func (h *HSM) ImportSlotKey(ctx context.Context, wrapped []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("import slot key: %w", err)
	}
	kw, err := h.keyWrap()
	if err != nil {
		return fmt.Errorf("import slot key: %w", err)
	}
	key, err := kw.UnwrapKey(ctx, wrapped)
	if err != nil || len(key) != hsm.SlotKeySize {
		hsm.Zero(key)
		return hsm.ErrSlotKeyInvalid
	}
	sealed, err := h.sealValue(h.own, key, []byte(adSlotKey))
	hsm.Zero(key)
	if err != nil {
		return fmt.Errorf("import slot key: %w", err)
	}
	if err := h.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSlot).Put(keySlotKey, sealed) }); err != nil {
		return fmt.Errorf("import slot key: %w", err)
	}
	return nil
}
