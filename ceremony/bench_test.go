package ceremony

import (
	"context"
	"testing"
)

// BenchmarkGenerate3of5 runs whole 3-of-5 key generations (5 cards written and verified, 3 read
// back, key loaded) against the simulator with an operator that reacts at once, and reports the
// time per ceremony and the journal commits per ceremony.
func BenchmarkGenerate3of5(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	var commits uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.hsm.Reset(ctx); err != nil {
			b.Fatal(err)
		}
		if s := e.pad.State().Inserted; s != "" {
			e.pad.Remove()
		}
		cards := e.newCards(5)
		e.op.use(cards...)
		e.op.use(cards[0], cards[1])
		before := e.m.Commits()
		b.StartTimer()
		h := e.start("CN=bench", Request{Kind: KindGenerate, K: 3, N: 5})
		e.mustSucceed(h)
		b.StopTimer()
		commits += e.m.Commits() - before
		b.StartTimer()
	}
	b.ReportMetric(float64(commits)/float64(b.N), "commits/op")
}
