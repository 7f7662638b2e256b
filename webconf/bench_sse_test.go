package webconf

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
)

// BenchmarkPadEventSSE measures the delay from a PIN-pad event to its server-sent event at a
// watching browser: a card is inserted into (or removed from) the simulator pad, and the clock
// stops when the "pad" message that shows the change has been read by an HTTPS client with a
// client certificate, over real TLS on loopback, through the whole middleware chain. It
// reports the median and 99th percentile (bench/report puts them into bench/RESULTS.md).
func BenchmarkPadEventSSE(b *testing.B) {
	s := startService(b, b.TempDir(), serviceOptions{})
	cert := s.operatorCert("Bench")
	id := operator.IdentityOf(cert.Leaf, s.pki.CA)
	s.ops.Seen(id, time.Now())
	if _, _, err := s.ops.SetRole(id.ID, operator.RoleAdmin, "bench", time.Now()); err != nil {
		b.Fatal(err)
	}
	serial, err := s.pad.NewCard()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url("/events"), nil)
	if err != nil {
		b.Fatal(err)
	}
	c := s.client(&cert)
	c.Timeout = 0 // a stream
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET /events: %s", resp.Status)
	}
	lines := bufio.NewReader(resp.Body)

	// waitPad reads messages until a "pad" message shows inserted == want.
	waitPad := func(want string) {
		b.Helper()
		event := ""
		for {
			line, err := lines.ReadString('\n')
			if err != nil {
				b.Fatalf("read event stream: %v", err)
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "pad":
				var v simpanel.View
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v); err != nil {
					b.Fatalf("pad message: %v", err)
				}
				if v.Inserted == want {
					return
				}
			}
		}
	}
	waitPad("") // the stream is up and has sent the pad as it is

	lat := make([]time.Duration, 0, b.N)
	inserted := false
	for b.Loop() {
		want := ""
		start := time.Now()
		if inserted {
			err = s.pad.Remove()
		} else {
			err, want = s.pad.Insert(serial), serial
		}
		if err != nil {
			b.Fatal(err)
		}
		waitPad(want)
		lat = append(lat, time.Since(start))
		inserted = !inserted
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "median-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkPadEventSSEFanout is BenchmarkPadEventSSE with 500 watching browsers: 100 operators
// with 5 live views each (WebConf allows 8 per operator), each operator's views as streams of one
// HTTP/2 connection as a browser opens them (WebConf serves at most 256 connections). The clock of each view stops when
// it has read the "pad" message that shows the change; the benchmark reports the median and 99th
// percentile over all views and events, and the time until the last view has it.
func BenchmarkPadEventSSEFanout(b *testing.B) {
	const operators, perOperator = 100, 5
	s := startService(b, b.TempDir(), serviceOptions{})
	serial, err := s.pad.NewCard()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type seen struct {
		inserted string
		at       time.Time
	}
	got := make(chan seen, operators*perOperator*4)
	ready := make(chan struct{}, operators*perOperator)
	for o := range operators {
		cert := s.operatorCert(fmt.Sprintf("Watcher %d", o))
		id := operator.IdentityOf(cert.Leaf, s.pki.CA)
		s.ops.Seen(id, time.Now())
		if _, _, err := s.ops.SetRole(id.ID, operator.RoleAuditor, "bench", time.Now()); err != nil {
			b.Fatal(err)
		}
		c := s.client(&cert)
		c.Timeout = 0
		c.Transport.(*http.Transport).ForceAttemptHTTP2 = true // one connection per operator
		for range perOperator {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url("/events"), nil)
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("GET /events: %s", resp.Status)
			}
			go func() {
				defer resp.Body.Close()
				lines := bufio.NewReader(resp.Body)
				event, first := "", true
				for {
					line, err := lines.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\n")
					switch {
					case strings.HasPrefix(line, "event: "):
						event = strings.TrimPrefix(line, "event: ")
					case strings.HasPrefix(line, "data: ") && event == "pad":
						var v simpanel.View
						if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v) != nil {
							return
						}
						if first {
							first = false
							ready <- struct{}{}
							continue
						}
						got <- seen{v.Inserted, time.Now()}
					}
				}
			}()
		}
	}
	for range operators * perOperator {
		<-ready
	}
	var lat, last []time.Duration
	inserted := false
	for b.Loop() {
		want := ""
		start := time.Now()
		if inserted {
			err = s.pad.Remove()
		} else {
			err, want = s.pad.Insert(serial), serial
		}
		if err != nil {
			b.Fatal(err)
		}
		var slowest time.Duration
		for n := 0; n < operators*perOperator; {
			select {
			case g := <-got:
				if g.inserted != want {
					continue
				}
				d := g.at.Sub(start)
				lat = append(lat, d)
				slowest = max(slowest, d)
				n++
			case <-time.After(30 * time.Second):
				b.Fatalf("%d of %d views saw the change", n, operators*perOperator)
			}
		}
		last = append(last, slowest)
		inserted = !inserted
	}
	slices.Sort(lat)
	slices.Sort(last)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "median-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(last[len(last)/2].Nanoseconds())/1e3, "all-views-median-µs")
}
