package main

import (
	"strings"
	"testing"
)

// TestCurves: a growth row gives each size's time and peak RSS, the ratio and exponent between
// sizes, and flags a curve worse than linear; a size without a result is a failed row.
func TestCurves(t *testing.T) {
	out := []byte(`BenchmarkSoftStoreGrowth/restore/objects=100-2     	1	  10000000 ns/op	  11.69 peak-RSS-MiB
BenchmarkSoftStoreGrowth/restore/objects=10000-2   	1	 700000000 ns/op	  61.51 peak-RSS-MiB
BenchmarkSoftStoreGrowth/restore/objects=100000-2  	1	14000000000 ns/op	 409.3 peak-RSS-MiB
BenchmarkSoftStoreGrowth/backup/objects=100-2      	1	   6000000 ns/op	  12.66 peak-RSS-MiB
`)
	r := &report{}
	r.curves([]curve{
		{"restore", "BenchmarkSoftStoreGrowth/restore/objects=%s", false},
		{"backup", "BenchmarkSoftStoreGrowth/backup/objects=%s", false},
	}, []string{"100", "10000", "100000"}, "objects", "src", "1 operation per size", "peak-RSS-MiB", parseBench(out), nil)
	if len(r.rows) != 2 {
		t.Fatalf("rows %+v", r.rows)
	}
	restore := r.rows[0].figure
	for _, want := range []string{"100 objects: ", "peak RSS 12 MiB", "10 k objects: ", "peak RSS 62 MiB", "exponent 0.92",
		"100 k objects: ", "peak RSS 409 MiB", "exponent 1.30", "**worse than linear (exponent 1.30 > 1.2)**"} {
		if !strings.Contains(restore, want) {
			t.Errorf("restore row %q lacks %q", restore, want)
		}
	}
	if r.rows[0].runs != "1 operation per size" || r.rows[0].failed {
		t.Errorf("restore row %+v", r.rows[0])
	}
	if !r.rows[1].failed || !strings.Contains(r.rows[1].figure, "objects=10000") {
		t.Errorf("backup row without the larger sizes: %+v", r.rows[1])
	}
}
