package ceremony

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
	"github.com/keyquorum/keyquorum/internal/memstat"
)

// auditBenchSizes are the audit log sizes of the growth benchmarks: KQ_AUDIT_SIZES (comma
// separated) or 10 000, 100 000 and 1 000 000 entries. scripts/bench passes 10 000,
// 1 000 000 and 10 000 000 for the report (the 10 M log takes minutes to write and ~4 GB).
func auditBenchSizes(b *testing.B) []int {
	v := os.Getenv("KQ_AUDIT_SIZES")
	if v == "" {
		return []int{10_000, 100_000, 1_000_000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("KQ_AUDIT_SIZES: %q is not a size", f)
		}
		out = append(out, n)
	}
	return out
}

// benchAuditStore opens a journal holding n audit entries (written once per size and process).
func benchAuditStore(b *testing.B, n int) *journal.Store {
	b.Helper()
	dir := b.TempDir()
	st, err := journal.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	start := time.Now()
	fillAudit(b, st, n, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b.Logf("%d entries written in %v", n, time.Since(start).Round(time.Millisecond))
	return st
}

// BenchmarkAuditGrowth measures, at each log size, appending one entry (must not grow),
// verifying and exporting the whole log (linear), verifying what was appended since the last
// check, and reading the newest page, a filtered page and a time range (must not grow).
func BenchmarkAuditGrowth(b *testing.B) {
	for _, n := range auditBenchSizes(b) {
		st := benchAuditStore(b, n)
		m := &Manager{h: attempt.Host{St: st}}
		b.Run(fmt.Sprintf("append/entries=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				err := st.Update(func(tx *bolt.Tx) error {
					return journal.AppendAudit(tx, &AuditEntry{Time: time.Now(), Operator: "CN=bench", Ceremony: 1, Kind: KindLoad,
						Event: AuditCardRead, Message: "bench", Serials: []string{"CARD0001"}})
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("page-newest/entries=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if p, err := m.AuditPage(AuditQuery{Limit: 200}); err != nil || len(p.Entries) != 200 {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("page-serial/entries=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if p, err := m.AuditPage(AuditQuery{Serial: "CARD0005", Limit: 10}); err != nil || len(p.Entries) == 0 {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("page-time-range/entries=%d", n), func(b *testing.B) {
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n/2) * time.Second)
			for i := 0; i < b.N; i++ {
				if p, err := m.AuditPage(AuditQuery{Since: t0, Until: t0.Add(time.Minute)}); err != nil || len(p.Entries) != 61 {
					b.Fatalf("%d entries, %v", len(p.Entries), err)
				}
			}
		})
		b.Run(fmt.Sprintf("verify-incremental-100/entries=%d", n), func(b *testing.B) {
			if _, err := m.VerifyAudit(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				fillAudit(b, st, 100, time.Now())
				b.StartTimer()
				if _, err := m.VerifyAuditIncremental(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("verify/entries=%d", n), func(b *testing.B) {
			fullLog(b, n, func() error { _, err := m.VerifyAudit(); return err })
		})
		b.Run(fmt.Sprintf("export/entries=%d", n), func(b *testing.B) {
			fullLog(b, n, func() error { return m.ExportAudit(io.Discard) })
		})
	}
}

// fullLog runs op, which reads the whole log of n entries, b.N times but at most 3 times (at
// most once above a million entries), whatever -benchtime asks for the cheap operations beside
// it: 20 verifications and 20 exports of 10 M entries would take an hour. It reports the time
// per operation of the runs made (as ns/op), their number (runs), the process's peak RSS during
// them (peak-RSS-MiB: it counts every page of the memory-mapped log they touch) and the highest
// anonymous resident memory sampled every 10 ms (peak-anon-MiB: what they hold besides the
// mapped log; a verification or export that kept the log in memory would show it here) beside
// the anonymous memory the process held before they began (anon-before-MiB: the open logs).
func fullLog(b *testing.B, n int, op func() error) {
	runs := min(b.N, 3)
	if n > 1_000_000 {
		runs = 1
	}
	// What the fill left on the heap goes back to the kernel first: the Go runtime returns
	// freed memory only slowly on its own, and the anonymous memory would show the fill.
	debug.FreeOSMemory()
	memstat.ResetPeak()
	before := memstat.AnonMiB()
	anon := memstat.WatchAnon()
	b.ResetTimer()
	start := time.Now()
	for range runs {
		if err := op(); err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(took.Nanoseconds())/float64(runs), "ns/op")
	b.ReportMetric(float64(runs), "runs")
	b.ReportMetric(memstat.PeakMiB(), "peak-RSS-MiB")
	b.ReportMetric(anon(), "peak-anon-MiB")
	b.ReportMetric(before, "anon-before-MiB")
}

// BenchmarkJournalGrowth measures, with 10, 1 000 and 100 000 ceremonies in the journal,
// opening the manager (what service start costs the ceremony room), the overview the status
// page shows, the newest page of the ceremonies list and the newest card checks (the Smart cards
// page's list). None may grow with the journal.
func BenchmarkJournalGrowth(b *testing.B) {
	for _, n := range []int{10, 1_000, 100_000} {
		e := newEnv(b)
		fillCeremonies(b, e.m.h.St, n)
		ctx := context.Background()
		b.Run(fmt.Sprintf("open/ceremonies=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e.close()
				b.StartTimer()
				e.open()
			}
		})
		b.Run(fmt.Sprintf("overview/ceremonies=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := e.m.Overview(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("list-newest/ceremonies=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if js, _, err := e.m.CeremoniesPage(CeremonyQuery{Limit: 10}); err != nil || len(js) != 10 {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("list-card-checks/ceremonies=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, _, err := e.m.CeremoniesPage(CeremonyQuery{Kind: KindCardCheck, Limit: 10}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
