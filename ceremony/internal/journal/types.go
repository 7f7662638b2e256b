package journal

import "time"

// KindPrepareCards lays N cards out in the card profile the pad reads them with (DF, slot
// files, slot PINs) where they lack it, the first PINs typed on the pad.
const KindPrepareCards Kind = "prepare-cards"

// Step is what a ceremony is doing now, finer than its [Phase]; WebConf and the CLI show it.
type Step string

const (
	StepIdle         Step = "idle"
	StepConfirm      Step = "confirm"       // waiting for OK on the pad ("Write New Key press OK/Cancel")
	StepInsertCard   Step = "insert-card"   // waiting for a card and OK
	StepConfirmLast  Step = "confirm-last"  // the next PIN try is the last: waiting for OK
	StepConfirmWrite Step = "confirm-write" // the card holds data that would be overwritten
	StepEnterPIN     Step = "enter-pin"     // PIN entry on the pad
	StepChangePIN    Step = "change-pin"    // old PIN, new PIN, new PIN again on the pad
	StepWriteCard    Step = "write-card"    // writing and reading back
	StepReadCard     Step = "read-card"     // reading a card
	StepRemoveCard   Step = "remove-card"   // waiting for the card to be removed
	StepCombine      Step = "combine"       // combining the shares read
	StepLoadKey      Step = "load-key"      // loading the key into the HSM
	StepResetHSM     Step = "reset-hsm"     // zeroizing the HSM
	StepIssueCred    Step = "issue-credential"
	StepActivate     Step = "activate-slot"
	StepSplit        Step = "split"      // Re-issue: splitting the key again for the new set
	StepCheckCard    Step = "check-card" // Card check: checking the card's share
	StepWaitRetry    Step = "wait-retry" // stalled: waiting for Retry or Cancel from the operator
	StepFinished     Step = "finished"
)

// Question is a question of the pad that the operator answers on the screen (WebConf, CLI)
// because the pad cannot report its OK and Cancel keys. Its ID binds an answer to it: an answer
// to a question no longer asked is refused ([*StaleAnswerError]).
type Question struct {
	// ID is unique on this appliance: the ceremony, and the question's number in it.
	ID string `json:"id"`
	// Text is the pad's text ("Card not empty overwrite? OK/Cancel"), Detail what it is about
	// in words (which card, which share, what is lost).
	Text   string `json:"text"`
	Detail string `json:"detail,omitempty"`
	// Destructive is a question whose OK destroys something (overwrites a card's data, spends
	// a card's last PIN try). The screen must get a fresh confirmation of the operator's
	// security key before sending OK to it; [Manager.Answer] refuses an OK without one.
	Destructive bool `json:"destructive,omitempty"`
}

// Verdict is what a card check found.
type Verdict string

const (
	// VerdictIntact: the card holds a share of the current set, exactly as it was written.
	VerdictIntact Verdict = "intact"
	// VerdictAltered: the card's share record is damaged, or does not match the authenticator
	// made when the share was written.
	VerdictAltered Verdict = "altered"
	// VerdictRetired: the card holds a share of a set a re-issue retired (or of one whose
	// ceremony never completed it).
	VerdictRetired Verdict = "retired"
	// VerdictForeign: the card holds a share of a set that is not this appliance's current one
	// (another key, another appliance, a former set).
	VerdictForeign Verdict = "foreign"
	// VerdictNotShare: the card holds no share record.
	VerdictNotShare Verdict = "not-share"
	// VerdictUnverified: the card holds a well-formed share of the current set, but the HSM
	// cannot vouch for it (no key loaded, no authenticator kept for that share).
	VerdictUnverified Verdict = "unverified"
)

// CardCheck is the result of a card check. It never holds the share.
type CardCheck struct {
	Serial  string  `json:"serial"`
	Verdict Verdict `json:"verdict"`
	// What the card's record says, when it could be decoded.
	Index   int       `json:"index,omitempty"`
	K       int       `json:"k,omitempty"`
	N       int       `json:"n,omitempty"`
	SetID   string    `json:"set_id,omitempty"`
	KeyID   string    `json:"key_id,omitempty"`
	Created time.Time `json:"created,omitzero"` // when the set was split
	// SetStatus is the status of the card's set on this appliance ("" when unknown).
	SetStatus SetStatus `json:"set_status,omitempty"`
	// Written is when the share was written to a card and verified, WrittenTo the serial of
	// that card; a WrittenTo other than Serial means this card is a copy.
	Written   time.Time `json:"written,omitzero"`
	WrittenTo string    `json:"written_to,omitempty"`
	// Detail says the verdict in words, with what to do.
	Detail string `json:"detail"`
}
