package ceremony

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
	"github.com/keyquorum/keyquorum/hsm/soft"
)

// BenchmarkAuditAuthenticated measures what the audit log's authentication costs with the soft
// HSM holding a key: one append (its MAC made inside the transaction) and a full verification
// that checks every MAC (KQ_AUDIT_SIZES sizes; the verification's cost grows with the log, one
// HSM call per entry).
func BenchmarkAuditAuthenticated(b *testing.B) {
	h, err := soft.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if err := h.LoadBackupKey(context.Background(), bytes.Repeat([]byte{7}, 32)); err != nil {
		b.Fatal(err)
	}
	key := hsmAuditKey{h: h, log: slog.New(slog.DiscardHandler)}
	for _, n := range auditBenchSizes(b) {
		st, err := journal.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		st.Key, st.Warn = key, key.warn
		start := time.Now()
		fillAudit(b, st, n, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		b.Logf("%d authenticated entries written in %v", n, time.Since(start).Round(time.Millisecond))
		m := &Manager{h: attempt.Host{St: st}}
		b.Run(fmt.Sprintf("append/entries=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				err := st.Update(func(tx *bolt.Tx) error {
					return journal.AppendAudit(tx, &AuditEntry{Time: time.Now(), Operator: "CN=bench", Event: AuditCardRead, Message: "bench"})
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("verify/entries=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, err := m.VerifyAudit()
				if err != nil || s.Authenticated != s.Entries {
					b.Fatalf("%+v, %v", s, err)
				}
			}
		})
		st.Close()
	}
}
