package web

import (
	"context"
	"fmt"
	"io"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// CardSurveyor reads the card in the reader without a PIN and without changing anything
// (tcos.Survey); the pinpad/pcsc and pinpad/sim terminals implement it.
type CardSurveyor interface {
	SurveyCard(ctx context.Context) (*tcos.SurveyReport, error)
}

// CeremonyRunner starts ceremonies and follows them; *ceremony.Manager implements it.
type CeremonyRunner interface {
	Start(ctx context.Context, operator string, req ceremony.Request) (*ceremony.Handle, error)
	Resume(ctx context.Context, operator string) (*ceremony.Handle, error)
	Retry(operator string) error
	// Answer answers the question the pad asks on the screen; Question is that question.
	Answer(operator string, a ceremony.Answer) error
	Question() (ceremony.Question, bool)
	Cancel(operator string) error
	Subscribe() *ceremony.Subscription
}

// CeremonyRecords reads what ceremonies left behind; *ceremony.Manager implements it.
type CeremonyRecords interface {
	Overview(ctx context.Context) (ceremony.Overview, error)
	Ceremonies(limit int) ([]ceremony.Journal, error)
	// CeremoniesPage is one page of the ceremony list, newest first, and the cursor of the next.
	CeremoniesPage(q ceremony.CeremonyQuery) ([]ceremony.Journal, uint64, error)
	Protocol(id uint64) (*ceremony.Protocol, error)
}

// AuditReader reads and verifies the audit log; *ceremony.Manager implements it.
type AuditReader interface {
	VerifyAudit() (ceremony.AuditSummary, error)
	// VerifyAuditIncremental checks what was appended since the last verification.
	VerifyAuditIncremental() (ceremony.AuditSummary, error)
	ExportAudit(w io.Writer) error
	// AuditCheckpoint verifies the whole log and returns the checkpoint of its last entry, for
	// an auditor to keep outside the appliance.
	AuditCheckpoint() (ceremony.AuditCheckpoint, ceremony.AuditSummary, error)
	// VerifyAuditCheckpoint verifies the whole log and that it extends an auditor's checkpoint.
	VerifyAuditCheckpoint(cp ceremony.AuditCheckpoint) (ceremony.AuditSummary, error)
	AuditLog(ceremony uint64) ([]ceremony.AuditEntry, error)
	// AuditPage is one page of matching entries, newest first.
	AuditPage(q ceremony.AuditQuery) (ceremony.AuditPage, error)
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
	// Pad, when set, is asked whenever the status is shown whether the PIN pad is connected
	// (a PC/SC reader can be unplugged and plugged in while the service runs); nil for the
	// simulator, which is always there.
	Pad PadStatus
	// PadTimeouts are the ceremonies' waits on the pad (`serve --timeout-…`), shown so an
	// operator knows how long the pad waits before a step stalls.
	PadTimeouts ceremony.Timeouts
	HSMName     string // "soft (embedded)" or the PKCS#11 module and slot
	DataDir     string
}

// PadStatus is a PIN pad that can say whether it is connected: its name now (with what else
// the operator should know of it, such as its firmware), or why it cannot be used (e.g.
// pinpad.ErrNoReader, "no PIN pad connected").
type PadStatus interface {
	Status(ctx context.Context) (string, error)
}

// PadNow is the pad as the status shows it: its name, and a problem ("" when none) an operator
// can read.
func (a Appliance) PadNow(ctx context.Context) (name, problem string) {
	if a.Pad == nil {
		return a.PadName, ""
	}
	name, err := a.Pad.Status(ctx)
	if err != nil {
		return a.PadName, err.Error()
	}
	return name, ""
}

// BackupTo writes a backup of h to w; skip leaves out the objects a backup cannot carry (listed
// in its header) instead of refusing the backup. An HSM without an object store backs up
// plainly.
func BackupTo(ctx context.Context, h BackupHSM, w io.Writer, skip bool) error {
	// Made under the HSM's lock into a spool file, sent without it: a client that stops
	// reading holds a connection, not the HSM (cluster/spool.go).
	return cluster.SpoolTo(w, func(f io.Writer) error {
		if store, ok := h.(hsm.ObjectStore); ok {
			return store.BackupObjects(ctx, f, hsm.BackupOptions{Skip: skip})
		}
		return h.Backup(ctx, f)
	})
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
