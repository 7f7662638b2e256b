package api

import (
	"log/slog"

	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Config is what a Manager is built from.
type Config struct {
	// Dir is the data directory; the journal is Dir/ceremony.db.
	Dir string
	Pad Pad
	HSM HSM
	// Logger receives operational logs (never secrets), and every committed audit entry once
	// more as a structured line (attribute audit_event), for log shippers; the hash-chained
	// audit log stays the record. Nil discards.
	Logger   *slog.Logger
	Timeouts Timeouts
	// OnAudit, when set, is called with every audit entry after it is committed (metrics). It
	// must not block or call back into the Manager.
	OnAudit func(AuditEntry)
	// AfterCommit, when set, is called synchronously after each transition is durable, before
	// the ceremony touches a card or the HSM again. For metrics and crash tests; it must not
	// call back into the Manager.
	AfterCommit func(Transition)
}

// Transition describes one committed write to the journal.
type Transition struct {
	Commit   uint64 // number of commits since Open, from 1
	Ceremony uint64
	Kind     Kind
	Status   Status
	Phase    Phase
	Event    string // the audit event key recorded with it, if any
}
