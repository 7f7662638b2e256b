package webconf

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A card added to the rack behind the pad's back (the virtual cyberJack's panel reports no
// change of the pad for it) reaches an open page through the event stream, so the rack shows it
// without a reload.
func TestRackShowsNewCardWithoutReload(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{remoteRack: true})
	b := s.browser("Ken")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url("/events"), nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 100)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				got <- string(buf[:n])
			}
			if err != nil {
				close(got)
				return
			}
		}
	}()
	// The stream is up (its first pad event) before the card is made.
	var seen strings.Builder
	deadline := time.After(10 * time.Second)
	for !strings.Contains(seen.String(), "event: pad") {
		select {
		case s := <-got:
			seen.WriteString(s)
		case <-deadline:
			t.Fatalf("no pad event: %s", seen.String())
		}
	}
	httpActor{b}.send("/sim/cards", url.Values{})
	cards := s.pad.Cards()
	if len(cards) != 1 {
		t.Fatalf("cards %+v", cards)
	}
	for !strings.Contains(seen.String(), cards[0].Serial) {
		select {
		case s, ok := <-got:
			if !ok {
				t.Fatal("stream ended")
			}
			seen.WriteString(s)
		case <-deadline:
			t.Fatalf("the new card %s never reached the page: %s", cards[0].Serial, seen.String())
		}
	}
}
