package journal

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AuditEntry is one line of the audit log. Each entry carries the hash of the entry before it
// (Prev) and its own (Hash); see [AuditEntry.ComputeHash] for what is hashed. It names cards,
// share indexes and key IDs, never a share, a key or a PIN.
type AuditEntry struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Operator string    `json:"operator"`
	Ceremony uint64    `json:"ceremony,omitempty"`
	Kind     Kind      `json:"kind,omitempty"`
	Event    string    `json:"event"` // stable key, e.g. "card.written"
	Message  string    `json:"message"`
	Serials  []string  `json:"serials,omitempty"`
	Indexes  []int     `json:"indexes,omitempty"`
	SetID    string    `json:"set_id,omitempty"`
	KeyID    string    `json:"key_id,omitempty"`
	Prev     string    `json:"prev"` // hex SHA-256 of the previous entry; 64 zeros for the first
	Hash     string    `json:"hash"` // hex SHA-256 of this entry
	// AuthKey and MAC authenticate the entry (schema 4): MAC is the hex HMAC-SHA256 of
	// [AuditMACMessage] (seq, hash, AuthKey) under the HSM's authenticator key derived from the
	// master backup key whose key ID is AuthKey. Both are empty for an entry appended while the
	// HSM held no key. They are not part of Hash: the MAC is made over the hash, and since the
	// hash chains every entry before, one valid MAC vouches for the whole log up to its entry.
	AuthKey string `json:"auth_key,omitempty"`
	MAC     string `json:"mac,omitempty"`
}

// Audit event keys. They are stable: auditors filter on them.
const (
	AuditCeremonyStarted     = "ceremony.started"
	AuditCeremonyDone        = "ceremony.done"
	AuditCeremonyAborted     = "ceremony.aborted"
	AuditCeremonyInterrupted = "ceremony.interrupted"
	AuditCeremonyStalled     = "ceremony.stalled"
	AuditCeremonyRetried     = "ceremony.retried"
	AuditCeremonyConfirmed   = "ceremony.confirmed" // a pad question answered on the screen
	AuditCeremonyResumed     = "ceremony.resumed"
	AuditKeyGenerated        = "key.generated"
	AuditKeyLoading          = "key.loading"
	AuditKeyLoaded           = "key.loaded"
	AuditCardWriting         = "card.writing"
	AuditCardWritten         = "card.written"
	AuditCardsWritten        = "cards.written" // all n cards of a generation written
	AuditCardRead            = "card.read"
	AuditCardRefused         = "card.refused"
	AuditCardRemoved         = "card.removed"
	AuditPINWrong            = "pin.wrong"
	AuditPINBlocked          = "pin.blocked"
	AuditPINChanged          = "pin.changed"
	AuditSlotActivated       = "slot.activated"
	AuditFactoryReset        = "factory.reset"
	AuditSetSplit            = "set.split"    // Re-issue: the key split again as a new set
	AuditSetRetired          = "set.retired"  // Re-issue: the set replaced is retired
	AuditCardChecked         = "card.checked" // Card check: the verdict on one card
	// AuditShareOverwrite: an operator confirmed overwriting a card that holds a share of the
	// set in use, knowing which share is lost and whether the quorum stays reachable.
	AuditShareOverwrite = "share.overwrite-confirmed"
	// AuditKeyed: from this transaction on, entries are authenticated under a new master backup
	// key (the first append after a key generation or load, or after the upgrade to schema 4).
	AuditKeyed = "audit.keyed"
	// AuditUnkeyed: from this transaction on, entries are appended without a MAC: the HSM holds
	// no master backup key any more (a factory reset) or cannot authenticate.
	AuditUnkeyed = "audit.unkeyed"
	// AuditJournalUpgraded: the journal was migrated to a newer schema at this start.
	AuditJournalUpgraded = "journal.upgraded"
)

const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// AuditHead is the seq and hash of the last entry, kept in meta so that removing entries from
// the end of the log is detected too.
type AuditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// ComputeHash returns the hex SHA-256 of the entry. The input is a fixed, length-prefixed
// encoding independent of JSON, so an exported log can be checked by any program:
//
//	"keyquorum-audit-v1" | prev (32 bytes) | seq (u64) | time (Unix ns, i64) | operator |
//	ceremony (u64) | kind | event | message | count (u32) serials... | count (u32) indexes (u32)... |
//	set id | key id
//
// where every string is a u32 length and its bytes, every integer big-endian.
func (e *AuditEntry) ComputeHash() (string, error) {
	prev, err := hex.DecodeString(e.Prev)
	if err != nil || len(prev) != sha256.Size {
		return "", errors.New("previous hash is not 32 bytes of hex")
	}
	h := sha256.New()
	h.Write([]byte("keyquorum-audit-v1"))
	h.Write(prev)
	var buf []byte
	buf = binary.BigEndian.AppendUint64(buf, e.Seq)
	buf = binary.BigEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
	h.Write(buf)
	str := func(s string) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	str(e.Operator)
	h.Write(binary.BigEndian.AppendUint64(nil, e.Ceremony))
	str(string(e.Kind))
	str(e.Event)
	str(e.Message)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(e.Serials))))
	for _, s := range e.Serials {
		str(s)
	}
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(e.Indexes))))
	for _, i := range e.Indexes {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(i)))
	}
	str(e.SetID)
	str(e.KeyID)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// AppendAudit adds e to the log inside tx, filling Seq, Prev and Hash, and moves the head.
func AppendAudit(tx *bolt.Tx, e *AuditEntry) error {
	meta := tx.Bucket(BucketMeta)
	var head AuditHead
	if _, err := GetJSON(meta, KeyAuditHead, &head); err != nil {
		return err
	}
	if head.Hash == "" {
		head.Hash = ZeroHash
	}
	b := tx.Bucket(BucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	e.Prev = head.Hash
	e.Time = e.Time.UTC()
	if e.Hash, err = e.ComputeHash(); err != nil {
		return err
	}
	if err := PutJSON(b, U64Key(seq), e); err != nil {
		return err
	}
	if err := indexAudit(tx, e); err != nil {
		return err
	}
	return PutJSON(meta, KeyAuditHead, AuditHead{Seq: seq, Hash: e.Hash})
}

// auditHeadSeq is the seq of the last audit entry (0 for an empty log or a journal still
// being created).
func auditHeadSeq(tx *bolt.Tx) uint64 {
	meta := tx.Bucket(BucketMeta)
	if meta == nil {
		return 0
	}
	var head AuditHead
	if _, err := GetJSON(meta, KeyAuditHead, &head); err != nil {
		return 0
	}
	return head.Seq
}

// auditEntriesAfter returns the entries appended after seq, in order.
func auditEntriesAfter(tx *bolt.Tx, seq uint64) ([]AuditEntry, error) {
	b := tx.Bucket(BucketAudit)
	if b == nil {
		return nil, nil
	}
	var out []AuditEntry
	c := b.Cursor()
	for k, v := c.Seek(U64Key(seq + 1)); k != nil; k, v = c.Next() {
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("read audit entry: %w", ErrCorrupt)
		}
		out = append(out, e)
	}
	return out, nil
}

// AuditError is a break in the audit chain: an entry that was edited, removed or added.
type AuditError struct {
	Seq     uint64 // the entry where the chain breaks
	Problem string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("audit log broken at entry %d: %s", e.Seq, e.Problem)
}

// AuditSummary is the result of a successful verification.
type AuditSummary struct {
	Entries uint64 `json:"entries"`
	Head    string `json:"head"` // hash of the last entry
	// From is the entry an incremental verification started after (its checkpoint); 0 when
	// the whole chain was checked.
	From uint64 `json:"from,omitempty"`
	// KeyID is the key ID of the master backup key the HSM holds, whose MACs were checked; ""
	// when none were (NotChecked says why).
	KeyID string `json:"key_id,omitempty"`
	// Authenticated is the last entry whose MAC checked under KeyID: it and, through the chain,
	// every entry before it are authenticated. When the HSM holds a key it is the last entry of
	// a log that verifies.
	Authenticated uint64 `json:"authenticated"`
	MACsChecked   uint64 `json:"macs_checked"`
	NotChecked    string `json:"not_checked,omitempty"`
	// Spans are the runs of entries by how they are authenticated, oldest first.
	Spans []AuditSpan `json:"spans,omitempty"`
}

// chainChecker checks entries one at a time, in order.
type chainChecker struct {
	next uint64
	prev string
	auth *authChecker
}

func newChainChecker(auth *authChecker) *chainChecker {
	return &chainChecker{next: 1, prev: ZeroHash, auth: auth}
}

func (c *chainChecker) check(e *AuditEntry) error {
	switch {
	case e.Seq < c.next:
		return &AuditError{Seq: e.Seq, Problem: "entry out of order or repeated"}
	case e.Seq > c.next:
		if c.next == e.Seq-1 {
			return &AuditError{Seq: c.next, Problem: "entry is missing (deleted)"}
		}
		return &AuditError{Seq: c.next, Problem: fmt.Sprintf("entries %d to %d are missing (deleted)", c.next, e.Seq-1)}
	}
	if e.Prev != c.prev {
		return &AuditError{Seq: e.Seq, Problem: "does not carry the hash of the entry before it: an entry before it was altered or replaced"}
	}
	sum, err := e.ComputeHash()
	if err != nil {
		return &AuditError{Seq: e.Seq, Problem: err.Error()}
	}
	if subtle.ConstantTimeCompare([]byte(sum), []byte(e.Hash)) != 1 {
		return &AuditError{Seq: e.Seq, Problem: "entry was altered (its hash does not match its content)"}
	}
	if err := c.auth.check(e); err != nil {
		return err
	}
	c.next++
	c.prev = e.Hash
	return nil
}

func (c *chainChecker) summary() AuditSummary {
	s := AuditSummary{Entries: c.next - 1, Head: c.prev}
	c.auth.fill(&s)
	return s
}

// VerifyAudit checks the whole chain inside tx and the head kept in meta, and with key (nil:
// the chain only) the MACs of the entries authenticated under the HSM's key.
func VerifyAudit(tx *bolt.Tx, key AuditKey) (AuditSummary, error) {
	return VerifyAuditFrom(tx, AuditHead{}, key)
}

// VerifyAuditFrom checks the chain after the checkpoint cp (an entry verified before: its seq
// and hash; the zero value checks the whole chain) and the head kept in meta. The checkpoint's
// own entry must still carry the hash recorded for it. With key, the MACs of the entries from
// the checkpoint's on are checked too, and the last entry must carry a valid one when the HSM
// holds a key (see auditauth.go).
func VerifyAuditFrom(tx *bolt.Tx, cp AuditHead, key AuditKey) (AuditSummary, error) {
	c := newChainChecker(newAuthChecker(key, "the chain only was checked"))
	cur := tx.Bucket(BucketAudit).Cursor()
	k, v := cur.First()
	if cp.Seq > 0 {
		ck, cv := cur.Seek(U64Key(cp.Seq))
		var e AuditEntry
		if ck == nil || !bytes.Equal(ck, U64Key(cp.Seq)) || json.Unmarshal(cv, &e) != nil {
			return AuditSummary{}, &AuditError{Seq: cp.Seq, Problem: "the entry verified last time is gone"}
		}
		if sum, err := e.ComputeHash(); err != nil || sum != cp.Hash || e.Hash != cp.Hash {
			return AuditSummary{}, &AuditError{Seq: cp.Seq, Problem: "the entry verified last time was altered since"}
		}
		if err := c.auth.check(&e); err != nil {
			return AuditSummary{}, err
		}
		c.next, c.prev = cp.Seq+1, cp.Hash
		k, v = cur.Next()
	}
	for ; k != nil; k, v = cur.Next() {
		seq, ok := KeyU64(k)
		if !ok {
			return AuditSummary{}, &AuditError{Seq: c.next, Problem: "foreign key in the audit bucket"}
		}
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return AuditSummary{}, &AuditError{Seq: seq, Problem: "entry cannot be read"}
		}
		if e.Seq != seq {
			return AuditSummary{}, &AuditError{Seq: seq, Problem: "entry stored under another number"}
		}
		if err := c.check(&e); err != nil {
			return AuditSummary{}, err
		}
	}
	var head AuditHead
	if _, err := GetJSON(tx.Bucket(BucketMeta), KeyAuditHead, &head); err != nil {
		return AuditSummary{}, &AuditError{Seq: c.next, Problem: "the log head cannot be read"}
	}
	s := c.summary()
	if head.Seq != s.Entries || (head.Seq > 0 && head.Hash != s.Head) {
		return AuditSummary{}, &AuditError{Seq: s.Entries + 1, Problem: fmt.Sprintf("the log ends at entry %d but its head names entry %d: entries at the end were removed or replaced", s.Entries, head.Seq)}
	}
	if err := c.auth.finish(s.Entries); err != nil {
		return AuditSummary{}, err
	}
	s.From = cp.Seq
	return s, nil
}

// MaxAuditLine bounds one line of an exported audit log when it is read back.
const MaxAuditLine = 64 << 10

// VerifyAuditExport checks an audit log exported as JSON lines ([Manager.ExportAudit]) without
// the journal: every line an entry, numbered from 1, each carrying the hash of the one before.
// It returns the number of entries and the hash of the last. Since the export is a copy, a
// removed tail is only found by comparing the head with one recorded elsewhere (a printed
// protocol carries it, or an auditor's checkpoint: [VerifyAuditExportCheckpoint]). The MACs
// an export carries are listed in the summary's spans, not checked: that needs the HSM that
// holds the key.
func VerifyAuditExport(r io.Reader) (AuditSummary, error) {
	return VerifyAuditExportCheckpoint(r, nil)
}

// VerifyAuditExportCheckpoint is [VerifyAuditExport] that also checks that the export extends
// the checkpoint cp (nil: none): its entry is there with the checkpoint's hash.
func VerifyAuditExportCheckpoint(r io.Reader, cp *AuditCheckpoint) (AuditSummary, error) {
	c := newChainChecker(newAuthChecker(nil, "an export's MACs are checked by the appliance that holds the key; here only the chain was checked"))
	var cpFound bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), MaxAuditLine)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		if len(raw) == 0 {
			continue
		}
		var e AuditEntry
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return AuditSummary{}, &AuditError{Seq: c.next, Problem: fmt.Sprintf("line %d is not an audit entry", line)}
		}
		if dec.More() {
			return AuditSummary{}, &AuditError{Seq: c.next, Problem: fmt.Sprintf("line %d holds more than one entry", line)}
		}
		if err := c.check(&e); err != nil {
			return AuditSummary{}, err
		}
		if cp != nil && e.Seq == cp.Seq {
			if e.Hash != cp.Hash {
				return AuditSummary{}, &CheckpointError{Seq: cp.Seq, Problem: "the entry no longer has the checkpoint's hash: the history up to it was rewritten"}
			}
			cpFound = true
		}
	}
	if err := sc.Err(); err != nil {
		return AuditSummary{}, fmt.Errorf("read audit export: %w", err)
	}
	s := c.summary()
	if cp != nil && !cpFound {
		return AuditSummary{}, &CheckpointError{Seq: cp.Seq, Problem: fmt.Sprintf("the log ends before it (at entry %d): entries were removed", s.Entries)}
	}
	return s, nil
}

// ExportAudit writes every entry as one JSON line. The entries are decoded and re-encoded
// inside the transaction, so nothing written points into bbolt's pages.
func ExportAudit(tx *bolt.Tx, w io.Writer) error {
	bw := bufio.NewWriter(w)
	cur := tx.Bucket(BucketAudit).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("export audit entry: %w", ErrCorrupt)
		}
		line, err := json.Marshal(&e)
		if err != nil {
			return err
		}
		bw.Write(line)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// AuditEntries returns the entries that satisfy keep, copied out of the transaction.
func AuditEntries(tx *bolt.Tx, keep func(*AuditEntry) bool) ([]AuditEntry, error) {
	var out []AuditEntry
	cur := tx.Bucket(BucketAudit).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("read audit entry: %w", ErrCorrupt)
		}
		if keep(&e) {
			out = append(out, e)
		}
	}
	return out, nil
}
