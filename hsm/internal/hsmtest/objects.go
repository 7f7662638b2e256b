package hsmtest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

func objectStore(t *testing.T, h hsm.HSM) hsm.ObjectStore {
	t.Helper()
	os, ok := h.(hsm.ObjectStore)
	if !ok {
		t.Fatal("backend does not implement hsm.ObjectStore")
	}
	return os
}

// Objects lists h's objects but Keyquorum's own.
func Objects(t *testing.T, h hsm.HSM) []hsm.Object {
	t.Helper()
	all, err := objectStore(t, h).Objects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []hsm.Object
	for _, o := range all {
		if !o.Own {
			out = append(out, o)
		}
	}
	return out
}

// SameObjects reports how got differs from want: every object of want is in got once, with the
// same kind, identity and carried attributes, and got holds nothing else.
func SameObjects(want, got []hsm.Object) string {
	key := func(o hsm.Object) string { return o.Identity() }
	left := slices.Clone(got)
	var diffs []string
	for _, w := range want {
		i := slices.IndexFunc(left, func(g hsm.Object) bool { return key(g) == key(w) && sameAttrs(g.Attrs, w.Attrs) })
		if i < 0 {
			j := slices.IndexFunc(left, func(g hsm.Object) bool { return key(g) == key(w) })
			if j >= 0 {
				diffs = append(diffs, "attributes differ: "+w.String()+": "+attrDiff(w.Attrs, left[j].Attrs))
			} else {
				diffs = append(diffs, "missing: "+w.String())
			}
			continue
		}
		if left[i].Kind() != w.Kind() || left[i].Managed != w.Managed {
			diffs = append(diffs, "kind or managed flag differs: "+w.String()+" / "+left[i].String())
		}
		left = slices.Delete(left, i, i+1)
	}
	for _, g := range left {
		diffs = append(diffs, "extra: "+g.String())
	}
	return strings.Join(diffs, "\n")
}

func sameAttrs(a, b []hsm.Attr) bool {
	return slices.EqualFunc(a, b, func(x, y hsm.Attr) bool { return x.Type == y.Type && bytes.Equal(x.Value, y.Value) })
}

func attrDiff(want, got []hsm.Attr) string {
	var d []string
	for _, w := range want {
		i := slices.IndexFunc(got, func(g hsm.Attr) bool { return g.Type == w.Type })
		if i < 0 {
			d = append(d, "no attribute "+hexType(w.Type))
		} else if !bytes.Equal(got[i].Value, w.Value) {
			d = append(d, "attribute "+hexType(w.Type)+" differs")
		}
	}
	for _, g := range got {
		if !slices.ContainsFunc(want, func(w hsm.Attr) bool { return w.Type == g.Type }) {
			d = append(d, "extra attribute "+hexType(g.Type))
		}
	}
	return strings.Join(d, ", ")
}

func hexType(t uint32) string { return fmt.Sprintf("0x%x", t) }

// RunObjects runs the object store part of the contract: a backup carries the whole store, a
// restore changes only what it brings, objects that cannot leave are named before anything is
// written, a factory reset keeps other software's objects.
func RunObjects(t *testing.T, b Backend) {
	s := &suite{Backend: b}
	t.Run("WholeStore", s.wholeStore)
	t.Run("Refused", s.refused)
	t.Run("ResetKeepsOthers", s.resetKeepsOthers)
}

func (s *suite) wholeStore(t *testing.T) {
	if s.Populate == nil {
		t.Fatal("backend gives no Populate")
	}
	ctx := t.Context()
	src := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, src, mbk)
	s.Populate(t, src)
	createKeys(t, src, "keyquorum app key")
	want := Objects(t, src)
	kinds := map[uint32]bool{}
	for _, o := range want {
		if !o.Carried {
			t.Fatalf("%s is not carried: %s", o, o.Why)
		}
		kinds[o.Class] = true
	}
	if len(kinds) != 5 {
		t.Fatalf("populated store holds %d object classes, want all 5: %v", len(kinds), want)
	}
	b := s.backupOf(t, src, mbk)

	dst := s.Fresh(t)
	mustLoad(t, dst, mbk)
	later := createKeys(t, dst, "made after the backup")[0]
	before := Objects(t, dst)
	plan, err := objectStore(t, dst).RestoreObjects(ctx, bytes.NewReader(b), hsm.RestoreOptions{DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if plan.Count(hsm.ActionAdd) != len(want) || plan.Count(hsm.ActionKeep) != 1 || !plan.DryRun {
		t.Fatalf("dry run plan: %+v", plan.Items)
	}
	if d := SameObjects(before, Objects(t, dst)); d != "" {
		t.Fatalf("a dry run changed the store:\n%s", d)
	}
	if _, err := objectStore(t, dst).RestoreObjects(ctx, bytes.NewReader(b), hsm.RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if p, err := objectStore(t, dst).PendingRestore(ctx); err != nil || p != nil {
		t.Fatalf("pending restore after a finished one: %v, %v", p, err)
	}
	got := Objects(t, dst)
	if d := SameObjects(append(slices.Clone(want), before...), got); d != "" {
		t.Fatalf("restored store differs:\n%s", d)
	}
	for _, o := range want {
		if o.Class == hsm.ClassSecretKey || o.Class == hsm.ClassPrivateKey {
			s.SameResults(t, src, dst, o)
		}
	}
	// Again: nothing to do, nothing doubled.
	plan, err = objectStore(t, dst).RestoreObjects(ctx, bytes.NewReader(b), hsm.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Count(hsm.ActionUnchanged) != len(want) || plan.Count(hsm.ActionKeep) != 1 {
		t.Fatalf("second restore plan: %+v", plan.Items)
	}
	if d := SameObjects(append(slices.Clone(want), before...), Objects(t, dst)); d != "" {
		t.Fatalf("second restore changed the store:\n%s", d)
	}
	// Made equal: the key made after the backup goes.
	plan, err = objectStore(t, dst).RestoreObjects(ctx, bytes.NewReader(b), hsm.RestoreOptions{MakeEqual: true})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Count(hsm.ActionRemove) != 1 || plan.Items[len(plan.Items)-1].Object.Label != later.Label {
		t.Fatalf("made-equal plan: %+v", plan.Items)
	}
	if d := SameObjects(want, Objects(t, dst)); d != "" {
		t.Fatalf("store made equal differs:\n%s", d)
	}
	// A store with the restored objects survives a reopening and backs up again.
	dst = s.Reopen(t, dst)
	if d := SameObjects(want, Objects(t, dst)); d != "" {
		t.Fatalf("after reopening:\n%s", d)
	}
	s.backupOf(t, dst, mbk)
	s.checkStore(t, src)
	s.checkStore(t, dst)
}

func (s *suite) refused(t *testing.T) {
	if s.Locked == nil {
		t.Fatal("backend gives no Locked")
	}
	ctx := t.Context()
	src := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, src, mbk)
	createKeys(t, src, "fine")
	label := s.Locked(t, src)
	var out bytes.Buffer
	err := src.Backup(ctx, &out)
	var ie *hsm.IncompleteBackupError
	if !errors.As(err, &ie) || len(ie.Objects) != 1 || ie.Objects[0].Label != label || ie.Objects[0].Why == "" {
		t.Fatalf("backup with an object that cannot leave: %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("a refused backup wrote %d bytes", out.Len())
	}
	if !strings.Contains(err.Error(), label) {
		t.Fatalf("refusal does not name the object: %v", err)
	}
	listed := Objects(t, src)
	i := slices.IndexFunc(listed, func(o hsm.Object) bool { return o.Label == label })
	if i < 0 || listed[i].Carried || listed[i].Why != ie.Objects[0].Why {
		t.Fatalf("listing of the locked object: %+v", listed)
	}
	// Skipping it explicitly: the backup is made, its header names the object.
	if err := objectStore(t, src).BackupObjects(ctx, &out, hsm.BackupOptions{Skip: true}); err != nil {
		t.Fatalf("backup that skips: %v", err)
	}
	hdr, err := backup.ReadHeader(bytes.NewReader(out.Bytes()))
	if err != nil || hdr.SkippedTotal != 1 || len(hdr.Skipped) != 1 || hdr.Skipped[0].Label != label {
		t.Fatalf("header of a backup that skipped: %+v, %v", hdr, err)
	}
	dst := s.Fresh(t)
	mustLoad(t, dst, mbk)
	plan, err := objectStore(t, dst).RestoreObjects(ctx, bytes.NewReader(out.Bytes()), hsm.RestoreOptions{})
	if err != nil || len(plan.Skipped) != 1 || plan.Skipped[0].Label != label || plan.Count(hsm.ActionAdd) != 1 {
		t.Fatalf("restore of a backup that skipped: %+v, %v", plan, err)
	}
	// Made equal to that backup, the source keeps the key the backup could not carry (it is in
	// no backup: removing it would lose it for good), and removes what the backup does not hold.
	createKeys(t, src, "after the backup")
	plan, err = objectStore(t, src).RestoreObjects(ctx, bytes.NewReader(out.Bytes()), hsm.RestoreOptions{MakeEqual: true})
	if err != nil {
		t.Fatalf("make-equal restore onto the source: %v", err)
	}
	after := Objects(t, src)
	if !slices.ContainsFunc(after, func(o hsm.Object) bool { return o.Label == label }) {
		t.Fatalf("a make-equal restore removed the key the backup had to skip: %+v", plan.Items)
	}
	if slices.ContainsFunc(after, func(o hsm.Object) bool { return o.Label == "after the backup" }) || plan.Count(hsm.ActionRemove) != 1 {
		t.Fatalf("a make-equal restore kept what the backup does not hold: %+v", plan.Items)
	}
}

func (s *suite) resetKeepsOthers(t *testing.T) {
	ctx := t.Context()
	h := s.Fresh(t)
	mustLoad(t, h, NewMBK(t))
	s.Populate(t, h)
	others := Objects(t, h)
	createKeys(t, h, "keyquorum's")
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if d := SameObjects(others, Objects(t, h)); d != "" {
		t.Fatalf("after a factory reset:\n%s", d)
	}
	all, err := objectStore(t, h).Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range all {
		if o.Own {
			t.Errorf("after a factory reset keyquorum's own %s is left", o)
		}
	}
	if err := objectStore(t, h).Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if all, err := objectStore(t, h).Objects(ctx); err != nil || len(all) != 0 {
		t.Fatalf("after wiping: %v, %v", all, err)
	}
}
