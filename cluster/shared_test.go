package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
)

func TestVersionCompare(t *testing.T) {
	a, b := "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	for _, c := range []struct {
		v, o Version
		want Order
	}{
		{Version{}, Version{}, Same},
		{Version{a: 1}, Version{a: 1, b: 0}, Same},
		{Version{a: 1}, Version{a: 2}, Older},
		{Version{a: 2, b: 1}, Version{a: 2}, Newer},
		{Version{a: 2}, Version{a: 1, b: 1}, Concurrent},
	} {
		if got := c.v.Compare(c.o); got != c.want {
			t.Errorf("%s vs %s: %d, want %d", c.v, c.o, got, c.want)
		}
	}
	if s := (Version{b: 2, a: 1}).String(); s != a+":1 "+b+":2" {
		t.Errorf("String %q", s)
	}
}

func TestSnapshotHeadSeed(t *testing.T) {
	h, err := readSnapshotHead(bytes.NewReader(seedSnapshotHead(t)))
	if err != nil || h.manifest.Node != "node-a" {
		t.Fatalf("the fuzz seed is not accepted: %v", err)
	}
}

// TestSnapshotAuthenticated: a snapshot is taken only by a node of the same MBK, only whole and
// unaltered, and (but for a join) only when newer than the node's own state.
func TestSnapshotAuthenticated(t *testing.T) {
	ctx := context.Background()
	mbk := newMBK()
	caA, caB := newTestCA(t, "A"), newTestCA(t, "B")
	a := &Node{HSM: newHSM(t, mbk, 2), CA: caA.cert, Audit: &auditLog{}, Dir: t.TempDir(), Name: "node-a"}
	b := &Node{HSM: newHSM(t, mbk, 0), CA: caB.cert, Audit: &auditLog{}, Dir: t.TempDir(), MaxUpload: 1 << 20}
	var snap bytes.Buffer
	m, err := a.writeSnapshot(ctx, &snap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(snap.Bytes(), mbk) {
		t.Fatal("the MBK in the snapshot")
	}
	apply := func(n *Node, raw []byte, force bool) (*Applied, error) {
		n.smu.Lock()
		defer n.smu.Unlock()
		st, err := n.loadState()
		if err != nil {
			t.Fatal(err)
		}
		res, _, err := n.applySnapshot(ctx, st, bytes.NewReader(raw), "node-a", force)
		return res, err
	}
	keys := func(n *Node) int {
		k, _ := n.HSM.(hsm.KeyStore).Keys(ctx)
		return len(k)
	}

	// Another MBK: refused from the manifest.
	c := &Node{HSM: newHSM(t, newMBK(), 0), CA: newTestCA(t, "C").cert, Audit: &auditLog{}, Dir: t.TempDir()}
	var fke *hsm.ForeignKeyError
	if _, err := apply(c, snap.Bytes(), true); !errors.As(err, &fke) {
		t.Fatalf("another MBK: %v", err)
	}
	// An altered manifest (a higher version claimed) does not authenticate.
	raw := bytes.Clone(snap.Bytes())
	ml := int(binary.BigEndian.Uint32(raw[len(snapshotMagic):]))
	at := bytes.Index(raw[:len(snapshotMagic)+4+ml], []byte(`:1}`))
	if at < 0 {
		t.Fatalf("no version in %s", raw[:len(snapshotMagic)+4+ml])
	}
	raw[at+1] = '9'
	if _, err := apply(b, raw, true); !errors.Is(err, ErrSnapshotForged) {
		t.Fatalf("altered manifest: %v", err)
	}
	// A byte of the backup altered: refused before the HSM sees it.
	raw = bytes.Clone(snap.Bytes())
	raw[len(raw)-5] ^= 1
	if _, err := apply(b, raw, true); !errors.Is(err, ErrSnapshotForged) {
		t.Fatalf("altered backup: %v", err)
	}
	// Cut short.
	if _, err := apply(b, snap.Bytes()[:snap.Len()-100], true); !errors.Is(err, ErrSnapshotForged) && !errors.Is(err, ErrSnapshot) {
		t.Fatalf("cut short: %v", err)
	}
	if keys(b) != 0 {
		t.Fatalf("refused snapshots left %d keys", keys(b))
	}
	// A fresh node has a state of its own: only a join (force) takes the peer's over it.
	if _, err := apply(b, snap.Bytes(), false); !errors.As(err, new(*StaleStateError)) {
		t.Fatalf("a fresh node synced without a join: %v", err)
	}
	res, err := apply(b, snap.Bytes(), true)
	if err != nil || keys(b) != 2 || res.Version.Compare(m.Version) != Same {
		t.Fatalf("apply: %+v %v, %d keys", res, err, keys(b))
	}
	// The same again: in step. Then B changes: A's snapshot is older, and refused.
	if res, err := apply(b, snap.Bytes(), false); err != nil || !res.InStep {
		t.Fatalf("again: %+v %v", res, err)
	}
	if _, err := b.HSM.(hsm.KeyStore).CreateKey(ctx, "only-on-b"); err != nil {
		t.Fatal(err)
	}
	var stale *StaleStateError
	if _, err := apply(b, snap.Bytes(), false); !errors.As(err, &stale) || stale.Conflict {
		t.Fatalf("older: %v", err)
	}
	if keys(b) != 3 {
		t.Fatalf("the refused snapshot changed B: %d keys", keys(b))
	}
}
