package web

import (
	"context"
	"io"

	"github.com/keyquorum/keyquorum/ceremony"
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
