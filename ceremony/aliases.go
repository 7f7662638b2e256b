package ceremony

import (
	"io"

	"github.com/keyquorum/keyquorum/ceremony/internal/api"
	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// The journal's records, the audit log's entries and queries and the card set registry are
// kept by package journal (ceremony/internal/journal); ceremony names them here, as the same
// types and values, so that its callers need one import. Their documentation is there.

type (
	AuditEntry      = journal.AuditEntry
	AuditError      = journal.AuditError
	AuditPage       = journal.AuditPage
	AuditQuery      = journal.AuditQuery
	AuditSummary    = journal.AuditSummary
	AuditSpan       = journal.AuditSpan
	AuditCheckpoint = journal.AuditCheckpoint
	CheckpointError = journal.CheckpointError
	CardCheck       = journal.CardCheck
	CardEntry       = journal.CardEntry
	CardRole        = journal.CardRole
	CardSet         = journal.CardSet
	CardState       = journal.CardState
	CeremonyQuery   = journal.CeremonyQuery
	Journal         = journal.Journal
	KeySet          = journal.KeySet
	Kind            = journal.Kind
	NextAction      = journal.NextAction
	Participant     = journal.Participant
	Pending         = journal.Pending
	Phase           = journal.Phase
	Question        = journal.Question
	Request         = journal.Request
	RetiredSetError = journal.RetiredSetError
	SetStatus       = journal.SetStatus
	ShareInfo       = journal.ShareInfo
	Status          = journal.Status
	Step            = journal.Step
	Verdict         = journal.Verdict
)

const (
	AuditCardChecked         = journal.AuditCardChecked
	AuditCardRead            = journal.AuditCardRead
	AuditCardRefused         = journal.AuditCardRefused
	AuditCardRemoved         = journal.AuditCardRemoved
	AuditCardWriting         = journal.AuditCardWriting
	AuditCardWritten         = journal.AuditCardWritten
	AuditCardsWritten        = journal.AuditCardsWritten
	AuditCeremonyAborted     = journal.AuditCeremonyAborted
	AuditCeremonyConfirmed   = journal.AuditCeremonyConfirmed
	AuditCeremonyDone        = journal.AuditCeremonyDone
	AuditCeremonyInterrupted = journal.AuditCeremonyInterrupted
	AuditCeremonyResumed     = journal.AuditCeremonyResumed
	AuditCeremonyRetried     = journal.AuditCeremonyRetried
	AuditCeremonyStalled     = journal.AuditCeremonyStalled
	AuditCeremonyStarted     = journal.AuditCeremonyStarted
	AuditFactoryReset        = journal.AuditFactoryReset
	AuditKeyGenerated        = journal.AuditKeyGenerated
	AuditKeyLoaded           = journal.AuditKeyLoaded
	AuditKeyLoading          = journal.AuditKeyLoading
	AuditPINBlocked          = journal.AuditPINBlocked
	AuditPINChanged          = journal.AuditPINChanged
	AuditPINWrong            = journal.AuditPINWrong
	AuditSetRetired          = journal.AuditSetRetired
	AuditSetSplit            = journal.AuditSetSplit
	AuditShareOverwrite      = journal.AuditShareOverwrite
	AuditSlotActivated       = journal.AuditSlotActivated
	AuditKeyed               = journal.AuditKeyed
	AuditUnkeyed             = journal.AuditUnkeyed
	AuditJournalUpgraded     = journal.AuditJournalUpgraded
	CardDone                 = journal.CardDone
	CardRead                 = journal.CardRead
	CardRefused              = journal.CardRefused
	CardUnusable             = journal.CardUnusable
	CardWriting              = journal.CardWriting
	CardWritten              = journal.CardWritten
	DBFile                   = journal.DBFile
	DefaultAuditPage         = journal.DefaultAuditPage
	KindActivateSlot         = journal.KindActivateSlot
	KindCardCheck            = journal.KindCardCheck
	KindChangePIN            = journal.KindChangePIN
	KindCopyCard             = journal.KindCopyCard
	KindFactoryReset         = journal.KindFactoryReset
	KindGenerate             = journal.KindGenerate
	KindLoad                 = journal.KindLoad
	KindPrepareCards         = journal.KindPrepareCards
	KindReissue              = journal.KindReissue
	KindSlotUserCard         = journal.KindSlotUserCard
	MaxAuditLine             = journal.MaxAuditLine
	MaxCheckpoint            = journal.MaxCheckpoint
	CheckpointFormat         = journal.CheckpointFormat
	MaxAuditPage             = journal.MaxAuditPage
	NextNone                 = journal.NextNone
	NextReset                = journal.NextReset
	NextRestartRead          = journal.NextRestartRead
	NextResume               = journal.NextResume
	OriginGenerate           = journal.OriginGenerate
	OriginLoad               = journal.OriginLoad
	OriginMigration          = journal.OriginMigration
	OriginReissue            = journal.OriginReissue
	PhaseCard                = journal.PhaseCard
	PhaseFinished            = journal.PhaseFinished
	PhaseLoading             = journal.PhaseLoading
	PhaseReading             = journal.PhaseReading
	PhaseResetting           = journal.PhaseResetting
	PhaseSource              = journal.PhaseSource
	PhaseStarted             = journal.PhaseStarted
	PhaseTarget              = journal.PhaseTarget
	PhaseWriting             = journal.PhaseWriting
	RoleChecked              = journal.RoleChecked
	RoleCopySource           = journal.RoleCopySource
	RoleCopyTarget           = journal.RoleCopyTarget
	RolePIN                  = journal.RolePIN
	RoleRead                 = journal.RoleRead
	RoleRefused              = journal.RoleRefused
	RoleShare                = journal.RoleShare
	RoleSlotUser             = journal.RoleSlotUser
	SetAbandoned             = journal.SetAbandoned
	SetCurrent               = journal.SetCurrent
	SetFormer                = journal.SetFormer
	SetIssuing               = journal.SetIssuing
	SetRetired               = journal.SetRetired
	StatusAborted            = journal.StatusAborted
	StatusDone               = journal.StatusDone
	StatusInterrupted        = journal.StatusInterrupted
	StatusRunning            = journal.StatusRunning
	StatusStalled            = journal.StatusStalled
	StepActivate             = journal.StepActivate
	StepChangePIN            = journal.StepChangePIN
	StepCheckCard            = journal.StepCheckCard
	StepCombine              = journal.StepCombine
	StepConfirm              = journal.StepConfirm
	StepConfirmLast          = journal.StepConfirmLast
	StepConfirmWrite         = journal.StepConfirmWrite
	StepEnterPIN             = journal.StepEnterPIN
	StepFinished             = journal.StepFinished
	StepIdle                 = journal.StepIdle
	StepInsertCard           = journal.StepInsertCard
	StepIssueCred            = journal.StepIssueCred
	StepLoadKey              = journal.StepLoadKey
	StepReadCard             = journal.StepReadCard
	StepRemoveCard           = journal.StepRemoveCard
	StepResetHSM             = journal.StepResetHSM
	StepSplit                = journal.StepSplit
	StepWaitRetry            = journal.StepWaitRetry
	StepWriteCard            = journal.StepWriteCard
	VerdictAltered           = journal.VerdictAltered
	VerdictForeign           = journal.VerdictForeign
	VerdictIntact            = journal.VerdictIntact
	VerdictNotShare          = journal.VerdictNotShare
	VerdictRetired           = journal.VerdictRetired
	VerdictUnverified        = journal.VerdictUnverified
)

var (
	ErrCorrupt      = journal.ErrCorrupt
	ErrLocked       = journal.ErrLocked
	ErrNoCeremony   = journal.ErrNoCeremony
	ErrRetiredSet   = journal.ErrRetiredSet
	ErrSchemaTooNew = journal.ErrSchemaTooNew
	Kinds           = journal.Kinds
)

// VerifyAuditExport checks an audit log exported as JSON lines ([Manager.ExportAudit]) without
// the journal: every line an entry, numbered from 1, each carrying the hash of the one before.
// It returns the number of entries and the hash of the last (see [journal.VerifyAuditExport]).
func VerifyAuditExport(r io.Reader) (AuditSummary, error) { return journal.VerifyAuditExport(r) }

// VerifyAuditExportCheckpoint is [VerifyAuditExport] that also checks that the export extends
// an auditor's checkpoint (a [*CheckpointError] when not).
func VerifyAuditExportCheckpoint(r io.Reader, cp AuditCheckpoint) (AuditSummary, error) {
	return journal.VerifyAuditExportCheckpoint(r, &cp)
}

// DecodeCheckpoint reads an auditor's checkpoint file ([Manager.AuditCheckpoint] made it).
func DecodeCheckpoint(data []byte) (AuditCheckpoint, error) { return journal.DecodeCheckpoint(data) }

// The Manager's configuration, its devices, its events and its errors are defined by package
// api (ceremony/internal/api), so that package attempt, which runs the ceremonies, shares them;
// ceremony names them here, as the same types and values. Their documentation is there.

type (
	BusyError        = api.BusyError
	CancelledError   = api.CancelledError
	Config           = api.Config
	Event            = api.Event
	EventType        = api.EventType
	HSM              = api.HSM
	Pad              = api.Pad
	PendingError     = api.PendingError
	SetProgress      = api.SetProgress
	StaleAnswerError = api.StaleAnswerError
	Subscription     = api.Subscription
	Timeouts         = api.Timeouts
	Transition       = api.Transition
	Wait             = api.Wait
)

const (
	EventOutcome       = api.EventOutcome
	EventPINTries      = api.EventPINTries
	EventProblem       = api.EventProblem
	EventProgress      = api.EventProgress
	EventPrompt        = api.EventPrompt
	EventRecovered     = api.EventRecovered
	EventStalled       = api.EventStalled
	EventStarted       = api.EventStarted
	RolePrepared       = attempt.RolePrepared
	SubscriptionBuffer = api.SubscriptionBuffer
	WaitCard           = api.WaitCard
	WaitConfirm        = api.WaitConfirm
	WaitNone           = api.WaitNone
	WaitOK             = api.WaitOK
	WaitPIN            = api.WaitPIN
	WaitRemoval        = api.WaitRemoval
	WaitRetry          = api.WaitRetry
)

var (
	DefaultTimeouts    = api.DefaultTimeouts
	ErrBadCheckpoint   = journal.ErrBadCheckpoint
	ErrBadOperator     = api.ErrBadOperator
	ErrBadRequest      = api.ErrBadRequest
	ErrClosed          = api.ErrClosed
	ErrKeyLoaded       = api.ErrKeyLoaded
	ErrNoKey           = api.ErrNoKey
	ErrNotAsking       = api.ErrNotAsking
	ErrNotRunning      = api.ErrNotRunning
	ErrNotStalled      = api.ErrNotStalled
	ErrNothingToResume = api.ErrNothingToResume
	ErrStaleAnswer     = api.ErrStaleAnswer
	ErrStepUpRequired  = api.ErrStepUpRequired
	ErrStopped         = api.ErrStopped
)
