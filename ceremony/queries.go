package ceremony

import (
	"fmt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
	bolt "go.etcd.io/bbolt"
)

// The Manager's read-only questions to the journal: each is one read transaction over a
// function of package journal.

// AuditPage returns one page of matching audit entries, newest first. Its cost depends on the
// page and on the entries that match the most selective field set (ceremony, serial, event,
// operator, in that order) between Before and the time range, never on the size of the log:
// every field is found through the audit index and the time range by binary search over the
// sequence numbers.
func (m *Manager) AuditPage(q AuditQuery) (AuditPage, error) {
	q.Limit = pageLimit(q.Limit)
	var page AuditPage
	err := m.h.St.View(func(tx *bolt.Tx) error {
		var err error
		page, err = journal.PageAudit(tx, q)
		return err
	})
	if err != nil {
		return AuditPage{}, fmt.Errorf("read audit log: %w", err)
	}
	return page, nil
}

// CeremoniesPage returns one page of ceremonies, newest first, and the Before of the next
// (older) page, 0 when there is none. Its cost is the page's, whatever the journal holds: a
// kind is found through the audit index.
func (m *Manager) CeremoniesPage(q CeremonyQuery) ([]Journal, uint64, error) {
	q.Limit = pageLimit(q.Limit)
	var out []Journal
	var next uint64
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		out, next, err = journal.CeremoniesPage(tx, q)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list ceremonies: %w", err)
	}
	return out, next, nil
}

// pageLimit is a page's size: [DefaultAuditPage] when none is asked, at most [MaxAuditPage].
func pageLimit(n int) int {
	if n <= 0 {
		return DefaultAuditPage
	}
	return min(n, MaxAuditPage)
}

// CardSets lists every card set the appliance knows, oldest first.
func (m *Manager) CardSets() ([]CardSet, error) {
	var out []CardSet
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		out, err = journal.AllSets(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list card sets: %w", err)
	}
	return out, nil
}

// CurrentSet returns the current card set, or nil when there is none.
func (m *Manager) CurrentSet() (*CardSet, error) { return m.h.CurrentSet() }
