package attempt

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Every ceremony that writes a share to a card asks before it overwrites what the card holds.
// A card holding a share of a set in use (the current set, a set still being issued, the set a
// copy copies from, a set of the key the HSM holds) is never overwritten on a general
// permission (the copy's Overwrite box): the operator confirms that exact loss, told which
// share of which set it is, how many of the set's shares and cards this appliance knows of then
// remain and whether the quorum is still reachable. The confirmed loss is audited.

// overwrite is what a card about to be written holds and what overwriting it means.
type overwrite struct {
	serial string
	what   string // what the card holds, in words
	// loss is set when the card holds a share of a set in use.
	loss *shareLoss
}

// shareLoss is a share of a set in use that an overwrite takes off a card.
type shareLoss struct {
	setID     string // hex
	index     int
	k, n      int
	status    string // "the current set", "set … that is still being issued", …
	lost      bool   // no other card this appliance knows of holds the share
	copies    []string
	shares    int // distinct shares of the set on the cards known, afterwards
	cards     int // cards known to hold a share of the set, afterwards
	known     bool
	reachable bool
}

// describe says the loss in words for the operator.
func (l *shareLoss) describe(serial string) string {
	var b strings.Builder
	card := "the card"
	if serial != "" {
		card = "card " + serial
	}
	fmt.Fprintf(&b, "%s holds share %d of %s (%d of %d).", card, l.index, l.status, l.k, l.n)
	switch {
	case !l.known:
		fmt.Fprintf(&b, " Overwriting it takes share %d off this card; this appliance keeps no record of the set's other cards, so it cannot tell whether another card holds that share or whether %d shares remain.", l.index, l.k)
		return b.String()
	case l.lost:
		fmt.Fprintf(&b, " Overwriting it loses share %d: no other card this appliance knows of holds it.", l.index)
	default:
		fmt.Fprintf(&b, " Share %d stays on card %s.", l.index, strings.Join(l.copies, ", "))
	}
	fmt.Fprintf(&b, " Afterwards the set's cards this appliance knows of hold %d of its %d shares (%d cards): ", l.shares, l.n, l.cards)
	if l.reachable {
		fmt.Fprintf(&b, "the quorum of %d is still reachable.", l.k)
	} else {
		fmt.Fprintf(&b, "the quorum of %d is NOT reachable any more: the key could no longer be loaded from this set's cards.", l.k)
	}
	return b.String()
}

// padText is the pad's short question for the loss (at most 64 bytes, the e-com's display).
func (l *shareLoss) padText() string {
	return fmt.Sprintf("Overwrite share %d of set in use? OK/Cancel", l.index)
}

// inspectTarget says what a card about to receive rec holds (have: its share slot, nil when
// unreadable) and, for a share of a set in use, what overwriting it loses. copying says rec is
// the share a Copy card copies (its set is in use too).
func (r *Run) inspectTarget(serial string, have []byte, rec *sharing.Record, copying bool) (*overwrite, error) {
	o := &overwrite{serial: serial, what: "data that is not a share record"}
	if have == nil {
		o.what = "data that cannot be read"
		return o, nil
	}
	old, err := sharing.Unmarshal(have)
	if err != nil {
		return o, nil
	}
	defer old.Zero()
	o.what = fmt.Sprintf("share %d of another key set (set %s, key %s)", old.Index, old.SetID.Short(), old.KeyID)
	cs, err := r.m.lookupSet(old.SetID)
	if err != nil {
		return nil, err
	}
	status := ""
	switch {
	case cs != nil && cs.Status == SetCurrent:
		status = "the current set " + old.SetID.Short()
	case cs != nil && cs.Status == SetIssuing:
		status = fmt.Sprintf("set %s, which %s #%d is still issuing", old.SetID.Short(), journal.OriginTitle(cs.Origin), cs.Ceremony)
	case copying && old.SetID == rec.SetID:
		status = "set " + old.SetID.Short() + ", the set being copied from"
	case cs == nil || cs.Status == SetFormer:
		// A set this appliance has no record of, or moved away from without retiring it: its
		// cards still load the key the HSM holds, if it is that set's key.
		if id, err := r.m.Cfg.HSM.BackupKeyID(r.ctx); err == nil && id.String() == old.KeyID.String() {
			status = fmt.Sprintf("set %s of the key this HSM holds", old.SetID.Short())
		}
	}
	if copying && old.SetID == rec.SetID && old.Index == rec.Index {
		o.what = fmt.Sprintf("a different record of share %d of the same set", old.Index)
		return o, nil // the same share is written again: nothing is lost
	}
	if status == "" {
		return o, nil
	}
	l := &shareLoss{setID: old.SetID.String(), index: old.Index, k: old.K, n: old.N, status: status}
	if cs != nil {
		l.known = true
		holders := map[int][]string{}
		for _, sh := range cs.Shares {
			holders[sh.Index] = sh.Holders()
		}
		holders[old.Index] = slices.DeleteFunc(slices.Clone(holders[old.Index]), func(s string) bool { return s == serial })
		if old.SetID == rec.SetID && !slices.Contains(holders[rec.Index], serial) {
			holders[rec.Index] = append(holders[rec.Index], serial)
		}
		l.copies = holders[old.Index]
		l.lost = len(l.copies) == 0
		cards := map[string]bool{}
		for _, hs := range holders {
			if len(hs) > 0 {
				l.shares++
			}
			for _, h := range hs {
				cards[h] = true
			}
		}
		l.cards = len(cards)
		l.reachable = l.shares >= l.k
	}
	o.loss = l
	o.what = l.describe(serial)
	return o, nil
}

// confirmOverwrite asks the custodian on the pad (or the operator on the screen) whether the
// card described by o may be overwritten. A share of a set in use is asked about even when the
// ceremony may overwrite other data without asking (box): the question names the loss, and an
// OK is audited with it.
func (r *Run) confirmOverwrite(o *overwrite, box bool) error {
	if o.loss == nil && box {
		return nil
	}
	text, detail := textOverwrite, fmt.Sprintf("card %s holds %s", o.serial, o.what)
	problem := fmt.Errorf("card %s holds %s", o.serial, o.what)
	if o.loss != nil {
		text, detail = o.loss.padText(), o.what
		problem = errors.New(o.what)
	}
	r.problem(problem, "press OK on the pad to overwrite it, or Cancel on the pad to keep it and use another card")
	err := r.waitOK(ask{step: StepConfirmWrite, text: text, detail: detail, destructive: true})
	if errors.Is(err, pinpad.ErrCancelled) && r.ctx.Err() == nil {
		return refuse(o.serial, "take it out and insert another card", "overwriting the card was %w", ErrDeclined)
	}
	if err != nil || o.loss == nil {
		return err
	}
	return r.commit(&auditSpec{event: AuditShareOverwrite, message: "overwrite confirmed: " + o.what,
		serials: []string{o.serial}, indexes: []int{o.loss.index}, setID: o.loss.setID}, nil)
}

// confirmShareTarget asks before a generation or re-issue writes rec over what a card holds
// (have; nil when unreadable). The very share about to be written (a card pulled out mid-write
// and inserted again) is written again without a question; another share of the same
// ceremony, and for a re-issue a share of the set it replaces, are refused outright.
func (r *Run) confirmShareTarget(serial string, have []byte, rec *sharing.Record) error {
	if have != nil {
		if old, err := sharing.Unmarshal(have); err == nil {
			sameSet, sameIndex, index, set := old.SetID == rec.SetID, old.Index == rec.Index, old.Index, old.SetID
			old.Zero()
			switch {
			case sameSet && sameIndex:
				return nil
			case sameSet:
				return refuse(serial, "take it out and insert another card", "this card holds share %d of this ceremony", index)
			case r.j.Kind == KindReissue && set.String() == r.j.FromSetID:
				return refuse(serial, "take it out and insert a blank card or a card of a retired set",
					"this card holds share %d of the current set %s, which must stay whole while the new set is written (an interrupted re-issue falls back to it): write the new set to other cards", index, set.Short())
			}
		}
	}
	o, err := r.inspectTarget(serial, have, rec, false)
	if err != nil {
		return err
	}
	return r.confirmOverwrite(o, false)
}
