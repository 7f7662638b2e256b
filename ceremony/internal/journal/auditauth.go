package journal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The audit log's authentication (schema 4).
//
// The hash chain alone finds an entry edited by someone who did not recompute the hashes after
// it; whoever can write ceremony.db can recompute them. So every entry appended while the HSM
// holds a master backup key also carries a MAC ([AuditEntry.MAC]) made by the HSM over the
// entry's seq and hash ([AuditMACMessage]) under the authenticator key derived from the MBK,
// which never leaves the HSM. Since the hash chains every entry before, the MAC of the last
// entry vouches for the whole log; checking each entry's MAC names the first one rewritten.
//
// Entries appended while no key is loaded (before the first key generation or load, after a
// factory reset) carry none: a verification reports them, and only fails when entries after
// the last valid MAC were appended although the HSM holds the key now (a rewrite that dropped
// the MACs, or an HSM that failed at the append). A change of key (a new MBK after a factory
// reset, the upgrade of a journal that had no MACs) is recorded in the log itself by an
// [AuditKeyed] or [AuditUnkeyed] entry, and [KeyAuditEpoch] remembers the key of the last
// append. The MACs are made in the transaction that appends the entries ([Store.Update] with
// [Store.Key] set), so no entry is ever committed without the MAC it should carry.

// AuditKey makes and checks the MACs of audit entries. Package ceremony implements it with the
// HSM's [hsm.Authenticator]; this room never holds the key, it hands messages to the HSM.
type AuditKey interface {
	// KeyID returns the hex key ID of the master backup key the HSM holds, "" when it holds
	// none. An error means the HSM cannot authenticate now (it failed, or holds no
	// authenticator key for its key).
	KeyID() (string, error)
	// MAC returns the MAC of msg under the HSM's authenticator key.
	MAC(msg []byte) ([]byte, error)
	// CheckMAC reports whether tag is the MAC of msg under the HSM's authenticator key; an
	// error means the HSM could not say.
	CheckMAC(msg, tag []byte) (bool, error)
}

// KeyAuditEpoch (meta, JSON AuditEpoch) is the key the last appended entries were
// authenticated under.
var KeyAuditEpoch = []byte("audit-epoch")

// AuditEpoch is the authentication state of the last append: the key ID of the MBK the entries
// were authenticated under ("" none) and the first entry of that state.
type AuditEpoch struct {
	KeyID string `json:"key_id"`
	Since uint64 `json:"since"`
}

// auditMACLabel separates the audit MACs from every other use of the authenticator key (share
// records, cluster state proofs): no other message starts with it.
const auditMACLabel = "keyquorum audit mac v1\x00"

// AuditMACMessage is what the HSM authenticates for an entry: the label, the seq (u64
// big-endian), the entry's hash (32 bytes) and the key ID (8 bytes) of the MBK.
func AuditMACMessage(seq uint64, hash, keyID string) ([]byte, error) {
	h, err := hex.DecodeString(hash)
	if err != nil || len(h) != sha256.Size {
		return nil, errors.New("audit hash is not 32 bytes of hex")
	}
	id, err := hex.DecodeString(keyID)
	if err != nil || len(id) != 8 {
		return nil, errors.New("audit key id is not 8 bytes of hex")
	}
	msg := append([]byte(auditMACLabel), binary.BigEndian.AppendUint64(nil, seq)...)
	msg = append(msg, h...)
	return append(msg, id...), nil
}

// auditOperator names the entries the journal appends by itself.
const auditOperator = "keyquorum"

// sealAudit authenticates the entries appended after seq before in this transaction, and
// records a change of key with an [AuditKeyed] or [AuditUnkeyed] entry. An HSM that cannot
// authenticate does not stop the transaction: the entries stay without a MAC, which the log
// says (and warn hears).
func sealAudit(tx *bolt.Tx, before uint64, key AuditKey, now time.Time, warn func(string, error)) error {
	if auditHeadSeq(tx) == before {
		return nil
	}
	meta := tx.Bucket(BucketMeta)
	var ep AuditEpoch
	if _, err := GetJSON(meta, KeyAuditEpoch, &ep); err != nil {
		ep = AuditEpoch{}
	}
	keyID, kerr := key.KeyID()
	if kerr != nil {
		warn("audit entries appended without a MAC: the hsm cannot authenticate", kerr)
		keyID = ""
	}
	if keyID != ep.KeyID {
		e := &AuditEntry{Time: now, Operator: auditOperator, Event: AuditKeyed, KeyID: keyID}
		switch {
		case keyID != "" && ep.KeyID != "":
			e.Message = fmt.Sprintf("Audit entries from %d on are authenticated under master backup key %s (before: under key %s).", before+1, keyID, ep.KeyID)
		case keyID != "":
			e.Message = fmt.Sprintf("Audit entries from %d on are authenticated under master backup key %s: each carries a MAC made by the HSM. Entries before were appended without a key.", before+1, keyID)
		case kerr != nil:
			e.Event, e.KeyID = AuditUnkeyed, ep.KeyID
			e.Message = fmt.Sprintf("Audit entries from %d on are appended without a MAC: the HSM cannot authenticate (%v). Entries before were authenticated under key %s.", before+1, kerr, ep.KeyID)
		default:
			e.Event, e.KeyID = AuditUnkeyed, ep.KeyID
			e.Message = fmt.Sprintf("Audit entries from %d on are appended without a MAC: the HSM holds no master backup key. Entries before were authenticated under key %s.", before+1, ep.KeyID)
		}
		if len(e.Message) > 1024 {
			e.Message = e.Message[:1024]
		}
		if err := AppendAudit(tx, e); err != nil {
			return err
		}
		if err := PutJSON(meta, KeyAuditEpoch, AuditEpoch{KeyID: keyID, Since: before + 1}); err != nil {
			return err
		}
	}
	if keyID == "" {
		return nil
	}
	b := tx.Bucket(BucketAudit)
	c := b.Cursor()
	var sealed []AuditEntry
	for k, v := c.Seek(U64Key(before + 1)); k != nil; k, v = c.Next() {
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("read audit entry: %w", ErrCorrupt)
		}
		msg, err := AuditMACMessage(e.Seq, e.Hash, keyID)
		if err != nil {
			return err
		}
		tag, err := key.MAC(msg)
		if err != nil {
			warn("audit entries appended without a MAC: the hsm failed to authenticate them", err)
			break
		}
		e.AuthKey, e.MAC = keyID, hex.EncodeToString(tag)
		sealed = append(sealed, e)
	}
	for i := range sealed {
		if err := PutJSON(b, U64Key(sealed[i].Seq), &sealed[i]); err != nil {
			return err
		}
	}
	return nil
}

// AuditSpan is a run of consecutive entries authenticated alike: under the MBK of KeyID, or
// without a MAC (KeyID "").
type AuditSpan struct {
	First  uint64 `json:"first"`
	Last   uint64 `json:"last"`
	KeyID  string `json:"key_id,omitempty"`
	Checks bool   `json:"checked"` // the MACs of this span were checked (the HSM holds its key)
}

// MaxAuditSpans bounds the spans a summary lists; the rest are counted in one last span.
const MaxAuditSpans = 1000

// authChecker checks the MACs of entries one at a time, in order, with the HSM's key.
type authChecker struct {
	key     AuditKey // nil: nothing is checked (an export read without the appliance)
	keyID   string   // the MBK the HSM holds; "" none
	reason  string   // why MACs are not checked
	checked uint64
	last    uint64 // the last entry whose MAC under keyID checked
	trail   uint64 // the first entry after it (0: none)
	spans   []AuditSpan
}

// newAuthChecker asks the HSM which key it holds. key nil: the MACs are only reported.
func newAuthChecker(key AuditKey, offline string) *authChecker {
	a := &authChecker{key: key}
	if key == nil {
		a.reason = offline
		return a
	}
	id, err := key.KeyID()
	switch {
	case err != nil:
		a.key, a.reason = nil, fmt.Sprintf("the HSM cannot check MACs: %v", err)
	case id == "":
		a.key, a.reason = nil, "the HSM holds no master backup key: MACs cannot be checked"
	default:
		a.keyID = id
	}
	return a
}

func (a *authChecker) check(e *AuditEntry) error {
	spanKey := ""
	if e.MAC != "" {
		spanKey = e.AuthKey
	}
	checks := a.keyID != "" && spanKey == a.keyID
	if n := len(a.spans); n > 0 && a.spans[n-1].KeyID == spanKey && a.spans[n-1].Last+1 == e.Seq || n >= MaxAuditSpans {
		a.spans[n-1].Last = e.Seq
	} else {
		a.spans = append(a.spans, AuditSpan{First: e.Seq, Last: e.Seq, KeyID: spanKey, Checks: checks})
	}
	if !checks {
		if a.trail == 0 {
			a.trail = e.Seq
		}
		return nil
	}
	tag, err := hex.DecodeString(e.MAC)
	if err != nil || len(tag) != sha256.Size {
		return &AuditError{Seq: e.Seq, Problem: "its MAC cannot be read: the entry was tampered with"}
	}
	msg, err := AuditMACMessage(e.Seq, e.Hash, e.AuthKey)
	if err != nil {
		return &AuditError{Seq: e.Seq, Problem: err.Error()}
	}
	ok, err := a.key.CheckMAC(msg, tag)
	if err != nil {
		return fmt.Errorf("check the MAC of audit entry %d: %w", e.Seq, err)
	}
	if !ok {
		return &AuditError{Seq: e.Seq, Problem: fmt.Sprintf("entry was rewritten: its MAC under master backup key %s does not match it, so it or an entry before it is not what was recorded", a.keyID)}
	}
	a.checked++
	a.last, a.trail = e.Seq, 0
	return nil
}

// finish applies the rule for the end of the log: while the HSM holds a key, every append is
// authenticated under it, so the last entry must carry a valid MAC.
func (a *authChecker) finish(entries uint64) error {
	if a.keyID == "" || entries == 0 || a.trail == 0 {
		return nil
	}
	return &AuditError{Seq: a.trail, Problem: fmt.Sprintf("entries %d to %d carry no valid MAC although the HSM holds master backup key %s: they were rewritten, or appended while the HSM could not authenticate (then the next entry appended authenticates them)", a.trail, entries, a.keyID)}
}

func (a *authChecker) fill(s *AuditSummary) {
	s.KeyID, s.Authenticated, s.MACsChecked, s.NotChecked, s.Spans = a.keyID, a.last, a.checked, a.reason, a.spans
}

// AuditCheckpoint is what an auditor keeps outside the appliance: an entry of the log (seq and
// hash), with its MAC and the key ID it was made under when the entry has one. A later
// verification against it ([CheckCheckpoint]) proves that the log still extends it: the same
// entry with the same hash, the chain continuous from there. That holds even against someone
// who holds the MBK and could make valid MACs for a rewritten history.
type AuditCheckpoint struct {
	Format string    `json:"format"` // CheckpointFormat
	Seq    uint64    `json:"seq"`
	Hash   string    `json:"hash"`
	KeyID  string    `json:"key_id,omitempty"`
	MAC    string    `json:"mac,omitempty"`
	Time   time.Time `json:"time"` // when the checkpoint was taken
}

// CheckpointFormat names the checkpoint's format.
const CheckpointFormat = "keyquorum-audit-checkpoint-v1"

// MaxCheckpoint bounds a checkpoint file.
const MaxCheckpoint = 4096

// ErrBadCheckpoint refuses a checkpoint file that is not one.
var ErrBadCheckpoint = errors.New("not a keyquorum audit checkpoint (keyquorum audit checkpoint writes one)")

// DecodeCheckpoint reads a checkpoint file: one JSON object, known fields only.
func DecodeCheckpoint(data []byte) (AuditCheckpoint, error) {
	var cp AuditCheckpoint
	if len(data) > MaxCheckpoint {
		return cp, ErrBadCheckpoint
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cp); err != nil {
		return AuditCheckpoint{}, ErrBadCheckpoint
	}
	if dec.More() || cp.Format != CheckpointFormat || cp.Seq == 0 {
		return AuditCheckpoint{}, ErrBadCheckpoint
	}
	if h, err := hex.DecodeString(cp.Hash); err != nil || len(h) != sha256.Size {
		return AuditCheckpoint{}, ErrBadCheckpoint
	}
	if cp.KeyID != "" || cp.MAC != "" {
		if _, err := AuditMACMessage(cp.Seq, cp.Hash, cp.KeyID); err != nil {
			return AuditCheckpoint{}, ErrBadCheckpoint
		}
		if m, err := hex.DecodeString(cp.MAC); err != nil || len(m) != sha256.Size {
			return AuditCheckpoint{}, ErrBadCheckpoint
		}
	}
	return cp, nil
}

// TakeCheckpoint returns the checkpoint of the last entry of a verified log (s).
func TakeCheckpoint(tx *bolt.Tx, s AuditSummary, now time.Time) (AuditCheckpoint, error) {
	if s.Entries == 0 {
		return AuditCheckpoint{}, errors.New("the audit log is empty: there is nothing to keep a checkpoint of")
	}
	var e AuditEntry
	ok, err := GetJSON(tx.Bucket(BucketAudit), U64Key(s.Entries), &e)
	if err != nil || !ok {
		return AuditCheckpoint{}, &AuditError{Seq: s.Entries, Problem: "entry cannot be read"}
	}
	cp := AuditCheckpoint{Format: CheckpointFormat, Seq: e.Seq, Hash: e.Hash, Time: now.UTC()}
	if e.MAC != "" {
		cp.KeyID, cp.MAC = e.AuthKey, e.MAC
	}
	return cp, nil
}

// CheckpointError says that the log does not extend an auditor's checkpoint: history at or
// before the checkpoint was rewritten, or entries were removed.
type CheckpointError struct {
	Seq     uint64
	Problem string
}

func (e *CheckpointError) Error() string {
	return fmt.Sprintf("the audit log does not extend the checkpoint at entry %d: %s", e.Seq, e.Problem)
}

// CheckCheckpoint checks that the log in tx (verified whole by the caller: chain continuous)
// still holds the checkpoint's entry with the checkpoint's hash, and, when the HSM holds the key
// the checkpoint's MAC was made under, that the checkpoint itself is authentic.
func CheckCheckpoint(tx *bolt.Tx, cp AuditCheckpoint, key AuditKey) error {
	var e AuditEntry
	ok, err := GetJSON(tx.Bucket(BucketAudit), U64Key(cp.Seq), &e)
	if err != nil {
		return &CheckpointError{Seq: cp.Seq, Problem: "its entry cannot be read"}
	}
	if !ok {
		return &CheckpointError{Seq: cp.Seq, Problem: fmt.Sprintf("the log ends before it (at entry %d): entries were removed", auditHeadSeq(tx))}
	}
	if e.Hash != cp.Hash {
		return &CheckpointError{Seq: cp.Seq, Problem: "the entry no longer has the checkpoint's hash: the history up to it was rewritten"}
	}
	if key == nil || cp.MAC == "" {
		return nil
	}
	id, err := key.KeyID()
	if err != nil || id != cp.KeyID {
		return nil // the MAC of the checkpoint cannot be checked here; its hash matched
	}
	msg, err := AuditMACMessage(cp.Seq, cp.Hash, cp.KeyID)
	if err != nil {
		return err
	}
	tag, _ := hex.DecodeString(cp.MAC)
	good, err := key.CheckMAC(msg, tag)
	if err != nil {
		return fmt.Errorf("check the checkpoint's MAC: %w", err)
	}
	if !good {
		return fmt.Errorf("%w: its MAC was not made by an HSM holding master backup key %s", ErrBadCheckpoint, cp.KeyID)
	}
	return nil
}
