package attempt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// ending is how a ceremony attempt ended and what it leaves to do.
type ending struct {
	status     Status
	next       NextAction
	outcome    string
	lastErr    string
	unusable   []string
	keyset     *KeySet
	clearState bool
	audits     []AuditEntry
	setTags    map[int]string
	setLabel   string
}

// Launch starts an attempt of the ceremony j, whose journal is committed, for operator; the
// caller holds Mu.
func (m *Host) Launch(ctx context.Context, j *Journal, operator string) *Run {
	rctx, cancel := context.WithCancelCause(ctx)
	r := &Run{m: m, ctx: rctx, Cancel: cancel, operator: operator, j: j, Retry: make(chan string, 1), Confirm: make(chan Confirmation, 1), Done: make(chan struct{})}
	r.ev = Event{Ceremony: j.ID, Kind: j.Kind, Operator: j.Operator, Status: j.Status, Phase: j.Phase, Step: StepIdle, PINTries: -1}
	m.Cur = r
	r.emit(EventStarted, nil)
	go r.main()
	return r
}

// SnapshotJournal is a copy of the journal as last committed.
func (r *Run) SnapshotJournal() *Journal {
	r.jmu.Lock()
	defer r.jmu.Unlock()
	return r.j.Clone()
}

func (r *Run) main() {
	defer close(r.Done)
	defer r.Cancel(nil)
	res, err := r.body()
	r.finish(res, err)
}

func (r *Run) body() (*result, error) {
	switch r.j.Kind {
	case KindGenerate:
		return r.generate()
	case KindLoad:
		return r.load()
	case KindCopyCard:
		return r.copyCard()
	case KindChangePIN:
		return r.changePIN()
	case KindSlotUserCard:
		return r.writeSlotUser()
	case KindActivateSlot:
		return r.activateSlot()
	case KindFactoryReset:
		return r.factoryReset()
	case KindReissue:
		return r.reissue()
	case KindCardCheck:
		return r.cardCheck()
	case KindPrepareCards:
		return r.prepareCards()
	}
	return nil, fmt.Errorf("run ceremony: unknown kind %q", r.j.Kind)
}

// finish commits how the attempt ended and frees the Manager for the next ceremony.
func (r *Run) finish(res *result, err error) {
	var e ending
	j := r.SnapshotJournal()
	switch {
	case err == nil:
		e = ending{status: StatusDone, outcome: res.outcome, keyset: res.keyset, clearState: res.clearState, audits: res.audits,
			setTags: res.setTags, setLabel: res.setLabel}
	case r.stopped():
		// The service is stopping: treat it exactly like a crash, so the same words and the
		// same next action appear whichever way the process ended.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 5*time.Second)
		loaded := r.m.LoadedKeyID(hctx, j)
		cancel()
		e = Classify(j, loaded, nil)
	default:
		e = Classify(j, "", r.abortCause(err))
	}
	if cerr := r.m.CommitEnd(j, e, r.actor(err)); cerr != nil {
		r.m.Log.Error("commit ceremony outcome", "ceremony", j.ID, "err", cerr)
		if err == nil {
			err = cerr
		}
	}
	final, lerr := r.m.Ceremony(j.ID)
	if lerr != nil {
		final = *j
	}
	r.Final = &final
	switch {
	case err == nil:
		r.Err = nil
	case r.stopped():
		r.Err = fmt.Errorf("%s interrupted: %w", j.Kind.Title(), context.Cause(r.ctx))
	default:
		r.Err = fmt.Errorf("%s aborted: %w", j.Kind.Title(), r.abortCause(err))
	}
	r.m.Log.Info("ceremony ended", "ceremony", j.ID, "kind", j.Kind, "status", e.status, "next", e.next)
	r.ev.Display, r.ev.Waiting, r.ev.Deadline = "", WaitNone, time.Time{}
	r.emit(EventOutcome, func(ev *Event) {
		ev.Status, ev.Phase, ev.Step, ev.Outcome, ev.Next = final.Status, final.Phase, StepFinished, e.outcome, e.next
		if e.status != StatusDone {
			ev.Error = e.lastErr
		}
	})
	sctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), time.Second)
	r.m.Cfg.Pad.Show(sctx, padOutcome(e.status)) // best effort: the pad may be gone
	cancel()
	r.m.Mu.Lock()
	r.m.Cur = nil
	r.m.Mu.Unlock()
}

func padOutcome(s Status) string {
	switch s {
	case StatusDone:
		return "Done"
	case StatusAborted:
		return "Aborted"
	}
	return "Interrupted"
}

// stopped reports whether the attempt's context ended for another reason than an operator's
// Cancel: the service is stopping.
func (r *Run) stopped() bool {
	if r.ctx.Err() == nil {
		return false
	}
	var c *CancelledError
	return !errors.As(context.Cause(r.ctx), &c)
}

// abortCause is the error to report for an abort: the operator's cancel rather than the
// context error the pad returned.
func (r *Run) abortCause(err error) error {
	var c *CancelledError
	if cause := context.Cause(r.ctx); errors.As(cause, &c) {
		return c
	}
	return err
}

func (r *Run) actor(err error) string {
	var c *CancelledError
	if err != nil && errors.As(context.Cause(r.ctx), &c) {
		return c.Operator
	}
	return r.operator
}

// commitEnd records the end of an attempt: the journal, the pending action, the key set, the
// card set registry, the audit entries, and frees the current pointer, all in one transaction.
func (m *Host) CommitEnd(j *Journal, e ending, operator string) error {
	now := time.Now().UTC()
	next := j.Clone()
	next.Status, next.Next, next.Outcome, next.Ended, next.Updated = e.status, e.next, e.outcome, now, now
	next.Step = StepFinished
	next.Question = nil // an ended attempt asks nothing, even if it ended (or the process died) while asking
	if e.lastErr != "" {
		next.LastError = e.lastErr
	}
	if e.status == StatusDone {
		next.Phase = PhaseFinished
	}
	if len(e.unusable) > 0 {
		next.Unusable = e.unusable
		for i, c := range next.Cards {
			if c.Attempt == next.Attempt && (c.State == CardWriting || c.State == CardWritten) && containsStr(e.unusable, c.Serial) {
				next.Cards[i].State = CardUnusable
			}
		}
	}
	event := AuditCeremonyDone
	switch e.status {
	case StatusAborted:
		event = AuditCeremonyAborted
	case StatusInterrupted:
		event = AuditCeremonyInterrupted
	}
	err := m.St.Update(func(tx *bolt.Tx) error {
		for i := range e.audits {
			a := e.audits[i]
			a.Time, a.Operator, a.Ceremony, a.Kind = now, operator, next.ID, next.Kind
			if a.SetID == "" {
				a.SetID = next.SetID
			}
			if a.KeyID == "" {
				a.KeyID = next.KeyID
			}
			if err := journal.AppendAudit(tx, &a); err != nil {
				return err
			}
		}
		fe := &AuditEntry{Time: now, Operator: operator, Ceremony: next.ID, Kind: next.Kind, Event: event,
			Message: e.outcome, Serials: e.unusable, SetID: next.SetID, KeyID: next.KeyID}
		if err := journal.AppendAudit(tx, fe); err != nil {
			return err
		}
		next.AuditHead = fe.Hash
		if err := journal.PutJSON(tx.Bucket(journal.BucketCeremonies), journal.U64Key(next.ID), next); err != nil {
			return err
		}
		st := tx.Bucket(journal.BucketState)
		if err := st.Delete(journal.KeyCurrent); err != nil {
			return err
		}
		if e.clearState {
			if err := st.Delete(journal.KeyKeySet); err != nil {
				return err
			}
		}
		if e.keyset != nil {
			if err := journal.PutJSON(st, journal.KeyKeySet, e.keyset); err != nil {
				return err
			}
		}
		if err := journal.UpdateSets(tx, next, journal.SetsEnding{Status: e.status, Next: e.next, SetLabel: e.setLabel, SetTags: e.setTags}, now); err != nil {
			return err
		}
		if e.next != NextNone {
			return journal.PutJSON(st, journal.KeyPending, Pending{Ceremony: next.ID, Kind: next.Kind, Next: e.next, Message: e.outcome, Unusable: e.unusable})
		}
		if e.status == StatusDone || e.clearState {
			return st.Delete(journal.KeyPending)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit outcome: %w", err)
	}
	m.AfterCommit(next, event)
	return nil
}

// Classify decides how an attempt that did not succeed ended and what it leaves to do. cause
// nil means the process stopped (crash, shutdown); otherwise the attempt was aborted for cause.
// loadedKey is the key ID the HSM holds, when the journal stopped at loading it.
func Classify(j *Journal, loadedKey string, cause error) ending {
	e := ending{status: StatusInterrupted}
	what := "was interrupted"
	if cause != nil {
		e.status = StatusAborted
		e.lastErr = cause.Error()
		what = "was aborted (" + cause.Error() + ")"
	}
	title := j.Kind.Title()
	title = strings.ToUpper(title[:1]) + title[1:]
	written := serialsOf(j, RoleShare, CardWriting, CardWritten)
	read := readOf(j)
	switch j.Kind {
	case KindGenerate:
		switch {
		case (j.Phase == PhaseLoading) && loadedKey != "" && loadedKey == j.KeyID:
			e.status, e.lastErr = StatusDone, ""
			e.outcome = fmt.Sprintf("Key generation finished: key %s was loaded into the HSM just before the interruption.", j.KeyID)
			e.keyset = keySetOf(j)
		case j.Phase == PhaseReading || j.Phase == PhaseLoading:
			e.next = NextResume
			e.outcome = fmt.Sprintf("Key generation %s after all %d cards were written. The key is on the cards: choose Resume and read any %d of them to load it into the HSM.%s",
				what, j.N, j.K, moreNeeded(j, len(read)))
		case len(written) > 0:
			done := serialsOf(j, RoleShare, CardWritten)
			var which []string
			if len(done) > 0 {
				which = append(which, "the cards written so far ("+strings.Join(done, ", ")+")")
			}
			if busy := serialsOf(j, RoleShare, CardWriting); len(busy) > 0 {
				which = append(which, "the card that was being written ("+strings.Join(busy, ", ")+")")
			}
			if cause == nil {
				e.next = NextReset
				e.outcome = fmt.Sprintf("Key generation was interrupted while writing the cards (%d of %d written). The key existed only in memory and is lost: %s hold shares of it and are unusable. A factory reset is required, then a new key generation.",
					len(done), j.N, strings.Join(which, " and "))
			} else {
				e.outcome = fmt.Sprintf("Key generation %s while writing the cards (%d of %d written). The key was discarded: %s hold shares of it and are unusable until a new key generation overwrites them.",
					what, len(done), j.N, strings.Join(which, " and "))
			}
			e.unusable = written
		default:
			e.outcome = fmt.Sprintf("Key generation %s before any card was written. Nothing was stored: start a new key generation.", what)
		}
	case KindLoad:
		switch {
		case j.Phase == PhaseLoading && loadedKey != "" && loadedKey == j.KeyID:
			e.status, e.lastErr = StatusDone, ""
			e.outcome = fmt.Sprintf("Key load finished: key %s was loaded into the HSM just before the interruption.", j.KeyID)
			e.keyset = keySetOf(j)
		case cause == nil:
			e.next = NextRestartRead
			e.outcome = fmt.Sprintf("The key load was interrupted before the key was loaded (%s). Choose Resume to read the cards again.", readCount(j, len(read)))
		default:
			e.outcome = fmt.Sprintf("The key load %s: no key was loaded.%s", what, moreNeeded(j, len(read)))
		}
	case KindCopyCard:
		if t := serialsOf(j, RoleCopyTarget, CardWriting); len(t) > 0 {
			e.outcome = fmt.Sprintf("The card copy %s while writing card %s: it may hold an incomplete copy. Run Copy card again.", what, t[0])
		} else {
			e.outcome = fmt.Sprintf("The card copy %s before the target card was written. Nothing was changed.", what)
		}
	case KindChangePIN:
		if t := serialsOf(j, RolePIN, CardWriting); len(t) > 0 {
			e.outcome = fmt.Sprintf("The PIN change of card %s %s during the change: the card keeps either its old or its new PIN.", t[0], strings.TrimPrefix(what, "was "))
		} else {
			e.outcome = fmt.Sprintf("The PIN change %s before any PIN was changed.", what)
		}
	case KindSlotUserCard:
		if t := serialsOf(j, RoleSlotUser, CardWriting); len(t) > 0 {
			e.outcome = fmt.Sprintf("Writing the slot user card %s %s: write it again.", t[0], strings.TrimPrefix(what, "was "))
		} else {
			e.outcome = fmt.Sprintf("Writing a slot user card %s before anything was written.", what)
		}
	case KindActivateSlot:
		e.outcome = fmt.Sprintf("The slot activation %s: the slot may not be active; run it again.", what)
	case KindFactoryReset:
		e.next = NextReset
		e.outcome = fmt.Sprintf("The factory reset %s: run it again.", what)
	case KindReissue:
		e = classifyReissue(j, e, what)
	case KindCardCheck:
		e.outcome = fmt.Sprintf("The card check %s: nothing on the card was changed.", what)
	case KindPrepareCards:
		done := serialsOf(j, RolePrepared, CardDone)
		if t := serialsOf(j, RolePrepared, CardWriting); len(t) > 0 {
			e.outcome = fmt.Sprintf("Prepare cards %s while preparing card %s (%d card(s) prepared before): that card may be partly laid out; a new Prepare cards completes it.", what, t[0], len(done))
		} else {
			e.outcome = fmt.Sprintf("Prepare cards %s after %d card(s) were prepared.", what, len(done))
		}
	default:
		e.outcome = fmt.Sprintf("%s %s.", title, what)
	}
	return e
}

func moreNeeded(j *Journal, read int) string {
	if j.K == 0 || read >= j.K {
		return ""
	}
	return fmt.Sprintf(" %s.", readCount(j, read))
}

func readCount(j *Journal, read int) string {
	switch {
	case j.K == 0:
		return "no card was read"
	case read >= j.K:
		return fmt.Sprintf("all %d cards needed were read", j.K)
	}
	return fmt.Sprintf("%d of the %d cards needed were read: %d more needed", read, j.K, j.K-read)
}
