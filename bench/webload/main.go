// Command webload measures WebConf from the outside, the way browsers and operators meet it:
// it starts a real `keyquorum serve` (simulator pad, soft HSM, a throwaway data directory) on
// a free loopback port and talks to it over HTTPS only, so it depends on nothing inside
// Keyquorum but the command line, the files serve prints the paths of, and the pages.
//
//	webload status    p50/p99 latency of the status page (GET /) under C concurrent mTLS
//	                  connections with the administrator's client certificate
//	webload coldstart time from starting `keyquorum serve` to its first accepted TLS
//	                  connection, with a fresh data directory and with an existing one
//
// Each mode runs several times and prints every run and the median; -json FILE also writes
// them for bench/report, which assembles bench/RESULTS.md.
//
// It never listens or connects anywhere but 127.0.0.1, and every run is bounded in requests
// and in time. The administrator certificate it uses is the throwaway one serve creates in the
// temporary data directory, removed afterwards; the status page and the event stream need the
// client certificate alone (WebAuthn guards only dangerous actions).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// cpuProfile is where serve writes its CPU profile ("" for none).
var cpuProfile string

const usage = `usage: webload [flags] status|coldstart

  status     p50/p99 of GET / under -conns concurrent mTLS connections
  coldstart  keyquorum serve start to first accepted TLS connection (fresh and existing data dir)

flags:
`

func main() {
	fs := flag.NewFlagSet("webload", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	bin := fs.String("keyquorum", "", "`path` of the keyquorum binary (default: build ./cmd/keyquorum into the work dir)")
	runs := fs.Int("runs", 3, "measured runs; the median is reported")
	conns := fs.Int("conns", 64, "status: concurrent TLS connections, one request in flight on each")
	requests := fs.Int("requests", 10000, "status: requests per run (all connections together)")
	duration := fs.Duration("duration", 30*time.Second, "status: longest a run may take; it stops early with what it has")
	h2 := fs.Bool("h2", true, "status: HTTP/2 as browsers use it (false: HTTP/1.1 keep-alive)")
	path := fs.String("path", "/", "status: the `path` each request gets: / is the status page, /api/v1/status the command line's status JSON")
	jsonOut := fs.String("json", "", "also write the results as JSON to `file`")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of keyquorum serve to `file` (read it with go tool pprof -top BINARY FILE)")
	fs.Parse(os.Args[1:])
	if fs.NArg() != 1 || *runs < 1 {
		fs.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, fs.Arg(0), *bin, *runs, loadConfig{conns: *conns, requests: *requests, duration: *duration, h2: *h2, path: *path})
	if err == nil && *jsonOut != "" {
		var b []byte
		b, err = json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode, bin string, runs int, lc loadConfig) (any, error) {
	work, err := os.MkdirTemp("", "kq-webload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		bin = filepath.Join(work, "keyquorum")
		fmt.Println("building ./cmd/keyquorum ...")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/keyquorum").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build keyquorum: %v: %s", err, out)
		}
	}
	switch mode {
	case "status":
		return statusLoad(ctx, bin, work, runs, lc)
	case "coldstart":
		return coldStart(ctx, bin, work, runs)
	}
	return nil, fmt.Errorf("unknown mode %q (status or coldstart)", mode)
}

// server is one `keyquorum serve` process.
type server struct {
	cmd  *exec.Cmd
	addr string // 127.0.0.1:port
	data string
	out  string // its stdout, a file
	done chan error
}

// freeAddr finds a free loopback port. Another process could take it before serve binds it;
// serve then fails to listen and the run reports that.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startServe starts serve on addr with data; start is the moment just before the exec.
func startServe(bin, data, addr, logDir string) (s *server, start time.Time, err error) {
	s = &server{addr: addr, data: data, out: filepath.Join(logDir, "serve.out"), done: make(chan error, 1)}
	stdout, err := os.Create(s.out)
	if err != nil {
		return nil, start, err
	}
	defer stdout.Close()
	stderr, err := os.OpenFile(filepath.Join(logDir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, start, err
	}
	defer stderr.Close()
	s.cmd = exec.Command(bin, "serve", "--data", data, "--listen", addr)
	s.cmd.Stdout, s.cmd.Stderr = stdout, stderr
	if cpuProfile != "" {
		// serve writes a CPU profile of its whole run there when it stops (cmd/keyquorum).
		s.cmd.Env = append(os.Environ(), "KEYQUORUM_CPUPROFILE="+cpuProfile)
	}
	start = time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, start, fmt.Errorf("start keyquorum serve: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	return s, start, nil
}

// stop ends serve as an operator's SIGTERM does and waits for it.
func (s *server) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		return errors.New("keyquorum serve did not stop within 15 s of SIGTERM")
	}
}

// firstAcceptedTLS waits until serve accepts a TLS connection: the handshake completes and
// the server answers a request on it (GET /ca.pem, which needs no client certificate). A
// refused connection (not listening yet) is retried after a millisecond; a connection the
// kernel queued before serve accepts it simply waits.
func firstAcceptedTLS(ctx context.Context, s *server, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tr := &http.Transport{
		// The CA of a fresh data directory does not exist before serve makes it: this probe
		// only times the handshake, it trusts nothing it receives.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+s.addr+"/ca.pem", nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /ca.pem: %s", resp.Status)
			}
			return nil
		}
		select {
		case err := <-s.done:
			return fmt.Errorf("keyquorum serve exited before accepting a connection: %v (see %s)", err, filepath.Join(filepath.Dir(s.out), "serve.log"))
		case <-ctx.Done():
			return fmt.Errorf("no TLS connection accepted within %v: %v", limit, err)
		case <-time.After(time.Millisecond):
		}
	}
}

// ColdStart is the coldstart mode's result, in milliseconds.
type ColdStart struct {
	FreshMs          []float64 `json:"fresh_ms"`
	ExistingMs       []float64 `json:"existing_ms"`
	MedianFreshMs    float64   `json:"median_fresh_ms"`
	MedianExistingMs float64   `json:"median_existing_ms"`
}

func coldStart(ctx context.Context, bin, work string, runs int) (*ColdStart, error) {
	once := func(data string) (float64, error) {
		addr, err := freeAddr()
		if err != nil {
			return 0, err
		}
		s, start, err := startServe(bin, data, addr, work)
		if err != nil {
			return 0, err
		}
		err = firstAcceptedTLS(ctx, s, 60*time.Second)
		took := time.Since(start)
		if serr := s.stop(); err == nil {
			err = serr
		}
		return float64(took.Microseconds()) / 1e3, err
	}
	res := &ColdStart{}
	// The first start of all makes the existing data directory and warms the page cache
	// with the binary; it is not counted.
	existing := filepath.Join(work, "existing")
	if _, err := once(existing); err != nil {
		return nil, err
	}
	for i := range runs {
		fresh := filepath.Join(work, fmt.Sprintf("fresh-%d", i))
		ms, err := once(fresh)
		if err != nil {
			return nil, fmt.Errorf("fresh start %d: %w", i+1, err)
		}
		os.RemoveAll(fresh)
		res.FreshMs = append(res.FreshMs, ms)
		if ms, err = once(existing); err != nil {
			return nil, fmt.Errorf("start %d with existing data: %w", i+1, err)
		}
		res.ExistingMs = append(res.ExistingMs, ms)
		fmt.Printf("run %d: fresh data dir %.1f ms, existing data dir %.1f ms\n", i+1, res.FreshMs[i], res.ExistingMs[i])
	}
	res.MedianFreshMs, res.MedianExistingMs = median(res.FreshMs), median(res.ExistingMs)
	fmt.Printf("keyquorum serve to first accepted TLS connection, median of %d: fresh data dir %.1f ms, existing data dir %.1f ms\n",
		runs, res.MedianFreshMs, res.MedianExistingMs)
	return res, nil
}

type loadConfig struct {
	conns, requests int
	duration        time.Duration
	h2              bool
	path            string // what each request gets: "/" (the status page) or e.g. "/api/v1/status"
}

// LoadRun is one run of the status mode.
type LoadRun struct {
	Requests int     `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	// CPU time per request of keyquorum serve (from /proc) and of this load generator (its
	// own rusage), warm-up handshakes included, in microseconds; and the machine's load
	// average when the run ended.
	ServerCPUUs float64 `json:"server_cpu_us"`
	ClientCPUUs float64 `json:"client_cpu_us"`
	Load1       float64 `json:"load1"`
}

// StatusLoad is the status mode's result.
type StatusLoad struct {
	Conns       int       `json:"conns"`
	Proto       string    `json:"proto"`
	PageBytes   int       `json:"page_bytes"`
	Runs        []LoadRun `json:"runs"`
	MedianP50Ms float64   `json:"median_p50_ms"`
	MedianP99Ms float64   `json:"median_p99_ms"`
	MedianRPS   float64   `json:"median_rps"`
}

func statusLoad(ctx context.Context, bin, work string, runs int, lc loadConfig) (*StatusLoad, error) {
	if lc.conns < 1 || lc.requests < lc.conns {
		return nil, fmt.Errorf("need at least one connection and as many requests as connections")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s, _, err := startServe(bin, filepath.Join(work, "data"), addr, work)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	if err := firstAcceptedTLS(ctx, s, 60*time.Second); err != nil {
		return nil, err
	}
	tlsConf, err := adminTLS(s)
	if err != nil {
		return nil, err
	}
	res := &StatusLoad{Conns: lc.conns}
	for i := range runs {
		srv0, cli0 := procCPU(s.cmd.Process.Pid), selfCPU()
		r, proto, size, err := loadRun(ctx, "https://"+s.addr+lc.path, tlsConf, lc)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		if srv1 := procCPU(s.cmd.Process.Pid); srv0 >= 0 && srv1 >= 0 {
			r.ServerCPUUs = float64((srv1 - srv0).Microseconds()) / float64(r.Requests)
		}
		r.ClientCPUUs = float64((selfCPU() - cli0).Microseconds()) / float64(r.Requests)
		r.Load1 = load1()
		res.Proto, res.PageBytes = proto, size
		res.Runs = append(res.Runs, r)
		fmt.Printf("run %d: %d requests in %.1f s (%.0f/s) over %d %s connections: p50 %.2f ms, p99 %.2f ms, max %.2f ms; CPU per request: server %.0f µs, load generator %.0f µs; load average %.2f\n",
			i+1, r.Requests, r.Seconds, r.RPS, lc.conns, proto, r.P50Ms, r.P99Ms, r.MaxMs, r.ServerCPUUs, r.ClientCPUUs, r.Load1)
	}
	var p50, p99, rps []float64
	for _, r := range res.Runs {
		p50, p99, rps = append(p50, r.P50Ms), append(p99, r.P99Ms), append(rps, r.RPS)
	}
	res.MedianP50Ms, res.MedianP99Ms, res.MedianRPS = median(p50), median(p99), median(rps)
	fmt.Printf("GET %s (%d bytes) under %d concurrent mTLS connections, median of %d runs: p50 %.2f ms, p99 %.2f ms, %.0f requests/s\n",
		lc.path, res.PageBytes, lc.conns, runs, res.MedianP50Ms, res.MedianP99Ms, res.MedianRPS)
	return res, nil
}

// adminTLS is a client configuration with the administrator's certificate and trust in the
// management CA, from the files serve printed the paths of.
func adminTLS(s *server) (*tls.Config, error) {
	out, err := os.ReadFile(s.out)
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case k == "CA certificate":
			v, _, _ = strings.Cut(v, " (SHA-256")
			paths["ca"] = v
		case strings.HasPrefix(k, "Administrator certificate"):
			paths["p12"] = v
		case k == "Its password":
			paths["password"] = v
		}
	}
	for _, k := range []string{"ca", "p12", "password"} {
		if paths[k] == "" {
			return nil, fmt.Errorf("keyquorum serve did not print where its %s is; its output:\n%s", k, out)
		}
	}
	caPEM, err := os.ReadFile(paths["ca"])
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if blk, _ := pem.Decode(caPEM); blk == nil || !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("read CA certificate %s: no certificate in it", paths["ca"])
	}
	pfx, err := os.ReadFile(paths["p12"])
	if err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(paths["password"])
	if err != nil {
		return nil, err
	}
	// The throwaway administrator of a temporary data directory; the library takes a string.
	key, cert, _, err := pkcs12.DecodeChain(pfx, strings.TrimRight(string(pw), "\r\n"))
	clear(pw)
	if err != nil {
		return nil, fmt.Errorf("read administrator certificate: %w", err)
	}
	return &tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// loadRun opens lc.conns connections, each with its own transport so that each is one TLS
// connection with one request in flight, warms each with one untimed request (the handshake),
// then sends GET url on all of them until lc.requests were answered or lc.duration passed.
func loadRun(ctx context.Context, url string, tlsConf *tls.Config, lc loadConfig) (LoadRun, string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, lc.duration+time.Minute)
	defer cancel()
	clients := make([]*http.Client, lc.conns)
	for i := range clients {
		tr := &http.Transport{
			TLSClientConfig:    tlsConf.Clone(),
			ForceAttemptHTTP2:  lc.h2,
			MaxConnsPerHost:    1,
			DisableCompression: true,
		}
		if !lc.h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(c *http.Client) (string, int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return "", 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return resp.Proto, int(n), err
	}

	var proto string
	var size int
	var warm sync.WaitGroup
	var warmErr error
	var mu sync.Mutex
	for _, c := range clients {
		warm.Go(func() {
			p, n, err := get(c)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && warmErr == nil {
				warmErr = err
			}
			proto, size = p, n
		})
	}
	warm.Wait()
	if warmErr != nil {
		return LoadRun{}, "", 0, fmt.Errorf("open connections: %w", warmErr)
	}

	var issued atomic.Int64
	var firstErr atomic.Pointer[error]
	lat := make([][]time.Duration, lc.conns)
	deadline := time.Now().Add(lc.duration)
	began := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for issued.Add(1) <= int64(lc.requests) && time.Now().Before(deadline) {
				t0 := time.Now()
				_, _, err := get(c)
				d := time.Since(t0)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					cancel()
					return
				}
				lat[i] = append(lat[i], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	if p := firstErr.Load(); p != nil {
		return LoadRun{}, "", 0, *p
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return LoadRun{}, "", 0, errors.New("no request answered")
	}
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	return LoadRun{
		Requests: len(all), Seconds: elapsed.Seconds(), RPS: float64(len(all)) / elapsed.Seconds(),
		P50Ms: ms(all[len(all)/2]), P99Ms: ms(all[len(all)*99/100]), MaxMs: ms(all[len(all)-1]),
	}, proto, size, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// procCPU is the CPU time (user and system) process pid has used, from /proc/PID/stat, or -1.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name (field 2) may hold spaces; the fields after its ")" are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on Linux for every architecture Go
// runs on (sysconf(_SC_CLK_TCK) is not reachable without cgo).
const clockTicks = 100

// selfCPU is the CPU time (user and system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load1 is the machine's 1-minute load average, or 0.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
