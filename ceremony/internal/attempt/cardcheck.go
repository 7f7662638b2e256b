package attempt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// cardCheck has one custodian check one card: PIN on the pad, the share record read and judged
// against the card set registry and the HSM's authenticator of that share. No quorum, no
// reconstruction, nothing written to the card.
func (r *Run) cardCheck() (*result, error) {
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseCard }); err != nil {
		return nil, err
	}
	var check *CardCheck
	err := r.retryable(func() error {
		return r.withCard(textInsertCard, func(card pinpad.Card) error {
			serial := card.Serial()
			if err := r.verifyPIN(card, pinpad.SlotShare); err != nil {
				return err
			}
			r.working(StepReadCard, "")
			data, rerr := card.Read(r.ctx, pinpad.SlotShare)
			if rerr != nil && (padCondition(rerr) || r.ctx.Err() != nil) {
				return rerr
			}
			r.working(StepCheckCard, "")
			c, err := r.judgeCard(serial, data, rerr)
			sharing.Zero(data)
			if err != nil {
				return err
			}
			now := time.Now().UTC()
			a := &auditSpec{event: AuditCardChecked, message: fmt.Sprintf("card %s checked: %s", serial, c.Verdict), serials: []string{serial}}
			if c.Index > 0 {
				a.indexes = []int{c.Index}
				a.message = fmt.Sprintf("card %s checked: %s (share %d of set %s)", serial, c.Verdict, c.Index, journal.Short(c.SetID))
			}
			if err := r.commit(a, func(j *Journal) {
				j.SetID, j.KeyID, j.K, j.N = c.SetID, c.KeyID, c.K, c.N
				j.Check = c
				j.SetCard(CardEntry{Serial: serial, Index: c.Index, Role: RoleChecked, State: CardDone, Time: now, Note: string(c.Verdict)})
				j.LastError = ""
			}); err != nil {
				return err
			}
			check = c
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &result{outcome: check.Detail}, nil
}

// judgeCard decides the verdict on what a card's share slot gave: data, or the error readErr
// (not a condition of the pad). An error is returned only when the check itself failed (the HSM
// or the journal could not be asked).
func (r *Run) judgeCard(serial string, data []byte, readErr error) (*CardCheck, error) {
	c := &CardCheck{Serial: serial}
	switch {
	case errors.Is(readErr, pinpad.ErrEmpty) || (readErr == nil && len(data) == 0):
		c.Verdict = VerdictNotShare
		c.Detail = fmt.Sprintf("Card %s is not a share card: its backup key share slot is empty.", serial)
		return c, nil
	case readErr != nil:
		c.Verdict = VerdictAltered
		c.Detail = fmt.Sprintf("Card %s is damaged: its share slot cannot be read (%v). Do not count on it: write its share again from an intact copy (Copy card), or re-issue the set.", serial, readErr)
		return c, nil
	}
	rec, err := sharing.Unmarshal(data)
	if err != nil {
		if errors.Is(err, sharing.ErrNotRecord) || errors.Is(err, sharing.ErrVersion) {
			c.Verdict = VerdictNotShare
			c.Detail = fmt.Sprintf("Card %s is not a share card of this appliance: its share slot holds something else (%v).", serial, err)
			return c, nil
		}
		c.Verdict = VerdictAltered
		c.Detail = fmt.Sprintf("Card %s holds an altered share record (%v): it cannot be used. Write its share again from an intact copy (Copy card), or re-issue the set.", serial, err)
		return c, nil
	}
	defer rec.Zero()
	c.Index, c.K, c.N, c.SetID, c.KeyID, c.Created = rec.Index, rec.K, rec.N, rec.SetID.String(), rec.KeyID.String(), rec.Created
	what := fmt.Sprintf("share %d of set %s (%d of %d, key %s)", rec.Index, rec.SetID.Short(), rec.K, rec.N, rec.KeyID)

	cs, err := r.m.lookupSet(rec.SetID)
	if err != nil {
		return nil, err
	}
	hsmKey := ""
	switch id, err := r.m.Cfg.HSM.BackupKeyID(r.ctx); {
	case err == nil:
		hsmKey = id.String()
	case !errors.Is(err, hsm.ErrNoBackupKey):
		return nil, fmt.Errorf("ask the hsm for its key: %w", err)
	}
	cur, err := r.m.CurrentSet()
	if err != nil {
		return nil, err
	}
	currentIs := ""
	if cur != nil && (cs == nil || cur.SetID != cs.SetID) {
		currentIs = fmt.Sprintf(" The current set is %s (%d of %d).", journal.Short(cur.SetID), cur.K, cur.N)
	}
	if cs != nil {
		c.SetStatus = cs.Status
	}
	switch {
	case cs == nil:
		c.Verdict = VerdictForeign
		switch {
		case hsmKey == c.KeyID:
			c.Detail = fmt.Sprintf("Card %s holds %s: a set of this HSM's key that this appliance has no record of (made on another cluster node, or before this appliance's journal). Load its cards once to register it, or re-issue.%s", serial, what, currentIs)
		case hsmKey != "":
			c.Detail = fmt.Sprintf("Card %s holds %s: a foreign set, of another key than this HSM's (%s).%s", serial, what, hsmKey, currentIs)
		default:
			c.Detail = fmt.Sprintf("Card %s holds %s: a foreign set, unknown to this appliance.%s", serial, what, currentIs)
		}
		return c, nil
	case cs.Status.Refused():
		c.Verdict = VerdictRetired
		c.Detail = fmt.Sprintf("Card %s: %v.%s Overwrite or destroy the card: it still holds a share of the key.", serial, journal.NewRetiredSetError(cs, rec.Index), currentIs)
		return c, nil
	case cs.Status == SetFormer:
		c.Verdict = VerdictForeign
		c.Detail = fmt.Sprintf("Card %s holds %s: a former set of this appliance, no longer current since ceremony #%d.%s", serial, what, cs.ChangedBy, currentIs)
		return c, nil
	}

	// The set is current (or being issued): the card must match it, and its authenticator.
	sh, known := cs.Share(rec.Index)
	c.Written, c.WrittenTo = sh.Written, sh.Serial
	if rec.KeyID.String() != cs.KeyID || rec.K != cs.K || rec.N != cs.N {
		c.Verdict = VerdictAltered
		c.Detail = fmt.Sprintf("Card %s claims %s, but set %s is %d of %d of key %s: the record was altered. Do not count on it.", serial, what, journal.Short(cs.SetID), cs.K, cs.N, cs.KeyID)
		return c, nil
	}
	status := "the current set " + journal.Short(cs.SetID)
	if cs.Status == SetIssuing {
		status = fmt.Sprintf("set %s, which %s #%d is still issuing", journal.Short(cs.SetID), journal.OriginTitle(cs.Origin), cs.Ceremony)
	}
	auth, canAuth := r.m.Cfg.HSM.(hsm.Authenticator)
	tag, terr := hex.DecodeString(sh.Authenticator)
	switch {
	case !canAuth:
		c.Verdict = VerdictUnverified
		c.Detail = fmt.Sprintf("Card %s holds a well-formed share %d of %s, but this HSM cannot authenticate share records, so it cannot vouch for the card.", serial, rec.Index, status)
		return c, nil
	case !known || sh.Authenticator == "" || terr != nil:
		c.Verdict = VerdictUnverified
		c.Detail = fmt.Sprintf("Card %s holds a well-formed share %d of %s, but this appliance keeps no authenticator for that share (the set was registered from a key load, or before card checks existed), so it cannot vouch for the card. Re-issue the set to make every card checkable.", serial, rec.Index, status)
		return c, nil
	}
	err = auth.CheckAuthenticator(r.ctx, data, tag)
	switch {
	case err == nil:
		c.Verdict = VerdictIntact
		c.Detail = fmt.Sprintf("Card %s holds an intact share %d of %s (%d of %d, key %s)%s.", serial, rec.Index, status, cs.K, cs.N, cs.KeyID, writtenWhen(c))
	case errors.Is(err, hsm.ErrAuthenticatorMismatch):
		c.Verdict = VerdictAltered
		c.Detail = fmt.Sprintf("Card %s claims share %d of %s, but its record does not match the authenticator made when that share was written%s: it was altered or forged. Do not count on it: write share %d again from an intact copy (Copy card), or re-issue the set.", serial, rec.Index, status, writtenWhen(c), rec.Index)
	case errors.Is(err, hsm.ErrNoBackupKey), errors.Is(err, hsm.ErrNoAuthenticatorKey):
		c.Verdict = VerdictUnverified
		c.Detail = fmt.Sprintf("Card %s holds a well-formed share %d of %s, but the HSM cannot vouch for it now: %v.", serial, rec.Index, status, err)
	case r.ctx.Err() != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("check the card's authenticator: %w", err)
	}
	return c, nil
}

// writtenWhen says when and to which card the share was written.
func writtenWhen(c *CardCheck) string {
	var s string
	if !c.Written.IsZero() {
		s = ", written " + c.Written.UTC().Format("2006-01-02 15:04 UTC")
	}
	switch {
	case c.WrittenTo != "" && c.WrittenTo != c.Serial:
		s += fmt.Sprintf(" to card %s (this card is a copy of it)", c.WrittenTo)
	case c.WrittenTo != "" && s == "":
		s = ", written to this card"
	}
	return s
}
