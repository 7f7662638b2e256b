package api

import (
	"errors"
	"fmt"
	"time"

	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Conditions a caller of the Manager can test for. Texts are safe to show an operator.
var (
	ErrNotRunning = errors.New("no ceremony is running")
	ErrNotStalled = errors.New("the ceremony is not waiting for a retry")
	ErrNotAsking  = errors.New("the ceremony is not waiting for a Confirmation")
	// ErrStepUpRequired refuses OK to a destructive question (Question.Destructive) that the
	// caller did not confirm with a fresh security-key confirmation.
	ErrStepUpRequired  = errors.New("this answer destroys data on a card: confirm it with your security key first")
	ErrNothingToResume = errors.New("there is no interrupted ceremony to resume")
	ErrClosed          = errors.New("the ceremony manager is closed")
	ErrBadOperator     = errors.New("operator identity must be 1 to 256 printable characters")
	ErrBadRequest      = errors.New("invalid ceremony request")
	// ErrKeyLoaded refuses a key generation on an HSM that holds an MBK already: replacing it
	// would make every backup unreadable.
	ErrKeyLoaded = errors.New("the HSM already holds a master backup key: a new key can only be generated after a factory reset")
	// ErrNoKey refuses a re-issue on an HSM that holds no MBK: the cards read are checked
	// against the HSM's key, so load it first.
	ErrNoKey = errors.New("the HSM holds no master backup key: load it with a key load ceremony before re-issuing its cards")
)

// BusyError refuses a second ceremony while one runs.
type BusyError struct {
	ID       uint64
	Kind     Kind
	Operator string
	Started  time.Time
	Step     Step
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("start ceremony: %s #%d started by %s at %s is running (step %s): wait for it or cancel it",
		e.Kind.Title(), e.ID, e.Operator, e.Started.UTC().Format(time.RFC3339), e.Step)
}

// PendingError refuses a key ceremony (or a Resume) while an interrupted one requires another
// action first. Op is what was refused ("start ceremony", "resume ceremony").
type PendingError struct {
	Op      string
	Pending Pending
}

func (e *PendingError) Error() string {
	op := e.Op
	if op == "" {
		op = "start ceremony"
	}
	return op + ": " + e.Pending.Message
}

// Todo says what the operator must do next, in words that match what is pending: a factory
// reset is never called a resume.
func (e *PendingError) Todo() string {
	switch e.Pending.Next {
	case NextReset:
		return "A factory reset is required first (nothing can be resumed): run the factory reset, then start a new key generation or load."
	case NextResume, NextRestartRead:
		return fmt.Sprintf("Resume the interrupted %s #%d first (it reads the cards again), or cancel it by starting over after a factory reset.", e.Pending.Kind.Title(), e.Pending.Ceremony)
	}
	return "See the status page for what the last ceremony left."
}

// CancelledError is a ceremony cancelled by an operator (as opposed to the Cancel key on the
// pad, which is [pinpad.ErrCancelled]).
type CancelledError struct {
	Operator string
}

func (e *CancelledError) Error() string {
	return fmt.Sprintf("cancelled by %s", e.Operator)
}

// ErrStopped is the cause of a ceremony ended because the service stopped.
var ErrStopped = errors.New("the keyquorum service stopped")

// ErrStaleAnswer is the condition of [*StaleAnswerError].
var ErrStaleAnswer = errors.New("the question answered is no longer asked")

// StaleAnswerError refuses an answer to a question that is no longer open (answered already,
// timed out, or replaced by another): a late or double-clicked OK must never answer the next
// question. Asked is the question open now, if any.
type StaleAnswerError struct {
	Answered string
	Asked    *Question
}

func (e *StaleAnswerError) Error() string {
	if e.Asked == nil {
		return fmt.Sprintf("%v: question %s was answered or ran out, and nothing is asked now", ErrStaleAnswer, e.Answered)
	}
	return fmt.Sprintf("%v: question %s was answered or ran out; the pad now asks %q (question %s): read it and answer that one", ErrStaleAnswer, e.Answered, e.Asked.Text, e.Asked.ID)
}

func (e *StaleAnswerError) Is(target error) bool { return target == ErrStaleAnswer }
