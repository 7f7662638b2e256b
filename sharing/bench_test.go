package sharing

import (
	"fmt"
	"testing"
)

func BenchmarkSplit(b *testing.B) {
	for _, p := range Presets {
		b.Run(fmt.Sprintf("%dof%d", p.K, p.N), func(b *testing.B) {
			secret := newSecret(b)
			for b.Loop() {
				if _, err := Split(secret, p.K, p.N); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCombine(b *testing.B) {
	for _, p := range Presets {
		b.Run(fmt.Sprintf("%dof%d", p.K, p.N), func(b *testing.B) {
			records, err := Split(newSecret(b), p.K, p.N)
			if err != nil {
				b.Fatal(err)
			}
			quorum := records[:p.K]
			for b.Loop() {
				secret, err := Combine(quorum)
				if err != nil {
					b.Fatal(err)
				}
				Zero(secret)
			}
		})
	}
}

// BenchmarkCombineFindBad measures the worst ordinary case of the damaged-card search: all five
// cards of 3-of-5 with the first one damaged.
func BenchmarkCombineFindBad(b *testing.B) {
	records, err := Split(newSecret(b), 3, 5)
	if err != nil {
		b.Fatal(err)
	}
	records[0] = damage(records[0], 0)
	for b.Loop() {
		if _, err := Combine(records); err == nil {
			b.Fatal("damaged card not found")
		}
	}
}
