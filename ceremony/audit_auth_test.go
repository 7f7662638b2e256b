package ceremony

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/soft"
)

// record appends n entries through the Manager, as the services around the ceremonies do.
func record(t *testing.T, m *Manager, n int, what string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := m.RecordAudit("CN=alice", "operator.role", fmt.Sprintf("%s %d", what, i)); err != nil {
			t.Fatal(err)
		}
	}
}

// loadKey puts a known MBK into the env's HSM (what a key load ceremony ends with).
func loadKey(t *testing.T, e *env) []byte {
	t.Helper()
	mbk := make([]byte, hsm.KeySize)
	rand.Read(mbk)
	if err := e.hsm.LoadBackupKey(context.Background(), mbk); err != nil {
		t.Fatal(err)
	}
	return mbk
}

// forge rewrites the audit log of a closed env directly in the bbolt file, the way someone who
// can write ceremony.db would: entry from is edited by edit, every entry from it on gets its
// chain hash recomputed (so the unkeyed chain verifies), the head moves. mac decides what
// becomes of the MACs of the rewritten entries: "keep" (left as they were), "strip" (removed)
// or "mbk" (made again with the MBK: someone who holds the key). truncate > 0 removes every
// entry after it first.
func forge(t *testing.T, e *env, from uint64, edit func(*AuditEntry), mac string, mbk []byte, truncate uint64) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(e.dir, journal.DBFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(journal.BucketAudit)
		var entries []AuditEntry
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var x AuditEntry
			if err := json.Unmarshal(v, &x); err != nil {
				return err
			}
			entries = append(entries, x)
		}
		if truncate > 0 {
			for _, x := range entries[truncate:] {
				if err := b.Delete(journal.U64Key(x.Seq)); err != nil {
					return err
				}
			}
			entries = entries[:truncate]
		}
		prev := journal.ZeroHash
		if from > 1 {
			prev = entries[from-2].Hash
		}
		for i := int(from) - 1; i < len(entries) && from > 0; i++ {
			x := &entries[i]
			if uint64(i+1) == from && edit != nil {
				edit(x)
			}
			x.Prev = prev
			if x.Hash, err = x.ComputeHash(); err != nil {
				return err
			}
			switch mac {
			case "strip":
				x.AuthKey, x.MAC = "", ""
			case "mbk":
				if x.MAC != "" {
					msg, err := journal.AuditMACMessage(x.Seq, x.Hash, x.AuthKey)
					if err != nil {
						return err
					}
					x.MAC = hex.EncodeToString(hsm.AuthenticatorOf(mbk, msg))
				}
			}
			prev = x.Hash
			if err := journal.PutJSON(b, journal.U64Key(x.Seq), x); err != nil {
				return err
			}
		}
		last := entries[len(entries)-1]
		return journal.PutJSON(tx.Bucket(journal.BucketMeta), journal.KeyAuditHead, journal.AuditHead{Seq: last.Seq, Hash: last.Hash})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// unkeyedVerify is what verification was before the log was authenticated: the chain only.
func unkeyedVerify(t *testing.T, e *env) error {
	t.Helper()
	db, err := bolt.Open(filepath.Join(e.dir, journal.DBFile), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { _, err := journal.VerifyAudit(tx, nil); return err })
}

// TestSecurityAuditRewriteDetected (issue 20, point 8): the audit log was an unkeyed SHA-256
// chain inside ceremony.db, so whoever could write the file could rewrite history
// consistently. Each attack below rewrites history so that the unkeyed chain still verifies;
// the authenticated verification finds each one and names the first forged entry, and an
// auditor's checkpoint taken before finds what no MAC can: a truncation, and a rewrite by
// someone who holds the master backup key.
func TestSecurityAuditRewriteDetected(t *testing.T) {
	// setup: 3 entries before any key, a key loaded, 5 entries under it, a checkpoint, 3 more.
	setup := func(t *testing.T) (*env, []byte, AuditCheckpoint, AuditSummary) {
		e := newEnv(t)
		record(t, e.m, 3, "before the key")
		mbk := loadKey(t, e)
		record(t, e.m, 5, "under the key")
		cp, _, err := e.m.AuditCheckpoint()
		if err != nil {
			t.Fatal(err)
		}
		record(t, e.m, 3, "after the checkpoint")
		s, err := e.m.VerifyAudit()
		if err != nil {
			t.Fatal(err)
		}
		return e, mbk, cp, s
	}

	t.Run("untouched", func(t *testing.T) {
		e, _, cp, s := setup(t)
		// 3 unkeyed, then audit.keyed is appended with the first entry under the key: 12 entries.
		if s.Entries != 12 || s.Authenticated != 12 || s.KeyID == "" || s.MACsChecked != 9 {
			t.Fatalf("summary %+v", s)
		}
		if len(s.Spans) != 2 || s.Spans[0] != (AuditSpan{First: 1, Last: 3}) || s.Spans[1].First != 4 || s.Spans[1].KeyID != s.KeyID || !s.Spans[1].Checks {
			t.Fatalf("spans %+v", s.Spans)
		}
		log, _ := e.m.AuditLog(0)
		if log[4].Event != AuditKeyed || !strings.Contains(log[4].Message, "from 4 on") || log[4].MAC == "" {
			t.Fatalf("entry 5 = %+v, want the start of authentication", log[4])
		}
		if cp.Seq != 9 || cp.KeyID != s.KeyID || cp.MAC == "" {
			t.Fatalf("checkpoint %+v", cp)
		}
		if _, err := e.m.VerifyAuditCheckpoint(cp); err != nil {
			t.Fatal(err)
		}
	})

	for _, tc := range []struct {
		name     string
		from     uint64
		mac      string
		wantSeq  uint64
		wantText string
	}{
		{"an authenticated entry rewritten, MACs kept", 6, "keep", 6, "rewritten"},
		{"an authenticated entry rewritten, MACs dropped", 6, "strip", 6, "carry no valid MAC"},
		{"an entry before the key rewritten, MACs kept", 2, "keep", 4, "rewritten"},
		{"the last entry rewritten", 12, "keep", 12, "rewritten"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, cp, _ := setup(t)
			e.close()
			forge(t, e, tc.from, func(x *AuditEntry) { x.Message = "nothing happened"; x.Operator = "CN=mallory" }, tc.mac, nil, 0)
			if err := unkeyedVerify(t, e); err != nil {
				t.Fatalf("the forgery does not even pass the unkeyed chain: %v", err)
			}
			e.open()
			var ae *AuditError
			_, err := e.m.VerifyAudit()
			if !errors.As(err, &ae) || ae.Seq != tc.wantSeq || !strings.Contains(ae.Problem, tc.wantText) {
				t.Fatalf("verify = %v, want a break at entry %d (%s)", err, tc.wantSeq, tc.wantText)
			}
			if _, err := e.m.VerifyAuditIncremental(); err == nil {
				t.Error("the incremental verification (the Audit page) accepts the forgery")
			}
			if _, err := e.m.VerifyAuditCheckpoint(cp); err == nil {
				t.Error("verify against the checkpoint accepts the forgery")
			}
		})
	}

	t.Run("truncated after the checkpoint's entry is found by the checkpoint", func(t *testing.T) {
		e, _, cp, _ := setup(t)
		e.close()
		forge(t, e, 0, nil, "keep", nil, 7) // entries 8 to 12 removed, head moved to 7
		e.open()
		// Every MAC left is valid: a prefix of an authenticated log is authenticated. Only a
		// record kept outside the appliance can tell that entries went missing.
		if s, err := e.m.VerifyAudit(); err != nil || s.Entries != 7 {
			t.Fatalf("verify = %+v, %v", s, err)
		}
		var ce *CheckpointError
		if _, err := e.m.VerifyAuditCheckpoint(cp); !errors.As(err, &ce) || ce.Seq != 9 || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("verify against the checkpoint = %v", err)
		}
	})

	t.Run("rewritten by someone who holds the MBK is found by the checkpoint", func(t *testing.T) {
		e, mbk, cp, _ := setup(t)
		e.close()
		forge(t, e, 6, func(x *AuditEntry) { x.Message = "nothing happened" }, "mbk", mbk, 0)
		e.open()
		if _, err := e.m.VerifyAudit(); err != nil {
			t.Fatalf("the MBK holder's forgery should carry valid MACs: %v", err)
		}
		var ce *CheckpointError
		if _, err := e.m.VerifyAuditCheckpoint(cp); !errors.As(err, &ce) || ce.Seq != 9 || !strings.Contains(err.Error(), "rewritten") {
			t.Fatalf("verify against the checkpoint = %v", err)
		}
		// The same offline, against an export.
		var buf bytes.Buffer
		if err := e.m.ExportAudit(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyAuditExportCheckpoint(&buf, cp); !errors.As(err, &ce) {
			t.Fatalf("offline verify against the checkpoint = %v", err)
		}
	})

	t.Run("every MAC stripped, then an honest append: the checkpoint still finds it", func(t *testing.T) {
		// The one rewrite the MACs alone cannot find: the whole history made to look as if no
		// key had ever been loaded, then blessed by the next append under the key (docs/design.md).
		e, _, cp, _ := setup(t)
		e.close()
		forge(t, e, 2, func(x *AuditEntry) { x.Message = "nothing happened" }, "strip", nil, 0)
		e.open()
		if _, err := e.m.VerifyAudit(); err == nil {
			t.Fatal("verify accepts a stripped log while the HSM holds the key")
		}
		record(t, e.m, 1, "honest")
		var ce *CheckpointError
		if _, err := e.m.VerifyAuditCheckpoint(cp); !errors.As(err, &ce) {
			t.Fatalf("verify against the checkpoint = %v", err)
		}
	})

	t.Run("a checkpoint not made by this key is refused", func(t *testing.T) {
		e, _, cp, _ := setup(t)
		cp.MAC = strings.Repeat("00", 32)
		if _, err := e.m.VerifyAuditCheckpoint(cp); !errors.Is(err, ErrBadCheckpoint) {
			t.Fatalf("verify against a forged checkpoint = %v", err)
		}
	})
}

// TestAuditAuthEpochs follows the authentication through a factory reset and a new key: the
// entries of each key stay verifiable, the change is recorded in the log, and a verification
// without a key says it checked no MAC instead of failing.
func TestAuditAuthEpochs(t *testing.T) {
	e := newEnv(t)
	loadKey(t, e)
	record(t, e.m, 2, "first key")
	first, err := e.m.VerifyAudit()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.hsm.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	record(t, e.m, 2, "no key")
	s, err := e.m.VerifyAudit()
	if err != nil || s.KeyID != "" || s.Authenticated != 0 || !strings.Contains(s.NotChecked, "no master backup key") {
		t.Fatalf("without a key: %+v, %v", s, err)
	}
	log, _ := e.m.AuditLog(0)
	if got := log[len(log)-2]; got.Event != AuditUnkeyed || got.MAC != "" || got.KeyID != first.KeyID {
		t.Fatalf("entry %d = %+v, want the end of authentication", got.Seq, got)
	}
	loadKey(t, e)
	record(t, e.m, 1, "second key")
	s, err = e.m.VerifyAudit()
	if err != nil || s.KeyID == first.KeyID || s.Authenticated != s.Entries {
		t.Fatalf("with the second key: %+v, %v", s, err)
	}
	// first key (checked no more: the HSM does not hold it), none, second key.
	if len(s.Spans) != 3 || s.Spans[0].KeyID != first.KeyID || s.Spans[0].Checks || s.Spans[1].KeyID != "" || s.Spans[2].KeyID != s.KeyID || !s.Spans[2].Checks {
		t.Fatalf("spans %+v", s.Spans)
	}
	// A service cannot forge the journal's own events.
	if err := e.m.RecordAudit("CN=mallory", AuditKeyed, "forged"); !errors.Is(err, ErrBadAuditEvent) {
		t.Fatalf("RecordAudit(audit.keyed) = %v", err)
	}
}

// TestMigration4 opens a schema-3 journal whose entries carry no MAC while the HSM holds a key:
// the upgrade is recorded and authenticated, the old entries reported as appended without one.
func TestMigration4(t *testing.T) {
	e := newEnv(t)
	loadKey(t, e)
	e.close()
	// A schema-3 journal: entries without MACs, no epoch.
	st, err := journal.Open(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	fillAudit(t, st, 20, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	err = st.DB().Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(journal.BucketMeta)
		if err := meta.Delete(journal.KeyAuditEpoch); err != nil {
			return err
		}
		return meta.Put(journal.KeySchema, binary.BigEndian.AppendUint32(nil, 3))
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.open()
	s, err := e.m.VerifyAudit()
	if err != nil || s.Entries != 22 || s.Authenticated != 22 || len(s.Spans) != 2 || s.Spans[0] != (AuditSpan{First: 1, Last: 20}) {
		t.Fatalf("after the upgrade: %+v, %v", s, err)
	}
	log, _ := e.m.AuditLog(0)
	if log[20].Event != AuditJournalUpgraded || log[21].Event != AuditKeyed {
		t.Fatalf("entries 21, 22 = %s, %s", log[20].Event, log[21].Event)
	}
	err = e.m.h.St.View(func(tx *bolt.Tx) error {
		if v := journal.SchemaOf(tx); v != journal.SchemaVersion {
			return fmt.Errorf("schema %d", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Opened again: no second upgrade entry.
	e.restart()
	if s2, err := e.m.VerifyAudit(); err != nil || s2.Entries != 22 {
		t.Fatalf("after a restart: %+v, %v", s2, err)
	}
}

// noAuthHSM holds a key but cannot authenticate: a PKCS#11 token whose MBK an older keyquorum
// loaded.
type noAuthHSM struct{ *soft.HSM }

func (noAuthHSM) Authenticate(context.Context, []byte) ([]byte, error) {
	return nil, hsm.ErrNoAuthenticatorKey
}

func (noAuthHSM) CheckAuthenticator(context.Context, []byte, []byte) error {
	return hsm.ErrNoAuthenticatorKey
}

// TestAuditHSMCannotAuthenticate: an HSM that holds a key but cannot make MACs leaves the
// entries without one, and a verification says why it checked none instead of failing.
func TestAuditHSMCannotAuthenticate(t *testing.T) {
	h, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LoadBackupKey(context.Background(), bytes.Repeat([]byte{9}, 32)); err != nil {
		t.Fatal(err)
	}
	st, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var warned []string
	st.Key = hsmAuditKey{h: noAuthHSM{h}}
	st.Warn = func(msg string, err error) { warned = append(warned, msg+": "+err.Error()) }
	fillAudit(t, st, 3, time.Now())
	m := &Manager{h: attempt.Host{St: st}}
	s, err := m.VerifyAudit()
	if err != nil || s.Entries != 3 || s.KeyID != "" || !strings.Contains(s.NotChecked, "authenticator key") {
		t.Fatalf("verify = %+v, %v", s, err)
	}
	if len(warned) == 0 {
		t.Error("the appends without a MAC were not logged")
	}
}
