package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// A growth curve is one operation measured at sizes an order of magnitude apart. The table
// gives each size's figure, the ratio between neighbouring sizes and the growth exponent
// (log of the time ratio over log of the size ratio: 1 is linear, 0 flat); an exponent above
// maxExponent is flagged, and so is one above flatExponent for an operation that must not
// grow with the history at all.
const (
	maxExponent  = 1.2
	flatExponent = 0.2
)

type curve struct {
	what  string
	bench string // benchmark name with %s for the size
	flat  bool   // must not grow
}

func (r *report) growth(ctx context.Context) {
	r.order = orderGrowth
	sizes := strings.Split(r.p.auditSizes, ",")
	step("ceremony: audit log growth at " + r.p.auditSizes + " entries")
	src := "`BenchmarkAuditGrowth` (ceremony)"
	os.Setenv("KQ_AUDIT_SIZES", r.p.auditSizes)
	lines, err := r.goBench(ctx, "ceremony", "ceremony-audit-growth", 90*time.Minute,
		"-test.bench", "^BenchmarkAuditGrowth$", "-test.benchtime", "20x", "-test.count", "1")
	os.Unsetenv("KQ_AUDIT_SIZES")
	audit := []curve{
		{"audit: append one entry", "BenchmarkAuditGrowth/append/entries=%s", true},
		{"audit: newest page of 200 (the Audit log page)", "BenchmarkAuditGrowth/page-newest/entries=%s", true},
		{"audit: page filtered by card serial", "BenchmarkAuditGrowth/page-serial/entries=%s", true},
		{"audit: one minute's entries (time range)", "BenchmarkAuditGrowth/page-time-range/entries=%s", true},
		{"audit: incremental verification of 100 new entries", "BenchmarkAuditGrowth/verify-incremental-100/entries=%s", true},
	}
	r.curves(audit, sizes, "entries", src, "1 run of 20 operations per size", "", lines, err)
	r.curves([]curve{
		{"audit verify (every entry)", "BenchmarkAuditGrowth/verify/entries=%s", false},
		{"audit export (every entry)", "BenchmarkAuditGrowth/export/entries=%s", false},
	}, sizes, "entries", src, "3 operations per size up to 1 M entries, 1 above (the mean)", "peak-RSS-MiB", lines, err)

	step("ceremony: journal growth at 10 / 1000 / 100000 ceremonies")
	src = "`BenchmarkJournalGrowth` (ceremony)"
	lines, err = r.goBench(ctx, "ceremony", "ceremony-journal-growth", 30*time.Minute,
		"-test.bench", "^BenchmarkJournalGrowth$", "-test.benchtime", "20x", "-test.count", "1")
	journal := []curve{
		{"ceremonies: open the journal (service start)", "BenchmarkJournalGrowth/open/ceremonies=%s", true},
		{"ceremonies: the status page's overview", "BenchmarkJournalGrowth/overview/ceremonies=%s", true},
		{"ceremonies: newest 10 of the list", "BenchmarkJournalGrowth/list-newest/ceremonies=%s", true},
		{"ceremonies: newest 10 card checks", "BenchmarkJournalGrowth/list-card-checks/ceremonies=%s", true},
	}
	r.curves(journal, []string{"10", "1000", "100000"}, "ceremonies", src, "1 run of 20 operations per size", "", lines, err)

	step("webconf/operator: operators, revoked serials and CRL entries at 10 / 1000 / 10000")
	src = "`BenchmarkOperatorsGrowth` (webconf/operator)"
	lines, err = r.goBench(ctx, "webconf/operator", "operator-growth", 30*time.Minute,
		"-test.bench", "^BenchmarkOperatorsGrowth$", "-test.benchtime", "200x", "-test.count", "1")
	operators := []curve{
		{"request admission, management-CA certificate (revoked serials)", "BenchmarkOperatorsGrowth/admit-management-cert/size=%s", true},
		{"request admission, bundle-CA certificate (CRL entries)", "BenchmarkOperatorsGrowth/admit-bundle-cert-crl/size=%s", true},
		{"the Operators page's operator list", "BenchmarkOperatorsGrowth/list-operators/size=%s", false},
		{"the Operators page's certificate list", "BenchmarkOperatorsGrowth/list-certificates/size=%s", false},
	}
	r.curves(operators, []string{"10", "1000", "10000"}, "each", src, "1 run of 20 operations per size", "", lines, err)

	r.objectGrowth(ctx)
}

// objectGrowth gives the curves of the HSM object store: the soft HSM's backup and restore and
// a cluster join at r.p.storeSizes objects, SoftHSM2's backup and restore at the smaller
// r.p.p11Sizes (every object is a file of its own on SoftHSM2's token, and filling the token
// with 100 000 of them for the benchmark alone would take many minutes).
func (r *report) objectGrowth(ctx context.Context) {
	const once = "1 operation per size"
	sizes := strings.Split(r.p.storeSizes, ",")
	step("hsm/soft: object store growth at " + r.p.storeSizes + " objects")
	src := "`BenchmarkSoftStoreGrowth` (hsm/soft)"
	os.Setenv("KQ_STORE_SIZES", r.p.storeSizes)
	lines, err := r.goBench(ctx, "hsm/soft", "soft-store-growth", 60*time.Minute,
		"-test.bench", "^BenchmarkSoftStoreGrowth$", "-test.benchtime", "1x", "-test.count", "1", "-test.timeout", "70m")
	r.curves([]curve{
		{"soft HSM: backup of the object store (mixed objects)", "BenchmarkSoftStoreGrowth/backup/objects=%s", false},
		{"soft HSM: restore onto an empty store (mixed objects)", "BenchmarkSoftStoreGrowth/restore/objects=%s", false},
	}, sizes, "objects", src, once, "peak-RSS-MiB", lines, err)

	step("cluster: join growth at " + r.p.storeSizes + " keys")
	src = "`BenchmarkJoinGrowth` (cluster)"
	lines, err = r.goBench(ctx, "cluster", "cluster-join-growth", 60*time.Minute,
		"-test.bench", "^BenchmarkJoinGrowth$", "-test.benchtime", "1x", "-test.count", "1", "-test.timeout", "70m")
	os.Unsetenv("KQ_STORE_SIZES")
	r.curves([]curve{
		{"cluster join between two soft HSMs (TLS, state transfer, restore)", "BenchmarkJoinGrowth/join/keys=%s", false},
	}, sizes, "keys", src, once, "peak-RSS-MiB", lines, err)

	sizes = strings.Split(r.p.p11Sizes, ",")
	step("hsm/pkcs11: SoftHSM2 object store growth at " + r.p.p11Sizes + " objects")
	src = "`BenchmarkPKCS11StoreGrowth` (hsm/pkcs11)"
	os.Setenv("KQ_PKCS11_SIZES", r.p.p11Sizes)
	lines, err = r.goBench(ctx, "hsm/pkcs11", "pkcs11-store-growth", 60*time.Minute,
		"-test.bench", "^BenchmarkPKCS11StoreGrowth$", "-test.benchtime", "1x", "-test.count", "1", "-test.timeout", "70m")
	os.Unsetenv("KQ_PKCS11_SIZES")
	small := " (at " + r.p.p11Sizes + " objects, not 100 000: every object is a file of SoftHSM2's token, and filling a token of 100 000 takes many minutes)"
	r.curves([]curve{
		{"SoftHSM2 token: backup of the object store (mixed objects)" + small, "BenchmarkPKCS11StoreGrowth/backup/objects=%s", false},
		{"SoftHSM2 token: restore onto an empty token (mixed objects)" + small, "BenchmarkPKCS11StoreGrowth/restore/objects=%s", false},
	}, sizes, "objects", src, once, "peak-RSS-MiB", lines, err)
}

// curves adds a row per curve; rss names the metric of the peak RSS the benchmarks report
// at each size, or is empty.
func (r *report) curves(cs []curve, sizes []string, unit, src, runs, rss string, lines []benchLine, err error) {
	for _, c := range cs {
		if err != nil {
			r.fail(c.what, src, err)
			continue
		}
		var figs []string
		var prev, prevSize float64
		var worst float64
		bad := false
		for i, size := range sizes {
			v, err := metric(lines, fmt.Sprintf(c.bench, size), "ns/op")
			if err != nil {
				r.fail(c.what, src, err)
				bad = true
				break
			}
			t := median(v) / 1e9
			n, _ := strconv.ParseFloat(size, 64)
			fig := strings.TrimSpace(humanCount(n)+" "+unit) + ": " + dur(t)
			if rss != "" {
				m, err := metric(lines, fmt.Sprintf(c.bench, size), rss)
				if err != nil {
					r.fail(c.what, src, err)
					bad = true
					break
				}
				fig += fmt.Sprintf(", peak RSS %.0f MiB", median(m))
				if a, err := metric(lines, fmt.Sprintf(c.bench, size), "peak-anon-MiB"); err == nil {
					// The RSS counts the pages of a memory-mapped file read (the bbolt log).
					fig += fmt.Sprintf(" (%.0f MiB of it not the mapped file", median(a))
					if b, err := metric(lines, fmt.Sprintf(c.bench, size), "anon-before-MiB"); err == nil {
						fig += fmt.Sprintf(", %.0f MiB of that held before it began", median(b))
					}
					fig += ")"
				}
			}
			if i > 0 && prev > 0 {
				e := math.Log(t/prev) / math.Log(n/prevSize)
				worst = math.Max(worst, e)
				fig += fmt.Sprintf(" (×%s size → %s time, exponent %.2f)", sig(n/prevSize), ratio(t/prev), e)
			}
			figs = append(figs, fig)
			prev, prevSize = t, n
		}
		if bad {
			continue
		}
		verdict := "linear or better"
		switch {
		case c.flat && worst > flatExponent:
			verdict = fmt.Sprintf("**grows with history (exponent %.2f > %.1f)**", worst, flatExponent)
		case c.flat:
			verdict = "flat"
		case worst > maxExponent:
			verdict = fmt.Sprintf("**worse than linear (exponent %.2f > %.1f)**", worst, maxExponent)
		}
		r.add(c.what, strings.Join(figs, "; ")+" — "+verdict, runs, src)
	}
}

func humanCount(n float64) string {
	switch {
	case n >= 1e6 && math.Mod(n, 1e6) == 0:
		return fmt.Sprintf("%.0f M", n/1e6)
	case n >= 1e3 && math.Mod(n, 1e3) == 0:
		return fmt.Sprintf("%.0f k", n/1e3)
	}
	return strconv.FormatFloat(n, 'f', 0, 64)
}
