//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// tokObj is an object on the token as the backup sees it.
type tokObj struct {
	h   p11.ObjectHandle
	obj hsm.Object
	rec *backup.ObjectRecord // carried objects: class, type, attributes (no material)
}

// findAll returns the token objects matching tmpl (every token object for none).
func (h *HSM) findAll(tmpl ...*p11.Attribute) ([]p11.ObjectHandle, error) {
	tmpl = append([]*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true)}, tmpl...)
	if err := h.ctx.FindObjectsInit(h.sh, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		objs, _, err := h.ctx.FindObjects(h.sh, 256)
		if err != nil {
			h.ctx.FindObjectsFinal(h.sh)
			return nil, err
		}
		all = append(all, objs...)
		if len(objs) < 256 {
			break
		}
	}
	return all, h.ctx.FindObjectsFinal(h.sh)
}

// attrs reads attributes of an object. An attribute the object does not have is left nil; one
// the token refuses to show (sensitive) is reported in refused.
func (h *HSM) attrs(obj p11.ObjectHandle, types ...uint32) (vals [][]byte, refused []uint32, err error) {
	tmpl := make([]*p11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = p11.NewAttribute(uint(t), nil)
	}
	got, err := h.ctx.GetAttributeValue(h.sh, obj, tmpl)
	if err == nil {
		vals = make([][]byte, len(types))
		for i := range got {
			vals[i] = got[i].Value
		}
		return vals, nil, nil
	}
	if !isCode(err, p11.CKR_ATTRIBUTE_TYPE_INVALID) && !isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
		return nil, nil, err
	}
	// One at a time, to tell which.
	vals = make([][]byte, len(types))
	for i, t := range types {
		got, err := h.ctx.GetAttributeValue(h.sh, obj, []*p11.Attribute{p11.NewAttribute(uint(t), nil)})
		switch {
		case err == nil:
			vals[i] = got[0].Value
		case isCode(err, p11.CKR_ATTRIBUTE_TYPE_INVALID):
		case isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE):
			refused = append(refused, t)
		default:
			return nil, nil, err
		}
	}
	return vals, refused, nil
}

func boolOf(b []byte) bool { return len(b) == 1 && b[0] != 0 }

// toModel converts a token attribute value into the model's encoding ([hsm.AttrKind]).
func toModel(kind hsm.AttrKind, v []byte) []byte {
	switch kind {
	case hsm.KindBool:
		if boolOf(v) {
			return []byte{1}
		}
		return []byte{0}
	case hsm.KindULong:
		return binary.BigEndian.AppendUint64(nil, ulong(v))
	}
	return bytes.Clone(v)
}

// toToken converts a model attribute into a template attribute.
func toToken(kind hsm.AttrKind, a hsm.Attr) *p11.Attribute {
	switch kind {
	case hsm.KindBool:
		return p11.NewAttribute(uint(a.Type), a.Value[0] == 1)
	case hsm.KindULong:
		return p11.NewAttribute(uint(a.Type), uint(binary.BigEndian.Uint64(a.Value)))
	}
	return p11.NewAttribute(uint(a.Type), bytes.Clone(a.Value))
}

// describe reads what the backup needs to know of one token object.
func (h *HSM) describe(obj p11.ObjectHandle, managed map[string]bool) (tokObj, error) {
	t := tokObj{h: obj}
	v, _, err := h.attrs(obj, hsm.AttrClass, hsm.AttrLabel, hsm.AttrID)
	if err != nil {
		return t, err
	}
	o := &t.obj
	o.Class = uint32(ulong(v[0]))
	o.Label, o.ID, o.Type = string(v[1]), bytes.Clone(v[2]), hsm.NoType
	switch o.Class {
	case hsm.ClassSecretKey, hsm.ClassPrivateKey, hsm.ClassPublicKey:
		tv, _, err := h.attrs(obj, hsm.AttrKeyType)
		if err != nil {
			return t, err
		}
		if tv[0] != nil {
			o.Type = uint32(ulong(tv[0]))
		}
	case hsm.ClassCertificate:
		tv, _, err := h.attrs(obj, hsm.AttrCertificateType)
		if err != nil {
			return t, err
		}
		if tv[0] != nil {
			o.Type = uint32(ulong(tv[0]))
		}
	case hsm.ClassData:
		av, _, err := h.attrs(obj, hsm.AttrApplication)
		if err != nil {
			return t, err
		}
		o.Application = string(av[0])
	}
	if why := ownObject(o); why != "" {
		o.Own, o.Why = true, why
		return t, nil
	}
	o.Managed = o.Class == hsm.ClassSecretKey && o.Type == hsm.KeyAES && managed[string(o.ID)]
	if ok, why := hsm.Supported(o.Class, o.Type); !ok {
		o.Why = why + "; it stays on this token only"
		return t, nil
	}
	specs := hsm.CarriedAttrs(o.Class, o.Type)
	types := make([]uint32, 0, len(specs)+3)
	for _, s := range specs {
		types = append(types, s.Type)
	}
	n := len(types)
	switch o.Class {
	case hsm.ClassSecretKey:
		types = append(types, hsm.AttrWrapWithTrusted, hsm.AttrValueLen)
	case hsm.ClassPrivateKey:
		types = append(types, hsm.AttrWrapWithTrusted)
	case hsm.ClassCertificate:
		types = append(types, hsm.AttrTrusted)
	}
	vals, refused, err := h.attrs(obj, types...)
	if err != nil {
		return t, err
	}
	extra := func(i int) []byte {
		if n+i < len(vals) {
			return vals[n+i]
		}
		return nil
	}
	rec := &backup.ObjectRecord{Class: o.Class, Type: o.Type}
	if o.Managed {
		rec.Flags = backup.FlagManaged
	}
	for i, s := range specs {
		if vals[i] == nil {
			continue
		}
		rec.Attrs = append(rec.Attrs, hsm.Attr{Type: s.Type, Value: toModel(s.Kind, vals[i])})
	}
	o.Attrs = rec.Attrs
	valueLen := 0
	if o.Class == hsm.ClassSecretKey {
		valueLen = int(ulong(extra(1)))
	}
	o.Bits = hsm.BitsOf(o.Class, o.Type, rec.Attr(hsm.AttrModulus), rec.Attr(hsm.AttrECParams), valueLen)
	switch {
	case len(refused) > 0:
		o.Why = fmt.Sprintf("the token refuses to show its attribute 0x%x, so a copy would not be the same object", refused[0])
	case hsm.HasMaterial(o.Class) && !boolOf(rec.Attr(hsm.AttrExtractable)):
		o.Why = "it is not extractable (CKA_EXTRACTABLE is false): the token lets no copy of it out, not even wrapped under the master backup key"
	case hsm.HasMaterial(o.Class) && boolOf(extra(0)):
		o.Why = "it may only be wrapped by a trusted key (CKA_WRAP_WITH_TRUSTED), and the master backup key is not one (only the security officer can mark keys trusted)"
	case o.Class == hsm.ClassCertificate && boolOf(extra(0)):
		o.Why = "it is a trusted certificate (CKA_TRUSTED): only the security officer can mark a restored certificate trusted"
	default:
		for _, a := range rec.Attrs {
			if len(a.Value) > backup.MaxAttrLen {
				o.Why = "an attribute of it is larger than a backup record holds (1 MiB)"
			}
		}
	}
	if o.Why == "" {
		o.Carried = true
		t.rec = rec
	}
	return t, nil
}

// ownObject says what a Keyquorum object is, or "" for any other object.
func ownObject(o *hsm.Object) string {
	switch {
	case o.Class == hsm.ClassSecretKey && o.Label == labelMBK:
		return "Keyquorum's master backup key: never in a backup, it comes from the cards"
	case o.Class == hsm.ClassSecretKey && o.Label == labelAuthKey:
		return "Keyquorum's authenticator key: derived from the master backup key at each key load"
	case o.Class == hsm.ClassSecretKey && o.Label == labelSlotKey:
		return "Keyquorum's slot credential key: bound to this token, slot credentials are issued anew"
	case o.Class == hsm.ClassData && o.Application == appKeyquorum && o.Label == labelJournal:
		return "Keyquorum's restore journal: a restore in progress"
	case o.Class == hsm.ClassData && o.Application == appKeyquorum && o.Label == labelKeyDB:
		return "Keyquorum's list of the application keys it created: made anew by a restore"
	}
	return ""
}

// scan describes every token object, in a stable order (class, type, ID, label).
func (h *HSM) scan() ([]tokObj, error) {
	handles, err := h.findAll()
	if err != nil {
		return nil, err
	}
	managed, err := h.managedIDs()
	if err != nil {
		return nil, err
	}
	out := make([]tokObj, 0, len(handles))
	for _, obj := range handles {
		t, err := h.describe(obj, managed)
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			continue // destroyed by another session since the search
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.SortStableFunc(out, func(a, b tokObj) int {
		if c := compareU32(a.obj.Class, b.obj.Class); c != 0 {
			return c
		}
		if c := compareU32(a.obj.Type, b.obj.Type); c != 0 {
			return c
		}
		if c := bytes.Compare(a.obj.ID, b.obj.ID); c != 0 {
			return c
		}
		return compareStr(a.obj.Label, b.obj.Label)
	})
	return out, nil
}

func compareU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// trialWrap wraps every carried key under the MBK once, so that a key the token will not wrap
// is found before a backup writes anything. The wrapped bytes are dropped.
func (h *HSM) trialWrap(mbk p11.ObjectHandle, objs []tokObj) {
	for i := range objs {
		t := &objs[i]
		if !t.obj.Carried || !hsm.HasMaterial(t.obj.Class) {
			continue
		}
		w, err := h.ctx.WrapKey(h.sh, kwp, mbk, t.h)
		switch {
		case err != nil:
			t.obj.Carried, t.rec = false, nil
			t.obj.Why = fmt.Sprintf("the token refuses to wrap it under the master backup key (%v)", err)
		case len(w) > backup.MaxObjectMaterial:
			t.obj.Carried, t.rec = false, nil
			t.obj.Why = "its wrapped key is larger than a backup record holds (16 KiB)"
		case t.obj.Class == hsm.ClassSecretKey && t.obj.Bits == 0 && t.obj.Type != hsm.KeyDES3:
			t.obj.Bits = 8 * (len(w) - 8)
		}
		hsm.Zero(w)
	}
}

// Objects implements [hsm.ObjectStore]. Whether a key wraps under the MBK is tried when one is
// loaded; without an MBK no backup can be made at all.
func (h *HSM) Objects(ctx context.Context) ([]hsm.Object, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	objs, err := h.scan()
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	if mbk, err := h.findOne(labelMBK); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	} else if mbk != 0 {
		h.trialWrap(mbk, objs)
	}
	out := make([]hsm.Object, len(objs))
	for i, t := range objs {
		out[i] = t.obj
	}
	return out, nil
}

// Backup implements [hsm.HSM]: [HSM.BackupObjects] without options.
func (h *HSM) Backup(ctx context.Context, w io.Writer) error {
	return h.BackupObjects(ctx, w, hsm.BackupOptions{})
}

// BackupObjects implements [hsm.ObjectStore]: every object a backup can carry, keys wrapped on
// the token under the MBK with CKM_AES_KEY_WRAP_PAD. Objects that cannot be carried are found
// (every key is wrapped once in a trial) before anything is written.
func (h *HSM) BackupObjects(ctx context.Context, w io.Writer, opts hsm.BackupOptions) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	tw, err := h.tokenWrap()
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	objs, err := h.scan()
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	h.trialWrap(tw.mbk, objs)
	var left []hsm.Object
	for _, t := range objs {
		if !t.obj.Own && !t.obj.Carried {
			left = append(left, t.obj)
		}
	}
	if len(left) > 0 && !opts.Skip {
		return &hsm.IncompleteBackupError{Objects: left}
	}
	hdr := backup.Header{Source: h.source, Content: ContentType, Skipped: backup.SkipEntries(left), SkippedTotal: len(left)}
	bw, err := backup.NewWriter(ctx, w, tw, hdr)
	if err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	for _, t := range objs {
		if !t.obj.Carried {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("back up: %w", err)
		}
		rec := *t.rec
		if hsm.HasMaterial(rec.Class) {
			if rec.Material, err = h.ctx.WrapKey(h.sh, kwp, tw.mbk, t.h); err != nil {
				return fmt.Errorf("back up: wrap %s: %w", t.obj, err)
			}
		}
		err := backup.WriteObjectRecord(bw, &rec)
		rec.Zero()
		if err != nil {
			return fmt.Errorf("back up: %s: %w", t.obj, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("back up: %w", err)
	}
	return nil
}

// recordHash identifies an object's content: class, type, carried attributes and wrapped key
// material (AES key wrap is deterministic, so the same key wraps to the same bytes). Two objects
// of equal hash are the same object as far as a backup can tell; flags are not in it.
func recordHash(rec *backup.ObjectRecord) [32]byte {
	r := *rec
	r.Flags = 0
	b, err := backup.AppendObjectRecord(nil, &r)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

// staged is a backup object unwrapped or created as a session object.
type staged struct {
	obj  hsm.Object
	hash [32]byte
	h    p11.ObjectHandle
}

// template builds the creation template of a record: class, type, token or session, and every
// attribute that is not derived from the key material.
func template(rec *backup.ObjectRecord, token bool) []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, uint(rec.Class)),
		p11.NewAttribute(p11.CKA_TOKEN, token),
	}
	switch rec.Class {
	case hsm.ClassSecretKey, hsm.ClassPrivateKey, hsm.ClassPublicKey:
		t = append(t, p11.NewAttribute(p11.CKA_KEY_TYPE, uint(rec.Type)))
	case hsm.ClassCertificate:
		t = append(t, p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, uint(rec.Type)))
	}
	specs := hsm.CarriedAttrs(rec.Class, rec.Type)
	for _, a := range rec.Attrs {
		for _, s := range specs {
			if s.Type == a.Type && !s.Derived {
				t = append(t, toToken(s.Kind, a))
			}
		}
	}
	return t
}

// v1Record turns a key record of a version 1 backup (an AES-256 application key Keyquorum
// created, wrapped under the MBK) into an object record.
func v1Record(k *backup.KeyRecord) *backup.ObjectRecord {
	t := []hsm.Attr{
		{Type: hsm.AttrPrivate, Value: []byte{1}}, {Type: hsm.AttrLabel, Value: []byte(k.Label)},
		{Type: hsm.AttrID, Value: bytes.Clone(k.ID)}, {Type: hsm.AttrSensitive, Value: []byte{1}},
		{Type: hsm.AttrEncrypt, Value: []byte{1}}, {Type: hsm.AttrDecrypt, Value: []byte{1}},
		{Type: hsm.AttrExtractable, Value: []byte{1}},
	}
	return &backup.ObjectRecord{Class: hsm.ClassSecretKey, Type: hsm.KeyAES, Flags: backup.FlagManaged, Attrs: t, Material: k.Material}
}

// Restore implements [hsm.HSM]: [HSM.RestoreObjects] without options.
func (h *HSM) Restore(ctx context.Context, r io.Reader) error {
	_, err := h.RestoreObjects(ctx, r, hsm.RestoreOptions{})
	return err
}

// RestoreObjects implements [hsm.ObjectStore].
//
// The backup's objects are unwrapped (keys) or created (the others) as session objects while
// the backup is read; nothing on the token changes unless it was read and authenticated to its
// end. Then, identity by identity, the staged objects are copied onto the token and only after
// that the token's old objects of the identity destroyed; with MakeEqual, the objects the
// backup does not hold are destroyed last. A journal object on the token records which backup
// and how far; it goes when the restore is done. Killed at any point, the token holds for every
// identity its old objects, the new ones, or both; the same restore run again tells the new ones
// by their content (an object whose attributes and wrapped key equal the backup's is the
// backup's) and finishes: no duplicates, nothing lost that the restore would not replace.
func (h *HSM) RestoreObjects(ctx context.Context, r io.Reader, opts hsm.RestoreOptions) (*hsm.RestorePlan, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	tw, err := h.tokenWrap()
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	br, err := backup.NewReader(ctx, r, tw)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	hdr := br.Header()
	if hdr.Content != ContentType && hdr.Content != contentTypeV1 {
		return nil, &hsm.ContentError{Got: hdr.Content, Want: ContentType}
	}
	ref := hsm.BackupRef{ID: hex.EncodeToString(hdr.ID[:]), Source: hdr.Source, Created: hdr.Created}
	if p, err := h.pending(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	} else if p != nil && p.Backup.ID != ref.ID {
		return nil, &hsm.PendingRestoreError{Pending: *p}
	}
	plan := &hsm.RestorePlan{Backup: ref, Skipped: hdr.Skipped, SkippedMore: hdr.SkippedTotal - len(hdr.Skipped),
		DryRun: opts.DryRun, MakeEqual: opts.MakeEqual}

	var st []staged
	drop := func() {
		for _, s := range st {
			h.ctx.DestroyObject(h.sh, s.h)
		}
	}
	defer drop()
	if err := h.stage(ctx, br, hdr.Content, tw, &st); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}

	objs, err := h.scan()
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	steps, err := h.planSteps(tw, st, objs, plan, opts.MakeEqual)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if opts.DryRun {
		return plan, nil
	}
	j := journal{backup: ref, makeEqual: opts.MakeEqual, total: len(steps), started: time.Now()}
	jw := dataWriter{label: labelJournal}
	if err := h.put(&jw, j.encode()); err != nil {
		return nil, fmt.Errorf("restore: write journal: %w", err)
	}
	lastJournal, journalCost := time.Now(), time.Duration(0)
	for i, s := range steps {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("restore: stopped after %d of %d steps (run it again to finish): %w", i, len(steps), err)
		}
		if err := h.apply(s, st); err != nil {
			return nil, fmt.Errorf("restore: stopped after %d of %d steps (run it again to finish): %w", i, len(steps), err)
		}
		// The journal says how far, to the last 64 steps or the last second: a restore run
		// again finds what is done by content, the count is for people. Rewriting it costs a
		// destroy, which on SoftHSM2's file token rereads the token's directory (35 ms at 1 500
		// objects, growing with every object the restore adds), so it is written no more often
		// than every 20 times its last write's cost: at most 5 % of the restore, however large.
		since := time.Since(lastJournal)
		if j.done = i + 1; (j.done%64 == 0 || since > time.Second) && since >= 20*journalCost {
			t := time.Now()
			if err := h.put(&jw, j.encode()); err != nil {
				return nil, fmt.Errorf("restore: write journal: %w", err)
			}
			lastJournal, journalCost = time.Now(), time.Since(t)
		}
		if restoreHook != nil {
			restoreHook(i + 1)
		}
	}
	// Keys Keyquorum created are listed as its own once all are in place; a restore killed
	// before that leaves them unlisted (a factory reset keeps them, never the other way round)
	// until it is run again.
	if err := h.relistManaged(st); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := h.dropJournal(); err != nil {
		return nil, fmt.Errorf("restore: every object is in place, but the journal could not be removed: %w", err)
	}
	return plan, nil
}

// restoreHook, when set (tests), is called after each finished step of a restore.
var restoreHook func(done int)

// writeHook, when set (tests), is called before every PKCS#11 write of a restore: the crash test
// kills its child process there.
var writeHook func()

func beforeWrite() {
	if writeHook != nil {
		writeHook()
	}
}

// stage reads the backup's records into session objects.
func (h *HSM) stage(ctx context.Context, br *backup.Reader, content string, tw *tokenWrap, st *[]staged) error {
	next := func() (*backup.ObjectRecord, error) { return nil, io.EOF }
	if content == contentTypeV1 {
		kr := backup.NewRecordReader(br)
		next = func() (*backup.ObjectRecord, error) {
			k, err := kr.Next()
			if err != nil {
				return nil, err
			}
			if len(k.Material) != backup.WrappedLen(32) {
				return nil, fmt.Errorf("%w: key %x is not a wrapped AES-256 key", backup.ErrBadRecord, k.ID)
			}
			return v1Record(k), nil
		}
	} else {
		or := backup.NewObjectRecordReader(br)
		next = or.Next
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		o := rec.Object()
		if ownObject(&o) != "" {
			return fmt.Errorf("%w: %s has the label of one of keyquorum's own objects", backup.ErrBadRecord, o)
		}
		var obj p11.ObjectHandle
		if hsm.HasMaterial(rec.Class) {
			obj, err = h.ctx.UnwrapKey(h.sh, kwp, tw.mbk, rec.Material, template(rec, false))
			if err != nil && unwrapFailed(err) {
				err = backup.ErrUnwrap
			}
		} else {
			obj, err = h.ctx.CreateObject(h.sh, template(rec, false))
		}
		hash := recordHash(rec)
		rec.Zero()
		if err != nil {
			return fmt.Errorf("stage %s: %w", o, err)
		}
		o.Attrs = nil
		*st = append(*st, staged{obj: o, hash: hash, h: obj})
	}
}

// step is one change to the token: copy staged objects onto it, then destroy old objects.
type step struct {
	create  []int // indexes into the staged objects
	destroy []p11.ObjectHandle
}

// planSteps matches the staged objects with the token's and fills the plan.
func (h *HSM) planSteps(tw *tokenWrap, st []staged, objs []tokObj, plan *hsm.RestorePlan, makeEqual bool) ([]step, error) {
	byID := map[string][]int{} // identity -> staged indexes
	var order []string
	for i, s := range st {
		k := s.obj.Identity()
		if _, ok := byID[k]; !ok {
			order = append(order, k)
		}
		byID[k] = append(byID[k], i)
	}
	onToken := map[string][]int{} // identity -> token object indexes (not Keyquorum's own)
	for i, t := range objs {
		if !t.obj.Own {
			onToken[t.obj.Identity()] = append(onToken[t.obj.Identity()], i)
		}
	}
	var steps []step
	for _, k := range order {
		var s step
		old := onToken[k]
		matched := map[int]bool{}
		for _, si := range byID[k] {
			found := false
			for _, ti := range old {
				if matched[ti] || !objs[ti].obj.Carried {
					continue
				}
				hash, err := h.tokenHash(tw, objs[ti])
				if err != nil {
					return nil, err
				}
				if hash == st[si].hash {
					matched[ti], found = true, true
					break
				}
			}
			if !found {
				s.create = append(s.create, si)
			}
		}
		for _, ti := range old {
			if !matched[ti] {
				s.destroy = append(s.destroy, objs[ti].h)
			}
		}
		action := hsm.ActionUnchanged
		switch {
		case len(old) == 0:
			action = hsm.ActionAdd
		case len(s.create) > 0 || len(s.destroy) > 0:
			action = hsm.ActionReplace
		}
		for _, si := range byID[k] {
			plan.Items = append(plan.Items, hsm.PlanItem{Action: action, Object: st[si].obj})
		}
		if len(s.create) > 0 || len(s.destroy) > 0 {
			steps = append(steps, s)
		}
	}
	for _, t := range objs {
		if t.obj.Own || byID[t.obj.Identity()] != nil {
			continue
		}
		o := t.obj
		o.Attrs = nil
		if makeEqual && !plan.LeftOut(o) {
			plan.Items = append(plan.Items, hsm.PlanItem{Action: hsm.ActionRemove, Object: o})
			steps = append(steps, step{destroy: []p11.ObjectHandle{t.h}})
		} else {
			plan.Items = append(plan.Items, hsm.PlanItem{Action: hsm.ActionKeep, Object: o})
		}
	}
	return steps, nil
}

// tokenHash is the record hash of a token object, its key wrapped under the MBK.
func (h *HSM) tokenHash(tw *tokenWrap, t tokObj) ([32]byte, error) {
	rec := *t.rec
	if hsm.HasMaterial(rec.Class) {
		w, err := h.ctx.WrapKey(h.sh, kwp, tw.mbk, t.h)
		if err != nil {
			return [32]byte{}, nil // cannot be the backup's object, whose keys all wrap
		}
		rec.Material = w
		defer hsm.Zero(w)
	}
	return recordHash(&rec), nil
}

// apply runs one step.
func (h *HSM) apply(s step, st []staged) error {
	for _, si := range s.create {
		beforeWrite()
		if _, err := h.ctx.CopyObject(h.sh, st[si].h, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true)}); err != nil {
			return fmt.Errorf("store %s on the token: %w", st[si].obj, err)
		}
	}
	for _, o := range s.destroy {
		beforeWrite()
		if err := h.ctx.DestroyObject(h.sh, o); err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			return fmt.Errorf("destroy an old object: %w", err)
		}
	}
	return nil
}

// Keyquorum's data objects.
const (
	appKeyquorum  = "keyquorum"
	labelJournal  = "keyquorum restore journal"
	labelKeyDB    = "keyquorum key database"
	contentTypeV1 = "keyquorum/pkcs11-keys/1"
)

// journal is the restore journal: a private data object on the token.
//
//	1  version (1)
//	16 backup ID
//	8  backup creation time, Unix seconds
//	1  source length, source
//	1  make equal (0/1)
//	4  steps in all
//	4  steps done
//	8  start time, Unix seconds
type journal struct {
	backup      hsm.BackupRef
	makeEqual   bool
	total, done int
	started     time.Time
}

func (j *journal) encode() []byte {
	id, _ := hex.DecodeString(j.backup.ID)
	b := []byte{1}
	b = append(b, id...)
	b = binary.BigEndian.AppendUint64(b, uint64(j.backup.Created.Unix()))
	b = append(b, byte(len(j.backup.Source)))
	b = append(b, j.backup.Source...)
	eq := byte(0)
	if j.makeEqual {
		eq = 1
	}
	b = append(b, eq)
	b = binary.BigEndian.AppendUint32(b, uint32(j.total))
	b = binary.BigEndian.AppendUint32(b, uint32(j.done))
	return binary.BigEndian.AppendUint64(b, uint64(j.started.Unix()))
}

func decodeJournal(b []byte) (*journal, error) {
	bad := errors.New("the restore journal on the token is damaged")
	if len(b) < 1+16+8+1 || b[0] != 1 {
		return nil, bad
	}
	j := &journal{}
	j.backup.ID = hex.EncodeToString(b[1:17])
	j.backup.Created = time.Unix(int64(binary.BigEndian.Uint64(b[17:25])), 0).UTC()
	sl := int(b[25])
	if len(b) != 26+sl+1+8+8 {
		return nil, bad
	}
	j.backup.Source = string(b[26 : 26+sl])
	r := b[26+sl:]
	if r[0] > 1 {
		return nil, bad
	}
	j.makeEqual = r[0] == 1
	j.total = int(binary.BigEndian.Uint32(r[1:5]))
	j.done = int(binary.BigEndian.Uint32(r[5:9]))
	j.started = time.Unix(int64(binary.BigEndian.Uint64(r[9:17])), 0).UTC()
	return j, nil
}

func (h *HSM) dataObjects(label string) ([]p11.ObjectHandle, error) {
	return h.findAll(p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA), p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_APPLICATION, appKeyquorum))
}

// putData sets the value of Keyquorum's data object of label: a new object is made, then the
// old ones destroyed (tokens keep CKA_VALUE read-only after creation). Killed in between, two
// objects of the label exist; getData reads the newest, which putData writes last.
func (h *HSM) putData(label string, value []byte) error {
	return h.put(&dataWriter{label: label}, value)
}

// dataWriter writes one of Keyquorum's data objects again and again (the restore journal): the
// first write searches the token for the label's objects, every later one destroys the object
// the writer made last by its handle, without a search. A search of a SoftHSM2 file token
// reads every object's file, so a journal searched for at every 64th step made a restore of n
// objects read n²/64 files (5 000 objects: 38 s instead of 7).
type dataWriter struct {
	label string
	known bool               // old and seq are what is on the token
	old   []p11.ObjectHandle // the label's objects on the token
	seq   uint64             // the highest sequence number among them
}

// put writes value as w's object, as putData does.
func (h *HSM) put(w *dataWriter, value []byte) error {
	if !w.known {
		old, err := h.dataObjects(w.label)
		if err != nil {
			return err
		}
		w.old, w.seq = old, 0
		for _, o := range old {
			if v, _, err := h.attrs(o, hsm.AttrObjectID); err == nil && len(v[0]) == 8 {
				w.seq = max(w.seq, binary.BigEndian.Uint64(v[0]))
			}
		}
		w.known = true
	}
	// Whatever fails from here on, the next write searches again.
	w.known = false
	beforeWrite()
	made, err := h.ctx.CreateObject(h.sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_LABEL, w.label),
		p11.NewAttribute(p11.CKA_APPLICATION, appKeyquorum),
		// CKA_OBJECT_ID holds a sequence number here: which of two copies is newer.
		p11.NewAttribute(p11.CKA_OBJECT_ID, binary.BigEndian.AppendUint64(nil, w.seq+1)),
		p11.NewAttribute(p11.CKA_VALUE, value),
	})
	if err != nil {
		return err
	}
	for _, o := range w.old {
		beforeWrite()
		if err := h.ctx.DestroyObject(h.sh, o); err != nil {
			return err
		}
	}
	w.old, w.seq, w.known = append(w.old[:0], made), w.seq+1, true
	return nil
}

// getData returns the value of the newest of Keyquorum's data objects of label.
func (h *HSM) getData(label string) ([]byte, bool, error) {
	objs, err := h.dataObjects(label)
	if err != nil || len(objs) == 0 {
		return nil, false, err
	}
	var best []byte
	seq := uint64(0)
	for _, o := range objs {
		v, _, err := h.attrs(o, hsm.AttrObjectID, hsm.AttrValue)
		if err != nil {
			return nil, false, err
		}
		if n := uint64(0); best == nil || len(v[0]) == 8 {
			if len(v[0]) == 8 {
				n = binary.BigEndian.Uint64(v[0])
			}
			if best == nil || n > seq {
				best, seq = v[1], n
				if best == nil {
					best = []byte{}
				}
			}
		}
	}
	return best, true, nil
}

func (h *HSM) dropData(label string) error {
	objs, err := h.dataObjects(label)
	if err != nil {
		return err
	}
	for _, o := range objs {
		beforeWrite()
		if err := h.ctx.DestroyObject(h.sh, o); err != nil {
			return err
		}
	}
	return nil
}

func (h *HSM) dropJournal() error { return h.dropData(labelJournal) }

func (h *HSM) pending() (*hsm.PendingRestore, error) {
	v, ok, err := h.getData(labelJournal)
	if err != nil || !ok {
		return nil, err
	}
	j, err := decodeJournal(v)
	if err != nil {
		return nil, err
	}
	return &hsm.PendingRestore{Backup: j.backup, Done: j.done, Total: j.total, MakeEqual: j.makeEqual, Started: j.started}, nil
}

// PendingRestore implements [hsm.ObjectStore].
func (h *HSM) PendingRestore(ctx context.Context) (*hsm.PendingRestore, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("read restore journal: %w", err)
	}
	p, err := h.pending()
	if err != nil {
		return nil, fmt.Errorf("read restore journal: %w", err)
	}
	return p, nil
}

// managedIDs reads the IDs of the application keys Keyquorum created: a data object holding
// each ID as a length byte and the ID.
func (h *HSM) managedIDs() (map[string]bool, error) {
	v, _, err := h.getData(labelKeyDB)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for len(v) > 0 {
		n := int(v[0])
		if len(v) < 1+n {
			return nil, errors.New("keyquorum's key list on the token is damaged")
		}
		ids[string(v[1:1+n])] = true
		v = v[1+n:]
	}
	return ids, nil
}

func (h *HSM) addManaged(ids ...string) error {
	have, err := h.managedIDs()
	if err != nil {
		return err
	}
	changed := false
	for _, id := range ids {
		if !have[id] && len(id) <= 255 {
			have[id], changed = true, true
		}
	}
	if !changed {
		return nil
	}
	return h.writeManaged(have)
}

// relistManaged brings Keyquorum's key list in line with a restore's end: the AES keys the
// backup marks as Keyquorum's are on it, the IDs of AES keys the backup brings as other
// software's are not, nor IDs of which no AES key is left on the token. A key of another program
// that takes the ID of one Keyquorum created is thus never destroyed by a factory reset.
func (h *HSM) relistManaged(st []staged) error {
	have, err := h.managedIDs()
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for id := range have {
		want[id] = true
	}
	for _, s := range st {
		if s.obj.Class == hsm.ClassSecretKey && s.obj.Type == hsm.KeyAES && len(s.obj.ID) <= 255 {
			want[string(s.obj.ID)] = s.obj.Managed
		}
	}
	aes, err := h.findAll(p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES))
	if err != nil {
		return err
	}
	onToken := map[string]bool{}
	for _, o := range aes {
		if v, _, err := h.attrs(o, hsm.AttrID); err == nil {
			onToken[string(v[0])] = true
		}
	}
	next := map[string]bool{}
	for id, ok := range want {
		if ok && onToken[id] {
			next[id] = true
		}
	}
	if len(next) == len(have) {
		same := true
		for id := range next {
			same = same && have[id]
		}
		if same {
			return nil
		}
	}
	return h.writeManaged(next)
}

func (h *HSM) writeManaged(have map[string]bool) error {
	keys := make([]string, 0, len(have))
	for id := range have {
		keys = append(keys, id)
	}
	slices.Sort(keys)
	var b []byte
	for _, id := range keys {
		b = append(b, byte(len(id)))
		b = append(b, id...)
	}
	return h.putData(labelKeyDB, b)
}

// newID returns a random object ID.
func newID() ([]byte, error) {
	id := make([]byte, appKeyIDSize)
	_, err := rand.Read(id)
	return id, err
}
