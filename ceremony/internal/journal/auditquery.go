package journal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The audit index (bucket audit-index, schema 3) lets the audit page and the protocol find
// entries by ceremony, card serial, event and operator without reading the log: one empty value
// per entry and field, under a key that sorts by field and then by seq, so that the newest
// matches are a backward cursor walk away.
//
//	"c" | ceremony (u64)          | seq (u64)
//	"s" | serial | 0x00           | seq (u64)
//	"e" | event | 0x00            | seq (u64)
//	"o" | SHA-256(operator)[:8]   | seq (u64)   (operators are long; a collision is re-checked)
//	"k" | kind | 0x00             | ceremony (u64)   (from each ceremony.started entry: the
//	                                                  ceremonies of one kind, for lists)
const (
	idxKind     = 'k'
	idxCeremony = 'c'
	idxSerial   = 's'
	idxEvent    = 'e'
	idxOperator = 'o'
)

// auditIndexPrefixes are the index key prefixes (without the seq) under which e is found.
func auditIndexPrefixes(e *AuditEntry) [][]byte {
	var out [][]byte
	if e.Ceremony != 0 {
		out = append(out, ceremonyPrefix(e.Ceremony))
	}
	for _, s := range e.Serials {
		out = append(out, stringPrefix(idxSerial, s))
	}
	out = append(out, stringPrefix(idxEvent, e.Event), operatorPrefix(e.Operator))
	return out
}

func ceremonyPrefix(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte{idxCeremony}, id) }

func stringPrefix(kind byte, s string) []byte {
	b := append([]byte{kind}, s...)
	return append(b, 0)
}

func operatorPrefix(op string) []byte {
	h := sha256.Sum256([]byte(op))
	return append([]byte{idxOperator}, h[:8]...)
}

// indexAudit adds e's index keys inside tx.
func indexAudit(tx *bolt.Tx, e *AuditEntry) error {
	idx := tx.Bucket(BucketAuditIndex)
	if idx == nil {
		return nil // a journal still being migrated: the migration indexes the log
	}
	for _, p := range auditIndexPrefixes(e) {
		if err := idx.Put(binary.BigEndian.AppendUint64(p, e.Seq), nil); err != nil {
			return err
		}
	}
	if e.Event == AuditCeremonyStarted && e.Ceremony != 0 && e.Kind != "" {
		return idx.Put(binary.BigEndian.AppendUint64(stringPrefix(idxKind, string(e.Kind)), e.Ceremony), nil)
	}
	return nil
}

// migrateAuditIndex creates the audit index and indexes the entries already in the log, in
// one transaction (an interrupted run starts again from an empty index).
func migrateAuditIndex(tx *bolt.Tx) error {
	if tx.Bucket(BucketAuditIndex) != nil {
		if err := tx.DeleteBucket(BucketAuditIndex); err != nil {
			return err
		}
	}
	if _, err := tx.CreateBucket(BucketAuditIndex); err != nil {
		return fmt.Errorf("create bucket %s: %w", BucketAuditIndex, err)
	}
	cur := tx.Bucket(BucketAudit).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("index audit entry: %w", ErrCorrupt)
		}
		if err := indexAudit(tx, &e); err != nil {
			return err
		}
	}
	return nil
}

// AuditQuery selects audit entries for a page, newest first. Every field is optional; the
// fields set must all match.
type AuditQuery struct {
	// Before returns entries older than this seq (the Next of the page before); 0 starts at the
	// newest entry.
	Before   uint64
	Limit    int // entries per page: default [DefaultAuditPage], at most [MaxAuditPage]
	Ceremony uint64
	Serial   string
	Event    string
	Operator string
	Since    time.Time // entries at or after
	Until    time.Time // entries at or before
}

// Page sizes of [Manager.AuditPage].
const (
	DefaultAuditPage = 100
	MaxAuditPage     = 1000
)

// AuditPage is one page of the audit log.
type AuditPage struct {
	Entries []AuditEntry // newest first
	// Next is the Before of the following (older) page; 0 when this page holds the oldest match.
	Next uint64
	// Total is the number of entries in the whole log.
	Total uint64
}

func PageAudit(tx *bolt.Tx, q AuditQuery) (AuditPage, error) {
	log := tx.Bucket(BucketAudit)
	total := auditHeadSeq(tx)
	page := AuditPage{Total: total}
	hi := total // newest seq that may be returned
	if q.Before != 0 && q.Before-1 < hi {
		hi = q.Before - 1
	}
	var lo uint64 = 1
	read := func(seq uint64) (*AuditEntry, error) {
		v := log.Get(U64Key(seq))
		if v == nil {
			return nil, nil
		}
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("read audit entry %d: %w", seq, ErrCorrupt)
		}
		return &e, nil
	}
	// Entries are appended in time order, so the time range is a range of seqs: found by
	// binary search (sort.Search reads O(log n) entries). An entry whose clock went back is
	// still checked against the range below.
	if !q.Since.IsZero() || !q.Until.IsZero() {
		var ferr error
		timeAt := func(seq uint64) time.Time {
			e, err := read(seq)
			if err != nil {
				ferr = err
			}
			if e == nil {
				return time.Time{}
			}
			return e.Time
		}
		if !q.Since.IsZero() {
			lo = uint64(sort.Search(int(total), func(i int) bool { return !timeAt(uint64(i) + 1).Before(q.Since) })) + 1
		}
		if !q.Until.IsZero() {
			if u := uint64(sort.Search(int(total), func(i int) bool { return timeAt(uint64(i) + 1).After(q.Until) })); u < hi {
				hi = u
			}
		}
		if ferr != nil {
			return AuditPage{}, ferr
		}
	}
	if hi < lo {
		return page, nil
	}
	match := func(e *AuditEntry) bool {
		switch {
		case q.Ceremony != 0 && e.Ceremony != q.Ceremony,
			q.Event != "" && e.Event != q.Event,
			q.Operator != "" && e.Operator != q.Operator,
			!q.Since.IsZero() && e.Time.Before(q.Since),
			!q.Until.IsZero() && e.Time.After(q.Until):
			return false
		case q.Serial != "":
			for _, s := range e.Serials {
				if s == q.Serial {
					return true
				}
			}
			return false
		}
		return true
	}
	// The seqs to look at, newest first: the most selective index, or the log itself.
	var prefix []byte
	switch {
	case q.Ceremony != 0:
		prefix = ceremonyPrefix(q.Ceremony)
	case q.Serial != "":
		prefix = stringPrefix(idxSerial, q.Serial)
	case q.Event != "":
		prefix = stringPrefix(idxEvent, q.Event)
	case q.Operator != "":
		prefix = operatorPrefix(q.Operator)
	}
	var next func() (uint64, bool)
	if prefix == nil {
		seq := hi + 1
		next = func() (uint64, bool) {
			if seq <= lo {
				return 0, false
			}
			seq--
			return seq, true
		}
	} else {
		idx := tx.Bucket(BucketAuditIndex)
		if idx == nil {
			return AuditPage{}, fmt.Errorf("the audit index is missing: %w", ErrCorrupt)
		}
		c := idx.Cursor()
		start := binary.BigEndian.AppendUint64(bytes.Clone(prefix), hi)
		k, _ := c.Seek(start)
		if k == nil || !bytes.Equal(k, start) {
			k, _ = c.Prev() // Seek lands after the newest match at or below hi
		}
		first := true
		next = func() (uint64, bool) {
			if !first {
				k, _ = c.Prev()
			}
			first = false
			if k == nil || len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
				return 0, false
			}
			seq := binary.BigEndian.Uint64(k[len(prefix):])
			if seq < lo {
				return 0, false
			}
			return seq, true
		}
	}
	for {
		seq, ok := next()
		if !ok {
			return page, nil
		}
		if seq > hi {
			continue
		}
		e, err := read(seq)
		if err != nil {
			return AuditPage{}, err
		}
		if e == nil || !match(e) {
			continue
		}
		if len(page.Entries) == q.Limit {
			page.Next = page.Entries[len(page.Entries)-1].Seq
			return page, nil
		}
		page.Entries = append(page.Entries, *e)
	}
}

// CeremonyAudit returns the entries of one ceremony, oldest first, through the index.
func CeremonyAudit(tx *bolt.Tx, id uint64) ([]AuditEntry, error) {
	idx := tx.Bucket(BucketAuditIndex)
	if idx == nil {
		return nil, fmt.Errorf("the audit index is missing: %w", ErrCorrupt)
	}
	log := tx.Bucket(BucketAudit)
	prefix := ceremonyPrefix(id)
	var out []AuditEntry
	c := idx.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != len(prefix)+8 {
			continue
		}
		v := log.Get(k[len(prefix):])
		if v == nil {
			continue // the chain check reports a missing entry; a protocol shows what is there
		}
		var e AuditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("read audit entry: %w", ErrCorrupt)
		}
		if e.Ceremony == id {
			out = append(out, e)
		}
	}
	return out, nil
}

// CeremonyQuery selects ceremonies for a list, newest first.
type CeremonyQuery struct {
	Before uint64 // ceremonies with a smaller ID; 0 starts at the newest
	Limit  int    // default [DefaultAuditPage], at most [MaxAuditPage]
	Kind   Kind   // "" for every kind
}

// CeremoniesPage returns one page of ceremonies (q.Limit of them, which the caller bounds),
// newest first, and the Before of the next (older) page, 0 when there is none. A kind is
// found through the audit index.
func CeremoniesPage(tx *bolt.Tx, q CeremonyQuery) ([]Journal, uint64, error) {
	var out []Journal
	var next uint64
	err := func() error {
		b := tx.Bucket(BucketCeremonies)
		add := func(v []byte) (bool, error) {
			if len(out) == q.Limit {
				next = out[len(out)-1].ID
				return false, nil
			}
			j, err := DecodeJournal(v)
			if err != nil {
				return false, err
			}
			out = append(out, *j)
			return true, nil
		}
		if q.Kind == "" {
			c := b.Cursor()
			k, v := c.Last()
			if q.Before != 0 {
				k, v = c.Seek(U64Key(q.Before))
				if k == nil {
					k, v = c.Last()
				} else {
					k, v = c.Prev()
				}
			}
			for ; k != nil; k, v = c.Prev() {
				if more, err := add(v); err != nil || !more {
					return err
				}
			}
			return nil
		}
		idx := tx.Bucket(BucketAuditIndex)
		if idx == nil {
			return fmt.Errorf("the audit index is missing: %w", ErrCorrupt)
		}
		prefix := stringPrefix(idxKind, string(q.Kind))
		c := idx.Cursor()
		before := q.Before
		if before == 0 {
			before = ^uint64(0)
		}
		k, _ := c.Seek(binary.BigEndian.AppendUint64(bytes.Clone(prefix), before))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = c.Prev() {
			v := b.Get(k[len(prefix):])
			if v == nil {
				continue
			}
			if more, err := add(v); err != nil || !more {
				return err
			}
		}
		return nil
	}()
	return out, next, err
}
