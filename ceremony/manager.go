package ceremony

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/sharing"

	"github.com/keyquorum/keyquorum/ceremony/internal/api"
	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Manager runs ceremonies, one at a time, and answers for their journal and audit log. Its
// methods are safe for concurrent use.
type Manager struct {
	h attempt.Host // the devices, the journal, the events and the current attempt (under h.Mu)
}

// SystemOperator is the operator name of entries the Manager makes by itself (recovery at Open).
const SystemOperator = "keyquorum"

// Open opens (or creates) the journal in cfg.Dir and classifies a ceremony that was running
// when the process last stopped; [Manager.Overview] reports what it requires.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Dir == "" || cfg.Pad == nil || cfg.HSM == nil {
		return nil, errors.New("open ceremony manager: data dir, pad and hsm are required")
	}
	cfg.Timeouts = cfg.Timeouts.WithDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := journal.Open(cfg.Dir)
	if err != nil {
		return nil, err
	}
	m := &Manager{h: attempt.Host{Cfg: cfg, St: st, Log: log, Events: api.NewBroker()}}
	st.OnAudit = m.logAudit
	ak := hsmAuditKey{h: cfg.HSM, log: log}
	st.Key, st.Warn = ak, ak.warn
	if err := m.recordUpgrade(); err != nil {
		st.Close()
		return nil, err
	}
	if err := m.recover(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return m, nil
}

// recordUpgrade records in the audit log that the journal was migrated at this start. From a
// schema before 4 this is also where the log's authentication starts when the HSM holds a key
// (the append is authenticated, with an audit.keyed entry): the entries before carry no MAC,
// which a verification then reports instead of failing on them.
func (m *Manager) recordUpgrade() error {
	from := m.h.St.MigratedFrom
	if from == 0 {
		return nil
	}
	msg := fmt.Sprintf("The ceremony journal was upgraded from schema %d to %d.", from, journal.SchemaVersion)
	if from < 4 {
		msg += " Audit entries before this one carry no MAC: keyquorum authenticates its audit log from schema 4 on."
	}
	e := &AuditEntry{Time: time.Now().UTC(), Operator: SystemOperator, Event: journal.AuditJournalUpgraded, Message: msg}
	if err := m.h.St.Update(func(tx *bolt.Tx) error { return journal.AppendAudit(tx, e) }); err != nil {
		return fmt.Errorf("record the journal upgrade: %w", err)
	}
	return nil
}

// Close stops a running ceremony (it is journaled as interrupted, exactly as if the process had
// died, and classified the same way), closes every subscription and the journal.
func (m *Manager) Close() error {
	m.h.Mu.Lock()
	if m.h.Closed {
		m.h.Mu.Unlock()
		return nil
	}
	m.h.Closed = true
	cur := m.h.Cur
	m.h.Mu.Unlock()
	if cur != nil {
		cur.Cancel(ErrStopped)
		<-cur.Done
	}
	m.h.Events.Close()
	return m.h.St.Close()
}

// logAudit writes a committed audit entry as one structured log line, so that a log shipper sees
// every audit-worthy event without reading the journal. Entries hold no secret (audit.go).
func (m *Manager) logAudit(e AuditEntry) {
	attrs := []any{
		slog.String("audit_event", e.Event), slog.Uint64("audit_seq", e.Seq), slog.String("operator", e.Operator),
	}
	if e.Ceremony != 0 {
		attrs = append(attrs, slog.Uint64("ceremony", e.Ceremony), slog.String("kind", string(e.Kind)))
	}
	if len(e.Serials) > 0 {
		attrs = append(attrs, slog.Any("serials", e.Serials))
	}
	if len(e.Indexes) > 0 {
		attrs = append(attrs, slog.Any("indexes", e.Indexes))
	}
	if e.SetID != "" {
		attrs = append(attrs, slog.String("set_id", e.SetID))
	}
	if e.KeyID != "" {
		attrs = append(attrs, slog.String("key_id", e.KeyID))
	}
	m.h.Log.Info(e.Message, attrs...)
	if m.h.Cfg.OnAudit != nil {
		m.h.Cfg.OnAudit(e)
	}
}

// Commits is the number of journal transactions committed since Open.
func (m *Manager) Commits() uint64 { return m.h.St.Commits.Load() }

// Subscribe delivers every event from now on, starting with the latest one sent.
func (m *Manager) Subscribe() *Subscription { return m.h.Events.Subscribe() }

// validOperator checks an operator identity (WebConf passes the client certificate subject).
func validOperator(op string) error {
	if op == "" || len(op) > 256 || !utf8.ValidString(op) {
		return ErrBadOperator
	}
	for _, c := range op {
		if unicode.IsControl(c) {
			return ErrBadOperator
		}
	}
	return nil
}

func validRequest(req Request) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
	}
	switch req.Kind {
	case KindGenerate, KindReissue:
		if err := sharing.ValidateQuorum(req.K, req.N); err != nil {
			return bad("%v", err)
		}
		if len(req.Label) > sharing.MaxLabelSize || !utf8.ValidString(req.Label) {
			return bad("label must be at most %d bytes of UTF-8", sharing.MaxLabelSize)
		}
		for _, c := range req.Label {
			if unicode.IsControl(c) {
				return bad("label must not hold control characters")
			}
		}
	case KindChangePIN:
		if req.Slot != pinpad.SlotShare && req.Slot != pinpad.SlotUser {
			return bad("slot must be the backup key share slot or the slot user slot")
		}
	case KindPrepareCards:
		if req.N < 1 || req.N > attempt.MaxPrepare {
			return bad("n must be the number of cards to prepare, 1 to %d", attempt.MaxPrepare)
		}
	case KindLoad, KindCopyCard, KindSlotUserCard, KindActivateSlot, KindFactoryReset, KindCardCheck:
	default:
		return bad("unknown kind %q", req.Kind)
	}
	return nil
}

// Handle follows one started ceremony.
type Handle struct {
	id   uint64
	kind Kind
	r    *attempt.Run
}

// ID is the ceremony's number in the journal.
func (h *Handle) ID() uint64 { return h.id }

// Kind is the ceremony's kind.
func (h *Handle) Kind() Kind { return h.kind }

// Done is closed when the ceremony has ended and its outcome is committed.
func (h *Handle) Done() <-chan struct{} { return h.r.Done }

// Wait waits for the ceremony to end and returns its final journal and, when it did not
// succeed, why. If ctx ends first, Wait returns ctx's error and the ceremony goes on.
func (h *Handle) Wait(ctx context.Context) (Journal, error) {
	select {
	case <-h.r.Done:
		return *h.r.Final, h.r.Err
	case <-ctx.Done():
		return Journal{}, ctx.Err()
	}
}

// Start begins a ceremony of operator's asking and returns at once; the ceremony runs until it
// ends or ctx ends (then it is journaled as interrupted, as if the service had stopped). Pass a
// context that lives as long as the service, not a request's.
//
// Start refuses with a [*BusyError] while another ceremony runs, with a [*PendingError] when an
// interrupted ceremony must be resumed or a factory reset is due first, with [ErrKeyLoaded] for
// a Generate on an HSM that holds a key, with [ErrNoKey] for a Re-issue on an HSM that holds
// none.
func (m *Manager) Start(ctx context.Context, operator string, req Request) (*Handle, error) {
	if err := validOperator(operator); err != nil {
		return nil, fmt.Errorf("start ceremony: %w", err)
	}
	if err := validRequest(req); err != nil {
		return nil, fmt.Errorf("start ceremony: %w", err)
	}
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if err := m.startable(); err != nil {
		return nil, err
	}
	var pending *Pending
	if err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		pending, err = journal.LoadPending(tx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("start ceremony: %w", err)
	}
	if pending != nil && (req.Kind == KindGenerate || req.Kind == KindLoad || req.Kind == KindReissue) {
		switch pending.Next {
		case NextReset, NextResume:
			return nil, &PendingError{Op: "start ceremony", Pending: *pending}
		}
	}
	if req.Kind == KindGenerate {
		id, err := m.h.Cfg.HSM.BackupKeyID(ctx)
		switch {
		case err == nil:
			return nil, fmt.Errorf("start ceremony: %w (key %s)", ErrKeyLoaded, id)
		case !errors.Is(err, hsm.ErrNoBackupKey):
			return nil, fmt.Errorf("start ceremony: ask the hsm for its key: %w", err)
		}
	}
	if req.Kind == KindReissue {
		_, err := m.h.Cfg.HSM.BackupKeyID(ctx)
		switch {
		case errors.Is(err, hsm.ErrNoBackupKey):
			return nil, fmt.Errorf("start ceremony: %w", ErrNoKey)
		case err != nil:
			return nil, fmt.Errorf("start ceremony: ask the hsm for its key: %w", err)
		}
	}

	now := time.Now().UTC()
	if req.Kind != KindGenerate && req.Kind != KindReissue {
		if req.Kind != KindPrepareCards { // N is how many cards to prepare
			req.N = 0
		}
		req.K, req.Label = 0, ""
	}
	j := &Journal{
		Kind: req.Kind, Status: StatusRunning, Phase: PhaseStarted, Step: StepIdle,
		Operator: operator, Request: req, Attempt: 1,
		Started: now, Updated: now,
		Participants: []Participant{{Operator: operator, Action: "start", Time: now}},
		K:            req.K, N: req.N,
	}
	err := m.h.St.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(journal.BucketCeremonies)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		j.ID = id
		if pending != nil && pending.Next == NextRestartRead {
			// A new key ceremony replaces the interrupted load.
			if err := tx.Bucket(journal.BucketState).Delete(journal.KeyPending); err != nil {
				return err
			}
		}
		e := &AuditEntry{Time: now, Operator: operator, Ceremony: id, Kind: req.Kind, Event: AuditCeremonyStarted,
			Message: startMessage(req)}
		if err := journal.AppendAudit(tx, e); err != nil {
			return err
		}
		j.AuditHead = e.Hash
		if err := journal.PutJSON(b, journal.U64Key(id), j); err != nil {
			return err
		}
		return tx.Bucket(journal.BucketState).Put(journal.KeyCurrent, journal.U64Key(id))
	})
	if err != nil {
		return nil, fmt.Errorf("start ceremony: journal: %w", err)
	}
	m.h.AfterCommit(j, AuditCeremonyStarted)
	m.h.Log.Info("ceremony started", "ceremony", j.ID, "kind", j.Kind, "operator", operator)
	r := m.h.Launch(ctx, j, operator)
	return &Handle{id: j.ID, kind: j.Kind, r: r}, nil
}

func startMessage(req Request) string {
	switch req.Kind {
	case KindGenerate:
		return fmt.Sprintf("key generation started: %d of %d cards", req.K, req.N)
	case KindReissue:
		return fmt.Sprintf("card set re-issue started: the new set will be %d of %d cards", req.K, req.N)
	case KindChangePIN:
		return fmt.Sprintf("PIN change started (%s slot)", req.Slot)
	case KindPrepareCards:
		return fmt.Sprintf("Prepare cards started: %d card(s)", req.N)
	case KindSlotUserCard, KindActivateSlot:
		return fmt.Sprintf("%s started for PKCS#11 slot %d", req.Kind.Title(), req.PKCS11Slot)
	}
	return req.Kind.Title() + " started"
}

// startable reports why no ceremony can start now. m.h.Mu is held.
func (m *Manager) startable() error {
	if m.h.Closed {
		return ErrClosed
	}
	if m.h.Cur != nil {
		j := m.h.Cur.SnapshotJournal()
		step := j.Step
		if ev, ok := m.h.Events.Latest(); ok && ev.Ceremony == j.ID {
			step = ev.Step
		}
		return &BusyError{ID: j.ID, Kind: j.Kind, Operator: j.Operator, Started: j.Started, Step: step}
	}
	return nil
}

// Resume continues the ceremony an interruption left pending: a Generate whose cards were all
// written reads k of them and loads the key; an interrupted Load reads the cards again.
func (m *Manager) Resume(ctx context.Context, operator string) (*Handle, error) {
	if err := validOperator(operator); err != nil {
		return nil, fmt.Errorf("resume ceremony: %w", err)
	}
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if err := m.startable(); err != nil {
		return nil, err
	}
	var j *Journal
	err := m.h.St.View(func(tx *bolt.Tx) error {
		p, err := journal.LoadPending(tx)
		if err != nil {
			return err
		}
		if p == nil || (p.Next != NextResume && p.Next != NextRestartRead) {
			if p != nil {
				return &PendingError{Op: "resume ceremony", Pending: *p}
			}
			return ErrNothingToResume
		}
		j, err = journal.LoadJournal(tx, p.Ceremony)
		return err
	})
	var pe *PendingError
	if errors.As(err, &pe) {
		return nil, pe // it names the operation already
	}
	if err != nil {
		return nil, fmt.Errorf("resume ceremony: %w", err)
	}
	now := time.Now().UTC()
	j.Status = StatusRunning
	j.Attempt++
	j.Ended = time.Time{}
	j.LastError, j.Outcome, j.Next = "", "", NextNone
	j.Updated = now
	j.Participants = append(j.Participants, Participant{Operator: operator, Action: "resume", Time: now})
	switch j.Kind {
	case KindGenerate:
		j.Phase = PhaseReading
	case KindLoad:
		j.Phase = PhaseStarted
		j.SetID, j.KeyID, j.K, j.N = "", "", 0, 0
	}
	err = m.h.St.Update(func(tx *bolt.Tx) error {
		e := &AuditEntry{Time: now, Operator: operator, Ceremony: j.ID, Kind: j.Kind, Event: AuditCeremonyResumed,
			Message: fmt.Sprintf("%s resumed (attempt %d): reading the cards", j.Kind.Title(), j.Attempt), SetID: j.SetID, KeyID: j.KeyID}
		if err := journal.AppendAudit(tx, e); err != nil {
			return err
		}
		j.AuditHead = e.Hash
		st := tx.Bucket(journal.BucketState)
		if err := st.Delete(journal.KeyPending); err != nil {
			return err
		}
		if err := journal.PutJSON(tx.Bucket(journal.BucketCeremonies), journal.U64Key(j.ID), j); err != nil {
			return err
		}
		return st.Put(journal.KeyCurrent, journal.U64Key(j.ID))
	})
	if err != nil {
		return nil, fmt.Errorf("resume ceremony: journal: %w", err)
	}
	m.h.AfterCommit(j, AuditCeremonyResumed)
	m.h.Log.Info("ceremony resumed", "ceremony", j.ID, "kind", j.Kind, "operator", operator, "attempt", j.Attempt)
	r := m.h.Launch(ctx, j, operator)
	return &Handle{id: j.ID, kind: j.Kind, r: r}, nil
}

// Retry repeats the step that stalled (a pad timeout, a disconnected reader). Cards already
// done stay done.
func (m *Manager) Retry(operator string) error {
	if err := validOperator(operator); err != nil {
		return fmt.Errorf("retry: %w", err)
	}
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if m.h.Cur == nil {
		return fmt.Errorf("retry: %w", ErrNotRunning)
	}
	if !m.h.Cur.Stalled.Load() {
		return fmt.Errorf("retry: %w", ErrNotStalled)
	}
	select {
	case m.h.Cur.Retry <- operator:
		return nil
	default:
		return fmt.Errorf("retry: %w", ErrNotStalled) // a retry is already on its way
	}
}

// Answer is an operator's answer on the screen to a question of the pad ([Event.Question]).
type Answer struct {
	// Question is the ID of the question answered (Question.ID).
	Question string
	// OK is OK on the pad; false is Cancel.
	OK bool
	// SteppedUp says the caller checked a fresh confirmation of the operator's security key for
	// this answer (WebConf's WebAuthn step-up). OK to a destructive question requires it.
	SteppedUp bool
}

// Answer answers the question the running ceremony asks on the screen because its pad cannot
// report OK and Cancel (Event.Waiting is WaitConfirm). An answer to a question that is no
// longer asked is refused with a [*StaleAnswerError]; OK to a destructive question without
// SteppedUp with [ErrStepUpRequired]. The answer is audited with the question's text.
func (m *Manager) Answer(operator string, a Answer) error {
	if err := validOperator(operator); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if m.h.Cur == nil {
		return fmt.Errorf("answer: %w", ErrNotRunning)
	}
	q := m.h.Cur.Asked.Load()
	switch {
	case q == nil && a.Question == "":
		return fmt.Errorf("answer: %w", ErrNotAsking)
	case q == nil || q.ID != a.Question:
		return fmt.Errorf("answer: %w", &StaleAnswerError{Answered: a.Question, Asked: q})
	case a.OK && q.Destructive && !a.SteppedUp:
		return fmt.Errorf("answer %q: %w", q.Text, ErrStepUpRequired)
	}
	// The first answer takes the question: a second one (a double click) finds none asked.
	if !m.h.Cur.Asked.CompareAndSwap(q, nil) {
		return fmt.Errorf("answer: %w", &StaleAnswerError{Answered: a.Question, Asked: m.h.Cur.Asked.Load()})
	}
	m.h.Cur.Confirm <- attempt.Confirmation{Operator: operator, Question: q.ID, OK: a.OK} // drained before each question: room for one
	return nil
}

// Question returns the question the running ceremony asks on the screen now, if any.
func (m *Manager) Question() (Question, bool) {
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if m.h.Cur == nil {
		return Question{}, false
	}
	if q := m.h.Cur.Asked.Load(); q != nil {
		return *q, true
	}
	return Question{}, false
}

// Cancel aborts the running ceremony on operator's behalf. The abort is journaled; what it
// leaves to do (if anything) is in the outcome.
func (m *Manager) Cancel(operator string) error {
	if err := validOperator(operator); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	m.h.Mu.Lock()
	defer m.h.Mu.Unlock()
	if m.h.Cur == nil {
		return fmt.Errorf("cancel: %w", ErrNotRunning)
	}
	m.h.Cur.Cancel(&CancelledError{Operator: operator})
	return nil
}

// Overview is the state of the appliance's key ceremonies, for a status page.
type Overview struct {
	// BackupKeyID is the key ID of the MBK in the HSM; empty when none is loaded.
	BackupKeyID string
	// HSMError says why the HSM could not be asked, if it could not.
	HSMError string
	// KeySet is the card set of the loaded key, as the last Generate or Load recorded it.
	KeySet *KeySet
	// Running is the latest event of the running ceremony; nil when none runs.
	Running *Event
	// Pending is what an interrupted ceremony requires; nil when nothing does.
	Pending *Pending
	// Last is the most recent ceremony's journal; nil before the first.
	Last *Journal
}

// Overview reports the HSM's key, the card set, the running ceremony and what is pending.
func (m *Manager) Overview(ctx context.Context) (Overview, error) {
	var o Overview
	id, err := m.h.Cfg.HSM.BackupKeyID(ctx)
	switch {
	case err == nil:
		o.BackupKeyID = id.String()
	case !errors.Is(err, hsm.ErrNoBackupKey):
		o.HSMError = err.Error()
	}
	m.h.Mu.Lock()
	running := m.h.Cur != nil
	m.h.Mu.Unlock()
	if running {
		if ev, ok := m.h.Events.Latest(); ok {
			o.Running = &ev
		}
	}
	err = m.h.St.View(func(tx *bolt.Tx) error {
		var err error
		if o.KeySet, err = journal.LoadKeySet(tx); err != nil {
			return err
		}
		if o.Pending, err = journal.LoadPending(tx); err != nil {
			return err
		}
		k, v := tx.Bucket(journal.BucketCeremonies).Cursor().Last()
		if k != nil {
			if o.Last, err = journal.DecodeJournal(v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return o, fmt.Errorf("read overview: %w", err)
	}
	return o, nil
}

// Ceremony returns the journal of ceremony id.
func (m *Manager) Ceremony(id uint64) (Journal, error) { return m.h.Ceremony(id) }

// Ceremonies lists the journals of every ceremony, newest first, at most limit (0: all).
func (m *Manager) Ceremonies(limit int) ([]Journal, error) {
	var out []Journal
	err := m.h.St.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(journal.BucketCeremonies).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			j, err := journal.DecodeJournal(v)
			if err != nil {
				return err
			}
			out = append(out, *j)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list ceremonies: %w", err)
	}
	return out, nil
}

// VerifyAudit checks the whole audit log: every entry unaltered, none missing, none removed
// from the end, and the MAC of every entry authenticated under the master backup key the HSM
// holds (the last entry must carry one while the HSM holds a key). A break is an [*AuditError]
// naming the first entry that is not what was recorded; the summary says up to which entry the
// log is authenticated and how each run of entries was (see docs/design.md, "The audit log").
func (m *Manager) VerifyAudit() (AuditSummary, error) {
	var s AuditSummary
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		s, err = journal.VerifyAudit(tx, m.h.St.Key)
		return err
	})
	if err != nil {
		return s, err
	}
	return s, m.saveAuditCheckpoint(s)
}

// VerifyAuditIncremental checks only what was appended since the last successful verification
// (of either kind): the chain and MACs from that checkpoint on, that the checkpoint's entry is
// unchanged, and the head. Its cost grows with what was appended, not with the log, which is
// what a page view can afford; an edit of an entry older than the checkpoint is found by
// [Manager.VerifyAudit] (audit verify), which checks every entry (and by this one too when the
// last entry carries a MAC: it vouches for every entry before it).
func (m *Manager) VerifyAuditIncremental() (AuditSummary, error) {
	var s AuditSummary
	var cp journal.AuditHead
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		if _, err := journal.GetJSON(tx.Bucket(journal.BucketMeta), journal.KeyAuditVerified, &cp); err != nil {
			cp = journal.AuditHead{} // an unreadable checkpoint: check everything
		}
		s, err = journal.VerifyAuditFrom(tx, cp, m.h.St.Key)
		return err
	})
	if err != nil {
		return s, err
	}
	return s, m.saveAuditCheckpoint(s)
}

// AuditCheckpoint verifies the whole log and returns the checkpoint of its last entry, for an
// auditor to keep outside the appliance ([Manager.VerifyAuditCheckpoint] checks the log against
// it later).
func (m *Manager) AuditCheckpoint() (AuditCheckpoint, AuditSummary, error) {
	var s AuditSummary
	var cp AuditCheckpoint
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		if s, err = journal.VerifyAudit(tx, m.h.St.Key); err != nil {
			return err
		}
		cp, err = journal.TakeCheckpoint(tx, s, time.Now())
		return err
	})
	return cp, s, err
}

// VerifyAuditCheckpoint is [Manager.VerifyAudit] that also proves the log extends an auditor's
// checkpoint: its entry still has the checkpoint's hash (a [*CheckpointError] when not — history
// up to it was rewritten, or entries removed). This finds a rewrite even by someone who holds
// the master backup key. When the HSM holds the key the checkpoint's MAC was made under, the
// checkpoint itself is checked too.
func (m *Manager) VerifyAuditCheckpoint(cp AuditCheckpoint) (AuditSummary, error) {
	var s AuditSummary
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		if s, err = journal.VerifyAudit(tx, m.h.St.Key); err != nil {
			return err
		}
		return journal.CheckCheckpoint(tx, cp, m.h.St.Key)
	})
	if err != nil {
		return s, err
	}
	return s, m.saveAuditCheckpoint(s)
}

// saveAuditCheckpoint records the last entry a verification vouched for.
func (m *Manager) saveAuditCheckpoint(s AuditSummary) error {
	if s.Entries == 0 {
		return nil
	}
	return m.h.St.Update(func(tx *bolt.Tx) error {
		var cp journal.AuditHead
		journal.GetJSON(tx.Bucket(journal.BucketMeta), journal.KeyAuditVerified, &cp)
		if cp.Seq >= s.Entries {
			return nil
		}
		return journal.PutJSON(tx.Bucket(journal.BucketMeta), journal.KeyAuditVerified, journal.AuditHead{Seq: s.Entries, Hash: s.Head})
	})
}

// ExportAudit writes the audit log as JSON lines, one [AuditEntry] per line, oldest first.
// [VerifyAuditExport] checks such a file.
func (m *Manager) ExportAudit(w io.Writer) error {
	err := m.h.St.View(func(tx *bolt.Tx) error { return journal.ExportAudit(tx, w) })
	if err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	return nil
}

// AuditLog returns the audit entries of one ceremony, oldest first, found through the audit
// index (ceremony 0: every entry, which reads the whole log — pages use [Manager.AuditPage]).
func (m *Manager) AuditLog(ceremony uint64) ([]AuditEntry, error) {
	var out []AuditEntry
	err := m.h.St.View(func(tx *bolt.Tx) (err error) {
		if ceremony == 0 {
			out, err = journal.AuditEntries(tx, func(*AuditEntry) bool { return true })
			return err
		}
		out, err = journal.CeremonyAudit(tx, ceremony)
		return err
	})
	return out, err
}

// recover classifies a ceremony the journal shows as running: the process stopped under it.
func (m *Manager) recover(ctx context.Context) error {
	var j *Journal
	err := m.h.St.View(func(tx *bolt.Tx) error {
		id := journal.CurrentID(tx)
		if id == 0 {
			return nil
		}
		var err error
		j, err = journal.LoadJournal(tx, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("recover ceremony: %w", err)
	}
	if j == nil {
		return nil
	}
	if j.Status.Ended() {
		// Only the pointer was left behind.
		return m.h.St.Update(func(tx *bolt.Tx) error { return tx.Bucket(journal.BucketState).Delete(journal.KeyCurrent) })
	}
	return m.h.Recover(ctx, j, SystemOperator)
}
