package ceremony

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/pinpad"
)

// run is one attempt of a ceremony: the goroutine that drives the pad and the HSM. Only that
// goroutine touches j and ev; the Manager reads the committed journal through jmu.
type run struct {
	m        *Manager
	ctx      context.Context
	cancel   context.CancelCauseFunc
	operator string // who started or resumed this attempt

	jmu sync.Mutex
	j   *Journal // last committed state

	ev      Event
	retry   chan string
	stalled atomic.Bool

	// confirm carries an operator's answer to a question the pad cannot ask itself (a pad
	// without OK key reporting); confirming is set while such a question is open.
	confirm    chan confirmation
	confirming atomic.Bool

	done  chan struct{}
	final *Journal
	err   error
}

func (m *Manager) launch(ctx context.Context, j *Journal, operator string) *run {
	rctx, cancel := context.WithCancelCause(ctx)
	r := &run{m: m, ctx: rctx, cancel: cancel, operator: operator, j: j, retry: make(chan string, 1), confirm: make(chan confirmation, 1), done: make(chan struct{})}
	r.ev = Event{Ceremony: j.ID, Kind: j.Kind, Operator: j.Operator, Status: j.Status, Phase: j.Phase, Step: StepIdle, PINTries: -1}
	m.cur = r
	r.emit(EventStarted, nil)
	go r.main()
	return r
}

func (r *run) snapshotJournal() *Journal {
	r.jmu.Lock()
	defer r.jmu.Unlock()
	return r.j.clone()
}

func (r *run) main() {
	defer close(r.done)
	defer r.cancel(nil)
	res, err := r.body()
	r.finish(res, err)
}

// result is what a successful ceremony leaves behind.
type result struct {
	outcome    string
	keyset     *KeySet
	clearState bool
	audits     []AuditEntry
	// setTags are hex authenticators of the shares a Load read (by index), setLabel the label
	// their records carry: what the card set registry learns from a load.
	setTags  map[int]string
	setLabel string
}

func (r *run) body() (*result, error) {
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
func (r *run) finish(res *result, err error) {
	var e ending
	j := r.snapshotJournal()
	switch {
	case err == nil:
		e = ending{status: StatusDone, outcome: res.outcome, keyset: res.keyset, clearState: res.clearState, audits: res.audits,
			setTags: res.setTags, setLabel: res.setLabel}
	case r.stopped():
		// The service is stopping: treat it exactly like a crash, so the same words and the
		// same next action appear whichever way the process ended.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 5*time.Second)
		loaded := r.m.loadedKeyID(hctx, j)
		cancel()
		e = classify(j, loaded, nil)
	default:
		e = classify(j, "", r.abortCause(err))
	}
	if cerr := r.m.commitEnd(j, e, r.actor(err)); cerr != nil {
		r.m.log.Error("commit ceremony outcome", "ceremony", j.ID, "err", cerr)
		if err == nil {
			err = cerr
		}
	}
	final, lerr := r.m.Ceremony(j.ID)
	if lerr != nil {
		final = *j
	}
	r.final = &final
	switch {
	case err == nil:
		r.err = nil
	case r.stopped():
		r.err = fmt.Errorf("%s interrupted: %w", j.Kind.Title(), context.Cause(r.ctx))
	default:
		r.err = fmt.Errorf("%s aborted: %w", j.Kind.Title(), r.abortCause(err))
	}
	r.m.log.Info("ceremony ended", "ceremony", j.ID, "kind", j.Kind, "status", e.status, "next", e.next)
	r.ev.Display, r.ev.Waiting, r.ev.Deadline = "", WaitNone, time.Time{}
	r.emit(EventOutcome, func(ev *Event) {
		ev.Status, ev.Phase, ev.Step, ev.Outcome, ev.Next = final.Status, final.Phase, StepFinished, e.outcome, e.next
		if e.status != StatusDone {
			ev.Error = e.lastErr
		}
	})
	sctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), time.Second)
	r.m.cfg.Pad.Show(sctx, padOutcome(e.status)) // best effort: the pad may be gone
	cancel()
	r.m.mu.Lock()
	r.m.cur = nil
	r.m.mu.Unlock()
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
func (r *run) stopped() bool {
	if r.ctx.Err() == nil {
		return false
	}
	var c *CancelledError
	return !errors.As(context.Cause(r.ctx), &c)
}

// abortCause is the error to report for an abort: the operator's cancel rather than the
// context error the pad returned.
func (r *run) abortCause(err error) error {
	var c *CancelledError
	if cause := context.Cause(r.ctx); errors.As(cause, &c) {
		return c
	}
	return err
}

func (r *run) actor(err error) string {
	var c *CancelledError
	if err != nil && errors.As(context.Cause(r.ctx), &c) {
		return c.Operator
	}
	return r.operator
}

// auditSpec is the audit entry a transition records.
type auditSpec struct {
	event    string
	message  string
	operator string // defaults to the run's operator
	serials  []string
	indexes  []int
}

// commit applies mutate to a copy of the journal and commits it, with the audit entry, in one
// transaction. Only then does the in-memory journal change: a failed commit leaves the run
// where the disk is.
func (r *run) commit(a *auditSpec, mutate func(j *Journal)) error {
	return r.commitWith(a, mutate, nil)
}

// commitWith is commit with more work in the same transaction (the card set registry), done
// after the journal and audit entry are prepared; next is the journal being committed.
func (r *run) commitWith(a *auditSpec, mutate func(j *Journal), also func(tx *bolt.Tx, next *Journal) error) error {
	next := r.j.clone()
	next.Step = r.ev.Step
	if mutate != nil {
		mutate(next)
	}
	next.Updated = time.Now().UTC()
	event := ""
	err := r.m.st.update(func(tx *bolt.Tx) error {
		if a != nil {
			op := a.operator
			if op == "" {
				op = r.operator
			}
			e := &AuditEntry{Time: next.Updated, Operator: op, Ceremony: next.ID, Kind: next.Kind, Event: a.event,
				Message: a.message, Serials: a.serials, Indexes: a.indexes, SetID: next.SetID, KeyID: next.KeyID}
			if err := appendAudit(tx, e); err != nil {
				return err
			}
			next.AuditHead = e.Hash
			event = a.event
		}
		if also != nil {
			if err := also(tx, next); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketCeremonies), u64key(next.ID), next)
	})
	if err != nil {
		return fmt.Errorf("commit journal: %w", err)
	}
	r.jmu.Lock()
	r.j = next
	r.jmu.Unlock()
	r.ev.Status, r.ev.Phase = next.Status, next.Phase
	r.m.afterCommit(next, event)
	return nil
}

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

// commitEnd records the end of an attempt: the journal, the pending action, the key set, the
// card set registry, the audit entries, and frees the current pointer, all in one transaction.
func (m *Manager) commitEnd(j *Journal, e ending, operator string) error {
	now := time.Now().UTC()
	next := j.clone()
	next.Status, next.Next, next.Outcome, next.Ended, next.Updated = e.status, e.next, e.outcome, now, now
	next.Step = StepFinished
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
	err := m.st.update(func(tx *bolt.Tx) error {
		for i := range e.audits {
			a := e.audits[i]
			a.Time, a.Operator, a.Ceremony, a.Kind = now, operator, next.ID, next.Kind
			if a.SetID == "" {
				a.SetID = next.SetID
			}
			if a.KeyID == "" {
				a.KeyID = next.KeyID
			}
			if err := appendAudit(tx, &a); err != nil {
				return err
			}
		}
		fe := &AuditEntry{Time: now, Operator: operator, Ceremony: next.ID, Kind: next.Kind, Event: event,
			Message: e.outcome, Serials: e.unusable, SetID: next.SetID, KeyID: next.KeyID}
		if err := appendAudit(tx, fe); err != nil {
			return err
		}
		next.AuditHead = fe.Hash
		if err := putJSON(tx.Bucket(bucketCeremonies), u64key(next.ID), next); err != nil {
			return err
		}
		st := tx.Bucket(bucketState)
		if err := st.Delete(keyCurrent); err != nil {
			return err
		}
		if e.clearState {
			if err := st.Delete(keyKeySet); err != nil {
				return err
			}
		}
		if e.keyset != nil {
			if err := putJSON(st, keyKeySet, e.keyset); err != nil {
				return err
			}
		}
		if err := updateSets(tx, next, e, now); err != nil {
			return err
		}
		if e.next != NextNone {
			return putJSON(st, keyPending, Pending{Ceremony: next.ID, Kind: next.Kind, Next: e.next, Message: e.outcome, Unusable: e.unusable})
		}
		if e.status == StatusDone || e.clearState {
			return st.Delete(keyPending)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit outcome: %w", err)
	}
	m.afterCommit(next, event)
	return nil
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// classify decides how an attempt that did not succeed ended and what it leaves to do. cause
// nil means the process stopped (crash, shutdown); otherwise the attempt was aborted for cause.
// loadedKey is the key ID the HSM holds, when the journal stopped at loading it.
func classify(j *Journal, loadedKey string, cause error) ending {
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
	read := serialsOf(j, RoleRead, CardRead)
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

// serialsOf lists the serials of the current attempt's cards with role in one of states.
func serialsOf(j *Journal, role CardRole, states ...CardState) []string {
	var out []string
	for _, c := range j.Cards {
		if c.Role != role || c.Attempt != j.Attempt {
			continue
		}
		for _, s := range states {
			if c.State == s && !containsStr(out, c.Serial) {
				out = append(out, c.Serial)
			}
		}
	}
	return out
}

func keySetOf(j *Journal) *KeySet {
	ks := &KeySet{SetID: j.SetID, KeyID: j.KeyID, K: j.K, N: j.N, Label: j.Request.Label, Ceremony: j.ID, Loaded: time.Now().UTC()}
	for _, c := range j.Cards {
		// The cards a re-issue read are of the set it replaced.
		if c.State == CardWritten || (c.Role == RoleRead && c.State == CardRead && j.Kind != KindReissue) {
			ks.Cards = append(ks.Cards, CardEntry{Serial: c.Serial, Index: c.Index, Role: c.Role, State: c.State, Time: c.Time})
		}
	}
	return ks
}

// emit updates the snapshot and publishes it.
func (r *run) emit(t EventType, f func(ev *Event)) {
	if f != nil {
		f(&r.ev)
	}
	ev := r.ev
	ev.Type = t
	ev.Time = time.Time{}
	r.ev = r.m.events.publish(ev)
	// Error and Hint belong to the event that reported them.
	if t != EventProblem && t != EventStalled {
		return
	}
	r.ev.Error, r.ev.Hint = "", ""
}

// prompt announces a wait on the pad with its deadline.
func (r *run) prompt(step Step, wait Wait, text string, timeout time.Duration) {
	r.emit(EventPrompt, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Display = step, wait, text
		ev.Deadline = time.Now().Add(timeout).UTC()
	})
}

func (r *run) working(step Step, text string) {
	r.emit(EventProgress, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Deadline = step, WaitNone, time.Time{}
		if text != "" {
			ev.Display = text
		}
	})
}

func (r *run) problem(err error, hint string) {
	r.m.log.Info("ceremony problem", "ceremony", r.j.ID, "step", r.ev.Step, "err", err)
	r.emit(EventProblem, func(ev *Event) { ev.Error, ev.Hint = err.Error(), hint })
}

func (r *run) progress(done, total int) {
	r.emit(EventProgress, func(ev *Event) { ev.CardsDone, ev.CardsTotal = done, total })
}

// retryable runs step and, when it fails in a way the operator can put right (a timeout, the
// reader unplugged), stalls until Retry (and runs step again) or Cancel. Work finished before
// step stays finished.
func (r *run) retryable(step func() error) error {
	for {
		err := step()
		if err == nil || !stalls(err) || r.ctx.Err() != nil {
			return err
		}
		if err := r.stall(err); err != nil {
			return err
		}
	}
}

func stalls(err error) bool {
	return errors.Is(err, pinpad.ErrTimeout) || errors.Is(err, pinpad.ErrReaderGone) || errors.Is(err, pinpad.ErrNoReader)
}

func stallHint(err error) string {
	if errors.Is(err, pinpad.ErrTimeout) {
		return "press Retry to repeat this step (cards already done stay done), or Cancel"
	}
	return "plug the card reader back in, then press Retry (cards already done stay done), or Cancel"
}

func (r *run) stall(cause error) error {
	hint := stallHint(cause)
	if r.j.Phase == PhaseReading && r.ev.CardsTotal > 0 && r.ev.CardsDone < r.ev.CardsTotal {
		hint += fmt.Sprintf("; %d of the %d cards needed were read: %d more needed", r.ev.CardsDone, r.ev.CardsTotal, r.ev.CardsTotal-r.ev.CardsDone)
	}
	if err := r.commit(&auditSpec{event: AuditCeremonyStalled, message: cause.Error() + ": waiting for Retry"}, func(j *Journal) {
		j.Status, j.LastError = StatusStalled, cause.Error()
	}); err != nil {
		return err
	}
	r.stalled.Store(true)
	r.emit(EventStalled, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Deadline, ev.Display = StepWaitRetry, WaitRetry, time.Time{}, ""
		ev.Error, ev.Hint = cause.Error(), hint
	})
	var op string
	select {
	case op = <-r.retry:
	case <-r.ctx.Done():
		r.stalled.Store(false)
		return fmt.Errorf("wait for retry: %w", context.Cause(r.ctx))
	}
	r.stalled.Store(false)
	now := time.Now().UTC()
	return r.commit(&auditSpec{event: AuditCeremonyRetried, operator: op, message: "step retried"}, func(j *Journal) {
		j.Status = StatusRunning
		j.Participants = append(j.Participants, Participant{Operator: op, Action: "retry", Time: now})
	})
}

// refusal is a card that cannot be used for the step; the operator takes it out and inserts
// another. Nothing was written to it.
type refusal struct {
	serial string
	err    error
	hint   string
}

func (f *refusal) Error() string { return f.err.Error() }
func (f *refusal) Unwrap() error { return f.err }

func refuse(serial string, hint string, format string, a ...any) *refusal {
	return &refusal{serial: serial, err: fmt.Errorf(format, a...), hint: hint}
}

// errDeclined is Cancel pressed at a question about one card (last PIN try, overwrite): that
// card is not used, the ceremony goes on.
var errDeclined = errors.New("declined on the PIN pad")

// waitOK shows text and waits for OK. A pad that cannot report its keys to the host (a real
// cyberJack through PC/SC) has the question answered on the WebConf screen or the CLI instead,
// with the same meaning: OK goes on, Cancel is Cancel on the pad.
func (r *run) waitOK(step Step, text string) error {
	t := r.m.cfg.Timeouts.OK
	r.prompt(step, WaitOK, text, t)
	err := r.m.cfg.Pad.WaitForOK(r.ctx, text, t)
	if errors.Is(err, pinpad.ErrNoOKKey) {
		err = r.waitConfirm(step, text, t)
	}
	r.working(r.ev.Step, "")
	return err
}

// confirmation is an operator's answer on the screen.
type confirmation struct {
	operator string
	ok       bool
}

// waitConfirm waits for [Manager.Confirm] on text, until timeout.
func (r *run) waitConfirm(step Step, text string, timeout time.Duration) error {
	for len(r.confirm) > 0 { // an answer to an earlier question does not count
		<-r.confirm
	}
	r.confirming.Store(true)
	defer r.confirming.Store(false)
	r.prompt(step, WaitConfirm, text, timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case c := <-r.confirm:
		action, err := "confirm", error(nil)
		if !c.ok {
			action, err = "decline", pinpad.ErrCancelled
		}
		now := time.Now().UTC()
		msg := fmt.Sprintf("%q answered %s on the screen", text, map[bool]string{true: "OK", false: "Cancel"}[c.ok])
		if cerr := r.commit(&auditSpec{event: AuditCeremonyConfirmed, operator: c.operator, message: msg}, func(j *Journal) {
			j.Participants = append(j.Participants, Participant{Operator: c.operator, Action: action, Time: now})
		}); cerr != nil {
			return cerr
		}
		return err
	case <-timer.C:
		return fmt.Errorf("confirm on screen: %w", pinpad.ErrTimeout)
	case <-r.ctx.Done():
		return fmt.Errorf("confirm on screen: %w", context.Cause(r.ctx))
	}
}

// withCard prompts for a card and runs fn on it until fn succeeds. A refused card is recorded,
// taken out, and the prompt repeats; a card pulled out mid-operation is asked for again (its
// data is checked again before it counts). Other errors end the loop.
func (r *run) withCard(text string, fn func(card pinpad.Card) error) error {
	for {
		t := r.m.cfg.Timeouts.Card
		r.prompt(StepInsertCard, WaitCard, text, t)
		card, err := r.m.cfg.Pad.WaitForCard(r.ctx, text, t)
		if err != nil && cardProblem(err) && r.ctx.Err() == nil {
			if err := r.refused(refuse("", "take it out and insert a card of this appliance", "%w", err)); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		r.emit(EventProgress, func(ev *Event) { ev.Serial, ev.Waiting, ev.Deadline = card.Serial(), WaitNone, time.Time{} })
		err = fn(card)
		card.Close()
		var ref *refusal
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ref):
			if ref.serial == "" {
				ref.serial = card.Serial()
			}
			if err := r.refused(ref); err != nil {
				return err
			}
		case cardProblem(err) && r.ctx.Err() == nil:
			hint := "take it out and insert another card"
			if h := r.profileHint(card, err); h != "" {
				hint = h
			}
			if err := r.refused(refuse(card.Serial(), hint, "%w", err)); err != nil {
				return err
			}
		case errors.Is(err, pinpad.ErrCardRemoved) && r.ctx.Err() == nil:
			serial := card.Serial()
			if err := r.commit(&auditSpec{event: AuditCardRemoved, message: fmt.Sprintf("card %s was removed during the operation", serial), serials: []string{serial}},
				func(j *Journal) { j.LastError = err.Error() }); err != nil {
				return err
			}
			r.problem(fmt.Errorf("card %s: %w", serial, pinpad.ErrCardRemoved), "insert the card again and press OK: what is on it is checked again before it counts")
		default:
			return err
		}
		r.emit(EventProgress, func(ev *Event) { ev.Serial, ev.PINTries = "", -1 })
	}
}

// refused records a refused card and waits for it to be taken out.
func (r *run) refused(ref *refusal) error {
	msg := ref.err.Error()
	if ref.serial != "" {
		msg = fmt.Sprintf("card %s refused: %s", ref.serial, msg)
	} else {
		msg = "card refused: " + msg
	}
	var serials []string
	if ref.serial != "" {
		serials = []string{ref.serial}
	}
	now := time.Now().UTC()
	if err := r.commit(&auditSpec{event: AuditCardRefused, message: msg, serials: serials}, func(j *Journal) {
		j.LastError = msg
		if ref.serial != "" {
			j.Cards = append(j.Cards, CardEntry{Serial: ref.serial, Role: RoleRefused, State: CardRefused, Attempt: j.Attempt, Time: now, Note: ref.err.Error()})
		}
	}); err != nil {
		return err
	}
	r.problem(errors.New(msg), ref.hint)
	return r.removeCard()
}

// removeCard waits for the card to be taken out.
func (r *run) removeCard() error {
	t := r.m.cfg.Timeouts.Removal
	r.prompt(StepRemoveCard, WaitRemoval, "Remove card", t)
	err := r.m.cfg.Pad.WaitForRemoval(r.ctx, "Remove card", t)
	r.emit(EventProgress, func(ev *Event) { ev.Serial, ev.Waiting, ev.Deadline, ev.PINTries = "", WaitNone, time.Time{}, -1 })
	return err
}

// verifyPIN has the custodian enter the slot's PIN on the pad. It shows the tries left, asks
// for an explicit OK before the last one, and asks again after a wrong PIN.
func (r *run) verifyPIN(card pinpad.Card, slot pinpad.Slot) error {
	serial := card.Serial()
	for {
		if err := r.checkTries(card, slot, "PIN", "take it out and insert another card"); err != nil {
			return err
		}
		t := r.m.cfg.Timeouts.PIN
		r.prompt(StepEnterPIN, WaitPIN, "Enter PIN", t)
		err := card.VerifyPIN(r.ctx, slot, t)
		var wrong *pinpad.WrongPINError
		switch {
		case err == nil:
			r.working(StepEnterPIN, "")
			return nil
		case errors.As(err, &wrong):
			if err := r.commit(&auditSpec{event: AuditPINWrong, message: fmt.Sprintf("wrong PIN on card %s (%s slot): %d tries left", serial, slot, wrong.Remaining), serials: []string{serial}},
				func(j *Journal) { j.LastError = err.Error() }); err != nil {
				return err
			}
			r.emit(EventPINTries, func(ev *Event) { ev.PINTries = wrong.Remaining })
			if wrong.Remaining == 0 {
				return r.pinBlocked(serial)
			}
			r.problem(fmt.Errorf("card %s: %w", serial, err), "enter the PIN again on the pad")
		case errors.Is(err, pinpad.ErrPINBlocked):
			return r.pinBlocked(serial)
		case errors.Is(err, pinpad.ErrPINLength):
			r.problem(fmt.Errorf("card %s: %w", serial, err), "enter the PIN again on the pad")
		case errors.Is(err, pinpad.ErrNullPIN):
			// A card still in its transport state: its first PIN is chosen on the pad now,
			// then entered as any PIN.
			if err := r.firstPIN(card, slot); err != nil {
				return err
			}
		default:
			return err
		}
	}
}

// checkTries reads and shows the PIN tries the slot has left before a PIN entry. A blocked card
// is refused; before the last try the custodian must confirm on the pad, and Cancel there
// declines this card (refuseHint says what to do with it). pin names what will be typed.
func (r *run) checkTries(card pinpad.Card, slot pinpad.Slot, pin, refuseHint string) error {
	serial := card.Serial()
	tries, err := card.PINTries(r.ctx, slot)
	if errors.Is(err, pinpad.ErrTriesUnknown) {
		// Not fatal: the card only keeps its count to itself. Say so and go on to the PIN.
		r.m.log.Info("PIN tries unknown", "ceremony", r.j.ID, "serial", serial, "slot", slot.String(), "err", err)
		r.emit(EventPINTries, func(ev *Event) { ev.PINTries = -1 })
		r.problem(fmt.Errorf("card %s: PIN tries unknown (the card does not tell them without risking a try)", serial),
			"enter the "+pin+" carefully on the pad: a card blocks after 3 wrong entries")
		return nil
	}
	if err != nil {
		return err
	}
	r.emit(EventPINTries, func(ev *Event) { ev.PINTries = tries })
	switch tries {
	case 0:
		return r.pinBlocked(serial)
	case 1:
		r.problem(fmt.Errorf("card %s has 1 PIN try left: a wrong %s blocks the card", serial, pin),
			"press OK on the pad to go on, or Cancel on the pad to use another card")
		err := r.waitOK(StepConfirmLast, "Last PIN try press OK/Cancel")
		if errors.Is(err, pinpad.ErrCancelled) && r.ctx.Err() == nil {
			return refuse(serial, refuseHint, "the last PIN try was %w", errDeclined)
		}
		return err
	}
	return nil
}

// profileHint says what to do with a card that lacks the files of its profile when the
// current card set was written in another card profile ("" otherwise).
func (r *run) profileHint(card pinpad.Card, err error) string {
	if !errors.Is(err, pinpad.ErrNotPersonalised) {
		return ""
	}
	cs, e := r.m.CurrentSet()
	if e != nil || cs == nil {
		return ""
	}
	for _, sh := range cs.Shares {
		if sh.Profile != "" && sh.Profile != card.ProfileName() {
			return fmt.Sprintf("the current card set was written in card profile %s, but cards are read in profile %s: restart keyquorum serve with --card-profile %s, or use a card prepared for %s",
				sh.Profile, card.ProfileName(), sh.Profile, card.ProfileName())
		}
	}
	return ""
}

// profileOf names the card profile a card is read with.
func profileOf(card pinpad.Card) string { return card.ProfileName() }

func (r *run) pinBlocked(serial string) error {
	if err := r.commit(&auditSpec{event: AuditPINBlocked, message: fmt.Sprintf("card %s is blocked (no PIN tries left)", serial), serials: []string{serial}}, nil); err != nil {
		return err
	}
	hint := "take it out and insert another card"
	if (r.j.Kind == KindGenerate || r.j.Kind == KindReissue) && r.j.Phase == PhaseWriting {
		hint = "take it out and insert another blank card for this share"
	}
	return refuse(serial, hint, "%w", pinpad.ErrPINBlocked)
}
