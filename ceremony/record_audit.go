package ceremony

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// ErrBadAuditEvent refuses an audit event whose key or message cannot be recorded as given.
var ErrBadAuditEvent = errors.New("audit event key must be 1 to 64 characters of a-z, 0-9, '.', '-' and '_', and the message 1 to 1024 printable characters")

// RecordAudit appends an entry that belongs to no ceremony to the audit log: what the services
// around the ceremonies do on an operator's behalf (WebConf's operator management, backups,
// restores). It is hash-chained (and authenticated while the HSM holds a key) like every other
// entry, in its own transaction.
//
// event is a stable key that auditors filter on (e.g. "operator.role"); it may not be one of
// the keys the ceremonies record themselves. message says what happened in words; like every
// audit entry it must never carry a secret.
func (m *Manager) RecordAudit(operator, event, message string) error {
	if err := validOperator(operator); err != nil {
		return fmt.Errorf("record audit event: %w", err)
	}
	if !validEventKey(event) || ceremonyEvents[event] || !validMessage(message) {
		return fmt.Errorf("record audit event: %w", ErrBadAuditEvent)
	}
	m.h.Mu.Lock()
	closed := m.h.Closed
	m.h.Mu.Unlock()
	if closed {
		return fmt.Errorf("record audit event: %w", ErrClosed)
	}
	e := &AuditEntry{Time: time.Now().UTC(), Operator: operator, Event: event, Message: message}
	if err := m.h.St.Update(func(tx *bolt.Tx) error { return journal.AppendAudit(tx, e) }); err != nil {
		return fmt.Errorf("record audit event: %w", err)
	}
	return nil
}

// ceremonyEvents are the keys only the ceremonies record: another room may not forge them.
var ceremonyEvents = map[string]bool{
	AuditCeremonyStarted: true, AuditCeremonyDone: true, AuditCeremonyAborted: true,
	AuditCeremonyInterrupted: true, AuditCeremonyStalled: true, AuditCeremonyRetried: true,
	AuditCeremonyConfirmed: true, AuditCeremonyResumed: true, AuditKeyGenerated: true,
	AuditKeyLoading: true, AuditKeyLoaded: true, AuditCardWriting: true, AuditCardWritten: true,
	AuditCardsWritten: true, AuditCardRead: true, AuditCardRefused: true, AuditCardRemoved: true,
	AuditPINWrong: true, AuditPINBlocked: true, AuditPINChanged: true, AuditSlotActivated: true,
	AuditFactoryReset: true, AuditSetSplit: true, AuditSetRetired: true, AuditCardChecked: true,
	AuditShareOverwrite: true, AuditKeyed: true, AuditUnkeyed: true, AuditJournalUpgraded: true,
}

func validEventKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validMessage(s string) bool {
	if s == "" || len(s) > 1024 || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return false
		}
	}
	return true
}
