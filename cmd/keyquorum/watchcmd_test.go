package main

import (
	"context"
	"errors"
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
