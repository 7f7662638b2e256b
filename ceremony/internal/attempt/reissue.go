package attempt

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/sharing"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// textWriteNewSet asks for OK before the cards of a re-issued set are written; the key is not
// new, the set is.
const textWriteNewSet = "Write New Set press OK/Cancel"

// reissue replaces the current card set without changing the key: read k cards of the current
// set, reconstruct the MBK, check it against the HSM's key ID, split it again with a new set ID
// and the requested k-of-n, write and verify the n new cards. commitEnd then makes the new set
// current and retires the old one in one transaction; until then the old set is current and
// whole (its cards are refused as targets of the new shares), so an interrupted re-issue loses
// nothing.
func (r *Run) reissue() (*result, error) {
	id, err := r.m.Cfg.HSM.BackupKeyID(r.ctx)
	switch {
	case errors.Is(err, hsm.ErrNoBackupKey):
		return nil, ErrNoKey
	case err != nil:
		return nil, fmt.Errorf("ask the hsm for its key: %w", err)
	}
	keyID := sharing.KeyID(id)
	exp := &expectation{keyID: &keyID, hsmID: true}
	cur, err := r.m.CurrentSet()
	if err != nil {
		return nil, err
	}
	if cur != nil && cur.KeyID != keyID.String() {
		cur = nil // a set of another key: the cards read tell which set is the HSM's
	}
	if cur != nil {
		b, _ := hex.DecodeString(cur.SetID) // checked when the registry was read
		var sid sharing.SetID
		copy(sid[:], b)
		exp.setID, exp.k, exp.n = &sid, cur.K, cur.N
	}
	if err := r.commit(nil, func(j *Journal) {
		j.Phase, j.KeyID = PhaseReading, keyID.String()
		if cur != nil {
			j.FromSetID, j.FromK, j.FromN = cur.SetID, cur.K, cur.N
		}
	}); err != nil {
		return nil, err
	}

	rd := &reading{}
	defer rd.zero()
	buf, g, err := r.readQuorum(exp, textReadKey, rd)
	if err != nil {
		return nil, err
	}
	defer buf.Free()
	secret := buf.Bytes()
	label := r.j.Request.Label
	if label == "" {
		label = g.label
	}
	fromSet, fromK, fromN := g.setID.String(), g.k, g.n
	rd.zero()
	// The last card read belongs to the set being replaced: out with it before a new card goes in.
	if err := r.retryable(r.removeCard); err != nil {
		return nil, err
	}

	r.working(StepSplit, "")
	k, n := r.j.Request.K, r.j.Request.N
	fresh, err := sharing.Split(secret, k, n)
	if err != nil {
		return nil, fmt.Errorf("split key: %w", err)
	}
	defer func() {
		for _, rec := range fresh {
			rec.Zero()
		}
	}()
	for _, rec := range fresh {
		rec.Label = label
	}
	// Before any card is touched: the new set gives back this very key.
	back, err := sharing.Combine(fresh[:k])
	same := err == nil && subtle.ConstantTimeCompare(back, secret) == 1
	sharing.Zero(back)
	if !same {
		return nil, fmt.Errorf("split key: the new shares do not reconstruct the key (%v)", err)
	}
	tags, err := r.reissueAuthenticators(fresh, secret)
	sharing.Zero(secret)
	if err != nil {
		return nil, err
	}
	setID := fresh[0].SetID
	from := fromSet
	now := time.Now().UTC()
	err = r.commitWith(&auditSpec{event: AuditSetSplit, message: fmt.Sprintf("key %s split again %d of %d as set %s, to replace set %s (%d of %d)", keyID, k, n, setID.Short(), journal.Short(from), fromK, fromN)},
		func(j *Journal) {
			j.Phase, j.SetID, j.K, j.N = PhaseWriting, setID.String(), k, n
			j.FromSetID, j.FromK, j.FromN = fromSet, fromK, fromN
			j.Request.Label = label // what the new cards carry: the old set's label unless another was asked for
		},
		func(tx *bolt.Tx, j *Journal) error {
			return journal.PutSet(tx, issuingSet(j, label, OriginReissue, tags, now))
		})
	if err != nil {
		return nil, err
	}
	if err := r.writeCards(fresh, textWriteNewSet); err != nil {
		return nil, err
	}
	return &result{
		outcome: fmt.Sprintf("Card set re-issued: set %s (%d of %d) is written to %d cards and is now current; set %s (%d of %d) is retired and its cards are refused. The key (%s) did not change: every backup stays restorable. Collect the old cards and overwrite or destroy them: they still hold shares of the key.",
			setID.Short(), k, n, n, journal.Short(from), r.j.FromK, r.j.FromN, keyID),
		keyset: keySetOf(r.j),
		audits: []AuditEntry{{Event: AuditSetRetired, SetID: from,
			Message: fmt.Sprintf("set %s retired by the re-issue: set %s is current, the retired set's cards are refused", journal.Short(from), setID.Short())}},
	}, nil
}

// reissueAuthenticators has the HSM authenticate the new records. A token whose MBK an older
// keyquorum loaded has no authenticator key: loading the same key again (secret, just checked
// against the HSM's key ID, so nothing changes) makes it.
func (r *Run) reissueAuthenticators(records []*sharing.Record, secret []byte) (map[int]string, error) {
	auth, ok := r.m.Cfg.HSM.(hsm.Authenticator)
	if !ok {
		r.m.Log.Warn("the hsm cannot authenticate share records: card checks of the new set cannot vouch for its cards", "ceremony", r.j.ID)
		return nil, nil
	}
	sign := func(data []byte) ([]byte, error) { return auth.Authenticate(r.ctx, data) }
	tags, err := authenticators(records, sign)
	if errors.Is(err, hsm.ErrNoAuthenticatorKey) {
		if err := r.m.Cfg.HSM.LoadBackupKey(r.ctx, secret); err != nil {
			return nil, fmt.Errorf("load the key again for its authenticator key: %w", err)
		}
		tags, err = authenticators(records, sign)
	}
	return tags, err
}

// classifyReissue: a re-issue that did not finish leaves the old set current. One interrupted
// once all n new cards were written and verified is finished instead: the new set is complete
// and the journal and registry hold all of it.
func classifyReissue(j *Journal, e ending, what string) ending {
	from := "the card set in use"
	if j.FromSetID != "" {
		from = "set " + journal.Short(j.FromSetID)
	}
	written := serialsOf(j, RoleShare, CardWritten)
	busy := serialsOf(j, RoleShare, CardWriting)
	touched := serialsOf(j, RoleShare, CardWriting, CardWritten)
	switch {
	case j.Phase == PhaseWriting && e.status == StatusInterrupted && j.N > 0 && countWritten(j) == j.N:
		e.status, e.lastErr = StatusDone, ""
		e.outcome = fmt.Sprintf("Card set re-issue finished: all %d new cards were written and verified just before the interruption. Set %s (%d of %d) is current; %s is retired and its cards are refused. The key (%s) did not change.",
			j.N, journal.Short(j.SetID), j.K, j.N, from, j.KeyID)
		e.keyset = keySetOf(j)
		e.audits = []AuditEntry{{Event: AuditSetRetired, SetID: j.FromSetID,
			Message: fmt.Sprintf("%s retired by the re-issue: set %s is current, the retired set's cards are refused", from, journal.Short(j.SetID))}}
	case j.Phase == PhaseWriting && len(touched) > 0:
		var which []string
		if len(written) > 0 {
			which = append(which, "the new cards written ("+strings.Join(written, ", ")+")")
		}
		if len(busy) > 0 {
			which = append(which, "the card that was being written ("+strings.Join(busy, ", ")+")")
		}
		e.outcome = fmt.Sprintf("Card set re-issue %s while writing the new cards (%d of %d written). The key did not change and %s stays current: its cards stay valid. %s hold shares of set %s, which was abandoned: they are refused from now on, and a new re-issue may overwrite them.",
			what, len(written), j.N, from, capitalize(strings.Join(which, " and ")), journal.Short(j.SetID))
		e.unusable = touched
	default:
		e.outcome = fmt.Sprintf("Card set re-issue %s before any new card was written. Nothing changed: %s stays current.", what, from)
	}
	return e
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// countWritten counts the distinct share indexes written and verified in the current attempt.
func countWritten(j *Journal) int {
	seen := map[int]bool{}
	for _, c := range j.Cards {
		if c.Role == RoleShare && c.State == CardWritten && c.Attempt == j.Attempt {
			seen[c.Index] = true
		}
	}
	return len(seen)
}
