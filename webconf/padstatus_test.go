package webconf

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// switchPad is a PC/SC pad that can be plugged in and out while the service runs.
type switchPad struct {
	mu      sync.Mutex
	plugged bool
}

func (p *switchPad) set(plugged bool) { p.mu.Lock(); p.plugged = plugged; p.mu.Unlock() }

func (p *switchPad) Status(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.plugged {
		return "", pinpad.ErrNoReader
	}
	return "REINER SCT cyberJack ecom_a 00 00 (firmware 3.0.45)", nil
}

// TestStatusShowsThePadNowAndItsWaits: the status page and the API say whether the PIN pad is
// connected at this moment — a service runs before the reader is plugged in — and how long the
// pad waits at each step.
func TestStatusShowsThePadNowAndItsWaits(t *testing.T) {
	pad := &switchPad{}
	timeouts := ceremony.Timeouts{OK: 30 * time.Second, Card: 5 * time.Minute, PIN: 90 * time.Second, Removal: 150 * time.Second}
	s := startService(t, t.TempDir(), serviceOptions{padStatus: pad, timeouts: timeouts})
	b := s.browserAs("Alice Auditor", operator.RoleAuditor, false)

	body := b.get("/", http.StatusOK)
	for _, want := range []string{`data-testid="pad-problem"`, "no PIN pad connected", "Plug the PIN pad in",
		"OK or Cancel 30 s", "card and OK 5 min", "each PIN 90 s", "card removal 2 min 30 s"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page without a reader lacks %q\n%s", want, excerpt(body))
		}
	}
	var st api.StatusJSON
	if err := json.Unmarshal([]byte(b.get("/api/v1/status", http.StatusOK)), &st); err != nil {
		t.Fatal(err)
	}
	if st.PadProblem != "no PIN pad connected" || st.PadTimeouts != (api.TimeoutsJSON{OK: 30, Card: 300, PIN: 90, Removal: 150}) {
		t.Errorf("API status without a reader: %q %+v", st.PadProblem, st.PadTimeouts)
	}

	pad.set(true) // plugged in while the service runs
	body = b.get("/", http.StatusOK)
	if strings.Contains(body, "pad-problem") || !strings.Contains(body, "REINER SCT cyberJack ecom_a 00 00 (firmware 3.0.45)") {
		t.Errorf("status page after plugging in:\n%s", excerpt(body))
	}
	st = api.StatusJSON{}
	if err := json.Unmarshal([]byte(b.get("/api/v1/status", http.StatusOK)), &st); err != nil {
		t.Fatal(err)
	}
	if st.PadProblem != "" || !strings.HasPrefix(st.Pad, "REINER SCT cyberJack") {
		t.Errorf("API status after plugging in: %q %q", st.Pad, st.PadProblem)
	}
}
