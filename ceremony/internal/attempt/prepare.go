package attempt

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// RolePrepared is a card a Prepare cards ceremony laid out; Note says what was created.
const RolePrepared CardRole = "prepared"

// MaxPrepare bounds the cards of one Prepare cards ceremony.
const MaxPrepare = 64

// prepareCards prepares Request.N cards, one after the other.
func (r *Run) prepareCards() (*result, error) {
	n := r.j.Request.N
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseCard }); err != nil {
		return nil, err
	}
	var serials []string
	for i := len(prepared(r.j)); i < n; i = len(prepared(r.j)) {
		r.progress(i, n)
		err := r.retryable(func() error {
			return r.withCard(textInsertCard, func(card pinpad.Card) error {
				if containsStr(prepared(r.j), card.Serial()) {
					return refuse(card.Serial(), "take it out and insert a card not yet prepared", "the card was already prepared in this ceremony")
				}
				return r.prepareOn(card)
			})
		})
		if err != nil {
			return nil, err
		}
		if err := r.removeCard(); err != nil {
			return nil, err
		}
	}
	serials = prepared(r.j)
	r.progress(n, n)
	return &result{outcome: fmt.Sprintf("%d card(s) prepared in card profile %s: %s.", len(serials), r.profileName(), strings.Join(serials, ", "))}, nil
}

// prepared lists the cards this attempt prepared.
func prepared(j *Journal) []string { return serialsOf(j, RolePrepared, CardDone) }

func (r *Run) profileName() string {
	for _, c := range r.j.Cards {
		if c.Profile != "" {
			return c.Profile
		}
	}
	return "(none)"
}

// prepareOn lays one card out and has its new PINs set on the pad.
func (r *Run) prepareOn(card pinpad.Card) error {
	serial := card.Serial()
	now := time.Now().UTC()
	if err := r.commit(&auditSpec{event: AuditCardWriting, message: fmt.Sprintf("preparing card %s in card profile %s", serial, card.ProfileName()), serials: []string{serial}},
		func(j *Journal) {
			j.SetCard(CardEntry{Serial: serial, Role: RolePrepared, State: CardWriting, Time: now, Profile: card.ProfileName()})
		}); err != nil {
		return err
	}
	r.working(StepWriteCard, "Please wait")
	done, err := card.Prepare(r.ctx)
	var refused *pinpad.PrepareRefusedError
	switch {
	case errors.As(err, &refused):
		return refuse(serial, "take it out and insert another card: "+refused.Advice, "%w", err)
	case err != nil:
		return err
	}
	what := "nothing was missing"
	if len(done.Created) > 0 {
		what = "created " + strings.Join(done.Created, ", ")
	}
	for _, slot := range done.FirstPIN {
		if err := r.firstPIN(card, slot); err != nil {
			return err
		}
	}
	now = time.Now().UTC()
	return r.commit(&auditSpec{event: AuditCardWritten, message: fmt.Sprintf("card %s prepared in card profile %s: %s", serial, card.ProfileName(), what), serials: []string{serial}},
		func(j *Journal) {
			j.SetCard(CardEntry{Serial: serial, Role: RolePrepared, State: CardDone, Time: now, Note: what, Profile: card.ProfileName()})
			j.LastError = ""
		})
}

// firstPIN has the custodian choose the first PIN of a slot still in its NullPIN (transport)
// state, typed twice on the pad. Two entries that differ, or a PIN of the wrong length, ask
// again; a card that turns out not to be in that state is refused (a reader can make the
// 69 85 a VERIFY answered).
func (r *Run) firstPIN(card pinpad.Card, slot pinpad.Slot) error {
	serial := card.Serial()
	r.problem(fmt.Errorf("card %s: the PIN of its %s slot is not set yet (transport state)", serial, slot),
		"choose its PIN now: type the new PIN on the pad, then again to confirm")
	for {
		t := r.m.Cfg.Timeouts.PIN
		r.prompt(StepChangePIN, WaitPIN, "New PIN, new PIN again", t)
		err := card.SetFirstPIN(r.ctx, slot, t)
		switch {
		case err == nil:
			r.working(StepChangePIN, "")
			return r.commit(&auditSpec{event: AuditPINChanged, message: fmt.Sprintf("first PIN of the %s slot of card %s set on the pad (it left its transport state)", slot, serial), serials: []string{serial}}, nil)
		case errors.Is(err, pinpad.ErrPINsDiffer), errors.Is(err, pinpad.ErrPINLength):
			r.problem(fmt.Errorf("card %s: %w", serial, err), "type the new PIN twice again on the pad")
		case errors.Is(err, pinpad.ErrPINBlocked):
			return r.pinBlocked(serial)
		case cardProblem(err), errors.Is(err, pinpad.ErrNotNullPIN):
			return refuse(serial, "take it out and insert another card", "setting its first PIN failed: %w", err)
		default:
			return err
		}
	}
}
