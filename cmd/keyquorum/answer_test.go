package main

import (
	"context"

	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/internal/pcscdtest"
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/webconf/api"
)

// virtualCyberJack starts a private pcscd with the virtual cyberJack driver (built here) for a
// `keyquorum serve --pinpad pcsc --virtual-reader` of this test, and returns the driver's
// control socket. In CI a missing pcscd is a failure.
func virtualCyberJack(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	lib, err := pcscdtest.BuildDriver(ctx, "../..", "./cmd/ifd-cyberjacksim", dir)
	if err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(dir, "pad.sock")
	t.Setenv("PCSCLITE_CSOCK_NAME", "") // Start sets it for the serve it runs; restored at the end
	t.Setenv("CYBERJACKSIM_LOG", filepath.Join(dir, "driver.log"))
	d, err := pcscdtest.Start(pcscdtest.Reader{FriendlyName: "REINER SCT cyberJack ecom_a", DeviceName: "/dev/null:" + control, LibPath: lib})
	if err != nil {
		if pcscdtest.Require(err) {
			t.Skipf("no private pcscd here: %v", err)
		}
		t.Fatalf("real PC/SC stack: %v", err)
	}
	t.Cleanup(d.Stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(control); err == nil {
			return control
		}
		if time.Now().After(deadline) {
			t.Fatalf("the virtual cyberJack opened no control socket: pcscd said:\n%s", d.Log())
		}
	}
}

// TestCLIDestructiveAnswer is what an operator at 5 a.m. does at a cyberJack whose OK and
// Cancel do not reach the host (firmware without MKT_COMP) when the pad asks a question whose OK
// destroys data (the last PIN try of a card): the question goes to the command line, `ceremony
// answer ok ID` is refused naming a request, the request approved with the security key, the
// same command with the token answers it and the ceremony goes on. An approval of another
// question, or of Cancel, does not answer OK.
func TestCLIDestructiveAnswer(t *testing.T) {
	control := virtualCyberJack(t)
	pad, err := cyberjacksim.Dial(control)
	if err != nil {
		t.Fatal(err)
	}
	defer pad.Close()
	if err := pad.SetFirmware(false); err != nil {
		t.Fatal(err)
	}
	n := nodeT(t, "a", filepath.Join(t.TempDir(), "a"), "--pinpad", "pcsc", "--virtual-reader", control)
	cards, err := n.newCards(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if out, errOut, code := n.cliApproved(ctx, "ceremony.card-check", "ceremony", "start", "card-check"); code != 0 {
		t.Fatalf("start a card check: %d %s%s", code, out, errOut)
	}

	// Two wrong PINs on the pad: the third try is the card's last.
	key := func(k string) {
		t.Helper()
		if _, err := n.form("/sim/key", url.Values{"key": {k}}); err != nil {
			t.Fatal(err)
		}
	}
	// The panel of a virtual reader cannot tell what the pad waits for: the ceremony can.
	var pinWaits []time.Time
	inserted := false
	for deadline := time.Now().Add(30 * time.Second); len(pinWaits) < 2; time.Sleep(25 * time.Millisecond) {
		var st api.CeremonyStateJSON
		if err := n.getJSON("/api/v1/ceremony", &st); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) || st.Running == nil {
			t.Fatalf("the pad did not ask for the PIN twice in 30 s (%d times): %+v", len(pinWaits), st.Running)
		}
		switch ev := st.Running; {
		case ev.Waiting == ceremony.WaitCard && !inserted:
			if _, err := n.form("/sim/insert", url.Values{"serial": {cards[0]}}); err != nil {
				t.Fatal(err)
			}
			inserted = true
		case ev.Waiting == ceremony.WaitPIN && (len(pinWaits) == 0 || !pinWaits[len(pinWaits)-1].Equal(ev.Deadline)):
			pinWaits = append(pinWaits, ev.Deadline)
			for _, d := range "999999" {
				key(string(d))
			}
			key("ok")
		}
	}
	st := waitCeremony(t, n, "the last PIN try asked on the screen", func(st api.CeremonyStateJSON) bool {
		return st.Running != nil && st.Running.Question != nil && st.Running.Question.ID != ""
	})
	q := st.Running.Question
	if !q.Destructive || !strings.Contains(q.Text, "Last PIN try") {
		t.Fatalf("question asked: %+v, want the destructive last PIN try", q)
	}

	out, errOut, code := cli(ctx, n.env(), "ceremony", "state")
	if code != 0 || !strings.Contains(out, "answer with:        keyquorum ceremony answer ok|cancel "+q.ID+" (OK destroys data on the card: it needs --approval for ceremony.answer-destructive)") {
		t.Fatalf("ceremony state at a destructive question: %d\n%s%s", code, out, errOut)
	}

	// 1. Without an approval: refused (exit 4), naming a request that says what it would do.
	out, errOut, code = cli(ctx, n.env(), "ceremony", "answer", "ok", q.ID)
	m := requestRE.FindStringSubmatch(errOut)
	if code != exitDenied || m == nil {
		t.Fatalf("answer ok without an approval: exit status %d, want %d naming a request:\n%s%s", code, exitDenied, out, errOut)
	}
	if !strings.Contains(errOut, `question "`+q.ID+`"`) {
		t.Errorf("the refusal does not name the question in words:\n%s", errOut)
	}

	// An approval of OK to another question, or of Cancel to this one, does not answer OK.
	for _, c := range []struct {
		name   string
		fields []string
	}{
		{"another question", []string{"question=" + otherQuestion(q.ID), "ok=true"}},
		{"cancel", []string{"question=" + q.ID}},
	} {
		tok, err := n.approve(string(ceremonyAnswerDestructive), c.fields...)
		if err != nil {
			t.Fatalf("approve %s: %v", c.name, err)
		}
		out, errOut, code := cli(ctx, append(n.env(), "KEYQUORUM_APPROVAL="+tok), "ceremony", "answer", "ok", q.ID)
		if code != exitDenied || !strings.Contains(errOut, "another request") {
			t.Errorf("answer ok with the approval of %s: exit status %d, want %d and why:\n%s%s", c.name, code, exitDenied, out, errOut)
		}
		if st := waitCeremony(t, n, "", func(api.CeremonyStateJSON) bool { return true }); st.Running == nil || st.Running.Question == nil || st.Running.Question.ID != q.ID {
			t.Fatalf("after the answer with the approval of %s the question is no longer asked: %+v", c.name, st.Running)
		}
	}

	// 2. The request approved with the security key; 3. the same command with its token.
	tok, action, err := n.approveRequest(m[1])
	if err != nil || action != string(ceremonyAnswerDestructive) {
		t.Fatalf("approve %s: %q %v", m[1], action, err)
	}
	out, errOut, code = cli(ctx, append(n.env(), "KEYQUORUM_APPROVAL="+tok), "ceremony", "answer", "ok", q.ID)
	if code != 0 || out != "answered ok to question "+q.ID+"\n" {
		t.Fatalf("answer ok with the approval: exit status %d:\n%s%s", code, out, errOut)
	}
	// The ceremony goes on: the pad asks for the PIN a third time.
	waitCeremony(t, n, "the last PIN try on the pad", func(st api.CeremonyStateJSON) bool {
		return st.Running != nil && st.Running.Waiting == ceremony.WaitPIN && !st.Running.Deadline.Equal(pinWaits[1])
	})
	// A token is good once: the answered question is no longer asked.
	if out, errOut, code := cli(ctx, append(n.env(), "KEYQUORUM_APPROVAL="+tok), "ceremony", "answer", "ok", q.ID); code != exitConflict {
		t.Errorf("a second answer to the answered question: exit status %d, want %d:\n%s%s", code, exitConflict, out, errOut)
	}
	// A secure PIN entry cannot be aborted from the host (pinpad/README.md): the command line
	// says so, and Cancel on the pad ends it, and the ceremony with it.
	if out, errOut, code := cli(ctx, n.env(), "ceremony", "cancel"); code != 0 || !strings.Contains(out, "press Cancel on the pad") {
		t.Fatalf("cancel during a PIN entry on a real pad: %d %s%s", code, out, errOut)
	}
	key("cancel")
	waitCeremony(t, n, "its end", func(st api.CeremonyStateJSON) bool { return st.Running == nil })
	if out, _, _ := cli(ctx, n.env(), "ceremony", "state", "--json"); !strings.Contains(out, `"status": "`+string(ceremony.StatusAborted)+`"`) {
		t.Errorf("the card check did not end as cancelled:\n%s", out)
	}
}

const ceremonyAnswerDestructive = "ceremony.answer-destructive"

// otherQuestion is the ID of the question after id ("c3-q1" → "c3-q2").
func otherQuestion(id string) string {
	c, q, _ := strings.Cut(id, "-q")
	i, _ := strconv.Atoi(q)
	return c + "-q" + strconv.Itoa(i+1)
}
