package attempt

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/internal/secmem"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	. "github.com/keyquorum/keyquorum/ceremony/internal/api"
	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Pad texts of the appliance's manual (seed 003).
const (
	textWriteNewKey = "Write New Key press OK/Cancel"
	TextReadNewKey  = "Read New Key press OK/Cancel"
	textReadKey     = "Read Key press OK/Cancel"
)

func insertText(i int) string { return fmt.Sprintf("Insert %d. card press OK/Cancel", i) }

// generate: MBK in memory → split → write n cards → read k back → load. A resumed Generate
// (all n cards were written before an interruption) starts at reading.
func (r *Run) generate() (*result, error) {
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
	return r.readAndLoad(&expectation{setID: &setID, keyID: &keyID, k: r.j.K, n: r.j.N}, TextReadNewKey)
}

// writeNewKey generates the MBK, splits it and writes the n cards. The MBK is zeroed right after
// the split and the shares as soon as the last card is written: from then on the key exists
// only on the cards until it is read back.
func (r *Run) writeNewKey(k, n int, label string) error {
	buf := secmem.New(sharing.KeySize) // locked memory (the shares too: sharing.Split)
	defer buf.Free()
	mbk := buf.Bytes()
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
			return journal.PutSet(tx, issuingSet(j, label, OriginGenerate, tags, now))
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
			cs.SetShare(ShareInfo{Index: i, Authenticator: t})
		}
	}
	return cs
}

// writeCards asks for OK on confirm and writes the records, share 1 first, to the cards the
// custodians insert, zeroing each record once its card is written and verified. The last card
// stays in: a generation may read it back first, as the manual allows, and a re-issue is done
// as soon as it is verified (no wait after it could leave a complete set uncommitted).
func (r *Run) writeCards(records []*sharing.Record, confirm string) error {
	n := len(records)
	r.progress(0, n)
	if err := r.retryable(func() error { return r.waitOK(ask{step: StepConfirm, text: confirm}) }); err != nil {
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
func (r *Run) writeShare(rec *sharing.Record, written map[int]string) error {
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
			if err := r.confirmShareTarget(serial, nil, rec); err != nil {
				return err
			}
		case have != nil && !already:
			// A card pulled out mid-write and put back holds this share: it is rewritten
			// without a question. Anything else needs the custodian's OK.
			if err := r.confirmShareTarget(serial, have, rec); err != nil {
				sharing.Zero(have)
				return err
			}
		}
		sharing.Zero(have)

		if !already {
			now := time.Now().UTC()
			if err := r.commitWith(&auditSpec{event: AuditCardWriting, message: fmt.Sprintf("writing share %d to card %s", i, serial), serials: []string{serial}, indexes: []int{i}},
				func(j *Journal) {
					j.SetCard(CardEntry{Serial: serial, Index: i, Role: RoleShare, State: CardWriting, Time: now, Profile: profileOf(card)})
				}, func(tx *bolt.Tx, _ *Journal) error { return journal.ForgetCard(tx, serial) }); err != nil {
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
				j.SetCard(CardEntry{Serial: serial, Index: i, Role: RoleShare, State: CardWritten, Time: now, Profile: profileOf(card)})
				j.LastError = ""
			}); err != nil {
			return err
		}
		written[i] = serial
		return nil
	})
}

// wasWriting reports whether the journal has serial as being written with share index.
func (r *Run) wasWriting(serial string, index int) bool {
	for _, c := range r.j.Cards {
		if c.Serial == serial && c.Index == index && c.Role == RoleShare && c.State == CardWriting {
			return true
		}
	}
	return false
}

// journalIDs returns the set and key ID the journal records.
func (r *Run) journalIDs() (sharing.SetID, sharing.KeyID, error) {
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

// expectation is what the cards of a read must match. Nil fields accept any: a Load of an
// HSM without a key takes cards of any set and finishes with the first set whose quorum is read.
type expectation struct {
	setID *sharing.SetID
	keyID *sharing.KeyID
	hsmID bool // keyID is the HSM's: a card of another key can never be loaded here
	k, n  int
}

// load: read k distinct cards of one set, combine, check, load into the HSM.
func (r *Run) load() (*result, error) {
	exp := &expectation{}
	id, err := r.m.Cfg.HSM.BackupKeyID(r.ctx)
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

// readGroup is what a read accepted of one card set.
type readGroup struct {
	setID   sharing.SetID
	keyID   sharing.KeyID
	k, n    int
	label   string
	need    int // cards to combine: k, one more while a damaged card hides among them
	records map[int]*sharing.Record
	serials map[string]int // serial → share index
}

func (g *readGroup) left() int { return max(g.need-len(g.records), 0) }

// reading is what a read accepted so far, per card set, in the order the sets were first seen.
type reading struct{ groups []*readGroup }

func (rd *reading) group(id sharing.SetID) *readGroup {
	for _, g := range rd.groups {
		if g.setID == id {
			return g
		}
	}
	return nil
}

func (rd *reading) cards() int {
	n := 0
	for _, g := range rd.groups {
		n += len(g.records)
	}
	return n
}

// read returns the share index and set of a card read before.
func (rd *reading) read(serial string) (int, *readGroup, bool) {
	for _, g := range rd.groups {
		if i, ok := g.serials[serial]; ok {
			return i, g, true
		}
	}
	return 0, nil, false
}

// complete returns a set whose needed cards were read.
func (rd *reading) complete() *readGroup {
	for _, g := range rd.groups {
		if len(g.records) > 0 && g.left() == 0 {
			return g
		}
	}
	return nil
}

// leader is the set closest to its quorum (the first seen among equals): the one the progress
// counts and the hints speak of.
func (rd *reading) leader() *readGroup {
	var best *readGroup
	for _, g := range rd.groups {
		if best == nil || g.left() < best.left() {
			best = g
		}
	}
	return best
}

// progress is each set's progress, for the event; nil while one set was seen.
func (rd *reading) progress() []SetProgress {
	if len(rd.groups) < 2 {
		return nil
	}
	out := make([]SetProgress, 0, len(rd.groups))
	for _, g := range rd.groups {
		out = append(out, SetProgress{SetID: g.setID.String(), Label: g.label, Read: len(g.records), K: g.need})
	}
	return out
}

// summary says each set's progress: "set 1a2b3c4d…: 1 of 2, set 5e6f7a8b…: 2 of 3".
func (rd *reading) summary() string {
	var parts []string
	for _, g := range rd.groups {
		parts = append(parts, fmt.Sprintf("set %s: %d of %d", g.setID.Short(), len(g.records), g.need))
	}
	return strings.Join(parts, ", ")
}

func (rd *reading) zero() {
	for _, g := range rd.groups {
		for _, rec := range g.records {
			rec.Zero()
		}
	}
}

// readAndLoad reads cards until k distinct shares of one set reconstruct the key, loads it into
// the HSM and zeroes it. With a damaged card among them it reads one more card to find it.
func (r *Run) readAndLoad(exp *expectation, confirm string) (*result, error) {
	rd := &reading{}
	defer rd.zero()
	buf, g, err := r.readQuorum(exp, confirm, rd)
	if err != nil {
		return nil, err
	}
	defer buf.Free()
	secret := buf.Bytes()
	keyID := g.keyID
	if err := r.commit(&auditSpec{event: AuditKeyLoading, message: fmt.Sprintf("key %s reconstructed from %d cards of set %s: loading it into the HSM", keyID, len(g.records), g.setID.Short())},
		func(j *Journal) {
			j.Phase = PhaseLoading
			if j.Kind == KindLoad {
				j.SetID, j.KeyID, j.K, j.N = g.setID.String(), g.keyID.String(), g.k, g.n
			}
		}); err != nil {
		return nil, err
	}
	r.working(StepLoadKey, "")
	if err := r.m.Cfg.HSM.LoadBackupKey(r.ctx, secret); err != nil {
		return nil, fmt.Errorf("load key into the hsm: %w", err)
	}
	sharing.Zero(secret)
	j := r.j
	var idx []int
	var sers []string
	for s, i := range g.serials {
		sers = append(sers, s)
		idx = append(idx, i)
	}
	outcome := fmt.Sprintf("Key %s loaded into the HSM from %d cards (set %s).", keyID, len(g.records), g.setID.Short())
	if len(rd.groups) > 1 {
		outcome += fmt.Sprintf(" Cards read: %s — done with set %s.", rd.summary(), g.setID.Short())
	}
	if j.Kind == KindGenerate {
		outcome = fmt.Sprintf("Key generation finished: %d cards written, %d read back, key %s loaded into the HSM.", j.N, len(g.records), keyID)
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
		// appliance whose journal was lost, learns them here). The set keeps the label its
		// cards carry.
		res.setLabel = g.label
		res.keyset.Label = g.label
		res.setTags = r.loadedAuthenticators(g.records)
	}
	return res, nil
}

// loadedAuthenticators has the HSM authenticate the records read; a record it cannot
// authenticate is left without (the card check then says so), the load succeeds anyway.
func (r *Run) loadedAuthenticators(records map[int]*sharing.Record) map[int]string {
	auth, ok := r.m.Cfg.HSM.(hsm.Authenticator)
	if !ok {
		return nil
	}
	list := make([]*sharing.Record, 0, len(records))
	for _, rec := range records {
		list = append(list, rec)
	}
	tags, err := authenticators(list, func(data []byte) ([]byte, error) { return auth.Authenticate(r.ctx, data) })
	if err != nil {
		r.m.Log.Warn("authenticate the shares read", "ceremony", r.j.ID, "err", err)
		return nil
	}
	return tags
}

// showReading publishes how far the read got: the leading set's cards of its quorum, and each
// set's when cards of several were read.
func (r *Run) showReading(rd *reading) {
	done, total := 0, r.j.K
	if g := rd.leader(); g != nil {
		done, total = len(g.records), g.need
	}
	r.emit(EventProgress, func(ev *Event) { ev.CardsDone, ev.CardsTotal, ev.Sets = done, total, rd.progress() })
}

// readQuorum reads cards until k distinct shares of one set reconstruct the key and returns it,
// in locked memory (the caller frees it), with that set's group; rd collects what was read (the
// caller zeroes it). Cards of several sets may be read (when exp names no set): each set
// collects its own, and the first set to reach its quorum ends the read, so a foreign first card
// never locks out the others. With a damaged card among a set's cards it reads one more card of
// that set to find it. The key's ID is checked against exp.
func (r *Run) readQuorum(exp *expectation, confirm string, rd *reading) (*secmem.Buf, *readGroup, error) {
	// Nothing is read yet: the counter the writing left behind must not show on this prompt.
	r.emit(EventProgress, func(ev *Event) { ev.CardsDone, ev.CardsTotal, ev.Sets = 0, exp.k, nil })
	if err := r.retryable(func() error { return r.waitOK(ask{step: StepConfirm, text: confirm}) }); err != nil {
		return nil, nil, err
	}
	for {
		g := rd.complete()
		if g == nil {
			if rd.cards() > 0 {
				if err := r.retryable(r.removeCard); err != nil {
					return nil, nil, err
				}
			}
			if err := r.retryable(func() error { return r.readShare(exp, rd) }); err != nil {
				return nil, nil, err
			}
			r.showReading(rd)
			continue
		}
		r.working(StepCombine, "")
		list := make([]*sharing.Record, 0, len(g.records))
		for _, rec := range g.records {
			list = append(list, rec)
		}
		secret, err := sharing.Combine(list)
		var bad *sharing.BadShareError
		switch {
		case err == nil:
			if sharing.KeyIDOf(secret) != g.keyID || (exp.keyID != nil && g.keyID != *exp.keyID) {
				sharing.Zero(secret)
				return nil, nil, fmt.Errorf("combine shares: %w", sharing.ErrKeyIDMismatch)
			}
			// Into locked memory: a re-issue keeps the key while the operator swaps cards.
			buf := secmem.Clone(secret)
			sharing.Zero(secret)
			return buf, g, nil
		case errors.Is(err, sharing.ErrKeyIDMismatch):
			if len(g.records) >= g.n {
				return nil, nil, fmt.Errorf("combine shares: %w", err)
			}
			g.need = len(g.records) + 1
			r.showReading(rd)
			r.problem(err, fmt.Sprintf("insert one more card of set %s (%d more needed)", g.setID.Short(), g.left()))
		case errors.As(err, &bad):
			for _, idx := range bad.Indexes {
				if err := r.dropDamaged(g.records, g.serials, idx); err != nil {
					return nil, nil, err
				}
			}
			g.need = g.k // the records left are good: k of them are enough
			r.showReading(rd)
			hint := "set the damaged card aside: the other cards read are enough"
			if g.left() > 0 {
				hint = fmt.Sprintf("set the damaged card aside and insert another card of set %s (%d more needed)", g.setID.Short(), g.left())
			}
			r.problem(err, hint)
		default:
			return nil, nil, fmt.Errorf("combine shares: %w", err)
		}
	}
}

// readShare reads one card and adds its record to its set's group, refusing (and naming why) a
// card read before, a copy of a share read before, a card of a set or key the read cannot use,
// an empty card or a damaged record.
func (r *Run) readShare(exp *expectation, rd *reading) error {
	return r.withCard(insertText(rd.cards()+1), func(card pinpad.Card) error {
		serial := card.Serial()
		if idx, g, ok := rd.read(serial); ok {
			return refuse(serial, "take it out and insert a different card of the set", "this card was already read (share %d of set %s)", idx, g.setID.Short())
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
		g := rd.group(rec.SetID)
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
		case g != nil && g.records[rec.Index] != nil:
			other := ""
			for s, i := range g.serials {
				if i == rec.Index {
					other = s
				}
			}
			return refuse(serial, "take it out and insert a different card of the set", "share %d was already read from card %s: this card is a copy of it", rec.Index, other)
		case exp.k != 0 && (rec.K != exp.k || rec.N != exp.n):
			return refuse(serial, "take it out and insert a card of the set being read", "this card claims a %d of %d set, the set being read is %d of %d: it is damaged", rec.K, rec.N, exp.k, exp.n)
		case g != nil && (rec.K != g.k || rec.N != g.n || rec.KeyID != g.keyID):
			return refuse(serial, "take it out and insert another card of the set", "this card claims a %d of %d set of key %s, but the cards of set %s read are %d of %d of key %s: it is damaged", rec.K, rec.N, rec.KeyID, rec.SetID.Short(), g.k, g.n, g.keyID)
		}
		added := g == nil
		if added {
			g = &readGroup{setID: rec.SetID, keyID: rec.KeyID, k: rec.K, n: rec.N, label: rec.Label, need: rec.K,
				records: map[int]*sharing.Record{}, serials: map[string]int{}}
			rd.groups = append(rd.groups, g)
		}
		g.records[rec.Index] = rec
		g.serials[serial] = rec.Index
		lead := rd.leader()
		now := time.Now().UTC()
		msg := fmt.Sprintf("share %d of set %s read from card %s", rec.Index, rec.SetID.Short(), serial)
		if len(rd.groups) > 1 {
			msg += " (" + rd.summary() + ")"
		}
		if err := r.commit(&auditSpec{event: AuditCardRead, message: msg, serials: []string{serial}, indexes: []int{rec.Index}},
			func(j *Journal) {
				// The journal names the set closest to its quorum: the one an interruption's
				// outcome counts the cards of.
				if j.Kind == KindReissue {
					j.FromSetID, j.KeyID, j.FromK, j.FromN = lead.setID.String(), lead.keyID.String(), lead.k, lead.n
				} else {
					j.SetID, j.KeyID, j.K, j.N = lead.setID.String(), lead.keyID.String(), lead.k, lead.n
				}
				j.SetCard(CardEntry{Serial: serial, Index: rec.Index, SetID: rec.SetID.String(), Role: RoleRead, State: CardRead, Time: now, Profile: profileOf(card)})
				j.LastError = ""
			}); err != nil {
			delete(g.records, rec.Index)
			delete(g.serials, serial)
			if added {
				rd.groups = rd.groups[:len(rd.groups)-1]
			}
			return err
		}
		keep = true
		if len(rd.groups) > 1 {
			r.m.Log.Info("cards of several sets read", "ceremony", r.j.ID, "sets", rd.summary())
		}
		return nil
	})
}

// dropDamaged takes the record with share index idx out of the read and records its card as
// refused.
func (r *Run) dropDamaged(records map[int]*sharing.Record, serials map[string]int, idx int) error {
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
