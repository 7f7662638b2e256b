package web

import (
	"context"
	"fmt"
	"io"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm"
)

// CeremonyRunner starts ceremonies and follows them; *ceremony.Manager implements it.
type CeremonyRunner interface {
	Start(ctx context.Context, operator string, req ceremony.Request) (*ceremony.Handle, error)
	Resume(ctx context.Context, operator string) (*ceremony.Handle, error)
	Retry(operator string) error
	Confirm(operator string, ok bool) error
	Cancel(operator string) error
	Subscribe() *ceremony.Subscription
}

// CeremonyRecords reads what ceremonies left behind; *ceremony.Manager implements it.
type CeremonyRecords interface {
	Overview(ctx context.Context) (ceremony.Overview, error)
	Ceremonies(limit int) ([]ceremony.Journal, error)
	Protocol(id uint64) (*ceremony.Protocol, error)
}

// AuditReader reads and verifies the audit log; *ceremony.Manager implements it.
type AuditReader interface {
	VerifyAudit() (ceremony.AuditSummary, error)
	ExportAudit(w io.Writer) error
	AuditLog(ceremony uint64) ([]ceremony.AuditEntry, error)
}

// BackupHSM is what the HSM page needs of the HSM; every hsm.HSM implements it.
type BackupHSM interface {
	BackupKeyID(ctx context.Context) (hsm.KeyID, error)
	Backup(ctx context.Context, w io.Writer) error
	Restore(ctx context.Context, r io.Reader) error
}

// Appliance describes the service for the status page.
type Appliance struct {
	PadName string // "simulator" or the reader's name
	HSMName string // "soft (embedded)" or the PKCS#11 module and slot
	DataDir string
}

// BackupTo writes a backup of h to w; skip leaves out the objects a backup cannot carry (listed
// in its header) instead of refusing the backup. An HSM without an object store backs up
// plainly.
func BackupTo(ctx context.Context, h BackupHSM, w io.Writer, skip bool) error {
	if store, ok := h.(hsm.ObjectStore); ok {
		return store.BackupObjects(ctx, w, hsm.BackupOptions{Skip: skip})
	}
	return h.Backup(ctx, w)
}

// PlanSummary says in one line what a restore did: "3 added, 1 replaced, 0 unchanged, 2 kept,
// 0 removed; the backup left out 1 object(s) when it was made".
func PlanSummary(p *hsm.RestorePlan) string {
	s := fmt.Sprintf("%d added, %d replaced, %d unchanged, %d kept, %d removed", p.Count(hsm.ActionAdd), p.Count(hsm.ActionReplace),
		p.Count(hsm.ActionUnchanged), p.Count(hsm.ActionKeep), p.Count(hsm.ActionRemove))
	if n := len(p.Skipped) + p.SkippedMore; n > 0 {
		s += fmt.Sprintf("; the backup left out %d object(s) when it was made", n)
	}
	return s
}
