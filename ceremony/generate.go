package ceremony

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"
)

// Pad texts of the appliance's manual (seed 003).
const (
	textWriteNewKey = "Write New Key press OK/Cancel"
	textReadNewKey  = "Read New Key press OK/Cancel"
	textReadKey     = "Read Key press OK/Cancel"
)

func insertText(i int) string { return fmt.Sprintf("Insert %d. card press OK/Cancel", i) }

// generate: MBK in memory → split → write n cards → read k back → load. A resumed Generate
// (all n cards were written before an interruption) starts at reading.
func (r *run) generate() (*result, error) {
	j := r.j
	if j.Phase == PhaseStarted {
		if err := r.writeNewKey(j.K, j.N, j.Request.Label); err != nil {
			return nil, err
		}
	}
	setID, keyID, err := r.journalIDs()
	if err != nil {
		return nil, err
	}
	return r.readAndLoad(&expectation{setID: &setID, keyID: &keyID, k: r.j.K, n: r.j.N}, textReadNewKey)
}

// writeNewKey generates the MBK, splits it and writes the n cards. The MBK is zeroed right after
// the split and the shares as soon as the last card is written: from then on the key exists
// only on the cards until it is read back.
func (r *run) writeNewKey(k, n int, label string) error {
	mbk := make([]byte, sharing.KeySize)
	if _, err := rand.Read(mbk); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	records, err := sharing.Split(mbk, k, n)
	if err != nil {
		sharing.Zero(mbk)
		return fmt.Errorf("generate key: %w", err)
	}
	defer func() {
		for _, rec := range records {
			rec.Zero()
		}
	}()
	for _, rec := range records {
		rec.Label = label
	}
	// The HSM gets the key only once the cards are read back, so the authenticators of the
	// shares are computed here, as the HSM will compute them (hsm.AuthenticatorOf), while the
	// MBK still exists.
	tags, err := authenticators(records, func(data []byte) ([]byte, error) { return hsm.AuthenticatorOf(mbk, data), nil })
	sharing.Zero(mbk)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	setID, keyID := records[0].SetID, records[0].KeyID
	now := time.Now().UTC()
	err = r.commitWith(&auditSpec{event: AuditKeyGenerated, message: fmt.Sprintf("key %s generated in memory and split %d of %d as set %s", keyID, k, n, setID)},
		func(j *Journal) { j.Phase, j.SetID, j.KeyID = PhaseWriting, setID.String(), keyID.String() },
		func(tx *bolt.Tx, j *Journal) error {
			return putSet(tx, issuingSet(j, label, OriginGenerate, tags, now))
		})
	if err != nil {
		return err
	}
	if err := r.writeCards(records, textWriteNewKey); err != nil {
		return err
	}
	return r.commit(&auditSpec{event: AuditCardsWritten, message: fmt.Sprintf("all %d cards written: reading %d of them back", n, k)},
		func(j *Journal) { j.Phase = PhaseReading })
}

// authenticators returns the hex authenticator of each record's encoding, by share index.
func authenticators(records []*sharing.Record, auth func(data []byte) ([]byte, error)) (map[int]string, error) {
	tags := make(map[int]string, len(records))
	for _, rec := range records {
		data, err := rec.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode share record: %w", err)
		}
		tag, err := auth(data)
		sharing.Zero(data)
		if err != nil {
			return nil, fmt.Errorf("authenticate share %d: %w", rec.Index, err)
		}
		tags[rec.Index] = hex.EncodeToString(tag)
	}
	return tags, nil
}

// issuingSet is the registry entry of a set a ceremony is about to write.
func issuingSet(j *Journal, label, origin string, tags map[int]string, now time.Time) *CardSet {
	cs := &CardSet{SetID: j.SetID, KeyID: j.KeyID, K: j.K, N: j.N, Label: label, Status: SetIssuing, Origin: origin,
		Created: now, Ceremony: j.ID}
	for i := 1; i <= j.N; i++ {
		if t := tags[i]; t != "" {
			cs.setShare(ShareInfo{Index: i, Authenticator: t})
		}
	}
	return cs
}

// writeCards asks for OK on confirm and writes the records, share 1 first, to the cards the
// custodians insert, zeroing each record once its card is written and verified. The last card
// stays in: a generation may read it back first, as the manual allows, and a re-issue is done
// as soon as it is verified (no wait after it could leave a complete set uncommitted).
func (r *run) writeCards(records []*sharing.Record, confirm string) error {
	n := len(records)
	r.progress(0, n)
	if err := r.retryable(func() error { return r.waitOK(StepConfirm, confirm) }); err != nil {
		return err
	}
	written := make(map[int]string, n) // share index → card serial
	for i := 1; i <= n; i++ {
		rec := records[i-1]
		if err := r.retryable(func() error { return r.writeShare(rec, written) }); err != nil {
			return err
		}
		rec.Zero()
		r.progress(len(written), n)
		if i < n {
			if err := r.retryable(r.removeCard); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeShare writes rec to a card the custodian inserts and checks it, retrying with another
// card when one is refused.
func (r *run) writeShare(rec *sharing.Record, written map[int]string) error {
	i := rec.Index
	return r.withCard(insertText(i), func(card pinpad.Card) error {
		serial := card.Serial()
		for idx, s := range written {
			if s == serial {
				return refuse(serial, "take it out and insert another card", "this card already holds share %d of this ceremony", idx)
			}
		}
		if err := r.verifyPIN(card, pinpad.SlotShare); err != nil {
			return err
		}
		data, err := rec.Marshal()
		if err != nil {
			return fmt.Errorf("encode share record: %w", err)
		}
		defer sharing.Zero(data)

		r.working(StepReadCard, "")
		have, unreadable, err := r.readSlot(card, pinpad.SlotShare)
		if err != nil {
			return err
		}
		already := have != nil && subtle.ConstantTimeCompare(have, data) == 1
		switch {
		case unreadable && r.wasWriting(serial, i):
			// This card was being written when it was pulled out (or the process stopped):
			// the half-written slot is rewritten without a question.
		case unreadable:
			if err := r.confirmOverwrite(card, nil, rec); err != nil {
				return err
			}
		case have != nil && !already:
			// A card pulled out mid-write and put back holds this share: it is rewritten
			// without a question. Anything else needs the custodian's OK.
			if err := r.confirmOverwrite(card, have, rec); err != nil {
				sharing.Zero(have)
				return err
			}
		}
		sharing.Zero(have)

		if !already {
			now := time.Now().UTC()
			if err := r.commit(&auditSpec{event: AuditCardWriting, message: fmt.Sprintf("writing share %d to card %s", i, serial), serials: []string{serial}, indexes: []int{i}},
				func(j *Journal) {
					j.setCard(CardEntry{Serial: serial, Index: i, Role: RoleShare, State: CardWriting, Time: now, Profile: profileOf(card)})
				}); err != nil {
				return err
			}
			r.working(StepWriteCard, "")
			if err := card.Write(r.ctx, pinpad.SlotShare, data); err != nil {
				return r.writeFailed(serial, i, err)
			}
		}
		back, err := card.Read(r.ctx, pinpad.SlotShare)
		if err != nil {
			return r.writeFailed(serial, i, err)
		}
		same := subtle.ConstantTimeCompare(back, data) == 1
		sharing.Zero(back)
		if !same {
			return r.writeFailed(serial, i, pinpad.ErrWriteVerify)
		}
		now := time.Now().UTC()
		msg := fmt.Sprintf("share %d written to card %s and verified", i, serial)
		if already {
			msg = fmt.Sprintf("card %s already held share %d: verified again", serial, i)
		}
		if err := r.commit(&auditSpec{event: AuditCardWritten, message: msg, serials: []string{serial}, indexes: []int{i}},
			func(j *Journal) {
				j.setCard(CardEntry{Serial: serial, Index: i, Role: RoleShare, State: CardWritten, Time: now, Profile: profileOf(card)})
				j.LastError = ""
			}); err != nil {
			return err
		}
		written[i] = serial
		return nil
	})
}

// wasWriting reports whether the journal has serial as being written with share index.
func (r *run) wasWriting(serial string, index int) bool {
	for _, c := range r.j.Cards {
		if c.Serial == serial && c.Index == index && c.Role == RoleShare && c.State == CardWriting {
			return true
		}
	}
	return false
}

// confirmOverwrite asks before a card's share slot is overwritten, unless it holds the very
// share about to be written (a card removed mid-write and inserted again).
func (r *run) confirmOverwrite(card pinpad.Card, have []byte, rec *sharing.Record) error {
	serial := card.Serial()
	what := "data that is not a share record"
	if have == nil {
		what = "data that cannot be read"
	} else if old, err := sharing.Unmarshal(have); err == nil {
		defer old.Zero()
		switch {
		case old.SetID == rec.SetID && old.Index == rec.Index:
			return nil
		case old.SetID == rec.SetID:
			return refuse(serial, "take it out and insert another card", "this card holds share %d of this ceremony", old.Index)
		case r.j.Kind == KindReissue && old.SetID.String() == r.j.FromSetID:
			return refuse(serial, "take it out and insert a blank card or a card of a retired set",
				"this card holds share %d of the current set %s, which must stay whole while the new set is written (an interrupted re-issue falls back to it): write the new set to other cards", old.Index, old.SetID.Short())
		default:
			what = fmt.Sprintf("share %d of another key set (set %s, key %s)", old.Index, old.SetID.Short(), old.KeyID)
		}
	}
	r.problem(fmt.Errorf("card %s holds %s", serial, what), "press OK on the pad to overwrite it, or Cancel on the pad to keep it and use another card")
	err := r.waitOK(StepConfirmWrite, textOverwrite)
	if errors.Is(err, pinpad.ErrCancelled) && r.ctx.Err() == nil {
		return refuse(serial, "take it out and insert another card", "overwriting the card was %w", errDeclined)
	}
	return err
}

// journalIDs returns the set and key ID the journal records.
func (r *run) journalIDs() (sharing.SetID, sharing.KeyID, error) {
	var s sharing.SetID
	var k sharing.KeyID
	sb, err1 := hex.DecodeString(r.j.SetID)
	kb, err2 := hex.DecodeString(r.j.KeyID)
	if err1 != nil || err2 != nil || len(sb) != len(s) || len(kb) != len(k) {
		return s, k, fmt.Errorf("read journal: %w: set or key id", ErrCorrupt)
	}
	copy(s[:], sb)
	copy(k[:], kb)
	return s, k, nil
}

// expectation is what the cards of a read must match. Nil fields are learnt from the first
// card.
type expectation struct {
	setID *sharing.SetID
	keyID *sharing.KeyID
	hsmID bool // keyID is the HSM's: a card of another key can never be loaded here
	k, n  int
}

// load: read k distinct cards of one set, combine, check, load into the HSM.
func (r *run) load() (*result, error) {
	exp := &expectation{}
	id, err := r.m.cfg.HSM.BackupKeyID(r.ctx)
	switch {
	case err == nil:
		k := sharing.KeyID(id)
		exp.keyID, exp.hsmID = &k, true
	case !errors.Is(err, hsm.ErrNoBackupKey):
		return nil, fmt.Errorf("ask the hsm for its key: %w", err)
	}
	if err := r.commit(nil, func(j *Journal) { j.Phase = PhaseReading }); err != nil {
		return nil, err
	}
	return r.readAndLoad(exp, textReadKey)
}

// readAndLoad reads cards until k distinct shares of one set reconstruct the key, loads it into
// the HSM and zeroes it. With a damaged card among them it reads one more card to find it.
func (r *run) readAndLoad(exp *expectation, confirm string) (*result, error) {
	records := make(map[int]*sharing.Record)
	serials := make(map[string]int) // serial → share index
	defer func() {
		for _, rec := range records {
			rec.Zero()
		}
	}()
	secret, err := r.readQuorum(exp, confirm, records, serials)
	if err != nil {
		return nil, err
	}
	defer sharing.Zero(secret)
	setID, keyID := exp.setID, *exp.keyID
	if err := r.commit(&auditSpec{event: AuditKeyLoading, message: fmt.Sprintf("key %s reconstructed from %d cards: loading it into the HSM", keyID, len(records))},
		func(j *Journal) { j.Phase = PhaseLoading }); err != nil {
		return nil, err
	}
	r.working(StepLoadKey, "")
	if err := r.m.cfg.HSM.LoadBackupKey(r.ctx, secret); err != nil {
		return nil, fmt.Errorf("load key into the hsm: %w", err)
	}
	sharing.Zero(secret)
	j := r.j
	var idx []int
	var sers []string
	for s, i := range serials {
		sers = append(sers, s)
		idx = append(idx, i)
	}
	outcome := fmt.Sprintf("Key %s loaded into the HSM from %d cards (set %s).", keyID, len(records), setID.Short())
	if j.Kind == KindGenerate {
		outcome = fmt.Sprintf("Key generation finished: %d cards written, %d read back, key %s loaded into the HSM.", j.N, len(records), keyID)
	}
	res := &result{
		outcome: outcome,
		keyset:  keySetOf(j),
		audits: []AuditEntry{{Event: AuditKeyLoaded, Message: fmt.Sprintf("key %s loaded into the HSM", keyID),
			Serials: sers, Indexes: idx}},
	}
	if j.Kind == KindLoad {
		// The HSM now holds the key: it authenticates the shares read, so that the card set
		// registry can vouch for these cards in a card check (a set made elsewhere, or an
		// appliance whose journal was lost, learns them here).
		for _, rec := range records {
			res.setLabel = rec.Label
			break
		}
		res.setTags = r.loadedAuthenticators(records)
	}
	return res, nil
}

// loadedAuthenticators has the HSM authenticate the records read; a record it cannot
// authenticate is left without (the card check then says so), the load succeeds anyway.
func (r *run) loadedAuthenticators(records map[int]*sharing.Record) map[int]string {
	auth, ok := r.m.cfg.HSM.(hsm.Authenticator)
	if !ok {
		return nil
	}
	list := make([]*sharing.Record, 0, len(records))
	for _, rec := range records {
		list = append(list, rec)
	}
	tags, err := authenticators(list, func(data []byte) ([]byte, error) { return auth.Authenticate(r.ctx, data) })
	if err != nil {
		r.m.log.Warn("authenticate the shares read", "ceremony", r.j.ID, "err", err)
		return nil
	}
	return tags
}

// readQuorum reads cards until k distinct shares of one set reconstruct the key and returns it
// (the caller zeroes it); records and serials collect what was read (the caller zeroes the
// records). With a damaged card among them it reads one more card to find it. The key's ID is
// checked against exp.
func (r *run) readQuorum(exp *expectation, confirm string, records map[int]*sharing.Record, serials map[string]int) ([]byte, error) {
	if err := r.retryable(func() error { return r.waitOK(StepConfirm, confirm) }); err != nil {
		return nil, err
	}
	need := exp.k
	r.progress(0, need)
	var secret []byte
	for secret == nil {
		for need == 0 || len(records) < need {
			if len(records) > 0 {
				if err := r.retryable(r.removeCard); err != nil {
					return nil, err
				}
			}
			if err := r.retryable(func() error { return r.readShare(exp, records, serials) }); err != nil {
				return nil, err
			}
			if need == 0 {
				need = exp.k
			}
			r.progress(len(records), need)
		}
		r.working(StepCombine, "")
		list := make([]*sharing.Record, 0, len(records))
		for _, rec := range records {
			list = append(list, rec)
		}
		s, err := sharing.Combine(list)
		var bad *sharing.BadShareError
		switch {
		case err == nil:
			secret = s
		case errors.Is(err, sharing.ErrKeyIDMismatch):
			if len(records) >= exp.n {
				return nil, fmt.Errorf("combine shares: %w", err)
			}
			need = len(records) + 1
			r.problem(err, fmt.Sprintf("insert one more card of the set (%d more needed)", need-len(records)))
		case errors.As(err, &bad):
			for _, idx := range bad.Indexes {
				if err := r.dropDamaged(records, serials, idx); err != nil {
					return nil, err
				}
			}
			need = exp.k // the records left are good: k of them are enough
			hint := "set the damaged card aside: the other cards read are enough"
			if need > len(records) {
				hint = fmt.Sprintf("set the damaged card aside and insert another card of the set (%d more needed)", need-len(records))
			}
			r.problem(err, hint)
		default:
			return nil, fmt.Errorf("combine shares: %w", err)
		}
	}
	if got := sharing.KeyIDOf(secret); got != *exp.keyID {
		sharing.Zero(secret)
		return nil, fmt.Errorf("combine shares: %w", sharing.ErrKeyIDMismatch)
	}
	return secret, nil
}

// readShare reads one card of the set and adds its record, refusing (and naming why) a card
// read before, a copy of a share read before, a card of another set or key, an empty card or a
// damaged record.
func (r *run) readShare(exp *expectation, records map[int]*sharing.Record, serials map[string]int) error {
	return r.withCard(insertText(len(records)+1), func(card pinpad.Card) error {
		serial := card.Serial()
		if idx, ok := serials[serial]; ok {
			return refuse(serial, "take it out and insert a different card of the set", "this card was already read (share %d)", idx)
		}
		if err := r.verifyPIN(card, pinpad.SlotShare); err != nil {
			return err
		}
		r.working(StepReadCard, "")
		data, err := card.Read(r.ctx, pinpad.SlotShare)
		switch {
		case errors.Is(err, pinpad.ErrEmpty):
			return refuse(serial, "take it out and insert a card of the set", "this card holds no backup key share")
		case err != nil && !padCondition(err) && r.ctx.Err() == nil:
			return refuse(serial, "take it out and insert another card of the set", "the card's share slot cannot be read: %w", err)
		case err != nil:
			return err
		}
		rec, err := sharing.Unmarshal(data)
		sharing.Zero(data)
		if err != nil {
			return refuse(serial, "take it out and insert another card of the set", "%w", err)
		}
		keep := false
		defer func() {
			if !keep {
				rec.Zero()
			}
		}()
		if err := r.refuseRetired(serial, rec); err != nil {
			return err
		}
		switch {
		case exp.setID != nil && rec.SetID != *exp.setID:
			if exp.keyID != nil && rec.KeyID == *exp.keyID {
				return refuse(serial, "take it out and insert a card of the set being read", "this card holds share %d of another card set (set %s) of the same key: cards of two sets cannot be combined; this read uses set %s", rec.Index, rec.SetID.Short(), exp.setID.Short())
			}
			return refuse(serial, "take it out and insert a card of the set being read", "this card holds share %d of set %s (key %s), not of set %s", rec.Index, rec.SetID.Short(), rec.KeyID, exp.setID.Short())
		case exp.keyID != nil && rec.KeyID != *exp.keyID:
			if exp.hsmID {
				return refuse(serial, "take it out and insert a card of the key this HSM holds", "this card holds a share of key %s, but the HSM holds key %s", rec.KeyID, *exp.keyID)
			}
			return refuse(serial, "take it out and insert a card of the set being read", "this card holds a share of key %s, not of key %s", rec.KeyID, *exp.keyID)
		case records[rec.Index] != nil:
			other := ""
			for s, i := range serials {
				if i == rec.Index {
					other = s
				}
			}
			return refuse(serial, "take it out and insert a different card of the set", "share %d was already read from card %s: this card is a copy of it", rec.Index, other)
		case exp.k != 0 && (rec.K != exp.k || rec.N != exp.n):
			return refuse(serial, "take it out and insert a card of the set being read", "this card claims a %d of %d set, the set being read is %d of %d: it is damaged", rec.K, rec.N, exp.k, exp.n)
		}
		now := time.Now().UTC()
		first := exp.setID == nil
		if err := r.commit(&auditSpec{event: AuditCardRead, message: fmt.Sprintf("share %d of set %s read from card %s", rec.Index, rec.SetID.Short(), serial), serials: []string{serial}, indexes: []int{rec.Index}},
			func(j *Journal) {
				switch {
				case first && j.Kind == KindReissue:
					j.FromSetID, j.KeyID, j.FromK, j.FromN = rec.SetID.String(), rec.KeyID.String(), rec.K, rec.N
				case first:
					j.SetID, j.KeyID, j.K, j.N = rec.SetID.String(), rec.KeyID.String(), rec.K, rec.N
				}
				j.setCard(CardEntry{Serial: serial, Index: rec.Index, Role: RoleRead, State: CardRead, Time: now, Profile: profileOf(card)})
				j.LastError = ""
			}); err != nil {
			return err
		}
		if first {
			s, k := rec.SetID, rec.KeyID
			exp.setID, exp.keyID, exp.k, exp.n = &s, &k, rec.K, rec.N
		}
		records[rec.Index] = rec
		serials[serial] = rec.Index
		keep = true
		return nil
	})
}

// dropDamaged takes the record with share index idx out of the read and records its card as
// refused.
func (r *run) dropDamaged(records map[int]*sharing.Record, serials map[string]int, idx int) error {
	rec := records[idx]
	if rec == nil {
		return nil
	}
	rec.Zero()
	delete(records, idx)
	serial := ""
	for s, i := range serials {
		if i == idx {
			serial = s
		}
	}
	delete(serials, serial)
	now := time.Now().UTC()
	return r.commit(&auditSpec{event: AuditCardRefused, message: fmt.Sprintf("card %s holds a damaged share %d: set aside", serial, idx), serials: []string{serial}, indexes: []int{idx}},
		func(j *Journal) {
			for k, c := range j.Cards {
				if c.Serial == serial && c.Role == RoleRead && c.Attempt == j.Attempt {
					j.Cards[k].State, j.Cards[k].Note = CardRefused, "damaged share"
				}
			}
			j.Cards = append(j.Cards, CardEntry{Serial: serial, Index: idx, Role: RoleRefused, State: CardRefused, Attempt: j.Attempt, Time: now, Note: "damaged share"})
		})
}
