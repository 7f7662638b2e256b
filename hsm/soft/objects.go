package soft

import (
	"bytes"
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// An object entry in the objects bucket, key: a random 16-byte handle.
//
//	1  version (2)
//	4  length S of the sealed material (0 for objects without key material)
//	S  the material (a secret key's value, a private key's PKCS#8), AES-256-GCM under the own key
//	   for keys Keyquorum created (flag managed), else under the device key; additional data
//	   "keyquorum object" and the handle
//	.. the object record (hsm/backup), whose material field holds zeros of the length the
//	   material has wrapped with RFC 5649, so that the record tells the key's size
const entryVersion = 2

type entry struct {
	handle []byte
	rec    *backup.ObjectRecord
	sealed []byte
}

func decodeObject(handle, v []byte) (*entry, error) {
	bad := errors.New("hsm database holds a damaged object entry")
	if len(v) < 5 || v[0] != entryVersion {
		return nil, bad
	}
	n := int(binary.BigEndian.Uint32(v[1:5]))
	if len(v) < 5+n {
		return nil, bad
	}
	r := bytes.NewReader(v[5+n:])
	rec, err := backup.NewObjectRecordReader(r).Next()
	if err != nil || r.Len() != 0 {
		return nil, bad
	}
	return &entry{handle: bytes.Clone(handle), rec: rec, sealed: bytes.Clone(v[5 : 5+n])}, nil
}

func (h *HSM) storeKey(rec *backup.ObjectRecord) cipher.AEAD {
	if rec.Flags&backup.FlagManaged != 0 {
		return h.own
	}
	return h.seal
}

// encodeObject seals material and encodes an entry of handle.
func (h *HSM) encodeObject(handle []byte, rec *backup.ObjectRecord, material []byte) ([]byte, error) {
	r := *rec
	var sealed []byte
	if hsm.HasMaterial(r.Class) {
		var err error
		if sealed, err = h.sealValue(h.storeKey(&r), material, []byte(adObject), handle); err != nil {
			return nil, err
		}
		r.Material = make([]byte, backup.WrappedLen(len(material)))
	} else {
		r.Material = nil
	}
	b := []byte{entryVersion}
	b = binary.BigEndian.AppendUint32(b, uint32(len(sealed)))
	b = append(b, sealed...)
	return backup.AppendObjectRecord(b, &r)
}

// putObject stores an object under a new handle (or handle, when given) and returns the handle.
func (h *HSM) putObject(b *bolt.Bucket, handle []byte, rec *backup.ObjectRecord, material []byte) ([]byte, error) {
	if handle == nil {
		handle = make([]byte, 16)
		if _, err := rand.Read(handle); err != nil {
			return nil, err
		}
	}
	v, err := h.encodeObject(handle, rec, material)
	if err != nil {
		return nil, err
	}
	return handle, b.Put(handle, v)
}

func (h *HSM) unsealObject(e *entry) ([]byte, error) {
	if !hsm.HasMaterial(e.rec.Class) {
		return nil, nil
	}
	return h.unsealValue(h.storeKey(e.rec), e.sealed, []byte(adObject), e.handle)
}

// describe makes the object of an entry: what a backup does with it.
func describe(e *entry) hsm.Object {
	o := e.rec.Object()
	if hsm.HasMaterial(o.Class) && !e.rec.Bool(hsm.AttrExtractable) {
		o.Carried = false
		o.Why = "it is not extractable (CKA_EXTRACTABLE is false): it was made to never leave this hsm, not even wrapped under the master backup key"
	}
	return o
}

// forEachObject calls fn for every entry, in handle order.
func forEachObject(tx *bolt.Tx, fn func(e *entry) error) error {
	return tx.Bucket(bucketObjects).ForEach(func(k, v []byte) error {
		e, err := decodeObject(k, v)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

func boolAttr(t uint32, v bool) hsm.Attr {
	if v {
		return hsm.Attr{Type: t, Value: []byte{1}}
	}
	return hsm.Attr{Type: t, Value: []byte{0}}
}

func sortAttrs(a []hsm.Attr) []hsm.Attr {
	slices.SortFunc(a, func(x, y hsm.Attr) int {
		switch {
		case x.Type < y.Type:
			return -1
		case x.Type > y.Type:
			return 1
		}
		return 0
	})
	return a
}

// appKeyRecord is the record of an AES application key Keyquorum creates: sensitive,
// extractable (so that backups carry it), encrypt and decrypt.
func appKeyRecord(label string, id []byte, n int) *backup.ObjectRecord {
	return &backup.ObjectRecord{Class: hsm.ClassSecretKey, Type: hsm.KeyAES, Flags: backup.FlagManaged, Attrs: sortAttrs([]hsm.Attr{
		boolAttr(hsm.AttrPrivate, true), {Type: hsm.AttrLabel, Value: []byte(label)}, {Type: hsm.AttrID, Value: bytes.Clone(id)},
		boolAttr(hsm.AttrSensitive, true), boolAttr(hsm.AttrEncrypt, true), boolAttr(hsm.AttrDecrypt, true),
		boolAttr(hsm.AttrExtractable, true),
	}), Material: make([]byte, backup.WrappedLen(n))}
}

// clearOwn deletes the MBK, the slot key and the objects Keyquorum created.
func clearOwn(tx *bolt.Tx) error {
	for _, k := range [][]byte{keySealed, keyID} {
		if err := tx.Bucket(bucketMBK).Delete(k); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketSlot).Delete(keySlotKey); err != nil {
		return err
	}
	var managed [][]byte
	err := forEachObject(tx, func(e *entry) error {
		if e.rec.Flags&backup.FlagManaged != 0 {
			managed = append(managed, e.handle)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range managed {
		if err := tx.Bucket(bucketObjects).Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Reset implements [hsm.HSM], the factory reset: the MBK, the slot credential key and the
// application keys Keyquorum created are deleted and the own key they were sealed under is
// overwritten and replaced, so that old database pages holding them cannot be opened again.
// Other objects (imported, or made on the HSM page) stay; [HSM.Wipe] removes them too. Cut short,
// the reset is finished by the next Open.
func (h *HSM) Reset(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("reset hsm: %w", err)
	}
	err := h.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyResetting, []byte{1}) })
	if err == nil {
		err = shred(filepath.Join(h.dir, ownKeyFile))
	}
	if err == nil {
		err = h.openOwnKey()
	}
	if err == nil {
		err = h.db.Update(h.initSchema)
	}
	clear(h.active)
	if err != nil {
		return fmt.Errorf("reset hsm: %w (open the hsm again to finish the reset)", err)
	}
	return nil
}

// CreateKey implements [hsm.KeyStore]: an AES-256 key, Keyquorum's own.
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
	err := h.db.Update(func(tx *bolt.Tx) error {
		_, err := h.putObject(tx.Bucket(bucketObjects), nil, appKeyRecord(label, id, 32), key)
		return err
	})
	if err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	return hsm.KeyInfo{ID: hex.EncodeToString(id), Label: label, Algorithm: hsm.AlgorithmAES256}, nil
}

// Keys implements [hsm.KeyStore]: every secret and private key, ordered by ID.
func (h *HSM) Keys(ctx context.Context) ([]hsm.KeyInfo, error) {
	objs, err := h.Objects(ctx)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", errors.Unwrap(err))
	}
	var keys []hsm.KeyInfo
	for _, o := range objs {
		if !o.Own && (o.Class == hsm.ClassSecretKey || o.Class == hsm.ClassPrivateKey) {
			keys = append(keys, hsm.KeyInfo{ID: hex.EncodeToString(o.ID), Label: o.Label, Algorithm: hsm.AlgorithmOf(o)})
		}
	}
	slices.SortStableFunc(keys, func(a, b hsm.KeyInfo) int { return strings.Compare(a.ID, b.ID) })
	return keys, nil
}

// Objects implements [hsm.ObjectStore]. The MBK and the slot credential key are listed as
// Keyquorum's own.
func (h *HSM) Objects(ctx context.Context) ([]hsm.Object, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	var out []hsm.Object
	err := h.db.View(func(tx *bolt.Tx) error {
		if id := tx.Bucket(bucketMBK).Get(keyID); id != nil {
			out = append(out, hsm.Object{Class: hsm.ClassSecretKey, Type: hsm.KeyAES, Bits: 256, Label: "keyquorum master backup key",
				ID: bytes.Clone(id), Own: true, Why: "Keyquorum's master backup key: never in a backup, it comes from the cards"})
		}
		if tx.Bucket(bucketSlot).Get(keySlotKey) != nil {
			out = append(out, hsm.Object{Class: hsm.ClassSecretKey, Type: hsm.KeyGenericSecret, Bits: 256, Label: "keyquorum slot credential key",
				Own: true, Why: "Keyquorum's slot credential key: bound to this hsm, slot credentials are issued anew"})
		}
		return forEachObject(tx, func(e *entry) error {
			out = append(out, describe(e))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	slices.SortStableFunc(out, compareObjects)
	return out, nil
}

func compareObjects(a, b hsm.Object) int {
	switch {
	case a.Class != b.Class:
		return int(a.Class) - int(b.Class)
	case a.Type != b.Type:
		if a.Type < b.Type {
			return -1
		}
		return 1
	}
	if c := bytes.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	return strings.Compare(a.Label, b.Label)
}

// Backup implements [hsm.HSM]: [HSM.BackupObjects] without options.
func (h *HSM) Backup(ctx context.Context, w io.Writer) error {
	return h.BackupObjects(ctx, w, hsm.BackupOptions{})
}

// BackupObjects implements [hsm.ObjectStore]. The objects are read in batches (no I/O to w
// inside a transaction); holding the lock shared keeps the batches one consistent store. Key
// material is wrapped under the MBK with RFC 5649 (AES Key Wrap with Padding, as PKCS#11
// CKM_AES_KEY_WRAP_PAD): a secret key's value, a private key's PKCS#8.
func (h *HSM) BackupObjects(ctx context.Context, w io.Writer, opts hsm.BackupOptions) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	kw, err := h.keyWrap()
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	var left []hsm.Object
	err = h.db.View(func(tx *bolt.Tx) error {
		return forEachObject(tx, func(e *entry) error {
			if o := describe(e); !o.Carried {
				left = append(left, o)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	if len(left) > 0 && !opts.Skip {
		return &hsm.IncompleteBackupError{Objects: left}
	}
	bw, err := backup.NewWriter(ctx, w, kw, backup.Header{Source: h.source, Content: ContentType,
		Skipped: backup.SkipEntries(left), SkippedTotal: len(left)})
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("back up: %w", err)
		}
		var batch []*backup.ObjectRecord
		err := h.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketObjects).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(batch) < batchSize; k, v = c.Next() {
				after = bytes.Clone(k)
				e, err := decodeObject(k, v)
				if err != nil {
					return err
				}
				if !describe(e).Carried {
					continue
				}
				if hsm.HasMaterial(e.rec.Class) {
					raw, err := h.unsealObject(e)
					if err != nil {
						return err
					}
					e.rec.Material, err = kw.WrapKey(ctx, raw)
					hsm.Zero(raw)
					if err != nil {
						return err
					}
				}
				batch = append(batch, e.rec)
			}
			if k == nil {
				after = nil
			}
			return nil
		})
		if err == nil {
			for _, rec := range batch {
				if err = backup.WriteObjectRecord(bw, rec); err != nil {
					break
				}
			}
		}
		for _, rec := range batch {
			rec.Zero()
		}
		if err != nil {
			return fmt.Errorf("back up: %w", err)
		}
		if after == nil {
			break
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	return nil
}

// staged is a backup object sealed into the staging bucket.
type stagedObj struct {
	obj    hsm.Object
	handle []byte
	hash   [32]byte
}

// contentHash identifies an object's content: its record without flags (material as the
// placeholder of its length) and its raw key material.
func contentHash(rec *backup.ObjectRecord, raw []byte) [32]byte {
	r := *rec
	r.Flags = 0
	if hsm.HasMaterial(r.Class) {
		r.Material = make([]byte, backup.WrappedLen(len(raw)))
	}
	b, _ := backup.AppendObjectRecord(nil, &r)
	m := sha256.New()
	m.Write(b)
	m.Write(raw)
	var sum [32]byte
	copy(sum[:], m.Sum(nil))
	return sum
}

// journal of a soft restore: in meta, while the backup is being staged.
//
//	16 backup ID | 8 created | 1 source length | source | 1 make equal | 4 records staged | 8 started
func encodeJournal(ref hsm.BackupRef, makeEqual bool, staged int, started time.Time) []byte {
	id, _ := hex.DecodeString(ref.ID)
	b := append([]byte{}, id...)
	b = binary.BigEndian.AppendUint64(b, uint64(ref.Created.Unix()))
	b = append(b, byte(len(ref.Source)))
	b = append(b, ref.Source...)
	eq := byte(0)
	if makeEqual {
		eq = 1
	}
	b = append(b, eq)
	b = binary.BigEndian.AppendUint32(b, uint32(staged))
	return binary.BigEndian.AppendUint64(b, uint64(started.Unix()))
}

func decodeJournal(b []byte) (*hsm.PendingRestore, error) {
	if len(b) < 25 || len(b) != 25+int(b[24])+13 {
		return nil, errors.New("the restore journal in the hsm database is damaged")
	}
	p := &hsm.PendingRestore{}
	p.Backup.ID = hex.EncodeToString(b[:16])
	p.Backup.Created = time.Unix(int64(binary.BigEndian.Uint64(b[16:24])), 0).UTC()
	sl := int(b[24])
	p.Backup.Source = string(b[25 : 25+sl])
	r := b[25+sl:]
	if r[0] > 1 {
		return nil, errors.New("the restore journal in the hsm database is damaged")
	}
	p.MakeEqual = r[0] == 1
	p.Done = int(binary.BigEndian.Uint32(r[1:5]))
	p.Started = time.Unix(int64(binary.BigEndian.Uint64(r[5:13])), 0).UTC()
	return p, nil
}

// PendingRestore implements [hsm.ObjectStore]. A soft restore changes the store in one
// transaction at its end, so a pending one has changed nothing yet: Done counts the records it
// had staged, Total is 0 (unknown).
func (h *HSM) PendingRestore(ctx context.Context) (*hsm.PendingRestore, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("read restore journal: %w", err)
	}
	var p *hsm.PendingRestore
	err := h.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyJournal)
		if v == nil {
			return nil
		}
		var err error
		p, err = decodeJournal(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read restore journal: %w", err)
	}
	return p, nil
}

// Restore implements [hsm.HSM]: [HSM.RestoreObjects] without options.
func (h *HSM) Restore(ctx context.Context, r io.Reader) error {
	_, err := h.RestoreObjects(ctx, r, hsm.RestoreOptions{})
	return err
}

// RestoreObjects implements [hsm.ObjectStore]. The backup's objects are sealed into a staging
// bucket in batches while it is read; once it was read and authenticated to its end, one
// transaction adds them, replaces the objects of the same identity and (MakeEqual) removes the
// others. A crash before that transaction changes nothing: the next Open drops the staging
// bucket and the journal names the restore until it is run again.
func (h *HSM) RestoreObjects(ctx context.Context, r io.Reader, opts hsm.RestoreOptions) (*hsm.RestorePlan, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	kw, err := h.keyWrap()
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	br, err := backup.NewReader(ctx, r, kw)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	hdr := br.Header()
	if hdr.Content != ContentType && hdr.Content != contentTypeV1 {
		return nil, &hsm.ContentError{Got: hdr.Content, Want: ContentType}
	}
	ref := hsm.BackupRef{ID: hex.EncodeToString(hdr.ID[:]), Source: hdr.Source, Created: hdr.Created}
	plan := &hsm.RestorePlan{Backup: ref, Skipped: hdr.Skipped, SkippedMore: hdr.SkippedTotal - len(hdr.Skipped),
		DryRun: opts.DryRun, MakeEqual: opts.MakeEqual}
	started := time.Now()
	err = h.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketStaging) != nil {
			if err := tx.DeleteBucket(bucketStaging); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucket(bucketStaging); err != nil {
			return err
		}
		if opts.DryRun {
			return nil
		}
		return tx.Bucket(bucketMeta).Put(keyJournal, encodeJournal(ref, opts.MakeEqual, 0, started))
	})
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	dropStaging := func() {
		h.db.Update(func(tx *bolt.Tx) error {
			if opts.DryRun {
				tx.Bucket(bucketMeta).Delete(keyJournal)
			}
			return tx.DeleteBucket(bucketStaging)
		})
	}
	st, err := h.stage(ctx, br, hdr.Content, kw, ref, opts.MakeEqual, started)
	if err != nil {
		dropStaging()
		return nil, fmt.Errorf("restore: %w", err)
	}
	err = h.db.Update(func(tx *bolt.Tx) error {
		objs := tx.Bucket(bucketObjects)
		onStore := map[string][]*entry{}
		var order []*entry
		if err := forEachObject(tx, func(e *entry) error {
			k := e.rec.Object().Identity()
			onStore[k] = append(onStore[k], e)
			order = append(order, e)
			return nil
		}); err != nil {
			return err
		}
		byID := map[string]bool{}
		var keys []string
		groups := map[string][]stagedObj{}
		for _, s := range st {
			k := s.obj.Identity()
			if !byID[k] {
				keys = append(keys, k)
			}
			byID[k] = true
			groups[k] = append(groups[k], s)
		}
		staging := tx.Bucket(bucketStaging)
		// The new objects go in in handle order: bbolt splits a page only at commit, so
		// random handles would each shift the ever larger leaf they land in (a restore of
		// 100 000 objects took twenty times as long as one of 10 000).
		var puts []stagedObj
		for _, k := range keys {
			old := onStore[k]
			matched := map[int]bool{}
			var create []stagedObj
			for _, s := range groups[k] {
				found := false
				for i, e := range old {
					if matched[i] {
						continue
					}
					raw, err := h.unsealObject(e)
					if err != nil {
						return err
					}
					hash := contentHash(e.rec, raw)
					hsm.Zero(raw)
					if hash == s.hash {
						matched[i], found = true, true
						break
					}
				}
				if !found {
					create = append(create, s)
				}
			}
			action := hsm.ActionUnchanged
			switch {
			case len(old) == 0:
				action = hsm.ActionAdd
			case len(create) > 0 || len(matched) < len(old):
				action = hsm.ActionReplace
			}
			for _, s := range groups[k] {
				plan.Items = append(plan.Items, hsm.PlanItem{Action: action, Object: s.obj})
			}
			if opts.DryRun {
				continue
			}
			puts = append(puts, create...)
			for i, e := range old {
				if !matched[i] {
					if err := objs.Delete(e.handle); err != nil {
						return err
					}
				}
			}
		}
		slices.SortFunc(puts, func(a, b stagedObj) int { return bytes.Compare(a.handle, b.handle) })
		for _, s := range puts {
			if err := objs.Put(s.handle, staging.Get(s.handle)); err != nil {
				return err
			}
		}
		for _, e := range order {
			o := describe(e)
			if byID[o.Identity()] {
				continue
			}
			o.Attrs = nil
			if !opts.MakeEqual || plan.LeftOut(o) {
				plan.Items = append(plan.Items, hsm.PlanItem{Action: hsm.ActionKeep, Object: o})
				continue
			}
			plan.Items = append(plan.Items, hsm.PlanItem{Action: hsm.ActionRemove, Object: o})
			if !opts.DryRun {
				if err := objs.Delete(e.handle); err != nil {
					return err
				}
			}
		}
		if err := tx.DeleteBucket(bucketStaging); err != nil {
			return err
		}
		if opts.DryRun {
			return nil
		}
		return tx.Bucket(bucketMeta).Delete(keyJournal)
	})
	if err != nil {
		dropStaging()
		return nil, fmt.Errorf("restore: %w", err)
	}
	return plan, nil
}

// v1Record turns a key record of a version 1 backup (an AES-256 application key, raw) into an
// object record.
func v1Record(k *backup.KeyRecord) (*backup.ObjectRecord, []byte, error) {
	if len(k.Material) != 32 {
		k.Zero()
		return nil, nil, fmt.Errorf("%w: key %x is not a 32-byte AES key", backup.ErrBadRecord, k.ID)
	}
	return appKeyRecord(k.Label, k.ID, 32), k.Material, nil
}

// checkMaterial checks unwrapped key material against its record.
func checkMaterial(rec *backup.ObjectRecord, raw []byte) error {
	switch {
	case rec.Class == hsm.ClassSecretKey && rec.Type == hsm.KeyAES:
		if n := len(raw); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("an AES key of %d bytes", n)
		}
	case rec.Class == hsm.ClassSecretKey && rec.Type == hsm.KeyDES3:
		if len(raw) != 24 {
			return fmt.Errorf("a DES3 key of %d bytes", len(raw))
		}
	case rec.Class == hsm.ClassPrivateKey:
		if _, err := x509.ParsePKCS8PrivateKey(raw); err != nil {
			return errors.New("a private key that is not PKCS#8")
		}
	}
	return nil
}

// stage reads records, unwraps their material and writes them, sealed, into the staging bucket
// in batches.
func (h *HSM) stage(ctx context.Context, br *backup.Reader, content string, kw *backup.KeyWrap, ref hsm.BackupRef, makeEqual bool, started time.Time) ([]stagedObj, error) {
	var next func() (*backup.ObjectRecord, []byte, error)
	if content == contentTypeV1 {
		kr := backup.NewRecordReader(br)
		next = func() (*backup.ObjectRecord, []byte, error) {
			k, err := kr.Next()
			if err != nil {
				return nil, nil, err
			}
			return v1Record(k)
		}
	} else {
		or := backup.NewObjectRecordReader(br)
		next = func() (*backup.ObjectRecord, []byte, error) {
			rec, err := or.Next()
			if err != nil || !hsm.HasMaterial(rec.Class) {
				return rec, nil, err
			}
			raw, err := kw.UnwrapKey(ctx, rec.Material)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", rec.Object(), err)
			}
			if err := checkMaterial(rec, raw); err != nil {
				hsm.Zero(raw)
				return nil, nil, fmt.Errorf("%w: %s holds %v", backup.ErrBadRecord, rec.Object(), err)
			}
			return rec, raw, nil
		}
	}
	var st []stagedObj
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		type put struct{ handle, value []byte }
		var batch []put
		for len(batch) < batchSize {
			rec, raw, err := next()
			if err == io.EOF {
				done = true
				break
			}
			if err != nil {
				return nil, err
			}
			handle := make([]byte, 16)
			if _, err := rand.Read(handle); err != nil {
				return nil, err
			}
			v, err := h.encodeObject(handle, rec, raw)
			hash := contentHash(rec, raw)
			hsm.Zero(raw)
			if err != nil {
				return nil, err
			}
			o := rec.Object()
			o.Attrs = nil
			st = append(st, stagedObj{obj: o, handle: handle, hash: hash})
			batch = append(batch, put{handle, v})
		}
		err := h.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketStaging)
			for _, p := range batch {
				if err := b.Put(p.handle, p.value); err != nil {
					return err
				}
			}
			if v := tx.Bucket(bucketMeta).Get(keyJournal); v != nil {
				return tx.Bucket(bucketMeta).Put(keyJournal, encodeJournal(ref, makeEqual, len(st), started))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Curve parameters as CKA_EC_PARAMS holds them: the DER of the curve's OID.
var (
	oidP256    = []byte("\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07")
	oidP384    = []byte("\x06\x05\x2b\x81\x04\x00\x22")
	oidEd25519 = []byte("\x06\x03\x2b\x65\x70")
)

// octetString is the DER of an OCTET STRING: how CKA_EC_POINT holds a point.
func octetString(b []byte) []byte {
	der, _ := asn1.Marshal(b)
	return der
}

func checkNew(spec hsm.ObjectSpec) ([]byte, error) {
	if err := hsm.ValidateLabel(spec.Label); err != nil {
		return nil, err
	}
	if len(spec.ID) > hsm.MaxIDLen {
		return nil, hsm.ErrInvalidID
	}
	if spec.ID != nil {
		return bytes.Clone(spec.ID), nil
	}
	id := make([]byte, keyIDSize)
	_, err := rand.Read(id)
	return id, err
}

// keyPair makes the records of a private key and its public key.
func keyPair(key crypto.Signer, label string, id []byte, extractable bool) ([]*backup.ObjectRecord, []byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	common := []hsm.Attr{{Type: hsm.AttrLabel, Value: []byte(label)}, {Type: hsm.AttrID, Value: bytes.Clone(id)}}
	priv := &backup.ObjectRecord{Class: hsm.ClassPrivateKey, Attrs: append(slices.Clone(common),
		boolAttr(hsm.AttrPrivate, true), boolAttr(hsm.AttrSensitive, true), boolAttr(hsm.AttrExtractable, extractable),
		boolAttr(hsm.AttrSign, true))}
	pub := &backup.ObjectRecord{Class: hsm.ClassPublicKey, Attrs: append(slices.Clone(common),
		boolAttr(hsm.AttrPrivate, false), boolAttr(hsm.AttrVerify, true))}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		priv.Type, pub.Type = hsm.KeyRSA, hsm.KeyRSA
		n, e := k.N.Bytes(), big.NewInt(int64(k.E)).Bytes()
		for _, r := range []*backup.ObjectRecord{priv, pub} {
			r.Attrs = append(r.Attrs, hsm.Attr{Type: hsm.AttrModulus, Value: n}, hsm.Attr{Type: hsm.AttrPublicExponent, Value: e})
		}
		priv.Attrs = append(priv.Attrs, boolAttr(hsm.AttrDecrypt, true))
		pub.Attrs = append(pub.Attrs, boolAttr(hsm.AttrEncrypt, true))
	case *ecdsa.PrivateKey:
		priv.Type, pub.Type = hsm.KeyEC, hsm.KeyEC
		params := oidP256
		if k.Curve == elliptic.P384() {
			params = oidP384
		} else if k.Curve != elliptic.P256() {
			return nil, nil, fmt.Errorf("%w: EC keys on P-256 and P-384 only", hsm.ErrUnknownKind)
		}
		pk, err := k.PublicKey.ECDH()
		if err != nil {
			return nil, nil, err
		}
		priv.Attrs = append(priv.Attrs, hsm.Attr{Type: hsm.AttrECParams, Value: params})
		pub.Attrs = append(pub.Attrs, hsm.Attr{Type: hsm.AttrECParams, Value: params}, hsm.Attr{Type: hsm.AttrECPoint, Value: octetString(pk.Bytes())})
	case ed25519.PrivateKey:
		priv.Type, pub.Type = hsm.KeyECEdwards, hsm.KeyECEdwards
		priv.Attrs = append(priv.Attrs, hsm.Attr{Type: hsm.AttrECParams, Value: oidEd25519})
		pub.Attrs = append(pub.Attrs, hsm.Attr{Type: hsm.AttrECParams, Value: oidEd25519},
			hsm.Attr{Type: hsm.AttrECPoint, Value: octetString(k.Public().(ed25519.PublicKey))})
	default:
		return nil, nil, fmt.Errorf("%w: private keys of type %T", hsm.ErrUnknownKind, key)
	}
	priv.Attrs, pub.Attrs = sortAttrs(priv.Attrs), sortAttrs(pub.Attrs)
	priv.Material = make([]byte, backup.WrappedLen(len(der)))
	return []*backup.ObjectRecord{priv, pub}, der, nil
}

// store adds new objects after checking that no object of their identity exists; material
// belongs to the first record.
func (h *HSM) store(ctx context.Context, recs []*backup.ObjectRecord, material []byte) ([]hsm.Object, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	var out []hsm.Object
	err := h.db.Update(func(tx *bolt.Tx) error {
		have := map[string]bool{}
		if err := forEachObject(tx, func(e *entry) error {
			have[e.rec.Object().Identity()] = true
			return nil
		}); err != nil {
			return err
		}
		for i, rec := range recs {
			o := rec.Object()
			if have[o.Identity()] {
				return fmt.Errorf("%w: %s", hsm.ErrObjectExists, o)
			}
			var m []byte
			if i == 0 {
				m = material
			}
			if _, err := h.putObject(tx.Bucket(bucketObjects), nil, rec, m); err != nil {
				return err
			}
			o.Attrs = nil
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// CreateObject implements [hsm.ObjectCreator]: a key generated in Go, sealed under the device
// key. Private keys are sensitive; keys are extractable unless spec.NotExtractable.
func (h *HSM) CreateObject(ctx context.Context, spec hsm.ObjectSpec) ([]hsm.Object, error) {
	objs, err := h.createObject(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("create %s %q: %w", spec.Kind, spec.Label, err)
	}
	return objs, nil
}

func (h *HSM) createObject(ctx context.Context, spec hsm.ObjectSpec) ([]hsm.Object, error) {
	id, err := checkNew(spec)
	if err != nil {
		return nil, err
	}
	extractable := !spec.NotExtractable
	var signer crypto.Signer
	switch spec.Kind {
	case "RSA-2048", "RSA-3072", "RSA-4096":
		bits, _ := strconv.Atoi(strings.TrimPrefix(spec.Kind, "RSA-"))
		signer, err = rsa.GenerateKey(rand.Reader, bits)
	case "EC-P256":
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EC-P384":
		signer, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "Ed25519":
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	if signer != nil {
		recs, der, err := keyPair(signer, spec.Label, id, extractable)
		if err != nil {
			return nil, err
		}
		defer hsm.Zero(der)
		return h.store(ctx, recs, der)
	}
	var typ uint32
	var n int
	switch {
	case spec.Kind == "AES-128" || spec.Kind == "AES-192" || spec.Kind == "AES-256":
		typ = hsm.KeyAES
		bits, _ := strconv.Atoi(strings.TrimPrefix(spec.Kind, "AES-"))
		n = bits / 8
	case strings.HasPrefix(spec.Kind, "generic-secret-"):
		typ = hsm.KeyGenericSecret
		n, err = strconv.Atoi(strings.TrimPrefix(spec.Kind, "generic-secret-"))
		if err != nil || n < 16 || n > 512 {
			return nil, fmt.Errorf("%w: a generic secret of 16 to 512 bytes, e.g. generic-secret-32", hsm.ErrUnknownKind)
		}
	default:
		return nil, fmt.Errorf("%w %q: one of %s", hsm.ErrUnknownKind, spec.Kind, strings.Join(hsm.CreatableKinds, ", "))
	}
	key := make([]byte, n)
	defer hsm.Zero(key)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	attrs := []hsm.Attr{{Type: hsm.AttrLabel, Value: []byte(spec.Label)}, {Type: hsm.AttrID, Value: id},
		boolAttr(hsm.AttrPrivate, true), boolAttr(hsm.AttrSensitive, true), boolAttr(hsm.AttrExtractable, extractable)}
	if typ == hsm.KeyAES {
		attrs = append(attrs, boolAttr(hsm.AttrEncrypt, true), boolAttr(hsm.AttrDecrypt, true))
	} else {
		attrs = append(attrs, boolAttr(hsm.AttrSign, true), boolAttr(hsm.AttrVerify, true))
	}
	rec := &backup.ObjectRecord{Class: hsm.ClassSecretKey, Type: typ, Attrs: sortAttrs(attrs), Material: make([]byte, backup.WrappedLen(n))}
	return h.store(ctx, []*backup.ObjectRecord{rec}, key)
}

// pemOrDER returns the DER inside PEM data of the given types, or data itself.
func pemOrDER(data []byte, types ...string) ([]byte, error) {
	if blk, _ := pem.Decode(data); blk != nil {
		if !slices.Contains(types, blk.Type) {
			return nil, fmt.Errorf("%w: PEM block %q, want %s", hsm.ErrImport, blk.Type, strings.Join(types, " or "))
		}
		return blk.Bytes, nil
	}
	return data, nil
}

// ImportObject implements [hsm.ObjectCreator]: a private key (PKCS#8, PEM or DER; its public
// key is made too), an X.509 certificate (PEM or DER) or a data object.
func (h *HSM) ImportObject(ctx context.Context, spec hsm.ImportSpec) ([]hsm.Object, error) {
	objs, err := h.importObject(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("import %s %q: %w", spec.What, spec.Label, err)
	}
	return objs, nil
}

func (h *HSM) importObject(ctx context.Context, spec hsm.ImportSpec) ([]hsm.Object, error) {
	id, err := checkNew(hsm.ObjectSpec{Label: spec.Label, ID: spec.ID})
	if err != nil {
		return nil, err
	}
	switch spec.What {
	case "private-key":
		der, err := pemOrDER(spec.Data, "PRIVATE KEY")
		if err != nil {
			return nil, err
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("%w: not a PKCS#8 private key", hsm.ErrImport)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: private keys of type %T", hsm.ErrUnknownKind, key)
		}
		recs, der2, err := keyPair(signer, spec.Label, id, true)
		if err != nil {
			return nil, err
		}
		defer hsm.Zero(der2)
		return h.store(ctx, recs, der2)
	case "certificate":
		der, err := pemOrDER(spec.Data, "CERTIFICATE")
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: not an X.509 certificate", hsm.ErrImport)
		}
		serial, _ := asn1.Marshal(c.SerialNumber)
		rec := &backup.ObjectRecord{Class: hsm.ClassCertificate, Type: hsm.CertX509, Attrs: sortAttrs([]hsm.Attr{
			{Type: hsm.AttrLabel, Value: []byte(spec.Label)}, {Type: hsm.AttrID, Value: id}, boolAttr(hsm.AttrPrivate, false),
			{Type: hsm.AttrValue, Value: bytes.Clone(der)}, {Type: hsm.AttrSubject, Value: bytes.Clone(c.RawSubject)},
			{Type: hsm.AttrIssuer, Value: bytes.Clone(c.RawIssuer)}, {Type: hsm.AttrSerialNumber, Value: serial},
		})}
		return h.store(ctx, []*backup.ObjectRecord{rec}, nil)
	case "data":
		if len(spec.Data) > backup.MaxAttrLen {
			return nil, fmt.Errorf("%w: a data object of at most 1 MiB", hsm.ErrImport)
		}
		if len(spec.Application) > 255 {
			return nil, fmt.Errorf("%w: an application name of at most 255 bytes", hsm.ErrImport)
		}
		rec := &backup.ObjectRecord{Class: hsm.ClassData, Type: hsm.NoType, Attrs: sortAttrs([]hsm.Attr{
			{Type: hsm.AttrLabel, Value: []byte(spec.Label)}, boolAttr(hsm.AttrPrivate, true),
			{Type: hsm.AttrApplication, Value: []byte(spec.Application)}, {Type: hsm.AttrValue, Value: bytes.Clone(spec.Data)},
		})}
		return h.store(ctx, []*backup.ObjectRecord{rec}, nil)
	}
	return nil, fmt.Errorf("%w %q: private-key, certificate or data", hsm.ErrUnknownKind, spec.What)
}
