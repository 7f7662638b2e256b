package cluster

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/internal/memstat"
)

// BenchmarkJoinGrowth: a whole cluster join between two soft HSMs over mutually authenticated
// TLS on loopback (challenge, proof, state transfer, header check and restore onto an empty
// HSM) at each size of KQ_STORE_SIZES (100 / 10 000 / 100 000 keys unless set), so that the
// report can show how the join grows with the key database; it also reports the process's
// peak RSS during the join (both nodes run in the process). The peer's keys are made with
// CreateKey, the HSM's own API, as an operator would make them.
func BenchmarkJoinGrowth(b *testing.B) {
	v := os.Getenv("KQ_STORE_SIZES")
	if v == "" {
		v = "100,10000,100000"
	}
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("KQ_STORE_SIZES: %q is not an object count", s)
		}
		mbk := newMBK()
		caA := newTestCA(b, "A's management CA")
		a := &Node{HSM: newHSM(b, mbk, n), Issuer: caA, CA: caA.cert, Audit: &auditLog{}, MaxUpload: 1 << 30}
		addr, node := peer(b, a, caA), nodeFile(b, a)
		caB := newTestCA(b, "B's management CA")
		b.Run(fmt.Sprintf("join/keys=%d", n), func(b *testing.B) {
			var peak float64
			for b.Loop() {
				b.StopTimer()
				joiner := &Node{HSM: newHSM(b, mbk, 0), Issuer: caB, Audit: &auditLog{}, MaxUpload: 1 << 30}
				runtime.GC()
				memstat.ResetPeak()
				b.StartTimer()
				res, err := joiner.Join(b.Context(), "admin of B", addr, node)
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, memstat.PeakMiB())
				if res.Keys != n {
					b.Fatalf("joined with %d keys of %d", res.Keys, n)
				}
			}
			b.ReportMetric(peak, "peak-RSS-MiB")
		})
	}
}
