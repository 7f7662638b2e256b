package attempt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"
	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// The steps every ceremony kind is made of (generate.go, cards.go, cardcheck.go, reissue.go):
// the run of one attempt and what a kind does with it — commit a transition with its audit
// entry, prompt on the pad, wait for OK, take a card, verify a PIN, refuse a card, stall until
// a retry. run.go starts and ends an attempt and dispatches to the kinds; the kinds build on
// this file, never on run.go.

// Pad texts more than one kind shows (the appliance's manual, seed 003).
const (
	textOverwrite  = "Card not empty overwrite? OK/Cancel"
	textInsertCard = "Insert card press OK/Cancel"
)

// Run is one attempt of a ceremony: the goroutine that drives the pad and the HSM. Only that
// goroutine touches j and ev; the Manager reads the committed journal through jmu.
type Run struct {
	m        *Host
	ctx      context.Context
	Cancel   context.CancelCauseFunc
	operator string // who started or resumed this attempt

	jmu sync.Mutex
	j   *Journal // last committed state

	ev      Event
	Retry   chan string // the operator who asked for a retry of a stalled step
	Stalled atomic.Bool

	// Confirm carries an operator's answer to a question the pad cannot ask itself (a pad
	// without OK key reporting); Asked is the question open on the screen, nil when none
	// is.
	Confirm chan Confirmation
	Asked   atomic.Pointer[Question]

	Done  chan struct{} // closed when the attempt has ended; Final and Err are set then
	Final *Journal
	Err   error
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

// auditSpec is the audit entry a transition records.
type auditSpec struct {
	event    string
	message  string
	operator string // defaults to the run's operator
	serials  []string
	indexes  []int
	setID    string // the set the entry is about, when not the journal's
}

// commit applies mutate to a copy of the journal and commits it, with the audit entry, in one
// transaction. Only then does the in-memory journal change: a failed commit leaves the run
// where the disk is.
func (r *Run) commit(a *auditSpec, mutate func(j *Journal)) error {
	return r.commitWith(a, mutate, nil)
}

// commitWith is commit with more work in the same transaction (the card set registry), done
// after the journal and audit entry are prepared; next is the journal being committed.
func (r *Run) commitWith(a *auditSpec, mutate func(j *Journal), also func(tx *bolt.Tx, next *Journal) error) error {
	next := r.j.Clone()
	next.Step = r.ev.Step
	if mutate != nil {
		mutate(next)
	}
	next.Updated = time.Now().UTC()
	event := ""
	err := r.m.St.Update(func(tx *bolt.Tx) error {
		if a != nil {
			op := a.operator
			if op == "" {
				op = r.operator
			}
			e := &AuditEntry{Time: next.Updated, Operator: op, Ceremony: next.ID, Kind: next.Kind, Event: a.event,
				Message: a.message, Serials: a.serials, Indexes: a.indexes, SetID: next.SetID, KeyID: next.KeyID}
			if a.setID != "" {
				e.SetID = a.setID
			}
			if err := journal.AppendAudit(tx, e); err != nil {
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
		return journal.PutJSON(tx.Bucket(journal.BucketCeremonies), journal.U64Key(next.ID), next)
	})
	if err != nil {
		return fmt.Errorf("commit journal: %w", err)
	}
	r.jmu.Lock()
	r.j = next
	r.jmu.Unlock()
	r.ev.Status, r.ev.Phase = next.Status, next.Phase
	r.m.AfterCommit(next, event)
	return nil
}

// emit updates the snapshot and publishes it.
func (r *Run) emit(t EventType, f func(ev *Event)) {
	if f != nil {
		f(&r.ev)
	}
	ev := r.ev
	ev.Type = t
	ev.Time = time.Time{}
	r.ev = r.m.Events.Publish(ev)
	// Error and Hint belong to the event that reported them.
	if t != EventProblem && t != EventStalled {
		return
	}
	r.ev.Error, r.ev.Hint = "", ""
}

// prompt announces a wait on the pad with its deadline.
func (r *Run) prompt(step Step, wait Wait, text string, timeout time.Duration) {
	r.emit(EventPrompt, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Display = step, wait, text
		ev.Deadline = time.Now().Add(timeout).UTC()
	})
}

// working announces a step without a wait. The pad's prompt is over (the cyberJack clears its
// display after an entry), so the display is text, usually none: a watcher must not go on
// reading "Enter PIN" through the write, the combine and the load.
func (r *Run) working(step Step, text string) {
	r.emit(EventProgress, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Deadline, ev.Display = step, WaitNone, time.Time{}, text
	})
}

func (r *Run) problem(err error, hint string) {
	r.m.Log.Info("ceremony problem", "ceremony", r.j.ID, "step", r.ev.Step, "err", err)
	r.emit(EventProblem, func(ev *Event) { ev.Error, ev.Hint = err.Error(), hint })
}

func (r *Run) progress(done, total int) {
	r.emit(EventProgress, func(ev *Event) { ev.CardsDone, ev.CardsTotal = done, total })
}

// retryable runs step and, when it fails in a way the operator can put right (a timeout, the
// reader unplugged), stalls until Retry (and runs step again) or Cancel. Work finished before
// step stays finished.
func (r *Run) retryable(step func() error) error {
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

func (r *Run) stall(cause error) error {
	hint := stallHint(cause)
	if r.j.Phase == PhaseReading && r.ev.CardsTotal > 0 && r.ev.CardsDone < r.ev.CardsTotal {
		hint += fmt.Sprintf("; %d of the %d cards needed were read: %d more needed", r.ev.CardsDone, r.ev.CardsTotal, r.ev.CardsTotal-r.ev.CardsDone)
		if len(r.ev.Sets) > 1 {
			var parts []string
			for _, p := range r.ev.Sets {
				parts = append(parts, fmt.Sprintf("set %s: %d of %d", journal.Short(p.SetID), p.Read, p.K))
			}
			hint += " (cards read per set: " + strings.Join(parts, ", ") + ")"
		}
	}
	if err := r.commit(&auditSpec{event: AuditCeremonyStalled, message: cause.Error() + ": waiting for Retry"}, func(j *Journal) {
		j.Status, j.LastError = StatusStalled, cause.Error()
	}); err != nil {
		return err
	}
	r.Stalled.Store(true)
	r.emit(EventStalled, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Deadline, ev.Display = StepWaitRetry, WaitRetry, time.Time{}, ""
		ev.Error, ev.Hint = cause.Error(), hint
	})
	var op string
	select {
	case op = <-r.Retry:
	case <-r.ctx.Done():
		r.Stalled.Store(false)
		return fmt.Errorf("wait for retry: %w", context.Cause(r.ctx))
	}
	r.Stalled.Store(false)
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

// ErrDeclined is Cancel pressed at a question about one card (last PIN try, overwrite): that
// card is not used, the ceremony goes on.
var ErrDeclined = errors.New("declined on the PIN pad")

// ask is a question on the pad: OK goes on, Cancel declines.
type ask struct {
	step Step
	text string // the pad's text
	// detail says what the question is about in words (the event's Error says it too);
	// destructive marks a question whose OK destroys data (see Question.Destructive).
	detail      string
	destructive bool
}

// waitOK shows text and waits for OK. A pad that cannot report its keys to the host (a
// cyberJack whose firmware lacks the MKT_COMP module) has the question answered on the WebConf
// screen or the CLI instead, with the same meaning: OK goes on, Cancel is Cancel on the pad.
//
// A question with a detail (what an overwrite loses, whose last PIN try it is) carries it in
// Event.Question while it waits, so the screen shows it beside the pad's short text; on the pad
// the question has no ID (it is answered on the pad).
func (r *Run) waitOK(q ask) error {
	t := r.m.Cfg.Timeouts.OK
	r.emit(EventPrompt, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Display = q.step, WaitOK, q.text
		ev.Deadline = time.Now().Add(t).UTC()
		if q.detail != "" || q.destructive {
			ev.Question = &Question{Text: q.text, Detail: q.detail, Destructive: q.destructive}
		}
	})
	err := r.m.Cfg.Pad.WaitForOK(r.ctx, q.text, t)
	if errors.Is(err, pinpad.ErrNoOKKey) {
		err = r.waitConfirm(q, t)
	}
	r.ev.Question = nil
	r.working(r.ev.Step, "")
	return err
}

// Confirmation is an operator's answer on the screen.
type Confirmation struct {
	Operator string
	Question string // the ID of the question answered
	OK       bool
}

// waitConfirm asks q on the screen and waits for [Manager.Answer] to it, until timeout. The
// question gets an ID, journaled before it is shown; an answer naming another ID is not taken.
func (r *Run) waitConfirm(q ask, timeout time.Duration) error {
	for len(r.Confirm) > 0 { // an answer to an earlier question does not count
		<-r.Confirm
	}
	question := &Question{ID: fmt.Sprintf("c%d-q%d", r.j.ID, r.j.Questions+1), Text: q.text, Detail: q.detail, Destructive: q.destructive}
	if err := r.commit(nil, func(j *Journal) { j.Questions++; j.Question = question }); err != nil {
		return err
	}
	r.Asked.Store(question)
	defer func() {
		r.Asked.Store(nil)
		r.ev.Question = nil
		if r.j.Question != nil {
			// Best effort: a failed commit leaves the question in the journal, where the next
			// commit of the run or its end clears it.
			r.commit(nil, func(j *Journal) { j.Question = nil })
		}
	}()
	r.emit(EventPrompt, func(ev *Event) {
		ev.Step, ev.Waiting, ev.Display, ev.Question = q.step, WaitConfirm, q.text, question
		ev.Deadline = time.Now().Add(timeout).UTC()
	})
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case c := <-r.Confirm:
			if c.Question != question.ID {
				continue // raced with the end of an earlier question
			}
			action, err := "confirm", error(nil)
			if !c.OK {
				action, err = "decline", pinpad.ErrCancelled
			}
			now := time.Now().UTC()
			answer := map[bool]string{true: "OK", false: "Cancel"}[c.OK]
			msg := fmt.Sprintf("question %s %q answered %s on the screen", question.ID, question.Text, answer)
			if question.Detail != "" {
				msg = fmt.Sprintf("question %s %q (%s) answered %s on the screen", question.ID, question.Text, question.Detail, answer)
			}
			if c.OK && question.Destructive {
				msg += ", confirmed with the operator's security key"
			}
			r.Asked.Store(nil)
			if cerr := r.commit(&auditSpec{event: AuditCeremonyConfirmed, operator: c.Operator, message: msg}, func(j *Journal) {
				j.Question = nil
				j.Participants = append(j.Participants, Participant{Operator: c.Operator, Action: action, Time: now})
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
}

// withCard prompts for a card and runs fn on it until fn succeeds. A refused card is recorded,
// taken out, and the prompt repeats; a card pulled out mid-operation is asked for again (its
// data is checked again before it counts). Other errors end the loop.
func (r *Run) withCard(text string, fn func(card pinpad.Card) error) error {
	for {
		t := r.m.Cfg.Timeouts.Card
		r.prompt(StepInsertCard, WaitCard, text, t)
		card, err := r.m.Cfg.Pad.WaitForCard(r.ctx, text, t)
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
func (r *Run) refused(ref *refusal) error {
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
	// The wait that refused the card is over: its PIN tries no longer describe a card to use.
	r.emit(EventProgress, func(ev *Event) { ev.Waiting, ev.Deadline, ev.Display, ev.PINTries = WaitNone, time.Time{}, "", -1 })
	r.problem(errors.New(msg), ref.hint)
	return r.removeCardSaying(refusalText(ref.err))
}

// refusalText is what the pad shows before "Remove card" for a refused card: the reason in the
// few words its display takes (two lines of 16 characters on the e-com, so "Card blocked
// Remove card" shows as two lines).
func refusalText(err error) string {
	switch {
	case errors.Is(err, pinpad.ErrPINBlocked):
		return "Card blocked"
	case errors.Is(err, ErrDeclined):
		return "" // the custodian said no on the pad: no reason to show
	case errors.Is(err, pinpad.ErrWriteVerify), errors.Is(err, pinpad.ErrMemory), errors.Is(err, pinpad.ErrTooLarge):
		return "Card failed"
	}
	return "Wrong card"
}

// removeCard waits for the card to be taken out.
func (r *Run) removeCard() error { return r.removeCardSaying("") }

// removeCardSaying waits for the card to be taken out, showing why first when reason is set.
func (r *Run) removeCardSaying(reason string) error {
	t := r.m.Cfg.Timeouts.Removal
	text := "Remove card"
	if reason != "" {
		text = reason + " Remove card"
	}
	r.prompt(StepRemoveCard, WaitRemoval, text, t)
	err := r.m.Cfg.Pad.WaitForRemoval(r.ctx, text, t)
	r.emit(EventProgress, func(ev *Event) { ev.Serial, ev.Waiting, ev.Deadline, ev.PINTries = "", WaitNone, time.Time{}, -1 })
	return err
}

// verifyPIN has the custodian enter the slot's PIN on the pad. It shows the tries left, asks
// for an explicit OK before the last one, and asks again after a wrong PIN.
func (r *Run) verifyPIN(card pinpad.Card, slot pinpad.Slot) error {
	serial := card.Serial()
	for {
		if err := r.checkTries(card, slot, "PIN", "take it out and insert another card"); err != nil {
			return err
		}
		t := r.m.Cfg.Timeouts.PIN
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
func (r *Run) checkTries(card pinpad.Card, slot pinpad.Slot, pin, refuseHint string) error {
	serial := card.Serial()
	tries, err := card.PINTries(r.ctx, slot)
	if errors.Is(err, pinpad.ErrTriesUnknown) {
		// Not fatal: the card only keeps its count to itself. Say so and go on to the PIN.
		r.m.Log.Info("PIN tries unknown", "ceremony", r.j.ID, "serial", serial, "slot", slot.String(), "err", err)
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
		err := r.waitOK(ask{step: StepConfirmLast, text: "Last PIN try press OK/Cancel", destructive: true,
			detail: fmt.Sprintf("card %s has 1 PIN try left: a wrong %s blocks the card", serial, pin)})
		if errors.Is(err, pinpad.ErrCancelled) && r.ctx.Err() == nil {
			return refuse(serial, refuseHint, "the last PIN try was %w", ErrDeclined)
		}
		return err
	}
	return nil
}

// profileHint says what to do with a card that lacks the files of its profile when the
// current card set was written in another card profile ("" otherwise).
func (r *Run) profileHint(card pinpad.Card, err error) string {
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

func (r *Run) pinBlocked(serial string) error {
	if err := r.commit(&auditSpec{event: AuditPINBlocked, message: fmt.Sprintf("card %s is blocked (no PIN tries left)", serial), serials: []string{serial}}, nil); err != nil {
		return err
	}
	// A card that reports "blocked" instead of a last wrong PIN leaves the tries read before
	// the entry (1) in the picture: a blocked card has none.
	r.emit(EventPINTries, func(ev *Event) { ev.PINTries, ev.Waiting, ev.Deadline = 0, WaitNone, time.Time{} })
	hint := "take it out and insert another card"
	if (r.j.Kind == KindGenerate || r.j.Kind == KindReissue) && r.j.Phase == PhaseWriting {
		hint = "take it out and insert another blank card for this share"
	}
	return refuse(serial, hint, "%w", pinpad.ErrPINBlocked)
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

// readOf lists the serials of the current attempt's cards read of the journal's set.
func readOf(j *Journal) []string {
	var out []string
	for _, c := range j.Cards {
		if c.Role == RoleRead && c.State == CardRead && c.Attempt == j.Attempt && (c.SetID == "" || c.SetID == j.SetID || c.SetID == j.FromSetID) &&
			!containsStr(out, c.Serial) {
			out = append(out, c.Serial)
		}
	}
	return out
}

func keySetOf(j *Journal) *KeySet {
	ks := &KeySet{SetID: j.SetID, KeyID: j.KeyID, K: j.K, N: j.N, Label: j.Request.Label, Ceremony: j.ID, Loaded: time.Now().UTC()}
	for _, c := range j.Cards {
		// The cards a re-issue read are of the set it replaced; a read may have seen cards of
		// other sets; a generation reads back cards it wrote, which are listed once.
		written := c.State == CardWritten
		read := c.Role == RoleRead && c.State == CardRead && j.Kind != KindReissue && (c.SetID == "" || c.SetID == j.SetID)
		if !written && !read {
			continue
		}
		if slices.ContainsFunc(ks.Cards, func(k CardEntry) bool { return k.Serial == c.Serial && k.Index == c.Index }) {
			continue
		}
		ks.Cards = append(ks.Cards, CardEntry{Serial: c.Serial, Index: c.Index, Role: c.Role, State: c.State, Time: c.Time})
	}
	return ks
}

// readSlot returns what the slot holds, nil when it is empty. A slot the card cannot return
// (a write cut short leaves it so) is reported as unreadable, not as an error; conditions of
// the pad (card removed, reader gone, cancel) are errors.
func (r *Run) readSlot(card pinpad.Card, slot pinpad.Slot) (data []byte, unreadable bool, err error) {
	have, err := card.Read(r.ctx, slot)
	switch {
	case errors.Is(err, pinpad.ErrEmpty):
		return nil, false, nil
	case err != nil && (padCondition(err) || r.ctx.Err() != nil):
		return nil, false, err
	case err != nil:
		return nil, true, nil
	case len(have) == 0:
		return nil, false, nil
	}
	return have, false, nil
}

// padCondition reports whether err is a condition of the pad or the operator rather than of
// the card's content.
func padCondition(err error) bool {
	for _, e := range []error{pinpad.ErrCardRemoved, pinpad.ErrReaderGone, pinpad.ErrNoReader, pinpad.ErrNoCard,
		pinpad.ErrTimeout, pinpad.ErrCancelled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// cardProblem reports whether err is the card refusing something (a status word, a memory
// failure, an unprepared card): that card is refused, the ceremony goes on with another.
func cardProblem(err error) bool {
	for _, e := range []error{pinpad.ErrNotTCOS, pinpad.ErrNotPersonalised, pinpad.ErrNullPIN, pinpad.ErrAccessDenied,
		pinpad.ErrMemory, pinpad.ErrWrongLength, pinpad.ErrTooLarge, pinpad.ErrWriteVerify} {
		if errors.Is(err, e) {
			return true
		}
	}
	var se *pinpad.StatusError
	return errors.As(err, &se)
}

// writeFailed turns a failed write into a refusal of the card (its share slot may hold a partial
// record, which the journal keeps as "writing"), unless the card was pulled out or the reader
// is gone: then the card is asked for again.
func (r *Run) writeFailed(serial string, index int, err error) error {
	switch {
	case errors.Is(err, pinpad.ErrCardRemoved), errors.Is(err, pinpad.ErrReaderGone), r.ctx.Err() != nil:
		return err
	case errors.Is(err, pinpad.ErrWriteVerify), errors.Is(err, pinpad.ErrMemory), errors.Is(err, pinpad.ErrTooLarge):
		return refuse(serial, fmt.Sprintf("take it out and insert another blank card for share %d", index), "the card could not store the share: %w", err)
	}
	var se *pinpad.StatusError
	if errors.As(err, &se) {
		return refuse(serial, fmt.Sprintf("take it out and insert another blank card for share %d", index), "the card could not store the share: %w", err)
	}
	return err
}

// refuseRetired refuses a card whose set was retired by a re-issue or abandoned by a ceremony
// that never completed it.
func (r *Run) refuseRetired(serial string, rec *sharing.Record) error {
	cs, err := r.m.lookupSet(rec.SetID)
	if err != nil {
		return err
	}
	if cs != nil && cs.Status.Refused() {
		hint := "take it out and insert a card of the current set"
		if cur, _ := r.m.CurrentSet(); cur != nil {
			hint = fmt.Sprintf("take it out and insert a card of the current set %s; overwrite or destroy the retired card: it still holds a share of the key", journal.Short(cur.SetID))
		}
		return &refusal{serial: serial, err: journal.NewRetiredSetError(cs, rec.Index), hint: hint}
	}
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
