package attempt

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

const (
	textSourceCard = "Insert source card press OK/Cancel"
	textTargetCard = "Insert target card press OK/Cancel"
)

// copyCard copies the share of a source card onto a target card, one to one (a second set for a
// DR site). Only share cards can be copied: a slot user credential is bound to its card.
func (r *Run) copyCard() (*result, error) {
	var data []byte // the source's record: secret, zeroed on the way out
	defer func() { sharing.Zero(data) }()
	var source string
	var rec *sharing.Record
	defer func() { rec.Zero() }()

	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseSource }); err != nil {
		return nil, err
	}
	err := r.retryable(func() error {
		return r.withCard(textSourceCard, func(card pinpad.Card) error {
			serial := card.Serial()
			if err := r.verifyPIN(card, pinpad.SlotShare); err != nil {
				return err
			}
			r.working(StepReadCard, "")
			b, err := card.Read(r.ctx, pinpad.SlotShare)
			if errors.Is(err, pinpad.ErrEmpty) {
				return refuse(serial, "take it out and insert a backup key share card",
					"this card holds no backup key share: only share cards can be copied (a slot user card's credential is bound to its card and cannot be copied)")
			}
			if err != nil {
				return err
			}
			got, err := sharing.Unmarshal(b)
			if err != nil {
				sharing.Zero(b)
				return refuse(serial, "take it out and insert another share card", "%w", err)
			}
			if err := r.refuseRetired(serial, got); err != nil {
				got.Zero()
				sharing.Zero(b)
				return err
			}
			now := time.Now().UTC()
			if err := r.commit(&auditSpec{event: AuditCardRead, message: fmt.Sprintf("copy source: card %s holds share %d of set %s", serial, got.Index, got.SetID.Short()),
				serials: []string{serial}, indexes: []int{got.Index}},
				func(j *Journal) {
					j.SetID, j.KeyID, j.K, j.N = got.SetID.String(), got.KeyID.String(), got.K, got.N
					j.SetCard(CardEntry{Serial: serial, Index: got.Index, Role: RoleCopySource, State: CardRead, Time: now})
				}); err != nil {
				got.Zero()
				sharing.Zero(b)
				return err
			}
			data, rec, source = b, got, serial
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if err := r.retryable(r.removeCard); err != nil {
		return nil, err
	}
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseTarget }); err != nil {
		return nil, err
	}
	var target string
	err = r.retryable(func() error {
		return r.withCard(textTargetCard, func(card pinpad.Card) error {
			serial := card.Serial()
			if serial == source {
				return refuse(serial, "take it out and insert the card to copy to", "this is the source card")
			}
			if err := r.verifyPIN(card, pinpad.SlotShare); err != nil {
				return err
			}
			r.working(StepReadCard, "")
			have, unreadable, err := r.readSlot(card, pinpad.SlotShare)
			if err != nil {
				return err
			}
			already := have != nil && subtle.ConstantTimeCompare(have, data) == 1
			if unreadable || (have != nil && !already) {
				// The Overwrite box covers other sets' shares only: a share of a set in use
				// is asked about, naming the loss.
				o, err := r.inspectTarget(serial, have, rec, true)
				if err == nil {
					err = r.confirmOverwrite(o, r.j.Request.Overwrite)
				}
				if err != nil {
					sharing.Zero(have)
					return err
				}
			}
			sharing.Zero(have)
			now := time.Now().UTC()
			if err := r.commitWith(&auditSpec{event: AuditCardWriting, message: fmt.Sprintf("copying share %d to card %s", rec.Index, serial), serials: []string{serial}, indexes: []int{rec.Index}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Index: rec.Index, Role: RoleCopyTarget, State: CardWriting, Time: now, Profile: profileOf(card)})
				}, func(tx *bolt.Tx, _ *Journal) error {
					if already {
						return nil
					}
					return journal.ForgetCard(tx, serial)
				}); err != nil {
				return err
			}
			r.working(StepWriteCard, "")
			if !already {
				if err := card.Write(r.ctx, pinpad.SlotShare, data); err != nil {
					return r.writeFailed(serial, rec.Index, err)
				}
			}
			back, err := card.Read(r.ctx, pinpad.SlotShare)
			if err != nil {
				return r.writeFailed(serial, rec.Index, err)
			}
			same := subtle.ConstantTimeCompare(back, data) == 1
			sharing.Zero(back)
			if !same {
				return r.writeFailed(serial, rec.Index, pinpad.ErrWriteVerify)
			}
			now = time.Now().UTC()
			if err := r.commitWith(&auditSpec{event: AuditCardWritten, message: fmt.Sprintf("share %d copied from card %s to card %s and verified", rec.Index, source, serial),
				serials: []string{source, serial}, indexes: []int{rec.Index}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Index: rec.Index, Role: RoleCopyTarget, State: CardWritten, Time: now, Profile: profileOf(card)})
				}, func(tx *bolt.Tx, _ *Journal) error { return journal.AddCopy(tx, rec.SetID.String(), rec.Index, serial) }); err != nil {
				return err
			}
			target = serial
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &result{outcome: fmt.Sprintf("Card %s now holds a copy of share %d of set %s (from card %s).", target, rec.Index, rec.SetID.Short(), source)}, nil
}

// changePIN changes the PIN of one slot of a card, entered on the pad.
func (r *Run) changePIN() (*result, error) {
	slot := r.j.Request.Slot
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseCard }); err != nil {
		return nil, err
	}
	var serial string
	err := r.retryable(func() error {
		return r.withCard(textInsertCard, func(card pinpad.Card) error {
			serial = card.Serial()
			return r.changePINOn(card, slot)
		})
	})
	if err != nil {
		return nil, err
	}
	return &result{outcome: fmt.Sprintf("The PIN of the %s slot of card %s was changed.", slot, serial)}, nil
}

func (r *Run) changePINOn(card pinpad.Card, slot pinpad.Slot) error {
	serial := card.Serial()
	for {
		if err := r.checkTries(card, slot, "old PIN", "take it out"); err != nil {
			return err
		}
		now := time.Now().UTC()
		if err := r.commit(nil, func(j *Journal) {
			j.SetCard(CardEntry{Serial: serial, Role: RolePIN, State: CardWriting, Time: now, Note: slot.String()})
		}); err != nil {
			return err
		}
		t := r.m.Cfg.Timeouts.PIN
		// Each of the three entries has the whole PIN time on the pad: the prompt's deadline
		// is the latest the last one can end.
		r.prompt(StepChangePIN, WaitPIN, "Old PIN, new PIN, new PIN again", 3*t)
		err := card.ChangePIN(r.ctx, slot, t)
		var wrong *pinpad.WrongPINError
		switch {
		case err == nil:
			now := time.Now().UTC()
			return r.commit(&auditSpec{event: AuditPINChanged, message: fmt.Sprintf("PIN of the %s slot of card %s changed", slot, serial), serials: []string{serial}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Role: RolePIN, State: CardDone, Time: now, Note: slot.String()})
					j.LastError = ""
				})
		case errors.As(err, &wrong):
			if err := r.commit(&auditSpec{event: AuditPINWrong, message: fmt.Sprintf("wrong old PIN on card %s (%s slot): %d tries left", serial, slot, wrong.Remaining), serials: []string{serial}},
				func(j *Journal) { j.LastError = err.Error() }); err != nil {
				return err
			}
			r.problem(fmt.Errorf("card %s: %w", serial, err), "enter the old PIN again on the pad")
		case errors.Is(err, pinpad.ErrPINsDiffer), errors.Is(err, pinpad.ErrPINLength):
			r.problem(fmt.Errorf("card %s: %w", serial, err), "enter the old PIN and the new PIN twice again on the pad")
		case errors.Is(err, pinpad.ErrPINBlocked):
			return r.pinBlocked(serial)
		case errors.Is(err, pinpad.ErrNullPIN):
			// No old PIN to enter: the card is in its transport state. Its first PIN is the
			// new one.
			if err := r.firstPIN(card, slot); err != nil {
				return err
			}
			now := time.Now().UTC()
			return r.commit(nil, func(j *Journal) {
				j.SetCard(CardEntry{Serial: serial, Role: RolePIN, State: CardDone, Time: now, Note: slot.String()})
				j.LastError = ""
			})
		default:
			return err
		}
	}
}

// writeSlotUser writes a PKCS#11 slot credential, issued by the HSM for this card's serial, to
// the card's slot user slot.
func (r *Run) writeSlotUser() (*result, error) {
	slot := r.j.Request.PKCS11Slot
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseCard }); err != nil {
		return nil, err
	}
	var serial string
	err := r.retryable(func() error {
		return r.withCard(textInsertCard, func(card pinpad.Card) error {
			serial = card.Serial()
			if err := r.verifyPIN(card, pinpad.SlotUser); err != nil {
				return err
			}
			r.working(StepIssueCred, "")
			cred, err := r.m.Cfg.HSM.IssueSlotCredential(r.ctx, slot, serial)
			if err != nil {
				return fmt.Errorf("issue slot credential: %w", err)
			}
			defer sharing.Zero(cred)
			now := time.Now().UTC()
			if err := r.commit(&auditSpec{event: AuditCardWriting, message: fmt.Sprintf("writing the credential of PKCS#11 slot %d to card %s", slot, serial), serials: []string{serial}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Role: RoleSlotUser, State: CardWriting, Time: now, Note: fmt.Sprintf("PKCS#11 slot %d", slot), Profile: profileOf(card)})
				}); err != nil {
				return err
			}
			r.working(StepWriteCard, "")
			if err := card.Write(r.ctx, pinpad.SlotUser, cred); err != nil {
				return r.writeFailed(serial, 0, err)
			}
			back, err := card.Read(r.ctx, pinpad.SlotUser)
			if err != nil {
				return r.writeFailed(serial, 0, err)
			}
			same := subtle.ConstantTimeCompare(back, cred) == 1
			sharing.Zero(back)
			if !same {
				return r.writeFailed(serial, 0, pinpad.ErrWriteVerify)
			}
			now = time.Now().UTC()
			return r.commit(&auditSpec{event: AuditCardWritten, message: fmt.Sprintf("credential of PKCS#11 slot %d written to card %s and verified", slot, serial), serials: []string{serial}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Role: RoleSlotUser, State: CardWritten, Time: now, Note: fmt.Sprintf("PKCS#11 slot %d", slot), Profile: profileOf(card)})
				})
		})
	})
	if err != nil {
		return nil, err
	}
	return &result{outcome: fmt.Sprintf("Card %s is a slot user card for PKCS#11 slot %d.", serial, slot)}, nil
}

// activateSlot reads a slot user card and has the HSM activate the slot with its credential.
func (r *Run) activateSlot() (*result, error) {
	slot := r.j.Request.PKCS11Slot
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseCard }); err != nil {
		return nil, err
	}
	var serial string
	err := r.retryable(func() error {
		return r.withCard(textInsertCard, func(card pinpad.Card) error {
			serial = card.Serial()
			if err := r.verifyPIN(card, pinpad.SlotUser); err != nil {
				return err
			}
			r.working(StepReadCard, "")
			cred, err := card.Read(r.ctx, pinpad.SlotUser)
			if errors.Is(err, pinpad.ErrEmpty) {
				return refuse(serial, "take it out and insert the slot user card", "this card holds no slot user credential")
			}
			if err != nil {
				return err
			}
			defer sharing.Zero(cred)
			r.working(StepActivate, "")
			if err := r.m.Cfg.HSM.ActivateSlot(r.ctx, slot, serial, cred); err != nil {
				if r.ctx.Err() != nil {
					return err
				}
				return refuse(serial, "take it out and insert the slot user card issued for this slot", "%w", err)
			}
			now := time.Now().UTC()
			return r.commit(&auditSpec{event: AuditSlotActivated, message: fmt.Sprintf("PKCS#11 slot %d activated with card %s", slot, serial), serials: []string{serial}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Role: RoleSlotUser, State: CardDone, Time: now, Note: fmt.Sprintf("PKCS#11 slot %d", slot)})
				})
		})
	})
	if err != nil {
		return nil, err
	}
	return &result{outcome: fmt.Sprintf("PKCS#11 slot %d was activated with card %s.", slot, serial)}, nil
}

// factoryReset zeroizes the HSM and clears the ceremony state. The audit log and the journal of
// past ceremonies are kept: the reset is recorded in both.
func (r *Run) factoryReset() (*result, error) {
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseResetting }); err != nil {
		return nil, err
	}
	r.working(StepResetHSM, "")
	if err := r.m.Cfg.HSM.Reset(r.ctx); err != nil {
		return nil, fmt.Errorf("reset the hsm: %w", err)
	}
	return &result{
		outcome:    "Factory reset done: the HSM keys and the master backup key were zeroized and the ceremony state cleared. The audit log was kept.",
		clearState: true,
		audits:     []AuditEntry{{Event: AuditFactoryReset, Message: "HSM zeroized, ceremony state cleared"}},
	}, nil
}
