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

// BenchmarkReissue2of3To3of5 runs whole re-issues of a 2-of-3 set as 3-of-5 (2 old cards read,
// the key split again and checked, 5 new cards written and verified, the sets switched) and
// reports the time and journal commits per ceremony. Each round starts from a fresh 2-of-3
// generation, outside the timer.
func BenchmarkReissue2of3To3of5(b *testing.B) {
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
		old, _ := e.generate(2, 3)
		if s := e.pad.State().Inserted; s != "" {
			e.pad.Remove()
		}
		fresh := e.newCards(5)
		e.op.use(old[0], old[1])
		e.op.use(fresh...)
		before := e.m.Commits()
		b.StartTimer()
		e.mustSucceed(e.start("CN=bench", Request{Kind: KindReissue, K: 3, N: 5}))
		b.StopTimer()
		commits += e.m.Commits() - before
		b.StartTimer()
	}
	b.ReportMetric(float64(commits)/float64(b.N), "commits/op")
}

// BenchmarkCardCheck runs card checks of one card (PIN, read, registry lookup, the HSM's
// authenticator check, the verdict journaled).
func BenchmarkCardCheck(b *testing.B) {
	e := newEnv(b)
	cards, _ := e.generate(2, 3)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if s := e.pad.State().Inserted; s != "" {
			e.pad.Remove()
		}
		e.op.use(cards[i%3])
		b.StartTimer()
		j := e.mustSucceed(e.start("CN=bench", Request{Kind: KindCardCheck}))
		if j.Check.Verdict != VerdictIntact {
			b.Fatalf("verdict %+v", j.Check)
		}
	}
}
