package webconf

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
)

// countingSim counts the reads of the simulator's card list.
type countingSim struct {
	simpanel.Simulator
	cards atomic.Int64
}

func (c *countingSim) Cards() []sim.CardInfo {
	c.cards.Add(1)
	return c.Simulator.Cards()
}

// TestEventStreamReadsPadOnce: 20 live views watch the pad; a card inserted and removed four
// times reaches every view, and the card list is read once per pad event (and once per rack
// look, every second), not once per view: 500 views made 500 reads of it per event.
func TestEventStreamReadsPadOnce(t *testing.T) {
	const views, events = 20, 4
	s := startService(t, t.TempDir(), serviceOptions{})
	serial, err := s.pad.NewCard()
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingSim{Simulator: s.pad}
	h := pages.NewEventStream(s.mgr, cs, make(chan struct{}), slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(http.HandlerFunc(h.Stream))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pads := make([]chan string, views) // each view's "pad" messages
	for i := range pads {
		pads[i] = make(chan string, 100)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		go func(out chan<- string) {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			event := ""
			for sc.Scan() {
				line := sc.Text()
				if e, ok := strings.CutPrefix(line, "event: "); ok {
					event = e
				} else if d, ok := strings.CutPrefix(line, "data: "); ok && event == "pad" {
					out <- d
				}
			}
		}(pads[i])
	}
	expect := func(want string) {
		t.Helper()
		for i, c := range pads {
			for {
				select {
				case d := <-c:
					if strings.Contains(d, want) {
						goto next
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("view %d never showed %s", i, want)
				}
			}
		next:
		}
	}
	expect(`"inserted":""`) // the pad as it is now
	start, before := time.Now(), cs.cards.Load()
	for i := range events {
		if i%2 == 0 {
			err = s.pad.Insert(serial)
		} else {
			err = s.pad.Remove()
		}
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			expect(`"inserted":"` + serial + `"`)
		} else {
			expect(`"inserted":""`)
		}
	}
	reads := cs.cards.Load() - before
	if rackLooks := int64(time.Since(start)/time.Second) + 1; reads > events+rackLooks {
		t.Fatalf("the card list was read %d times for %d pad events and at most %d rack looks, with %d views", reads, events, rackLooks, views)
	}
	t.Logf("%d pad events to %d views: %d reads of the card list", events, views, reads)
}
