package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/api"
)

// The commands that set a stalled or interrupted ceremony going again with --watch, end to end:
// what the operator sees printed while the ceremony goes on, and the exit status at its end.

// bgCLI is a keyquorum command running while the test plays the pad, its output readable as it
// comes.
type bgCLI struct {
	out  syncBuffer // stdout and stderr, as a terminal shows them
	done chan int
	code int
}

func startCLI(t *testing.T, env []string, args ...string) *bgCLI {
	t.Helper()
	b := &bgCLI{done: make(chan int, 1)}
	cmd := exec.CommandContext(t.Context(), kqBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &b.out, &b.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			b.done <- ee.ExitCode()
		case err != nil:
			b.done <- -1
		default:
			b.done <- 0
		}
	}()
	return b
}

// waitOutput waits until the command printed want.
func (b *bgCLI) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the command did not print %q in 30 s; it printed:\n%s", want, b.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the command's end and returns its exit status.
func (b *bgCLI) wait(t *testing.T) int {
	t.Helper()
	select {
	case b.code = <-b.done:
		return b.code
	case <-time.After(60 * time.Second):
		t.Fatalf("the command did not end in a minute; it printed:\n%s", b.out.String())
		return -1
	}
}

// driveBG plays the custodians on n's pad until the returned stop is called.
func driveBG(t *testing.T, n *node, cards []string) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		err = n.drive(ctx, cards)
	}()
	return func() {
		cancel()
		wg.Wait()
		if err != nil {
			t.Errorf("drive the pad: %v", err)
		}
	}
}

// waitCeremony polls the ceremony state until ok says it is reached (at most 30 s).
func waitCeremony(t *testing.T, n *node, what string, ok func(api.CeremonyStateJSON) bool) api.CeremonyStateJSON {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st api.CeremonyStateJSON
		if err := n.getJSON("/api/v1/ceremony", &st); err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ceremony did not reach %s in 30 s: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stalled(st api.CeremonyStateJSON) bool {
	return st.Running != nil && st.Running.Status == ceremony.StatusStalled
}

// TestCLIRetryWatch: a ceremony stalled by a pad timeout (nobody answered the pad) goes on with
// `ceremony retry --watch`, which follows it to its end: exit status 0 when it succeeds; when
// the pad times out again the watch says so and keeps watching, and a cancel ends it with 6.
func TestCLIRetryWatch(t *testing.T) {
	n := nodeT(t, "a", filepath.Join(t.TempDir(), "a"), "--timeout-ok", "2s", "--timeout-card", "2s")
	cards, err := n.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if out, errOut, code := n.cliApproved(ctx, "ceremony.generate", "ceremony", "start", "generate", "-k", "2", "-n", "3"); code != 0 {
		t.Fatalf("start: %d %s%s", code, out, errOut)
	}
	waitCeremony(t, n, "a stall", stalled)
	out, errOut, code := cli(ctx, n.env(), "ceremony", "state")
	if code != 0 || !strings.Contains(out, "stalled:            fix the cause, then keyquorum ceremony retry") {
		t.Fatalf("state of a stalled ceremony: %d %s%s", code, out, errOut)
	}

	stop := driveBG(t, n, []string{cards[0], cards[1], cards[2], cards[0], cards[1]})
	r := startCLI(t, n.env(), "ceremony", "retry", "--watch")
	code = r.wait(t)
	stop()
	got := r.out.String()
	t.Logf("retry --watch printed:\n%s", got)
	if code != 0 {
		t.Fatalf("retry --watch of a ceremony that succeeds: exit status %d, want 0:\n%s", code, got)
	}
	for _, want := range []string{"retry sent\n", "generate #1 ", "generate ceremony #1 done"} {
		if !strings.Contains(got, want) {
			t.Errorf("retry --watch printed no %q:\n%s", want, got)
		}
	}
	if i := strings.Index(got, "retry sent\n"); i < 0 || strings.Contains(got[i:], "stalled") {
		t.Errorf("retry --watch reported the stall it ended (nobody let the pad time out again):\n%s", got)
	}

	// A load that stalls, and stalls again after the retry: the watch says what to do and
	// goes on watching until the operator cancels; then exit status 6.
	if out, errOut, code := n.cliApproved(ctx, "ceremony.load", "ceremony", "start", "load"); code != 0 {
		t.Fatalf("start load: %d %s%s", code, out, errOut)
	}
	waitCeremony(t, n, "a stall", stalled)
	r = startCLI(t, n.env(), "ceremony", "retry", "--watch")
	r.waitOutput(t, "retry sent\n")
	r.waitOutput(t, "stalled: fix the cause, then keyquorum ceremony retry (or cancel)")
	select {
	case code := <-r.done:
		t.Fatalf("retry --watch ended at a stall (exit status %d): a stall waits for the operator:\n%s", code, r.out.String())
	case <-time.After(300 * time.Millisecond):
	}
	if out, errOut, code := cli(ctx, n.env(), "ceremony", "cancel"); code != 0 {
		t.Fatalf("cancel: %d %s%s", code, out, errOut)
	}
	if code := r.wait(t); code != exitCeremony {
		t.Fatalf("retry --watch of a cancelled load: exit status %d, want %d:\n%s", code, exitCeremony, r.out.String())
	}
	t.Logf("retry --watch of the load printed:\n%s", r.out.String())
	if got := r.out.String(); !strings.Contains(got, "load ceremony #2 aborted") {
		t.Errorf("retry --watch of a cancelled load printed no outcome:\n%s", got)
	}
}

// TestCLIResumeWatch: a key load interrupted by a service stop (a card read, the service
// restarted) is resumed with `ceremony resume --watch` after its approval: the command says
// what it resumed, follows the ceremony as it reads the cards again and ends with exit status
// 0 and the outcome. A resume whose ceremony is cancelled ends with 6.
func TestCLIResumeWatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	n := nodeT(t, "a", dir)
	cards, err := n.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if out, code, err := n.ceremony(ctx, []string{cards[0], cards[1], cards[2], cards[0], cards[1]}, "generate", "-k", "2", "-n", "3"); err != nil || code != 0 {
		t.Fatalf("generate: %d %v\n%s", code, err, out)
	}
	interrupt := func(id uint64) {
		t.Helper()
		if out, errOut, code := n.cliApproved(ctx, "ceremony.load", "ceremony", "start", "load"); code != 0 {
			t.Fatalf("start load: %d %s%s", code, out, errOut)
		}
		stop := driveBG(t, n, []string{cards[2]})
		waitCeremony(t, n, "one card read", func(st api.CeremonyStateJSON) bool {
			return st.Running != nil && st.Running.CardsDone >= 1
		})
		stop()
		n.stop()
		key := n.key
		n = nodeT(t, "a", dir)
		n.key = key
		var st api.CeremonyStateJSON
		if err := n.getJSON("/api/v1/ceremony", &st); err != nil {
			t.Fatal(err)
		}
		if st.Running != nil || st.Last == nil || st.Last.ID != id || st.Last.Status != ceremony.StatusInterrupted {
			t.Fatalf("after the restart: want load #%d interrupted, got %+v (last %+v)", id, st, st.Last)
		}
	}
	interrupt(2)

	// The resume needs an approval: refused once, naming a request; approved, it runs again.
	stop := driveBG(t, n, []string{cards[0], cards[1]})
	r := startCLI(t, approved(t, n, "ceremony.resume", "ceremony", "resume", "--watch"), "ceremony", "resume", "--watch")
	code := r.wait(t)
	stop()
	got := r.out.String()
	t.Logf("resume --watch printed:\n%s", got)
	if code != 0 {
		t.Fatalf("resume --watch of a load that succeeds: exit status %d, want 0:\n%s", code, got)
	}
	for _, want := range []string{"resumed load ceremony #2: follow the PIN pad\n", "insert-card: pad shows \"Insert 1. card", " [cards 1/2]", "\nload ceremony #2 done: Key "} {
		if !strings.Contains(got, want) {
			t.Errorf("resume --watch printed no %q:\n%s", want, got)
		}
	}
	if st, err := n.status(); err != nil || st.KeySet == nil || st.KeySet.Ceremony != 2 {
		t.Fatalf("after the resumed load: the key set is not the one load #2 loaded (%+v, %v)", st.KeySet, err)
	}

	// Interrupted again, resumed again, and cancelled while the watch follows it: exit 6.
	interrupt(3)
	r = startCLI(t, approved(t, n, "ceremony.resume", "ceremony", "resume", "--watch"), "ceremony", "resume", "--watch")
	r.waitOutput(t, "load #3 confirm: pad shows \"Read Key press OK/Cancel\" waiting for ok")
	if out, errOut, code := cli(ctx, n.env(), "ceremony", "cancel"); code != 0 {
		t.Fatalf("cancel: %d %s%s", code, out, errOut)
	}
	code = r.wait(t)
	t.Logf("resume --watch of a cancelled load printed:\n%s", r.out.String())
	if code != exitCeremony || !strings.Contains(r.out.String(), " aborted: ") {
		t.Fatalf("resume --watch of a cancelled load: exit status %d, want %d and the outcome:\n%s", code, exitCeremony, r.out.String())
	}
}

// approved runs a command that needs an approval once (it must be refused, naming a request of
// action), approves that request with n's security key and returns the environment that runs
// it again with the token.
func approved(t *testing.T, n *node, action string, args ...string) []string {
	t.Helper()
	out, errOut, code := cli(t.Context(), n.env(), args...)
	m := requestRE.FindStringSubmatch(errOut)
	if code != exitDenied || m == nil {
		t.Fatalf("keyquorum %s without an approval: exit status %d, want %d naming a request:\n%s%s", strings.Join(args, " "), code, exitDenied, out, errOut)
	}
	tok, got, err := n.approveRequest(m[1])
	if err != nil || got != action {
		t.Fatalf("approve %s: %q %v, want a request for %s", m[1], got, err, action)
	}
	return append(n.env(), "KEYQUORUM_APPROVAL="+tok)
}

// TestRetryWatchLeavesOutTheStallItEnds: the service's event stream starts with its latest
// event, which is still the stall when the ceremony has not yet journaled the retry (a slow
// disk): `retry --watch` must not print that stall as if the ceremony had stalled again.
func TestRetryWatchLeavesOutTheStallItEnds(t *testing.T) {
	stall := ceremony.Event{Seq: 7, Type: ceremony.EventStalled, Kind: ceremony.KindLoad, Ceremony: 3, Status: ceremony.StatusStalled,
		Step: ceremony.StepWaitRetry, Waiting: ceremony.WaitRetry, PINTries: -1, Error: "the PIN pad timed out waiting for the operator"}
	prompt := ceremony.Event{Seq: 8, Type: ceremony.EventPrompt, Kind: ceremony.KindLoad, Ceremony: 3, Status: ceremony.StatusRunning,
		Step: ceremony.StepInsertCard, Display: "Insert 1. card press OK/Cancel", Waiting: ceremony.WaitCard, PINTries: -1}
	again := stall
	again.Seq = 9
	outcome := ceremony.Event{Seq: 10, Type: ceremony.EventOutcome, Kind: ceremony.KindLoad, Ceremony: 3, Status: ceremony.StatusAborted, Outcome: "The key load was aborted"}
	retried := false
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "GET /api/v1/ceremony":
			json.NewEncoder(w).Encode(api.CeremonyStateJSON{Running: &stall})
		case "POST /api/v1/ceremony/retry":
			retried = true
			json.NewEncoder(w).Encode(map[string]bool{"ok": true})
		case "GET /api/v1/ceremony/events":
			// The stall the retry ends, then the step repeated, a new stall and the cancel.
			enc := json.NewEncoder(w)
			for _, ev := range []ceremony.Event{stall, prompt, again, outcome} {
				enc.Encode(ev)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	var out bytes.Buffer
	err := steerCmd("retry").run(t.Context(), &client{base: base, hc: srv.Client()}, &clientOptions{}, &watchFlag{watch: true}, nil, &out)
	if !retried {
		t.Fatal("no retry sent")
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitCeremony {
		t.Fatalf("retry --watch of an aborted load: %v, want exit status %d", err, exitCeremony)
	}
	got := out.String()
	if strings.Count(got, "stalled: fix the cause") != 1 || !strings.Contains(got, "retry sent\nload #3 insert-card") {
		t.Errorf("retry --watch shows the stall it ended, or not the one after it:\n%s", got)
	}
}
