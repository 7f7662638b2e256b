package webconf

import (
	"bufio"
	"context"
	"encoding/json"
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
