package webconf

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// liveQuestionID is the question ID the live view's answer form carries.
func liveQuestionID(t *testing.T, live string) string {
	t.Helper()
	m := questionRE.FindStringSubmatch(live)
	if m == nil {
		t.Fatalf("the live view's answer form names no question:\n%s", excerpt(live))
	}
	return m[1]
}

// questionRE finds the question ID in the live view's answer form.
var questionRE = regexp.MustCompile(`name="question"[^>]*value="([^"]+)"`)

// waitLiveQuestion polls the live view until it contains want and its answer form names the
// question (the pad shows the question a moment before the journal says the ceremony waits
// for its answer on screen), and returns the view and the question ID.
func waitLiveQuestion(t *testing.T, b *browser, want string) (string, string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		live := b.get("/ceremony", http.StatusOK)
		if m := questionRE.FindStringSubmatch(live); m != nil && strings.Contains(live, want) {
			return live, m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live view never asked %q with a question ID:\n%s", want, excerpt(live))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLive polls the live view until it contains want.
func waitLive(t *testing.T, b *browser, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		live := b.get("/ceremony", http.StatusOK)
		if strings.Contains(live, want) {
			return live
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live view never showed %q:\n%s", want, excerpt(live))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAnswerBoundToQuestion (web): the live view's answer names the question it answers; an
// answer to a question no longer asked is refused, on the page and in the API; OK to a
// destructive question (here the last PIN try of a card) needs a fresh security key
// confirmation on the page and an approval in the API, and is audited with the question.
func TestAnswerBoundToQuestion(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{noOKKey: true})
	b := s.browser("Olga Screen")
	cli := s.api(t, b.cert)
	act := httpActor{b}
	card := newCards(t, s.pad, 1)[0]

	b.post("/cards/check", nil, http.StatusSeeOther)
	if st := waitPad(t, s.pad, sim.WaitCard); st.Inserted == "" {
		act.insert(card)
	}
	act.pressOK()
	for range 2 { // two wrong PINs: the next try is the last
		st := waitPad(t, s.pad, sim.WaitPIN)
		act.typeDigits("999999")
		act.pressOK()
		for s.pad.State().Deadline.Equal(st.Deadline) && s.pad.State().Waiting == sim.WaitPIN {
			time.Sleep(10 * time.Millisecond)
		}
	}
	live, id := waitLiveQuestion(t, b, "Last PIN try press OK/Cancel")
	if !regexp.MustCompile(`name="destructive"[^>]*value="1"`).MatchString(live) || !strings.Contains(live, "1 PIN try left") {
		t.Fatalf("the live view does not mark the last try destructive or say why:\n%s", excerpt(live))
	}

	// Stale and unnamed answers are refused; nothing moves.
	_, body := b.post("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {"c1-q99"}}, http.StatusConflict)
	if !strings.Contains(body, "no longer asked") {
		t.Errorf("stale answer: %s", excerpt(body))
	}
	code, raw := cli.json("POST", "/api/v1/ceremony/answer", map[string]any{"question": "c1-q99", "ok": true}, nil)
	if code != http.StatusConflict || problemCode(t, raw) != "stale_answer" {
		t.Errorf("API stale answer: %d %s", code, raw)
	}
	code, raw = cli.json("POST", "/api/v1/ceremony/answer", map[string]any{"ok": true}, nil)
	if code != http.StatusBadRequest {
		t.Errorf("API answer without a question: %d %s", code, raw)
	}
	// OK to the destructive question without the security key: refused on the page (undeclared
	// and declared without a token) and in the API (no approval).
	_, body = b.postRaw("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {id}}, http.StatusForbidden)
	if !strings.Contains(body, "Security key confirmation required") {
		t.Errorf("undeclared destructive OK: %s", excerpt(body))
	}
	b.postRaw("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {id}, "destructive": {"1"}}, http.StatusForbidden)
	code, raw = cli.json("POST", "/api/v1/ceremony/answer", map[string]any{"question": id, "ok": true}, nil)
	if code != http.StatusForbidden || problemCode(t, raw) != "approval_required" {
		t.Errorf("API destructive OK without approval: %d %s", code, raw)
	}
	if q, asked := s.mgr.Question(); !asked || q.ID != id {
		t.Fatalf("the question was answered by a refused request: %+v %v", q, asked)
	}
	// The API's state names the question and its destructiveness.
	var st api.CeremonyStateJSON
	code, raw = cli.json("GET", "/api/v1/ceremony", nil, nil)
	if err := json.Unmarshal(raw, &st); code != http.StatusOK || err != nil || st.Running == nil || st.Running.Question == nil ||
		st.Running.Question.ID != id || !st.Running.Question.Destructive {
		t.Fatalf("API state: %d %v %s", code, err, raw)
	}
	// With the security key (the page script's step-up), OK goes through.
	b.post("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {id}, "destructive": {"1"}}, http.StatusSeeOther)
	waitPad(t, s.pad, sim.WaitPIN)
	// The double click: the same answer again is stale.
	b.post("/ceremony/answer", url.Values{"answer": {"ok"}, "question": {id}, "destructive": {"1"}}, http.StatusConflict)
	act.typeDigits("123456")
	act.pressOK()
	waitEnded(t, s)

	entries, err := s.mgr.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(entries, func(e ceremony.AuditEntry) bool {
		return e.Event == ceremony.AuditCeremonyConfirmed && e.Operator == b.id.Name() && strings.Contains(e.Message, id) &&
			strings.Contains(e.Message, "Last PIN try") && strings.Contains(e.Message, "security key")
	}) {
		t.Errorf("the answer is not audited with its question: %+v", entries)
	}
}

// A destructive answer through the API with an approval for it goes through.
func TestAPIDestructiveAnswerWithApproval(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{noOKKey: true})
	b := s.browser("Olga Screen")
	cli := s.api(t, b.cert)
	act := httpActor{b}
	card := newCards(t, s.pad, 1)[0]
	b.post("/cards/check", nil, http.StatusSeeOther)
	if st := waitPad(t, s.pad, sim.WaitCard); st.Inserted == "" {
		act.insert(card)
	}
	act.pressOK()
	for range 2 {
		st := waitPad(t, s.pad, sim.WaitPIN)
		act.typeDigits("999999")
		act.pressOK()
		for s.pad.State().Deadline.Equal(st.Deadline) && s.pad.State().Waiting == sim.WaitPIN {
			time.Sleep(10 * time.Millisecond)
		}
	}
	_, id := waitLiveQuestion(t, b, "Last PIN try press OK/Cancel")
	code, raw := cli.json("POST", "/api/v1/ceremony/answer", map[string]any{"question": id, "ok": true}, approval(t, b, operator.ActionAnswerDestructive, url.Values{"question": {id}, "ok": {"true"}}))
	if code != http.StatusOK {
		t.Fatalf("API destructive OK with approval: %d %s", code, raw)
	}
	waitPad(t, s.pad, sim.WaitPIN)
	b.post("/ceremony/cancel", nil, http.StatusSeeOther)
	waitEnded(t, s)
}
