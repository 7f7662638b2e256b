// Command report runs every Keyquorum benchmark and assembles the performance table: it prints
// it as Markdown and writes it, with the date and the machine, to bench/RESULTS.md.
// scripts/bench runs it from the module root after installing what it needs (scripts/deps).
//
// It measures nothing itself: it runs the benchmarks the packages keep (go test -bench, as
// compiled test binaries run in their package directory, each in a process of its own where
// its harness starts a private pcscd) and the tools under bench/ (backup, webload), reads their
// figures and takes medians. Each figure is the median over several runs, and every
// comparison is a ratio taken in this one run of the report: the backup against raw
// AES-256-GCM and age within each round of bench/backup, a ceremony over PC/SC against the
// APDU round trip measured in the same round.
//
// A benchmark that fails, is skipped or is missing leaves its row saying so and makes the
// exit status 1; the table is still written, never with a figure that was not measured.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// plan is how much of each benchmark to run.
type plan struct {
	backupMiB  int // size of the backup benchmark's file
	runs       int // runs of the quick benchmarks (the median is reported)
	slowRuns   int // runs of the slow ones: ceremonies over PC/SC
	backupRuns int // rounds of the backup benchmark
	apdus      int // APDUs per round-trip run
	requests   int // status page requests per load run
	sseEvents  int // pad events per SSE run
	benchtime  string
	ceremonies int    // simulator ceremonies per run
	auditSizes string // audit log sizes of the growth curves (KQ_AUDIT_SIZES)
	objects    int    // objects in the HSM object-store backup benchmarks
	storeSizes string // object-store sizes of the soft HSM's and the join's growth curves (KQ_STORE_SIZES)
	p11Sizes   string // object-store sizes of SoftHSM2's growth curves (KQ_PKCS11_SIZES)
}

var full = plan{backupMiB: 1024, runs: 5, slowRuns: 3, backupRuns: 5, apdus: 2000, requests: 20000, sseEvents: 500, benchtime: "0.2s", ceremonies: 10,
	auditSizes: "10000,1000000,10000000", objects: 10000, storeSizes: "100,10000,100000", p11Sizes: "100,1000,10000"}

// quick checks the report itself in a minute; its figures are not the table's.
var quick = plan{backupMiB: 64, runs: 2, slowRuns: 1, backupRuns: 1, apdus: 200, requests: 2000, sseEvents: 50, benchtime: "0.05s", ceremonies: 2,
	auditSizes: "1000,10000,100000", objects: 300, storeSizes: "100,1000", p11Sizes: "30,100"}

func main() {
	out := flag.String("out", "bench/RESULTS.md", "write the table to `file` (\"\" = print only)")
	isQuick := flag.Bool("quick", false, "a short run with small sizes to check the report works; prints only, unless -out is given")
	note := flag.String("note", "", "a sentence to add under the machine line (e.g. what else ran on the machine)")
	flag.Parse()
	p := full
	if *isQuick {
		p = quick
		outSet := false
		flag.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
		if !outSet {
			*out = ""
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, p, *out, *note); err != nil {
		fmt.Fprintln(os.Stderr, "bench report:", err)
		os.Exit(1)
	}
}

// row is one line of the table.
type row struct {
	order                      int // the order; rows are measured in another
	what, figure, runs, source string
	failed                     bool
}

// Row order in the table, as issue 7 lists the figures.
const (
	orderSharing = iota
	orderAPDU
	orderCeremony
	orderBackup
	orderWebConf
	orderColdStart
	orderGrowth
)

type report struct {
	order      int // of the rows being added
	root, work string
	p          plan
	rows       []row
	cpuBrand   string   // the CPU as Go's benchmarks name it (CPUID brand string)
	notes      []string // sentences under the table
	failures   int
}

func run(ctx context.Context, p plan, out, note string) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return errors.New("run from the module root (scripts/bench does)")
	}
	work, err := os.MkdirTemp("", "kq-bench-")
	if err != nil {
		return err
	}
	r := &report{root: root, work: work, p: p}
	began := time.Now()
	loadBefore := loadAvg()

	r.build(ctx)
	r.sharing(ctx)
	r.simCeremony(ctx)
	r.webconfPages(ctx)
	r.sse(ctx)
	r.sseFanout(ctx)
	r.webLoad(ctx)
	r.coldStart(ctx)
	r.pcscAPDU(ctx)
	r.cyberJack(ctx)
	r.backup(ctx)
	r.growth(ctx)
	r.objectStore(ctx)

	md := r.markdown(began, time.Since(began), loadBefore, loadAvg(), note)
	fmt.Println()
	fmt.Print(md)
	if out != "" {
		if !filepath.IsAbs(out) {
			out = filepath.Join(root, out)
		}
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", out)
	}
	if r.failures > 0 {
		fmt.Fprintf(os.Stderr, "logs kept in %s\n", work)
		return fmt.Errorf("%d benchmark(s) not measured; their rows say why", r.failures)
	}
	return os.RemoveAll(work)
}

func (r *report) add(what, figure, runs, source string) {
	r.rows = append(r.rows, row{order: r.order, what: what, figure: figure, runs: runs, source: source})
}

// fail records a row that could not be measured, with the reason (first line only).
func (r *report) fail(what, source string, err error) {
	msg := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	fmt.Fprintf(os.Stderr, "!! %s: %v\n", what, err)
	r.rows = append(r.rows, row{order: r.order, what: what, figure: "not measured: " + strings.ReplaceAll(msg, "|", "/"), runs: "–", source: source, failed: true})
	r.failures++
}

func step(name string) { fmt.Printf("== %s (%s)\n", name, time.Now().Format("15:04:05")) }

// testBinaries are the packages whose benchmarks the table uses, compiled once.
var testBinaries = []string{"sharing", "ceremony", "webconf", "webconf/operator", "pinpad/pcsc", "pinpad/cyberjacksim", "hsm/soft", "hsm/pkcs11", "cluster"}

func (r *report) build(ctx context.Context) {
	step("build test binaries, keyquorum and bench tools")
	for _, pkg := range testBinaries {
		if err := r.cmd(ctx, 10*time.Minute, "build-"+binName(pkg), r.root, "go", "test", "-c", "-o", r.testBin(pkg), "./"+pkg); err != nil {
			fmt.Fprintf(os.Stderr, "!! build %s: %v\n", pkg, err)
		}
	}
	for _, b := range [][2]string{{"keyquorum", "./cmd/keyquorum"}, {"webload", "./bench/webload"}} {
		if err := r.cmd(ctx, 10*time.Minute, "build-"+b[0], r.root, "go", "build", "-o", filepath.Join(r.work, b[0]), b[1]); err != nil {
			fmt.Fprintf(os.Stderr, "!! build %s: %v\n", b[0], err)
		}
	}
}

func binName(pkg string) string { return strings.ReplaceAll(pkg, "/", "-") }

func (r *report) testBin(pkg string) string { return filepath.Join(r.work, binName(pkg)+".test") }

// cmd runs a command with a time limit, its output into a log file of the work directory
// (log is that file's name); the error carries the output's tail.
func (r *report) cmd(ctx context.Context, limit time.Duration, log, dir string, argv ...string) error {
	_, err := r.output(ctx, limit, log, dir, argv...)
	return err
}

func (r *report) output(ctx context.Context, limit time.Duration, log, dir string, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Dir = dir
	c.WaitDelay = 10 * time.Second
	var buf bytes.Buffer
	c.Stdout, c.Stderr = &buf, &buf
	err := c.Run()
	path := filepath.Join(r.work, log+".log")
	os.WriteFile(path, buf.Bytes(), 0o644)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("took longer than %v", limit)
		}
		return buf.Bytes(), fmt.Errorf("%s: %v (log %s)\n%s", argv[0], err, path, tail(buf.Bytes(), 15))
	}
	return buf.Bytes(), nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// benchLine is one result line of go test -bench: the name without the GOMAXPROCS suffix and
// its metrics by unit.
type benchLine struct {
	name    string
	metrics map[string]float64
}

var procSuffix = regexp.MustCompile(`-\d+$`)

func parseBench(out []byte) []benchLine {
	var lines []benchLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		l := benchLine{name: procSuffix.ReplaceAllString(f[0], ""), metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				l.metrics[f[i+1]] = v
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// goBench runs a compiled test binary's benchmarks in its package directory and returns the
// result lines. A benchmark that was skipped, or no line at all, is an error that says why.
func (r *report) goBench(ctx context.Context, pkg, log string, limit time.Duration, args ...string) ([]benchLine, error) {
	bin := r.testBin(pkg)
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("test binary of %s was not built (log %s)", pkg, filepath.Join(r.work, "build-"+binName(pkg)+".log"))
	}
	argv := append([]string{bin, "-test.run", "^$"}, args...)
	out, err := r.output(ctx, limit, log, filepath.Join(r.root, pkg), argv...)
	if r.cpuBrand == "" {
		if m := regexp.MustCompile(`(?m)^cpu: (.+)$`).FindSubmatch(out); m != nil {
			r.cpuBrand = strings.TrimSpace(string(m[1]))
		}
	}
	if err != nil {
		return nil, err
	}
	lines := parseBench(out)
	if len(lines) == 0 {
		if m := regexp.MustCompile(`(?m)^\s+\S+\.go:\d+: (.+)$`).FindSubmatch(out); m != nil && bytes.Contains(out, []byte("--- SKIP")) {
			return nil, fmt.Errorf("skipped: %s", m[1])
		}
		return nil, fmt.Errorf("no benchmark result in the output (log %s)", filepath.Join(r.work, log+".log"))
	}
	return lines, nil
}

// metric collects one metric of the lines named name.
func metric(lines []benchLine, name, unit string) ([]float64, error) {
	var v []float64
	for _, l := range lines {
		if l.name != name {
			continue
		}
		x, ok := l.metrics[unit]
		if !ok {
			return nil, fmt.Errorf("%s reports no %s", name, unit)
		}
		v = append(v, x)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("no result line for %s", name)
	}
	return v, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// dur formats seconds with three significant digits in a fitting unit.
func dur(sec float64) string {
	switch a := math.Abs(sec); {
	case a >= 1:
		return sig(sec) + " s"
	case a >= 1e-3:
		return sig(sec*1e3) + " ms"
	case a >= 1e-6:
		return sig(sec*1e6) + " µs"
	}
	return sig(sec*1e9) + " ns"
}

func sig(x float64) string {
	switch a := math.Abs(x); {
	case a >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 2, 64)
}

func ratio(x float64) string { return sig(x) + "×" }

func runsText(n int) string {
	if n == 1 {
		return "1 run"
	}
	return fmt.Sprintf("median of %d", n)
}

func (r *report) sharing(ctx context.Context) {
	r.order = orderSharing
	step("sharing: Split and Combine of a 32-byte key")
	src := "`BenchmarkSplit`, `BenchmarkCombine` (sharing)"
	lines, err := r.goBench(ctx, "sharing", "sharing", 5*time.Minute,
		"-test.bench", "^Benchmark(Split|Combine)$", "-test.benchtime", r.p.benchtime, "-test.count", strconv.Itoa(r.p.runs))
	for _, op := range []string{"Split", "Combine"} {
		what := op + " of a 32-byte key (2-of-3 / 3-of-5)"
		if err != nil {
			r.fail(what, src, err)
			continue
		}
		var figs []string
		for _, q := range []string{"2of3", "3of5"} {
			v, err := metric(lines, "Benchmark"+op+"/"+q, "ns/op")
			if err != nil {
				r.fail(what, src, err)
				figs = nil
				break
			}
			figs = append(figs, dur(median(v)/1e9))
		}
		if figs != nil {
			r.add(what, strings.Join(figs, " / ")+" per operation", runsText(r.p.runs), src)
		}
	}
}

func (r *report) simCeremony(ctx context.Context) {
	r.order = orderCeremony
	step("ceremony: 3-of-5 Generate + read-back against the simulator")
	what, src := "3-of-5 Generate + read-back, simulator pad + soft HSM", "`BenchmarkGenerate3of5` (ceremony)"
	lines, err := r.goBench(ctx, "ceremony", "ceremony", 5*time.Minute,
		"-test.bench", "^BenchmarkGenerate3of5$", "-test.benchtime", fmt.Sprintf("%dx", r.p.ceremonies), "-test.count", strconv.Itoa(r.p.runs))
	if err != nil {
		r.fail(what, src, err)
		return
	}
	ns, err := metric(lines, "BenchmarkGenerate3of5", "ns/op")
	if err != nil {
		r.fail(what, src, err)
		return
	}
	fig := dur(median(ns)/1e9) + " per ceremony"
	if commits, err := metric(lines, "BenchmarkGenerate3of5", "commits/op"); err == nil {
		fig += fmt.Sprintf(", %.0f journal commits", median(commits))
	}
	r.add(what, fig, fmt.Sprintf("median of %d × %d ceremonies", r.p.runs, r.p.ceremonies), src)
}

func (r *report) webconfPages(ctx context.Context) {
	r.order = orderWebConf
	step("webconf: status page through the middleware, no TLS")
	what, src := "WebConf status page rendered through the middleware (no TLS, one at a time)", "`BenchmarkPages` (webconf)"
	lines, err := r.goBench(ctx, "webconf", "webconf-pages", 5*time.Minute,
		"-test.bench", "^BenchmarkPages$", "-test.benchtime", r.p.benchtime, "-test.count", strconv.Itoa(r.p.runs))
	if err != nil {
		r.fail(what, src, err)
		return
	}
	ns, err := metric(lines, "BenchmarkPages//", "ns/op")
	if err != nil {
		r.fail(what, src, err)
		return
	}
	r.add(what, dur(median(ns)/1e9)+" per page", runsText(r.p.runs), src)
}

func (r *report) sse(ctx context.Context) {
	r.order = orderWebConf
	step("webconf: PIN-pad event to SSE message")
	what := "PIN-pad event → its SSE message at an mTLS client (card inserted/removed on the simulator pad)"
	src := "`BenchmarkPadEventSSE` (webconf)"
	lines, err := r.goBench(ctx, "webconf", "webconf-sse", 5*time.Minute,
		"-test.bench", "^BenchmarkPadEventSSE$", "-test.benchtime", fmt.Sprintf("%dx", r.p.sseEvents), "-test.count", strconv.Itoa(r.p.runs))
	if err != nil {
		r.fail(what, src, err)
		return
	}
	med, err1 := metric(lines, "BenchmarkPadEventSSE", "median-µs")
	p99, err2 := metric(lines, "BenchmarkPadEventSSE", "p99-µs")
	if err := errors.Join(err1, err2); err != nil {
		r.fail(what, src, err)
		return
	}
	r.add(what, fmt.Sprintf("median %s, p99 %s", dur(median(med)/1e6), dur(median(p99)/1e6)),
		fmt.Sprintf("median of %d × %d events", r.p.runs, r.p.sseEvents), src)
}

func (r *report) sseFanout(ctx context.Context) {
	r.order = orderWebConf
	step("webconf: PIN-pad event to 500 watching live views")
	what := "PIN-pad event → its SSE message at 500 live views (100 operators × 5 views, an HTTP/2 mTLS connection each)"
	src := "`BenchmarkPadEventSSEFanout` (webconf)"
	n := max(r.p.sseEvents/25, 4)
	lines, err := r.goBench(ctx, "webconf", "webconf-sse-fanout", 10*time.Minute,
		"-test.bench", "^BenchmarkPadEventSSEFanout$", "-test.benchtime", fmt.Sprintf("%dx", n), "-test.count", strconv.Itoa(r.p.runs))
	if err != nil {
		r.fail(what, src, err)
		return
	}
	med, err1 := metric(lines, "BenchmarkPadEventSSEFanout", "median-µs")
	p99, err2 := metric(lines, "BenchmarkPadEventSSEFanout", "p99-µs")
	all, err3 := metric(lines, "BenchmarkPadEventSSEFanout", "all-views-median-µs")
	if err := errors.Join(err1, err2, err3); err != nil {
		r.fail(what, src, err)
		return
	}
	r.add(what, fmt.Sprintf("median %s, p99 %s per view; all 500 have it after %s (median)", dur(median(med)/1e6), dur(median(p99)/1e6), dur(median(all)/1e6)),
		fmt.Sprintf("median of %d × %d events", r.p.runs, n), src)
}

// webload runs bench/webload and decodes its JSON result into v.
func (r *report) webload(ctx context.Context, log string, v any, args ...string) error {
	bin := filepath.Join(r.work, "webload")
	for _, b := range []string{"webload", "keyquorum"} {
		if _, err := os.Stat(filepath.Join(r.work, b)); err != nil {
			return fmt.Errorf("%s was not built (log %s)", b, filepath.Join(r.work, "build-"+b+".log"))
		}
	}
	js := filepath.Join(r.work, log+".json")
	argv := append([]string{bin, "-keyquorum", filepath.Join(r.work, "keyquorum"), "-json", js}, args...)
	if err := r.cmd(ctx, 5*time.Minute, log, r.root, argv...); err != nil {
		return err
	}
	b, err := os.ReadFile(js)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (r *report) webLoad(ctx context.Context) {
	r.webLoadPath(ctx, "/", "WebConf status page (GET /) under 64 concurrent mTLS connections, keyquorum serve on loopback", "`bench/webload status`")
	r.webLoadPath(ctx, "/api/v1/status", "The command line's status JSON (GET /api/v1/status) under 64 concurrent mTLS connections", "`bench/webload -path /api/v1/status status`")
}

func (r *report) webLoadPath(ctx context.Context, path, what, src string) {
	r.order = orderWebConf
	step("webconf: " + path + " under 64 concurrent mTLS connections")
	var res struct {
		Proto       string  `json:"proto"`
		PageBytes   int     `json:"page_bytes"`
		MedianP50Ms float64 `json:"median_p50_ms"`
		MedianP99Ms float64 `json:"median_p99_ms"`
		MedianRPS   float64 `json:"median_rps"`
		Runs        []struct {
			Requests    int     `json:"requests"`
			ServerCPUUs float64 `json:"server_cpu_us"`
			ClientCPUUs float64 `json:"client_cpu_us"`
			Load1       float64 `json:"load1"`
		} `json:"runs"`
	}
	log, args := "webload-status", []string{"-conns", "64", "-requests", strconv.Itoa(r.p.requests),
		"-duration", "30s", "-runs", strconv.Itoa(r.p.runs), "-path", path}
	prof := ""
	if path == "/" {
		prof = filepath.Join(r.work, "serve-status.prof")
		args = append(args, "-cpuprofile", prof)
	} else {
		log = "webload-api-status"
	}
	if err := r.webload(ctx, log, &res, append(args, "status")...); err != nil {
		r.fail(what, src, err)
		return
	}
	total := 0
	for _, run := range res.Runs {
		total += run.Requests
	}
	if prof != "" {
		r.profileNote(ctx, prof, total)
	}
	n := 0
	if len(res.Runs) > 0 {
		n = res.Runs[0].Requests
	}
	var srv, cli, load []float64
	for _, run := range res.Runs {
		srv, cli, load = append(srv, run.ServerCPUUs), append(cli, run.ClientCPUUs), append(load, run.Load1)
	}
	cpu := ""
	if len(srv) > 0 && median(srv) > 0 {
		cpu = fmt.Sprintf("; CPU per request: server %s, load generator %s", dur(median(srv)/1e6), dur(median(cli)/1e6))
		if path == "/" {
			// Little's law: 64 connections with one request in flight each wait on average
			// 64 / throughput, and the throughput is at most cores / CPU per request.
			floor := 64 * (median(srv) + median(cli)) / 1e6 / float64(runtime.NumCPU())
			r.notes = append(r.notes, fmt.Sprintf("What bounds the status page's latency under 64 connections: each request costs %s of CPU in keyquorum serve and %s in the load generator "+
				"(medians of the runs, from /proc and getrusage; warm-up handshakes included). With one request in flight on each of 64 connections, the mean latency is "+
				"64 / throughput (Little's law), and on %d cores the throughput is at most %d / %s: the mean cannot fall below %s even with nothing else running, "+
				"so a p99 under 10 ms would need server and load generator together under %s per request. The 1-minute load average during the runs was %.1f (median): "+
				"other work took its share of the cores too.",
				dur(median(srv)/1e6), dur(median(cli)/1e6), runtime.NumCPU(), runtime.NumCPU(), dur((median(srv)+median(cli))/1e6), dur(floor),
				dur(10e-3*float64(runtime.NumCPU())/64), median(load)))
		}
	}
	r.add(what, fmt.Sprintf("p50 %s, p99 %s (%.0f requests/s; %s, %d-byte page%s)", dur(res.MedianP50Ms/1e3), dur(res.MedianP99Ms/1e3), res.MedianRPS, res.Proto, res.PageBytes, cpu),
		fmt.Sprintf("median of %d × %d requests", len(res.Runs), n), src)
}

func (r *report) coldStart(ctx context.Context) {
	r.order = orderColdStart
	step("keyquorum serve: cold start to first accepted TLS connection")
	src := "`bench/webload coldstart`"
	var res struct {
		FreshMs          []float64 `json:"fresh_ms"`
		MedianFreshMs    float64   `json:"median_fresh_ms"`
		MedianExistingMs float64   `json:"median_existing_ms"`
	}
	runs := r.p.runs + 2 // cheap: a few hundred ms each
	err := r.webload(ctx, "webload-coldstart", &res, "-runs", strconv.Itoa(runs), "coldstart")
	for _, c := range []struct {
		what string
		ms   float64
	}{
		{"Cold start of keyquorum serve to first accepted TLS connection, fresh data dir (makes CA, server and admin certificates)", res.MedianFreshMs},
		{"Cold start of keyquorum serve to first accepted TLS connection, existing data dir", res.MedianExistingMs},
	} {
		if err != nil {
			r.fail(c.what, src, err)
			continue
		}
		r.add(c.what, dur(c.ms/1e3), runsText(len(res.FreshMs)), src)
	}
}

func (r *report) pcscAPDU(ctx context.Context) {
	r.order = orderAPDU
	step("pinpad/pcsc: APDU round trip through pcscd + vpcd")
	what, src := "APDU round trip (SELECT MF) through pcscd + vpcd", "`BenchmarkPCSCAPDURoundTrip` (pinpad/pcsc; as bench/apdu.sh)"
	// One process per run: each starts its own pcscd and inserts the card once.
	var med, p99 []float64
	for i := range r.p.runs {
		lines, err := r.goBench(ctx, "pinpad/pcsc", fmt.Sprintf("pcsc-apdu-%d", i), 3*time.Minute,
			"-test.bench", "^BenchmarkPCSCAPDURoundTrip$", "-test.benchtime", fmt.Sprintf("%dx", r.p.apdus))
		var m, p []float64
		if err == nil {
			m, err = metric(lines, "BenchmarkPCSCAPDURoundTrip", "median-µs")
		}
		if err == nil {
			p, err = metric(lines, "BenchmarkPCSCAPDURoundTrip", "p99-µs")
		}
		if err != nil {
			r.fail(what, src, err)
			return
		}
		med, p99 = append(med, m...), append(p99, p...)
	}
	r.add(what, fmt.Sprintf("median %s, p99 %s", dur(median(med)/1e6), dur(median(p99)/1e6)),
		fmt.Sprintf("median of %d × %d APDUs", r.p.runs, r.p.apdus), src)
}

// cyberJack measures, in rounds, the APDU round trip through the virtual cyberJack driver and
// a whole 3-of-5 ceremony over the same stack, so that each round's ceremony is set against
// that round's APDU round trip.
func (r *report) cyberJack(ctx context.Context) {
	step("pinpad/cyberjacksim: APDU round trip and 3-of-5 Generate through pcscd + virtual cyberJack")
	apduWhat, apduSrc := "APDU round trip (SELECT MF) through pcscd + the virtual cyberJack driver", "`BenchmarkCyberJackAPDU` (pinpad/cyberjacksim)"
	genWhat := "3-of-5 Generate + read-back over pcscd + virtual cyberJack (pcsc backend, PINs on the pad, no human delay)"
	genSrc := "`BenchmarkCyberJackGenerate3of5` (pinpad/cyberjacksim)"
	var med, p99, secs, apdus, ratios []float64
	var apduErr, genErr error
	for i := range r.p.slowRuns {
		if apduErr == nil {
			lines, err := r.goBench(ctx, "pinpad/cyberjacksim", fmt.Sprintf("cyberjack-apdu-%d", i), 3*time.Minute,
				"-test.bench", "^BenchmarkCyberJackAPDU$", "-test.benchtime", fmt.Sprintf("%dx", r.p.apdus))
			var m, p []float64
			if err == nil {
				m, err = metric(lines, "BenchmarkCyberJackAPDU", "µs-median")
			}
			if err == nil {
				p, err = metric(lines, "BenchmarkCyberJackAPDU", "µs-p99")
			}
			if err != nil {
				apduErr = err
			} else {
				med, p99 = append(med, m[0]), append(p99, p[0])
			}
		}
		if genErr == nil {
			lines, err := r.goBench(ctx, "pinpad/cyberjacksim", fmt.Sprintf("cyberjack-generate-%d", i), 5*time.Minute,
				"-test.bench", "^BenchmarkCyberJackGenerate3of5$", "-test.benchtime", "1x")
			var s, n []float64
			if err == nil {
				s, err = metric(lines, "BenchmarkCyberJackGenerate3of5", "s/ceremony")
			}
			if err == nil {
				n, err = metric(lines, "BenchmarkCyberJackGenerate3of5", "apdus/ceremony")
			}
			if err != nil {
				genErr = err
			} else {
				secs, apdus = append(secs, s[0]), append(apdus, n[0])
				if apduErr == nil && len(med) == len(secs) {
					ratios = append(ratios, s[0]/(n[0]*med[len(med)-1]/1e6))
				}
			}
		}
	}
	r.order = orderAPDU
	if apduErr != nil {
		r.fail(apduWhat, apduSrc, apduErr)
	} else {
		r.add(apduWhat, fmt.Sprintf("median %s, p99 %s", dur(median(med)/1e6), dur(median(p99)/1e6)),
			fmt.Sprintf("median of %d × %d APDUs", len(med), r.p.apdus), apduSrc)
	}
	r.order = orderCeremony
	if genErr != nil {
		r.fail(genWhat, genSrc, genErr)
		return
	}
	fig := fmt.Sprintf("%s per ceremony, %.0f APDUs", dur(median(secs)), median(apdus))
	if len(ratios) == len(secs) {
		fig += fmt.Sprintf("; %s the sum of its APDU round trips (APDUs × the round's median round trip)", ratio(median(ratios)))
	} else {
		fig += "; ratio to its APDU round trips not measured (the APDU benchmark failed)"
	}
	runs := fmt.Sprintf("median of %d ceremonies", len(secs))
	if len(secs) == 1 {
		runs = "1 ceremony"
	}
	r.add(genWhat, fig, runs, genSrc)
	if len(ratios) == len(secs) {
		target := "met"
		if median(ratios) >= 20 {
			target = "NOT met"
		}
		r.notes = append(r.notes, fmt.Sprintf("A ceremony over PC/SC spends %s in its %.0f APDU round trips (%.0f × %s); the rest is the ceremony's own work (journal commits, the PIN entries and OK presses on the pad, exclusive connects) and the eight card movements of a 3-of-5 Generate with read-back, each of which pcscd learns of at once from the driver's polling function (TAG_IFD_POLLING_THREAD_WITH_TIMEOUT) instead of at its next 400 ms presence poll. Target (issue 17): under 20× the sum of its APDU round trips: %s.",
			dur(median(apdus)*median(med)/1e6), median(apdus), median(apdus), dur(median(med)/1e6), target))
	}
}

func (r *report) backup(ctx context.Context) {
	r.order = orderBackup
	size := fmt.Sprintf("%d MiB", r.p.backupMiB)
	if r.p.backupMiB%1024 == 0 {
		size = fmt.Sprintf("%d GiB", r.p.backupMiB/1024)
	}
	step("hsm/backup: backup and restore of " + size)
	src := "`bench/backup.sh` (hsm/backup; raw AES-256-GCM and `age` in the same rounds)"
	bw, rw := "Backup of "+size+" (hsm/backup writer, MBK-encrypted)", "Restore of "+size+" (hsm/backup reader)"
	js := filepath.Join(r.work, "backup.json")
	var res struct {
		Methods []struct {
			Key     string  `json:"key"`
			MBps    float64 `json:"mbps"`
			PeakMiB float64 `json:"peak_mib"`
		} `json:"methods"`
		BackupVsRaw  float64 `json:"backup_vs_raw"`
		BackupVsAge  float64 `json:"backup_vs_age"`
		RestoreVsRaw float64 `json:"restore_vs_raw"`
		RestoreVsAge float64 `json:"restore_vs_age"`
	}
	err := r.cmd(ctx, 15*time.Minute, "backup", r.root, "bash", "bench/backup.sh", strconv.Itoa(r.p.backupMiB), strconv.Itoa(r.p.backupRuns), "-json", js)
	if err == nil {
		var b []byte
		if b, err = os.ReadFile(js); err == nil {
			err = json.Unmarshal(b, &res)
		}
	}
	if err != nil {
		r.fail(bw, src, err)
		r.fail(rw, src, err)
		return
	}
	m := map[string]struct{ mbps, peak float64 }{}
	for _, x := range res.Methods {
		m[x.Key] = struct{ mbps, peak float64 }{x.MBps, x.PeakMiB}
	}
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	r.notes = append(r.notes, fmt.Sprintf("The backup format's targets (bench/backup.sh): backup at ≥ 0.9× raw AES-256-GCM seal %s, restore at ≥ 0.9× raw open %s, both faster than age %s, peak RSS under 64 MiB %s.",
		check(res.BackupVsRaw >= 0.9), check(res.RestoreVsRaw >= 0.9), check(res.BackupVsAge > 1 && res.RestoreVsAge > 1),
		check(m["backup"].peak < 64 && m["restore"].peak < 64)))
	runs := fmt.Sprintf("median of %d rounds", r.p.backupRuns)
	if r.p.backupRuns == 1 {
		runs = "1 round"
	}
	r.add(bw, fmt.Sprintf("%.0f MB/s, peak RSS %.1f MiB; %s raw AES-256-GCM seal (%.0f MB/s), %s age encrypt (%.0f MB/s)",
		m["backup"].mbps, m["backup"].peak, ratio(res.BackupVsRaw), m["raw-seal"].mbps, ratio(res.BackupVsAge), m["age-encrypt"].mbps), runs, src)
	r.add(rw, fmt.Sprintf("%.0f MB/s, peak RSS %.1f MiB; %s raw AES-256-GCM open (%.0f MB/s), %s age decrypt (%.0f MB/s)",
		m["restore"].mbps, m["restore"].peak, ratio(res.RestoreVsRaw), m["raw-open"].mbps, ratio(res.RestoreVsAge), m["age-decrypt"].mbps), runs, src)
}

// busy says whether a load average string shows other work: a 1-minute load of a quarter of
// the cores or more.
func busy(load string) bool {
	f := strings.Fields(load)
	if len(f) == 0 {
		return false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return err == nil && v >= 0.25*float64(runtime.NumCPU())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// machine describes the host: cores, CPU model, memory, OS, Go.
func (r *report) machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.+)$`).FindSubmatch(b); m != nil {
			model = strings.TrimSpace(string(m[1]))
		}
	}
	if r.cpuBrand != "" && r.cpuBrand != model {
		model += " (CPUID brand: " + r.cpuBrand + ")"
	}
	parts := []string{fmt.Sprintf("%d cores", runtime.NumCPU()), model}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^MemTotal:\s*(\d+) kB`).FindSubmatch(b); m != nil {
			kb, _ := strconv.ParseFloat(string(m[1]), 64)
			parts = append(parts, fmt.Sprintf("%.1f GiB RAM", kb/(1<<20)))
		}
	}
	osName := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		if m := regexp.MustCompile(`(?m)^PRETTY_NAME="?([^"\n]+)"?$`).FindSubmatch(b); m != nil {
			osName = string(m[1])
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		osName += ", Linux " + strings.TrimSpace(string(b))
	}
	parts = append(parts, osName)
	if v, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		parts = append(parts, strings.TrimSpace(string(v)))
	}
	return strings.Join(parts, ", ")
}

func (r *report) markdown(began time.Time, took time.Duration, loadBefore, loadAfter, note string) string {
	var b strings.Builder
	commit := "unknown commit"
	if v, err := exec.Command("git", "-C", r.root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = "commit " + strings.TrimSpace(string(v))
		if d, err := exec.Command("git", "-C", r.root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(d)) > 0 {
			commit += " (with uncommitted changes in the tree)"
		}
	}
	fmt.Fprintf(&b, "# Keyquorum performance\n\n")
	fmt.Fprintf(&b, "Measured by `scripts/bench` on %s (took %s), %s.\n\n", began.UTC().Format("2006-01-02 15:04 UTC"), took.Round(time.Second), commit)
	fmt.Fprintf(&b, "Machine: %s.\n", r.machine())
	fmt.Fprintf(&b, "Load average (1, 5, 15 min) %s at the start, %s at the end.\n", loadBefore, loadAfter)
	if note != "" {
		fmt.Fprintf(&b, "%s\n", note)
	}
	if busy(loadBefore) {
		fmt.Fprintf(&b, "Other work was running on this machine when the run began (1-minute load average %s on %d cores):\n", strings.Fields(loadBefore)[0], runtime.NumCPU())
		fmt.Fprintf(&b, "the figures are noisy, the latency tails (p99) most, and may be slower than on an idle machine.\n")
	}
	b.WriteString(`
Every figure is the median of several runs (column *runs*; "N × M": N runs of M operations, the
median of the N per-run figures). Every comparison is a ratio taken within this run of the
report, and within one round where the benchmark has rounds: then the ratio is the median of the
per-round ratios, which can differ a little from the ratio of the medians shown beside it.
Loopback latencies include the client: the server, the daemons and the load generator share the
same cores.

`)
	fmt.Fprintf(&b, "| measure | result | runs | source |\n|---|---|---|---|\n")
	slices.SortStableFunc(r.rows, func(a, b row) int { return a.order - b.order })
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", x.what, x.figure, x.runs, x.source)
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// objectStore measures backup and restore of an HSM object store of mixed objects (key pairs,
// secret keys, certificates, data objects) on the soft HSM and on SoftHSM2 through PKCS#11.
func (r *report) objectStore(ctx context.Context) {
	r.order = orderBackup
	os.Setenv("KQ_BENCH_OBJECTS", strconv.Itoa(r.p.objects))
	for _, b := range []struct{ pkg, name, what string }{
		{"hsm/soft", "BenchmarkSoftBackupRestore10k", "soft HSM"},
		{"hsm/pkcs11", "BenchmarkPKCS11BackupRestore10k", "SoftHSM2 token through PKCS#11"},
	} {
		step(fmt.Sprintf("%s: backup and restore of %d mixed objects", b.pkg, r.p.objects))
		what := fmt.Sprintf("Backup / restore of %d mixed objects, %s", r.p.objects, b.what)
		src := fmt.Sprintf("`%s` (%s)", b.name, b.pkg)
		runs := 1
		if b.pkg == "hsm/soft" {
			runs = r.p.runs
		}
		lines, err := r.goBench(ctx, b.pkg, binName(b.pkg)+"-objects", 30*time.Minute,
			"-test.bench", "^"+b.name+"$", "-test.benchtime", "1x", "-test.count", strconv.Itoa(runs), "-test.timeout", "40m")
		if err != nil {
			r.fail(what, src, err)
			continue
		}
		var v [4][]float64
		for i, unit := range []string{"backup-ms", "restore-ms", "backup-peak-RSS-MiB", "restore-peak-RSS-MiB"} {
			if v[i], err = metric(lines, b.name, unit); err != nil {
				break
			}
		}
		if err != nil {
			r.fail(what, src, err)
			continue
		}
		r.add(what, fmt.Sprintf("backup %s (peak RSS %.0f MiB) / restore %s (peak RSS %.0f MiB)",
			dur(median(v[0])/1e3), median(v[2]), dur(median(v[1])/1e3), median(v[3])), fmt.Sprintf("median of %d", runs), src)
	}
}
