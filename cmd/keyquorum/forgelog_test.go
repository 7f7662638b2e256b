package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/soft"
)

// TestSecurityAuditRewriteDetectedCLI (issue 20, point 8) runs testdata/security_audit against
// a real `keyquorum serve`: the audit log of a stopped service is rewritten in its bbolt file so
// that the unkeyed hash chain still holds, and `keyquorum audit verify` then fails naming the
// first forged entry; a checkpoint taken before (`keyquorum audit checkpoint`) finds it too,
// online and against an export offline. (TestSecurityAuditRewriteDetected in package ceremony
// covers every kind of rewrite.)
func TestSecurityAuditRewriteDetectedCLI(t *testing.T) {
	testscript.Run(t, scriptParams(filepath.Join("testdata", "security_audit")))
}

// cmdHSMMBK loads a random master backup key into NAME's soft HSM (before `node NAME`): what a
// key load leaves behind, without the cards.
func cmdHSMMBK(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 1, "hsmmbk NAME")
	h, err := soft.Open(filepath.Join(ts.MkAbs(a[0]), "hsm"))
	ts.Check(err)
	defer h.Close()
	mbk := make([]byte, hsm.KeySize)
	rand.Read(mbk)
	defer hsm.Zero(mbk)
	ts.Check(h.LoadBackupKey(context.Background(), mbk))
}

// cmdForgeLog rewrites NAME's audit log in ceremony.db (the node stopped) as someone who can
// write the file but does not hold the key would: entry SEQ's message is changed and the
// unkeyed hash chain recomputed from there to the head, so that the chain alone still verifies;
// the MACs stay as they were.
func cmdForgeLog(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 2, "forgelog NAME SEQ")
	from, err := strconv.ParseUint(a[1], 10, 64)
	ts.Check(err)
	db, err := bolt.Open(filepath.Join(ts.MkAbs(a[0]), "ceremony.db"), 0o600, &bolt.Options{Timeout: time.Second})
	ts.Check(err)
	defer db.Close()
	ts.Check(db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		var prev string
		var last ceremony.AuditEntry
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var e ceremony.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Seq >= from {
				if e.Seq == from {
					e.Message = "nothing happened here"
				}
				e.Prev = prev
				if e.Hash, err = e.ComputeHash(); err != nil {
					return err
				}
				raw, err := json.Marshal(&e)
				if err != nil {
					return err
				}
				if err := b.Put(append([]byte(nil), k...), raw); err != nil {
					return err
				}
			}
			prev, last = e.Hash, e
		}
		if last.Seq < from {
			return fmt.Errorf("the log has no entry %d", from)
		}
		head, _ := json.Marshal(map[string]any{"seq": last.Seq, "hash": last.Hash})
		return tx.Bucket([]byte("meta")).Put([]byte("audit-head"), head)
	}))
}
