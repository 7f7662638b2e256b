package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

// The state the nodes of a cluster share: the HSM's object store, the card set registry and the
// slot credential key. Operators, the management PKI and the audit log stay per node.

// Registry is the card set registry as a cluster node shares it; *ceremony.Manager implements
// it.
type Registry interface {
	// ExportSets is the whole registry; the same sets always give the same bytes.
	ExportSets() ([]byte, error)
	// CheckSets decodes an exported registry without changing anything.
	CheckSets(b []byte) error
	// ImportSets replaces the registry with an exported one, and says in words which sets it
	// held that the exported one lacks (gone with the replacement).
	ImportSets(ctx context.Context, b []byte) ([]string, error)
}

// StateFile is the file, in the node's directory ([Node.Dir]), where a node keeps the version
// of its shared state, the peers it pulls from (with the node file each issued it: the node
// certificate and its key, so that it can pull again) and the nodes that pulled from it. Mode
// 0600, like the management PKI's keys beside it.
const StateFile = "cluster.json"

// Peer is a node this node pulls its state from: the one it joined.
type Peer struct {
	Name    string `json:"name"`
	NodeID  string `json:"node_id"`
	Address string `json:"address"`
	// NodeFile is the node file the peer issued for this node and its password, sealed under
	// a key derived from the MBK (nodefile.go).
	NodeFile []byte `json:"node_file"`
	// What this node last saw of the peer.
	KeyID     string    `json:"key_id,omitempty"`
	Version   Version   `json:"version,omitempty"`
	Digest    string    `json:"digest,omitempty"`
	LastSync  time.Time `json:"last_sync,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	LastTry   time.Time `json:"last_try,omitzero"`
}

// Follower is a node that pulls its state from this one (it joined this node).
type Follower struct {
	Name    string    `json:"name"`
	Serial  string    `json:"serial"` // of its node certificate
	Address string    `json:"address,omitempty"`
	KeyID   string    `json:"key_id"`
	Version Version   `json:"version"` // the version it took last
	Digest  string    `json:"digest"`
	Took    time.Time `json:"took"`
	// Offer is the outcome of the last offer of a change to it ("" when it took it).
	OfferError string  `json:"offer_error,omitempty"`
	Offered    Version `json:"offered,omitempty"` // the version last offered to it
	// CA is its management CA (DER), which its server certificate chains to.
	CA       []byte    `json:"ca,omitempty"`
	OfferTry time.Time `json:"offer_try,omitzero"`
}

// localState is the content of StateFile.
type localState struct {
	Name      string     `json:"name,omitempty"` // this node's name once it joined (its node certificate's)
	Version   Version    `json:"version"`
	Origin    string     `json:"origin,omitempty"`
	Digest    string     `json:"digest,omitempty"` // of the state Version names
	Changed   time.Time  `json:"changed,omitzero"`
	Peers     []Peer     `json:"peers,omitempty"`
	Followers []Follower `json:"followers,omitempty"`
}

func (n *Node) statePath() string { return filepath.Join(n.Dir, StateFile) }

// loadState reads StateFile; a missing one is an empty state. n.smu is held.
func (n *Node) loadState() (*localState, error) {
	st := &localState{Version: Version{}}
	if n.Dir == "" {
		return st, nil
	}
	b, err := os.ReadFile(n.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read cluster state %s: %v", n.statePath(), err)
	}
	if st.Version == nil {
		st.Version = Version{}
	}
	return st, nil
}

// saveState writes StateFile whole (a new file renamed over the old). n.smu is held.
func (n *Node) saveState(st *localState) error {
	if n.Dir == "" {
		return nil
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(n.Dir, StateFile+".*")
	if err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		if _, err = tmp.Write(b); err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), n.statePath())
	}
	if err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	return nil
}

// NodeID is this node's ID in versions: the first 8 bytes of the SHA-256 of its management CA
// certificate, in hex (each node has its own CA).
func (n *Node) NodeID() string {
	if n.CA == nil {
		s := sha256.Sum256([]byte("keyquorum node " + n.Name))
		return hex.EncodeToString(s[:8])
	}
	s := sha256.Sum256(n.CA.Raw)
	return hex.EncodeToString(s[:8])
}

// name is this node's name: the one its node certificate gave it when it joined, else the
// configured one.
func (n *Node) name(st *localState) string {
	if st.Name != "" {
		return st.Name
	}
	if n.Name != "" {
		return n.Name
	}
	if h, err := os.Hostname(); err == nil && printable(h, 64) {
		return h
	}
	return "node " + n.NodeID()
}

// shared is the shared state as this node holds it now, without the backup.
type shared struct {
	keyID    hsm.KeyID
	registry []byte
	slotKey  []byte // wrapped under the MBK; nil when none
	digest   string
	slotErr  error // the HSM cannot carry its slot key (not a SlotKeyCarrier)
}

// objectDigestLine is what the digest takes of an object: identity and carried attributes,
// never a value.
type objectDigestLine struct {
	ID    string     `json:"id"`
	Attrs []hsm.Attr `json:"attrs,omitempty"`
}

// current reads the shared state: registry, wrapped slot key and the digest of both and of the
// object store's listing (identities and attributes, never a value).
func (n *Node) current(ctx context.Context) (*shared, error) {
	var s shared
	var err error
	if s.keyID, err = n.HSM.BackupKeyID(ctx); err != nil {
		return nil, err
	}
	if n.Registry != nil {
		if s.registry, err = n.Registry.ExportSets(); err != nil {
			return nil, err
		}
	}
	if c, ok := n.HSM.(hsm.SlotKeyCarrier); ok {
		if s.slotKey, err = c.ExportSlotKey(ctx); err != nil {
			return nil, err
		}
	} else {
		s.slotErr = errors.New("this node's HSM cannot carry its slot credential key")
	}
	d := sha256.New()
	d.Write([]byte("keyquorum cluster shared state v1\x00"))
	d.Write(s.keyID[:])
	fmt.Fprintf(d, "%d\x00", len(s.registry))
	d.Write(s.registry)
	fmt.Fprintf(d, "%d\x00", len(s.slotKey))
	d.Write(s.slotKey)
	if store, ok := n.HSM.(hsm.ObjectStore); ok {
		objs, err := store.Objects(ctx)
		if err != nil {
			return nil, err
		}
		var lines []objectDigestLine
		for _, o := range objs {
			if o.Own || !o.Carried {
				continue
			}
			lines = append(lines, objectDigestLine{ID: o.Identity(), Attrs: o.Attrs})
		}
		slices.SortFunc(lines, func(a, b objectDigestLine) int { return strings.Compare(a.ID, b.ID) })
		b, _ := json.Marshal(lines)
		d.Write(b)
	}
	s.digest = hex.EncodeToString(d.Sum(nil))
	return &s, nil
}

// refresh reads the shared state and, when it changed since the version was last set (a key
// made, a set re-issued, a restore, a card written), counts a change of this node. n.smu is
// held. It reports whether the version moved.
func (n *Node) refresh(ctx context.Context, st *localState) (*shared, bool, error) {
	cur, err := n.current(ctx)
	if err != nil {
		return nil, false, err
	}
	if cur.digest == st.Digest {
		return cur, false, nil
	}
	for _, p := range st.Peers {
		if p.Digest == cur.digest && p.Version.Compare(st.Version) == Same {
			// This node became what it last took from its peer (e.g. a key the peer deleted
			// is deleted here too: restores add and replace, never remove): no change of its
			// own, or the next change of the peer would be a conflict.
			st.Origin, st.Digest, st.Changed = p.NodeID, cur.digest, time.Now().UTC()
			if err := n.saveState(st); err != nil {
				return nil, false, err
			}
			n.log().Info("cluster shared state is the peer's again", "peer", p.Name, "version", st.Version.String(), "digest", short(cur.digest))
			return cur, false, nil
		}
	}
	me := n.NodeID()
	st.Version = cloneVersion(st.Version)
	st.Version[me]++
	st.Origin, st.Digest, st.Changed = me, cur.digest, time.Now().UTC()
	if err := n.saveState(st); err != nil {
		return nil, false, err
	}
	n.log().Info("cluster shared state changed", "version", st.Version.String(), "digest", short(cur.digest))
	return cur, true, nil
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// writeSnapshot writes this node's snapshot to w: the head, then the backup (spooled first: its
// digest goes into the manifest, and the HSM's lock is not held while w is written).
func (n *Node) writeSnapshot(ctx context.Context, w io.Writer) (*Manifest, error) {
	auth, ok := n.HSM.(hsm.Authenticator)
	if !ok {
		return nil, ErrCannotProve
	}
	n.smu.Lock()
	st, err := n.loadState()
	if err != nil {
		n.smu.Unlock()
		return nil, err
	}
	cur, _, err := n.refresh(ctx, st)
	n.smu.Unlock()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(SpoolDir, "keyquorum-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	os.Remove(f.Name())
	defer f.Close()
	if err := n.HSM.Backup(ctx, f); err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	m := &Manifest{Format: manifestFormat, KeyID: cur.keyID.String(), Node: n.name(st), NodeID: n.NodeID(),
		Version: st.Version, Origin: st.Origin, Digest: cur.digest, Made: time.Now().UTC(),
		Registry: sum(cur.registry), Backup: hex.EncodeToString(h.Sum(nil)), BackupSize: size}
	if cur.slotKey != nil {
		m.SlotKey = sum(cur.slotKey)
	}
	if err := writeSnapshotHead(ctx, w, auth, m, cur.registry, cur.slotKey); err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, f); err != nil {
		return nil, err
	}
	return m, nil
}

// StaleStateError refuses a peer's state that is older than this node's, or in conflict with
// it: nothing changed. Have is this node's version, Offered the peer's.
type StaleStateError struct {
	Peer     string
	Have     Version
	Offered  Version
	Conflict bool // each holds a change the other lacks
	// Diverged is the same version with another content: this node holds something the peer
	// does not (objects it had before it joined, which the join's restore kept), or the other
	// way round.
	Diverged bool
}

// decide says whether a peer's state of version offered (digest theirs) is to be taken by a
// node of version have (digest mine): in step (nothing to take), newer (nil, false), or
// refused.
func decide(peer string, have, offered Version, mine, theirs string) (bool, error) {
	switch offered.Compare(have) {
	case Same:
		if mine == theirs {
			return true, nil
		}
		return false, &StaleStateError{Peer: peer, Have: have, Offered: offered, Diverged: true}
	case Older:
		return false, &StaleStateError{Peer: peer, Have: have, Offered: offered}
	case Concurrent:
		return false, &StaleStateError{Peer: peer, Have: have, Offered: offered, Conflict: true}
	}
	return false, nil
}

func (e *StaleStateError) Error() string {
	if e.Diverged {
		return fmt.Sprintf("the state of %s and this node's have the same version %s but not the same content (objects or card sets one of them holds alone): not merged, nothing changed", e.Peer, e.Have)
	}
	if e.Conflict {
		return fmt.Sprintf("the state of %s (version %s) and this node's (version %s) each hold a change the other lacks: not merged, nothing changed", e.Peer, e.Offered, e.Have)
	}
	return fmt.Sprintf("the state of %s (version %s) is older than this node's (version %s): refused, nothing changed", e.Peer, e.Offered, e.Have)
}

// Todo says what to do about it.
func (e *StaleStateError) Todo() string {
	if e.Diverged {
		return "Compare the two nodes' HSM and Smart cards pages. To make this node equal to the peer, join it again (keyquorum cluster join); objects only this node holds stay."
	}
	if e.Conflict {
		return "Decide which node's state is right. To take the peer's anyway, join it again (keyquorum cluster join): this node's own changes are then overwritten where they differ."
	}
	return "This node is ahead: sync the other node from this one instead, or wait for this node's offer to reach it."
}

// ErrPartial is a transfer that took part of a peer's state (the object store) and not the
// rest (e.g. the card set registry while a ceremony runs); the version stays, so the next sync
// takes the state again.
var ErrPartial = errors.New("the peer's state was taken over in part")

// Applied is what a node took over from a peer's snapshot.
type Applied struct {
	Restored
	Version  Version  `json:"version"`
	Digest   string   `json:"digest"`
	Sets     bool     `json:"card_sets"` // the card set registry was taken over
	SlotKey  bool     `json:"slot_key"`  // the slot credential key was taken over
	InStep   bool     `json:"in_step"`   // nothing to take: the states were the same
	Warnings []string `json:"warnings,omitempty"`
}

// applySnapshot reads a snapshot from r and takes it over. With force (a join) any version is
// taken; otherwise only a newer one (*StaleStateError). Nothing changes before the head
// authenticated under this node's MBK and the whole backup was read and matched its digest.
// n.smu is held.
func (n *Node) applySnapshot(ctx context.Context, st *localState, r io.Reader, peer string, force bool) (*Applied, *Manifest, error) {
	mine, err := n.HSM.BackupKeyID(ctx)
	if err != nil {
		return nil, nil, err
	}
	auth, ok := n.HSM.(hsm.Authenticator)
	if !ok {
		return nil, nil, ErrCannotProve
	}
	head, err := readSnapshotHead(r)
	if err != nil {
		return nil, nil, err
	}
	m := head.manifest
	if m.KeyID != mine.String() {
		theirs, _ := parseKeyID(m.KeyID)
		return nil, m, &hsm.ForeignKeyError{Got: theirs, Want: mine}
	}
	if err := auth.CheckAuthenticator(ctx, longMessage(manifestMessage(head.rawManifest)), head.tag); err != nil {
		if errors.Is(err, hsm.ErrAuthenticatorMismatch) {
			return nil, m, ErrSnapshotForged
		}
		return nil, m, err
	}
	if n.Registry != nil {
		if err := n.Registry.CheckSets(head.registry); err != nil {
			return nil, m, err
		}
	}
	cur, _, err := n.refresh(ctx, st)
	if err != nil {
		return nil, m, err
	}
	if !force {
		inStep, err := decide(peer, st.Version, m.Version, cur.digest, m.Digest)
		if err != nil {
			return nil, m, err
		}
		if inStep {
			return &Applied{Version: st.Version, Digest: cur.digest, InStep: true,
				Restored: Restored{BackupKeyID: mine.String(), Keys: -1, Peer: peer}}, m, nil
		}
	}
	// The backup, read whole and checked against the manifest before the HSM sees it.
	f, err := os.CreateTemp(SpoolDir, "keyquorum-spool-*")
	if err != nil {
		return nil, m, fmt.Errorf("spool backup: %w", err)
	}
	os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	body := &limitFlag{r: r}
	size, err := io.Copy(io.MultiWriter(f, h), body)
	if body.hit {
		return nil, m, ErrTooLarge
	}
	if err != nil {
		return nil, m, fmt.Errorf("%w: the backup was cut short: %v", ErrSnapshot, err)
	}
	if size != m.BackupSize || hex.EncodeToString(h.Sum(nil)) != m.Backup {
		return nil, m, fmt.Errorf("%w: the backup does not match its digest in the manifest", ErrSnapshotForged)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, m, fmt.Errorf("spool backup: %w", err)
	}
	hdr, err := restore(ctx, n.HSM, f)
	if err != nil {
		return nil, m, err
	}
	out := &Applied{Restored: Result(ctx, n.HSM, hdr, peer)}
	if n.Registry != nil {
		dropped, err := n.Registry.ImportSets(ctx, head.registry)
		if err != nil {
			return nil, m, fmt.Errorf("%w: the object store was taken over, the card set registry not (sync again once it can): %w", ErrPartial, err)
		}
		out.Sets = true
		out.Warnings = append(out.Warnings, dropped...)
	}
	if head.slotKey != nil {
		c, ok := n.HSM.(hsm.SlotKeyCarrier)
		if !ok {
			out.Warnings = append(out.Warnings, "this node's HSM cannot take the slot credential key: slot user cards written on "+m.Node+" do not activate here")
		} else if err := c.ImportSlotKey(ctx, head.slotKey); err != nil {
			return nil, m, fmt.Errorf("%w: the object store and the card sets were taken over, the slot credential key not (sync again): %w", ErrPartial, err)
		} else {
			out.SlotKey = true
		}
	}
	after, err := n.current(ctx)
	if err != nil {
		return nil, m, err
	}
	st.Version, st.Origin, st.Digest, st.Changed = cloneVersion(m.Version), m.Origin, after.digest, time.Now().UTC()
	if err := n.saveState(st); err != nil {
		return nil, m, err
	}
	out.Version, out.Digest = st.Version, after.digest
	return out, m, nil
}

// drain reads what is left of a body a little, so that its connection can be reused.
func drain(r io.Reader) { io.Copy(io.Discard, io.LimitReader(r, 64<<10)) }
