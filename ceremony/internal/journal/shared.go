package journal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The card set registry is shared by the nodes of a cluster (package cluster): a node exports
// it whole ([EncodeSets]) and another replaces its own with it ([DecodeSets], [ReplaceSets]),
// so that every node refuses the same retired cards and vouches for the same intact ones. The
// registry holds no secret: set and key IDs, card serials, and authenticators (MACs only an
// HSM of the same MBK can make or check).

// MaxSharedSets bounds the sets a registry taken from a peer may hold.
const MaxSharedSets = 4096

// sharedRegistry is the exported form: a format number and the sets, oldest first.
type sharedRegistry struct {
	Format int       `json:"format"`
	Sets   []CardSet `json:"sets"`
}

const sharedFormat = 1

// EncodeSets is the registry's exported form: the same sets always encode to the same bytes
// (oldest first, ties by set ID), so two nodes' digests compare.
func EncodeSets(sets []CardSet) ([]byte, error) {
	sets = slices.Clone(sets)
	slices.SortStableFunc(sets, func(a, b CardSet) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.SetID, b.SetID)
	})
	if sets == nil {
		sets = []CardSet{}
	}
	return json.Marshal(sharedRegistry{Format: sharedFormat, Sets: sets})
}

// DecodeSets decodes an exported registry strictly: every set as [DecodeCardSet] checks a
// database entry, no set twice, at most [MaxSharedSets], at most one current set.
func DecodeSets(b []byte) ([]CardSet, error) {
	var reg struct {
		Format int               `json:"format"`
		Sets   []json.RawMessage `json:"sets"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&reg); err != nil {
		return nil, fmt.Errorf("%w: card set registry: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: card set registry: data after its end", ErrCorrupt)
	}
	if reg.Format != sharedFormat {
		return nil, fmt.Errorf("%w: card set registry of format %d, this version reads %d", ErrCorrupt, reg.Format, sharedFormat)
	}
	if len(reg.Sets) > MaxSharedSets {
		return nil, fmt.Errorf("%w: card set registry of %d sets, at most %d", ErrCorrupt, len(reg.Sets), MaxSharedSets)
	}
	out := make([]CardSet, 0, len(reg.Sets))
	seen := map[string]bool{}
	current := 0
	for _, raw := range reg.Sets {
		s, err := DecodeCardSet(raw)
		if err != nil {
			return nil, err
		}
		id := strings.ToLower(s.SetID)
		if seen[id] {
			return nil, fmt.Errorf("%w: card set registry lists set %s twice", ErrCorrupt, Short(s.SetID))
		}
		seen[id] = true
		if s.Status == SetCurrent {
			current++
		}
		out = append(out, *s)
	}
	if current > 1 {
		return nil, fmt.Errorf("%w: card set registry has %d current sets", ErrCorrupt, current)
	}
	return out, nil
}

// ReplaceSets makes the registry exactly sets, and the key set of the state (what the status
// shows of the loaded key's cards) the current one of them when it is of key keyID. It runs in
// one transaction: the registry is the old one or the new one, never a mix. It returns the sets
// this registry held that sets does not, which the caller tells the operator.
func ReplaceSets(tx *bolt.Tx, sets []CardSet, keyID string, now time.Time) ([]CardSet, error) {
	b := tx.Bucket(BucketSets)
	var keys [][]byte
	var dropped []CardSet
	if err := b.ForEach(func(k, v []byte) error {
		keys = append(keys, bytes.Clone(k))
		old, err := DecodeCardSet(v)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(sets, func(s CardSet) bool { return s.SetID == old.SetID }) {
			dropped = append(dropped, *old)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
	}
	var cur *CardSet
	for i := range sets {
		if err := PutSet(tx, &sets[i]); err != nil {
			return nil, err
		}
		if sets[i].Status == SetCurrent {
			cur = &sets[i]
		}
	}
	if cur == nil || cur.KeyID != keyID {
		return dropped, nil
	}
	ks, err := LoadKeySet(tx)
	if err != nil {
		return nil, err
	}
	if ks != nil && ks.SetID == cur.SetID {
		return dropped, nil
	}
	ks = &KeySet{SetID: cur.SetID, KeyID: cur.KeyID, K: cur.K, N: cur.N, Label: cur.Label, Ceremony: cur.Ceremony, Loaded: now.UTC()}
	for _, sh := range cur.Shares {
		for _, serial := range sh.Holders() {
			ks.Cards = append(ks.Cards, CardEntry{Serial: serial, Index: sh.Index, Role: RoleShare, State: CardWritten, Time: sh.Written})
		}
	}
	return dropped, PutJSON(tx.Bucket(BucketState), KeyKeySet, ks)
}
