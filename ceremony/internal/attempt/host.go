package attempt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
	"github.com/keyquorum/keyquorum/sharing"
	bolt "go.etcd.io/bbolt"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Host is the Manager's state that an attempt shares with it: the devices and the journal, the
// event broker, and the current attempt under Mu. The Manager (package ceremony) owns one and
// holds Mu while it starts, answers or cancels an attempt; an attempt clears Cur when it ends.
type Host struct {
	Cfg    Config
	St     *journal.Store
	Log    *slog.Logger
	Events *Broker

	Mu     sync.Mutex
	Cur    *Run
	Closed bool
}

// AfterCommit tells Cfg.AfterCommit that a transition of j (with audit event event) is durable.
func (m *Host) AfterCommit(j *Journal, event string) {
	if m.Cfg.AfterCommit != nil {
		m.Cfg.AfterCommit(Transition{Commit: m.St.Commits.Load(), Ceremony: j.ID, Kind: j.Kind, Status: j.Status, Phase: j.Phase, Event: event})
	}
}

// LoadedKeyID asks the HSM for its key when that decides the classification of j: a ceremony
// interrupted while loading may have loaded the key already.
func (m *Host) LoadedKeyID(ctx context.Context, j *Journal) string {
	if j.Phase != PhaseLoading || j.KeyID == "" {
		return ""
	}
	id, err := m.Cfg.HSM.BackupKeyID(ctx)
	if err != nil {
		return ""
	}
	return id.String()
}

// CurrentSet returns the current card set, or nil when there is none.
func (m *Host) CurrentSet() (*CardSet, error) {
	var s *CardSet
	err := m.St.View(func(tx *bolt.Tx) (err error) {
		s, err = journal.CurrentSet(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read current card set: %w", err)
	}
	return s, nil
}

// lookupSet returns the set of a card's record, or nil when it is unknown.
func (m *Host) lookupSet(id sharing.SetID) (*CardSet, error) {
	var s *CardSet
	err := m.St.View(func(tx *bolt.Tx) (err error) {
		s, err = journal.GetSet(tx, id.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read card set: %w", err)
	}
	return s, nil
}

// Ceremony returns the committed journal of ceremony id.
func (m *Host) Ceremony(id uint64) (Journal, error) {
	var j *Journal
	err := m.St.View(func(tx *bolt.Tx) (err error) {
		j, err = journal.LoadJournal(tx, id)
		return err
	})
	if err != nil {
		return Journal{}, err
	}
	return *j, nil
}

// Recover ends ceremony j, found running in the journal at start-up, as interrupted (with the
// HSM asked whether a load went through), recorded by operator, and announces it.
func (m *Host) Recover(ctx context.Context, j *Journal, operator string) error {
	loaded := m.LoadedKeyID(ctx, j)
	c := Classify(j, loaded, nil)
	if err := m.CommitEnd(j, c, operator); err != nil {
		return fmt.Errorf("recover ceremony: %w", err)
	}
	m.Log.Warn("interrupted ceremony found", "ceremony", j.ID, "kind", j.Kind, "phase", j.Phase, "next", c.next)
	m.Events.Publish(Event{Type: EventRecovered, Ceremony: j.ID, Kind: j.Kind, Operator: j.Operator, Status: c.status,
		Phase: j.Phase, Step: StepFinished, Outcome: c.outcome, Next: c.next, PINTries: -1})
	return nil
}
