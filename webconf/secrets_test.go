package webconf

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/sharing"
	"github.com/keyquorum/keyquorum/webconf/pages"
)

// recorder keeps every response body a test saw, to search them for secrets afterwards.
type recorder struct {
	mu     sync.Mutex
	bodies map[string][]byte
}

func (r *recorder) add(name string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies[name] = append(r.bodies[name], b...)
}

// everyPage fetches every page WebConf has, as it stands now.
func everyPage(t *testing.T, b *browser, rec *recorder, tag string) {
	t.Helper()
	paths := []string{"/", "/setup", "/setup/confirm?quorum=2-3", "/ceremony", "/hsm", "/cards", "/audit", "/audit/export", "/reset", "/sim/rack", "/account", "/operators"}
	js, err := b.s.mgr.Ceremonies(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range js {
		paths = append(paths, pages.ProtocolURL(j.ID))
	}
	for _, p := range paths {
		req, _ := http.NewRequest(http.MethodGet, b.s.url(p), nil)
		resp, body := b.do(req)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET %s: %d %s", tag, p, resp.StatusCode, excerpt(body))
		}
		rec.add(tag+" "+p, []byte(body))
	}
	// The backup download is encrypted under the MBK; it is searched too.
	req, _ := http.NewRequest(http.MethodGet, b.s.url("/hsm/backup"), nil)
	_, body := b.do(req)
	rec.add(tag+" /hsm/backup", []byte(body))
}

// streamAll records the live event stream until ctx ends.
func streamAll(t *testing.T, ctx context.Context, b *browser, rec *recorder) *sync.WaitGroup {
	var wg sync.WaitGroup
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.s.url("/events"), nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer resp.Body.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			rec.add("/events", buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return &wg
}

// readShareRecord reads the share record off a virtual card by working the pad directly, as
// a custodian with a card tool would: the test needs the shares to look for them.
func readShareRecord(t *testing.T, pad *sim.Pad, serial string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var acted time.Time // the deadline of the wait acted on: act once per wait
		for st := range pad.Watch(ctx) {
			if st.Deadline.Equal(acted) {
				continue
			}
			switch st.Waiting {
			case sim.WaitCard:
				acted = st.Deadline
				if st.Inserted == "" {
					pad.Insert(serial)
				}
				pad.PressOK()
			case sim.WaitPIN:
				acted = st.Deadline
				pad.TypeDigits("123456")
				pad.PressOK()
			}
		}
	}()
	card, err := pad.WaitForCard(ctx, "Insert card press OK/Cancel", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Close()
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	data, err := card.Read(ctx, pinpad.SlotShare)
	if err != nil {
		t.Fatal(err)
	}
	card.Close()
	pad.Remove()
	cancel()
	<-done
	return data
}

// encodings are the forms a leaked secret could take in a page or an event.
func encodings(b []byte) []string {
	return []string{
		hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		string(b),
	}
}

// TestNoSecretInResponses runs a whole 2-of-3 key generation through WebConf (the simulator
// panel's endpoints standing in for the custodians), fetching every page and recording the
// event stream while it runs and after, then reads the shares off the cards, reconstructs the
// MBK and searches every response for the MBK, the shares and the share records, in hex and
// base64.
func TestNoSecretInResponses(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Quinn Operator")
	rec := &recorder{bodies: map[string][]byte{}}
	ctx, stopStream := context.WithCancel(context.Background())
	wg := streamAll(t, ctx, b, rec)

	for range 3 {
		b.post("/sim/cards", url.Values{"kind": {"tcos"}}, http.StatusSeeOther)
	}
	var cards []string
	for _, c := range s.pad.Cards() {
		cards = append(cards, c.Serial)
	}
	everyPage(t, b, rec, "before")

	b.post("/ceremonies", url.Values{"kind": {"generate"}, "quorum": {"2-3"}, "label": {"test appliance"}}, http.StatusSeeOther)
	n := 0
	j := driveCeremony(t, context.Background(), s, httpActor{b}, cards, func(st sim.State) {
		n++
		everyPage(t, b, rec, "during "+st.Waiting.String()+" "+strings.Repeat("+", n))
	})
	if j.Status != ceremony.StatusDone {
		t.Fatalf("ceremony ended %s: %s %s", j.Status, j.LastError, j.Outcome)
	}
	everyPage(t, b, rec, "after")
	status := b.get("/", http.StatusOK)
	if !strings.Contains(status, `data-testid="key-id">`+j.KeyID+`<`) {
		t.Errorf("status page does not show key ID %s", j.KeyID)
	}

	// Backup and restore through the pages.
	backup := []byte(b.get("/hsm/backup", http.StatusOK))
	resp, body := b.upload(bytes.NewReader(backup), -1)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/hsm?restored=1" {
		t.Errorf("restore of the backup: %d %s", resp.StatusCode, excerpt(body))
	}
	if !strings.Contains(b.get("/hsm?restored=1", http.StatusOK), `data-testid="restored"`) {
		t.Error("restore not confirmed on the HSM page")
	}
	stopStream()
	wg.Wait()

	// The secrets, from the cards.
	var records []*sharing.Record
	var secrets [][]byte
	for _, serial := range cards {
		raw := readShareRecord(t, s.pad, serial)
		r, err := sharing.Unmarshal(raw)
		if err != nil {
			t.Fatalf("card %s: %v", serial, err)
		}
		records = append(records, r)
		secrets = append(secrets, raw, bytes.Clone(r.Share))
	}
	mbk, err := sharing.Combine(records[:2])
	if err != nil {
		t.Fatal(err)
	}
	if got := sharing.KeyIDOf(mbk).String(); got != j.KeyID {
		t.Fatalf("reconstructed key ID %s, journal %s", got, j.KeyID)
	}
	secrets = append(secrets, mbk)

	if len(rec.bodies["/events"]) == 0 || !bytes.Contains(rec.bodies["/events"], []byte(`"status":"done"`)) {
		t.Error("the event stream did not record the ceremony")
	}
	// The search itself works: the key ID, which is public, is found where it belongs.
	if !bytes.Contains(rec.bodies["after /"], []byte(j.KeyID)) {
		t.Error("the key ID is not in the status page: the search looks at the wrong bodies")
	}
	searched := 0
	for name, body := range rec.bodies {
		searched += len(body)
		for i, sec := range secrets {
			for _, enc := range encodings(sec) {
				if bytes.Contains(body, []byte(enc)) {
					t.Errorf("secret %d found in %s as %q", i, name, enc)
				}
			}
		}
	}
	t.Logf("searched %d responses, %d bytes, for %d secrets in %d encodings each", len(rec.bodies), searched, len(secrets), len(encodings(mbk)))
	if n < 10 {
		t.Errorf("only %d waits observed during the ceremony", n)
	}
}
