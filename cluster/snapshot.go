package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

// A snapshot is the state the nodes of a cluster share, as it travels from one node to
// another (GET [StatePath]): whole, versioned, and under the MBK.
//
//	magic      "KQCLUSTER1\n"
//	manifest   uint32 big-endian length, then JSON [Manifest]
//	tag        32 bytes: the HSM authenticator (hsm.Authenticator, a key derived from the MBK) of
//	           "keyquorum cluster snapshot v1\x00" and the manifest
//	registry   uint32 length, then the card set registry (ceremony's exported form)
//	slot key   uint32 length (0: none), then the slot credential key wrapped under the MBK
//	backup     the object store as a backup (hsm/backup, encrypted under the MBK), to the end
//
// The manifest names the SHA-256 of the three parts after it, so the tag vouches for all of
// them: only a node of the same MBK can make a snapshot another accepts. The registry holds no
// secret (set and key IDs, card serials, authenticators) and is authenticated, not encrypted;
// the slot key and every key of the backup are encrypted under the MBK.

const snapshotMagic = "KQCLUSTER1\n"

// Bounds of a snapshot's parts.
const (
	maxManifest = 64 << 10
	maxRegistry = 16 << 20
	maxSlotKey  = 1 << 10
)

const snapshotLabel = "keyquorum cluster snapshot v1\x00"

// ErrSnapshot is a snapshot that is damaged, cut short or not one at all; the error wrapping it
// says which part. Nothing changed.
var ErrSnapshot = errors.New("the cluster state is damaged or not a cluster state")

// ErrSnapshotForged is a snapshot whose manifest does not verify under this node's MBK, or
// whose parts do not match their digests in the manifest. Nothing changed.
var ErrSnapshotForged = errors.New("the cluster state does not authenticate under this node's master backup key")

// Version is the version of a node's shared state: for each node (by node ID) how many changes
// of it the state holds. A state is newer than another when it holds every change of the other
// and more; two states each holding a change the other lacks are in conflict.
type Version map[string]uint64

// Order is how two versions compare.
type Order int

const (
	Same       Order = iota // the same changes
	Older                   // the other holds every change of this one and more
	Newer                   // this one holds every change of the other and more
	Concurrent              // each holds a change the other lacks: a conflict
)

// Compare says how v stands to o.
func (v Version) Compare(o Version) Order {
	less, more := false, false
	for _, k := range keysOf(v, o) {
		switch a, b := v[k], o[k]; {
		case a < b:
			less = true
		case a > b:
			more = true
		}
	}
	switch {
	case less && more:
		return Concurrent
	case less:
		return Older
	case more:
		return Newer
	}
	return Same
}

func keysOf(vs ...Version) []string {
	var ks []string
	for _, v := range vs {
		for k := range v {
			if !slices.Contains(ks, k) {
				ks = append(ks, k)
			}
		}
	}
	slices.Sort(ks)
	return ks
}

// String is the version as operators compare it: node:changes, by node ID, e.g.
// "3f2a9c10:4 81d0e2aa:1"; "0" for a state without changes.
func (v Version) String() string {
	var parts []string
	for _, k := range keysOf(v) {
		if v[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", k, v[k]))
		}
	}
	if parts == nil {
		return "0"
	}
	return strings.Join(parts, " ")
}

// Manifest describes a snapshot: whose, which version, and the digests of its parts.
type Manifest struct {
	Format int    `json:"format"`
	KeyID  string `json:"key_id"`
	// Node and NodeID name the node that sent it.
	Node   string `json:"node"`
	NodeID string `json:"node_id"`
	// Version is the state's version; Origin the node ID whose change made it.
	Version Version   `json:"version"`
	Origin  string    `json:"origin,omitempty"`
	Digest  string    `json:"digest"` // of the shared state ([State.Digest])
	Made    time.Time `json:"made"`
	// SHA-256 (hex) of the parts: registry, wrapped slot key ("" when none), backup.
	Registry   string `json:"registry_sha256"`
	SlotKey    string `json:"slot_key_sha256,omitempty"`
	Backup     string `json:"backup_sha256"`
	BackupSize int64  `json:"backup_size"`
}

const manifestFormat = 1

func isHex(s string, n int) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == n
}

// decodeManifest decodes a manifest strictly.
func decodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrSnapshot, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: manifest: data after its end", ErrSnapshot)
	}
	switch {
	case m.Format != manifestFormat:
		return nil, fmt.Errorf("%w: manifest of format %d, this version reads %d", ErrSnapshot, m.Format, manifestFormat)
	case !isHex(m.KeyID, len(hsm.KeyID{})):
		return nil, fmt.Errorf("%w: manifest: bad key id", ErrSnapshot)
	case !validNodeID(m.NodeID) || (m.Origin != "" && !validNodeID(m.Origin)) || !printable(m.Node, 64):
		return nil, fmt.Errorf("%w: manifest: bad node", ErrSnapshot)
	case len(m.Version) > 1024:
		return nil, fmt.Errorf("%w: manifest: a version of %d nodes", ErrSnapshot, len(m.Version))
	case !isHex(m.Digest, sha256.Size) || !isHex(m.Registry, sha256.Size) || !isHex(m.Backup, sha256.Size) ||
		(m.SlotKey != "" && !isHex(m.SlotKey, sha256.Size)):
		return nil, fmt.Errorf("%w: manifest: bad digest", ErrSnapshot)
	case m.BackupSize <= 0:
		return nil, fmt.Errorf("%w: manifest: bad backup size", ErrSnapshot)
	}
	for k := range m.Version {
		if !validNodeID(k) {
			return nil, fmt.Errorf("%w: manifest: bad node in the version", ErrSnapshot)
		}
	}
	return &m, nil
}

// validNodeID: a node ID is 16 hex digits (lower case).
func validNodeID(s string) bool { return len(s) == 16 && isHex(s, 8) && strings.ToLower(s) == s }

// snapshotHead is what precedes the backup in a snapshot.
type snapshotHead struct {
	rawManifest []byte
	manifest    *Manifest
	tag         []byte
	registry    []byte
	slotKey     []byte
}

func readPart(r io.Reader, max int, what string) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, fmt.Errorf("%w: %s cut short", ErrSnapshot, what)
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > uint32(max) {
		return nil, fmt.Errorf("%w: %s of %d bytes, at most %d", ErrSnapshot, what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %s cut short", ErrSnapshot, what)
	}
	return b, nil
}

// readSnapshotHead reads a snapshot up to its backup; it checks the form only (the tag and the
// digests are checked by [Node.verifyHead] and the receiver).
func readSnapshotHead(r io.Reader) (*snapshotHead, error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapshotMagic {
		return nil, fmt.Errorf("%w: it does not start as one", ErrSnapshot)
	}
	var h snapshotHead
	var err error
	if h.rawManifest, err = readPart(r, maxManifest, "manifest"); err != nil {
		return nil, err
	}
	if h.manifest, err = decodeManifest(h.rawManifest); err != nil {
		return nil, err
	}
	h.tag = make([]byte, hsm.AuthenticatorSize)
	if _, err := io.ReadFull(r, h.tag); err != nil {
		return nil, fmt.Errorf("%w: authenticator cut short", ErrSnapshot)
	}
	if h.registry, err = readPart(r, maxRegistry, "card set registry"); err != nil {
		return nil, err
	}
	if h.slotKey, err = readPart(r, maxSlotKey, "slot key"); err != nil {
		return nil, err
	}
	if len(h.slotKey) == 0 {
		h.slotKey = nil
	}
	if sum(h.registry) != h.manifest.Registry || (h.slotKey == nil) != (h.manifest.SlotKey == "") ||
		(h.slotKey != nil && sum(h.slotKey) != h.manifest.SlotKey) {
		return nil, fmt.Errorf("%w: a part does not match its digest in the manifest", ErrSnapshotForged)
	}
	return &h, nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func manifestMessage(raw []byte) []byte { return append([]byte(snapshotLabel), raw...) }

func writePart(w io.Writer, b []byte) error {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(b)))
	if _, err := w.Write(l[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// writeSnapshotHead writes everything before the backup; the manifest's tag is made by auth.
func writeSnapshotHead(ctx context.Context, w io.Writer, auth hsm.Authenticator, m *Manifest, registry, slotKey []byte) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tag, err := authenticateLong(ctx, auth, manifestMessage(raw))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString(snapshotMagic)
	writePart(&buf, raw)
	buf.Write(tag)
	writePart(&buf, registry)
	writePart(&buf, slotKey)
	_, err = w.Write(buf.Bytes())
	return err
}

// authenticateLong authenticates a message that may be longer than hsm.MaxAuthenticated: its
// SHA-256 under a label of its own.
func authenticateLong(ctx context.Context, auth hsm.Authenticator, msg []byte) ([]byte, error) {
	return auth.Authenticate(ctx, longMessage(msg))
}

func longMessage(msg []byte) []byte {
	s := sha256.Sum256(msg)
	return append([]byte("keyquorum cluster sha256\x00"), s[:]...)
}

func cloneVersion(v Version) Version {
	out := Version{}
	maps.Copy(out, v)
	return out
}
