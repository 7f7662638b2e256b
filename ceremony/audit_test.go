package ceremony

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// auditStore returns a store with n audit entries.
func auditStore(t *testing.T, n int) *journal.Store {
	t.Helper()
	st, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for i := 1; i <= n; i++ {
		err := st.Update(func(tx *bolt.Tx) error {
			return journal.AppendAudit(tx, &AuditEntry{Time: time.Unix(1700000000, int64(i)), Operator: "CN=alice", Ceremony: 1, Kind: KindGenerate,
				Event: AuditCardWritten, Message: fmt.Sprintf("share %d written", i), Serials: []string{fmt.Sprintf("S%d", i)}, Indexes: []int{i},
				SetID: "00112233445566778899aabbccddeeff", KeyID: "0011223344556677"})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func verifyStore(st *journal.Store) (AuditSummary, error) {
	var s AuditSummary
	err := st.View(func(tx *bolt.Tx) (err error) {
		s, err = journal.VerifyAudit(tx, nil)
		return err
	})
	return s, err
}

// rewrite changes entry seq in place with f.
func rewrite(t *testing.T, st *journal.Store, seq uint64, f func(e *AuditEntry)) {
	t.Helper()
	err := st.DB().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(journal.BucketAudit)
		var e AuditEntry
		if err := json.Unmarshal(b.Get(journal.U64Key(seq)), &e); err != nil {
			return err
		}
		f(&e)
		return journal.PutJSON(b, journal.U64Key(seq), &e)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuditChain(t *testing.T) {
	type tamper struct {
		name    string
		do      func(t *testing.T, st *journal.Store)
		wantSeq uint64
		wantMsg string
	}
	tests := []tamper{
		{"untouched", func(*testing.T, *journal.Store) {}, 0, ""},
		{"message edited", func(t *testing.T, st *journal.Store) {
			rewrite(t, st, 3, func(e *AuditEntry) { e.Message = "nothing happened" })
		}, 3, "altered"},
		{"operator edited", func(t *testing.T, st *journal.Store) {
			rewrite(t, st, 1, func(e *AuditEntry) { e.Operator = "CN=mallory" })
		}, 1, "altered"},
		{"share index edited", func(t *testing.T, st *journal.Store) {
			rewrite(t, st, 4, func(e *AuditEntry) { e.Indexes = []int{9} })
		}, 4, "altered"},
		{"time edited", func(t *testing.T, st *journal.Store) {
			rewrite(t, st, 2, func(e *AuditEntry) { e.Time = e.Time.Add(time.Hour) })
		}, 2, "altered"},
		{"edited and rehashed", func(t *testing.T, st *journal.Store) {
			rewrite(t, st, 2, func(e *AuditEntry) {
				e.Message = "forged"
				e.Hash, _ = e.ComputeHash()
			})
		}, 3, "entry before it"},
		{"middle entry deleted", func(t *testing.T, st *journal.Store) {
			st.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(journal.BucketAudit).Delete(journal.U64Key(3)) })
		}, 3, "missing"},
		{"two entries deleted", func(t *testing.T, st *journal.Store) {
			st.DB().Update(func(tx *bolt.Tx) error {
				tx.Bucket(journal.BucketAudit).Delete(journal.U64Key(2))
				return tx.Bucket(journal.BucketAudit).Delete(journal.U64Key(3))
			})
		}, 2, "entries 2 to 3 are missing"},
		{"first entry deleted", func(t *testing.T, st *journal.Store) {
			st.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(journal.BucketAudit).Delete(journal.U64Key(1)) })
		}, 1, "missing"},
		{"last entry deleted", func(t *testing.T, st *journal.Store) {
			st.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(journal.BucketAudit).Delete(journal.U64Key(5)) })
		}, 5, "removed"},
		{"entry renumbered", func(t *testing.T, st *journal.Store) {
			rewrite(t, st, 4, func(e *AuditEntry) { e.Seq = 40 })
		}, 4, "another number"},
		{"garbage entry", func(t *testing.T, st *journal.Store) {
			st.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(journal.BucketAudit).Put(journal.U64Key(2), []byte("{")) })
		}, 2, "cannot be read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := auditStore(t, 5)
			tc.do(t, st)
			s, err := verifyStore(st)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if s.Entries != 5 || len(s.Head) != 64 {
					t.Fatalf("summary = %+v", s)
				}
				return
			}
			var ae *AuditError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *AuditError", err)
			}
			if ae.Seq != tc.wantSeq || !strings.Contains(ae.Error(), tc.wantMsg) {
				t.Fatalf("err = %v (seq %d), want seq %d and %q", err, ae.Seq, tc.wantSeq, tc.wantMsg)
			}
		})
	}
}

func TestAuditEmptyLogVerifies(t *testing.T) {
	st := auditStore(t, 0)
	s, err := verifyStore(st)
	if err != nil || s.Entries != 0 {
		t.Fatalf("verify = %+v, %v", s, err)
	}
}

func TestAuditExportVerifies(t *testing.T) {
	st := auditStore(t, 6)
	var buf bytes.Buffer
	if err := st.View(func(tx *bolt.Tx) error { return journal.ExportAudit(tx, &buf) }); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines exported, want 6", len(lines))
	}
	want, _ := verifyStore(st)
	got, err := VerifyAuditExport(strings.NewReader(buf.String()))
	if err != nil || got.Entries != want.Entries || got.Head != want.Head {
		t.Fatalf("verify export = %+v, %v; want %+v", got, err, want)
	}

	// Edited, removed and reordered lines are found.
	edited := strings.Replace(buf.String(), "share 4 written", "share 4 lost", 1)
	removed := strings.Join(append(append([]string{}, lines[:2]...), lines[3:]...), "\n")
	swapped := strings.Join([]string{lines[0], lines[2], lines[1], lines[3]}, "\n")
	for name, text := range map[string]string{"edited": edited, "removed": removed, "swapped": swapped, "not json": "hello\n", "unknown field": `{"seq":1,"x":1}`} {
		if _, err := VerifyAuditExport(strings.NewReader(text)); err == nil {
			t.Errorf("%s export verified", name)
		}
	}

	// Write it to testdata-like file and back (what an auditor does).
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	os.WriteFile(p, buf.Bytes(), 0o600)
	f, _ := os.Open(p)
	defer f.Close()
	if _, err := VerifyAuditExport(f); err != nil {
		t.Fatal(err)
	}
}

func TestAuditHashIsFieldBound(t *testing.T) {
	// Moving bytes between adjacent string fields must change the hash (length prefixes).
	a := AuditEntry{Prev: journal.ZeroHash, Operator: "ab", Event: "c"}
	b := AuditEntry{Prev: journal.ZeroHash, Operator: "a", Event: "bc"}
	ha, _ := a.ComputeHash()
	hb, _ := b.ComputeHash()
	if ha == hb {
		t.Fatal("hash does not separate fields")
	}
	if _, err := (&AuditEntry{Prev: "zz"}).ComputeHash(); err == nil {
		t.Fatal("bad prev hash accepted")
	}
}
