package ceremony

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// The card set registry is part of the state the nodes of a cluster share (package cluster):
// which set is current, which are retired or abandoned, and the authenticators of their cards.

// ErrSharedSets is a card set registry taken from a peer that cannot be used here; the error
// wrapping it says why. Nothing changed.
var ErrSharedSets = errors.New("the card set registry offered cannot be taken over")

// ExportSets returns the whole card set registry in its exported form: the same sets always
// give the same bytes. It holds no secret (IDs, serials, authenticators).
func (m *Manager) ExportSets() ([]byte, error) {
	sets, err := m.CardSets()
	if err != nil {
		return nil, err
	}
	return journal.EncodeSets(sets)
}

// DecodeSets checks an exported registry (outside data: it came from a peer) without changing
// anything.
func DecodeSets(b []byte) ([]CardSet, error) { return journal.DecodeSets(b) }

// ImportSets replaces the card set registry with an exported one (a peer's): afterwards this
// appliance refuses the cards the peer refuses and vouches for those it vouches for. It is
// refused while a ceremony runs ([*BusyError]) or an interrupted one is pending
// ([*PendingError]), for a registry that does not decode, and for one whose current set is of
// another key than this HSM's; then nothing changes. It returns, in words, each set this
// appliance knew that the peer's registry lacks (a set of an earlier key, a re-issue made here
// before a join): the registry is replaced whole, and the operator is told what went.
func (m *Manager) ImportSets(ctx context.Context, b []byte) ([]string, error) {
	sets, err := journal.DecodeSets(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSharedSets, err)
	}
	id, err := m.h.Cfg.HSM.BackupKeyID(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		if s.Status == SetCurrent && s.KeyID != id.String() {
			return nil, fmt.Errorf("%w: its current set %s is of key %s, this HSM holds %s", ErrSharedSets, journal.Short(s.SetID), s.KeyID, id)
		}
	}
	// Held while the registry is replaced: no ceremony starts meanwhile.
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if err := m.startable(); err != nil {
		return nil, err
	}
	var dropped []journal.CardSet
	err = m.h.St.Update(func(tx *bolt.Tx) error {
		p, err := journal.LoadPending(tx)
		if err != nil {
			return err
		}
		if p != nil {
			return &PendingError{Op: "take over the card set registry", Pending: *p}
		}
		dropped, err = journal.ReplaceSets(tx, sets, id.String(), time.Now())
		return err
	})
	if err != nil {
		return nil, err
	}
	var said []string
	for _, d := range dropped {
		said = append(said, fmt.Sprintf("card set %s (%d of %d, key %s, %s) was known only here and is no longer in this appliance's registry: its cards are now unknown here", journal.Short(d.SetID), d.K, d.N, d.KeyID, d.Status))
	}
	return said, nil
}

// CheckSets decodes an exported registry (a peer's) without changing anything: what a node
// checks before it takes over any of a peer's state.
func (m *Manager) CheckSets(b []byte) error {
	if _, err := journal.DecodeSets(b); err != nil {
		return fmt.Errorf("%w: %v", ErrSharedSets, err)
	}
	return nil
}
