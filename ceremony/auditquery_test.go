package ceremony

import (
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// fillAudit appends n entries in batches through journal.AppendAudit (the log's own format,
// chain and index): ceremonies of 10 entries each, two operators, a serial on every card event,
// one second apart from t0. The batches are not synced to disk one by one (a test's or a
// benchmark's log need not survive a crash); the store syncs once at the end.
func fillAudit(tb testing.TB, st *journal.Store, n int, t0 time.Time) {
	tb.Helper()
	// 5 000 entries a transaction: bbolt splits a node only at commit, so a larger batch
	// shifts ever longer in-memory nodes (500 000 entries: 15 s at 5 000, 40-56 s at 50 000,
	// 23-27 s at 1 000).
	const batch = 5000
	db := st.DB()
	db.NoSync = true
	defer func() {
		db.NoSync = false
		if err := db.Sync(); err != nil {
			tb.Fatal(err)
		}
	}()
	for done := 0; done < n; {
		err := st.Update(func(tx *bolt.Tx) error {
			for i := 0; i < batch && done < n; i, done = i+1, done+1 {
				e := &AuditEntry{Time: t0.Add(time.Duration(done) * time.Second), Operator: fmt.Sprintf("CN=operator %d", done%2),
					Ceremony: uint64(done/10 + 1), Kind: KindGenerate, Event: AuditCardWritten, Message: fmt.Sprintf("entry %d", done)}
				switch done % 10 {
				case 0:
					e.Event = AuditCeremonyStarted
				case 9:
					e.Event = AuditCeremonyDone
				default:
					e.Serials = []string{fmt.Sprintf("CARD%04d", done%1000)}
				}
				if err := journal.AppendAudit(tx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func TestAuditPage(t *testing.T) {
	e := newEnv(t)
	// The log of a fresh manager may hold entries of its own; start counting after them.
	base, _ := e.m.AuditPage(AuditQuery{Limit: 1})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fillAudit(t, e.m.h.St, 2000, t0)
	seqOf := func(i int) uint64 { return base.Total + uint64(i) + 1 }

	// Newest first, paged without gaps or repeats.
	seen := map[uint64]bool{}
	var before uint64
	pages := 0
	for {
		p, err := e.m.AuditPage(AuditQuery{Before: before, Limit: 300})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for i, a := range p.Entries {
			if seen[a.Seq] || (i > 0 && a.Seq >= p.Entries[i-1].Seq) {
				t.Fatalf("page %d: entry %d repeated or out of order", pages, a.Seq)
			}
			seen[a.Seq] = true
		}
		if p.Total != base.Total+2000 {
			t.Errorf("total %d", p.Total)
		}
		if p.Next == 0 {
			break
		}
		before = p.Next
	}
	if len(seen) != int(base.Total)+2000 || pages != (len(seen)+299)/300 {
		t.Errorf("paged through %d entries in %d pages", len(seen), pages)
	}

	cases := []struct {
		name string
		q    AuditQuery
		want []uint64 // seqs, newest first
	}{
		{"ceremony", AuditQuery{Ceremony: 7}, seqRange(seqOf(69), seqOf(60))},
		{"ceremony, one page", AuditQuery{Ceremony: 7, Limit: 3}, seqRange(seqOf(69), seqOf(67))},
		{"ceremony, before", AuditQuery{Ceremony: 7, Before: seqOf(65)}, seqRange(seqOf(64), seqOf(60))},
		{"serial", AuditQuery{Serial: "CARD0005"}, []uint64{seqOf(1005), seqOf(5)}},
		{"event and operator", AuditQuery{Event: AuditCeremonyStarted, Operator: "CN=operator 0", Limit: 2}, []uint64{seqOf(1990), seqOf(1980)}},
		{"operator, last page", AuditQuery{Operator: "CN=operator 1", Before: seqOf(4)}, []uint64{seqOf(3), seqOf(1)}},
		{"time range", AuditQuery{Since: t0.Add(100 * time.Second), Until: t0.Add(102 * time.Second)}, seqRange(seqOf(102), seqOf(100))},
		{"time range and event", AuditQuery{Event: AuditCeremonyDone, Since: t0.Add(95 * time.Second), Until: t0.Add(130 * time.Second)}, []uint64{seqOf(129), seqOf(119), seqOf(109), seqOf(99)}},
		{"no match", AuditQuery{Serial: "CARD9999"}, nil},
		{"event past the end of the index", AuditQuery{Event: "zzz.none"}, nil},
		{"until before the log", AuditQuery{Until: t0.Add(-time.Hour)}, nil},
	}
	for _, c := range cases {
		p, err := e.m.AuditPage(c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []uint64
		for _, a := range p.Entries {
			got = append(got, a.Seq)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	// A ceremony's entries through the index, oldest first, as the protocol reads them.
	log, err := e.m.AuditLog(7)
	if err != nil || len(log) != 10 || log[0].Seq != seqOf(60) || log[9].Seq != seqOf(69) {
		t.Errorf("AuditLog(7): %d entries, %v", len(log), err)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s >= to; s-- {
		out = append(out, s)
	}
	return out
}

func TestVerifyAuditIncremental(t *testing.T) {
	e := newEnv(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fillAudit(t, e.m.h.St, 100, t0)
	s, err := e.m.VerifyAuditIncremental()
	if err != nil || s.From != 0 {
		t.Fatalf("first incremental verification checks everything: %+v %v", s, err)
	}
	fillAudit(t, e.m.h.St, 10, t0.Add(time.Hour))
	s2, err := e.m.VerifyAuditIncremental()
	if err != nil || s2.From != s.Entries || s2.Entries != s.Entries+10 {
		t.Fatalf("second: %+v %v (first %+v)", s2, err, s)
	}
	// Editing the checkpoint entry or anything after it is found; an older edit needs the
	// full verification.
	edit := func(seq uint64) {
		t.Helper()
		err := e.m.h.St.Update(func(tx *bolt.Tx) error {
			var a AuditEntry
			if _, err := journal.GetJSON(tx.Bucket(journal.BucketAudit), journal.U64Key(seq), &a); err != nil {
				return err
			}
			a.Message = "rewritten"
			return journal.PutJSON(tx.Bucket(journal.BucketAudit), journal.U64Key(seq), &a)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	edit(5)
	if _, err := e.m.VerifyAuditIncremental(); err != nil {
		t.Errorf("an edit before the checkpoint is not the incremental check's to find: %v", err)
	}
	var ae *AuditError
	if _, err := e.m.VerifyAudit(); !errors.As(err, &ae) || ae.Seq != 5 {
		t.Errorf("full verification of an old edit: %v", err)
	}
	edit(s2.Entries)
	if _, err := e.m.VerifyAuditIncremental(); !errors.As(err, &ae) || ae.Seq != s2.Entries {
		t.Errorf("edit of the checkpoint entry: %v", err)
	}
}

// TestMigration3 indexes a log written before the audit index existed.
func TestMigration3(t *testing.T) {
	e := newEnv(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fillAudit(t, e.m.h.St, 50, t0)
	want, _ := e.m.AuditPage(AuditQuery{Ceremony: 3})
	// Back to schema 2: no index.
	err := e.m.h.St.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(journal.BucketAuditIndex); err != nil {
			return err
		}
		return tx.Bucket(journal.BucketMeta).Put(journal.KeySchema, []byte{0, 0, 0, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.restart()
	got, err := e.m.AuditPage(AuditQuery{Ceremony: 3})
	if err != nil || len(got.Entries) != 10 || fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) {
		t.Errorf("after the journal.Migration: %d entries, %v", len(got.Entries), err)
	}
}

// fillCeremonies journals n ended ceremonies (every 7th a card check, the rest loads) with
// their ceremony.started audit entries, in batches.
func fillCeremonies(tb testing.TB, st *journal.Store, n int) {
	tb.Helper()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for done := 0; done < n; {
		err := st.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(journal.BucketCeremonies)
			for i := 0; i < 2000 && done < n; i, done = i+1, done+1 {
				id, err := b.NextSequence()
				if err != nil {
					return err
				}
				kind := KindLoad
				if id%7 == 0 {
					kind = KindCardCheck
				}
				now := t0.Add(time.Duration(id) * time.Minute)
				j := &Journal{ID: id, Kind: kind, Status: StatusDone, Operator: "CN=bench", Started: now, Updated: now, Ended: now, Attempt: 1}
				if err := journal.AppendAudit(tx, &AuditEntry{Time: now, Operator: "CN=bench", Ceremony: id, Kind: kind, Event: AuditCeremonyStarted, Message: "started"}); err != nil {
					return err
				}
				if err := journal.PutJSON(b, journal.U64Key(id), j); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func TestCeremoniesPage(t *testing.T) {
	e := newEnv(t)
	fillCeremonies(t, e.m.h.St, 100)
	ids := func(js []Journal) []uint64 {
		var out []uint64
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	js, next, err := e.m.CeremoniesPage(CeremonyQuery{Limit: 3})
	if err != nil || fmt.Sprint(ids(js)) != "[100 99 98]" || next != 98 {
		t.Errorf("newest: %v next %d %v", ids(js), next, err)
	}
	js, next, _ = e.m.CeremoniesPage(CeremonyQuery{Limit: 3, Before: 98})
	if fmt.Sprint(ids(js)) != "[97 96 95]" || next != 95 {
		t.Errorf("next page: %v next %d", ids(js), next)
	}
	js, next, _ = e.m.CeremoniesPage(CeremonyQuery{Limit: 5, Before: 3})
	if fmt.Sprint(ids(js)) != "[2 1]" || next != 0 {
		t.Errorf("last page: %v next %d", ids(js), next)
	}
	js, next, _ = e.m.CeremoniesPage(CeremonyQuery{Kind: KindCardCheck, Limit: 3})
	if fmt.Sprint(ids(js)) != "[98 91 84]" || next != 84 {
		t.Errorf("card checks: %v next %d", ids(js), next)
	}
	js, next, _ = e.m.CeremoniesPage(CeremonyQuery{Kind: KindCardCheck, Before: 14})
	if fmt.Sprint(ids(js)) != "[7]" || next != 0 {
		t.Errorf("card checks before 14: %v next %d", ids(js), next)
	}
	js, _, _ = e.m.CeremoniesPage(CeremonyQuery{Kind: KindFactoryReset})
	if len(js) != 0 {
		t.Errorf("no reset was journaled: %v", ids(js))
	}
	// The last kind in the index (sorted by name) is found from its end too.
	js, _, _ = e.m.CeremoniesPage(CeremonyQuery{Kind: KindLoad, Limit: 1})
	if fmt.Sprint(ids(js)) != "[100]" {
		t.Errorf("loads: %v", ids(js))
	}
}
