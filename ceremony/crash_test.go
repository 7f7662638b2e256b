package ceremony

// The crash tests: a real child process (this test binary, re-executed) runs a ceremony against
// the simulator pad and the soft HSM in a data dir and reports every committed transition on
// stdout; after transition N it stops dead, and the parent SIGKILLs it. The parent then opens
// the data dir afresh, checks how the interrupted ceremony is classified and that the next
// action (resume, or factory reset and a new ceremony) succeeds. N runs from 1 until the child
// finishes without reaching N.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/pinpad/sim"
)

const (
	envChild      = "KEYQUORUM_CEREMONY_CRASH_CHILD" // the ceremony kind the child runs
	envChildRoot  = "KEYQUORUM_CEREMONY_CRASH_ROOT"
	envChildCards = "KEYQUORUM_CEREMONY_CRASH_CARDS"
	envChildKill  = "KEYQUORUM_CEREMONY_CRASH_KILL" // transition number, or "after-load"
	envChildK     = "KEYQUORUM_CEREMONY_CRASH_K"    // the quorum the child asks for
	envChildN     = "KEYQUORUM_CEREMONY_CRASH_N"
)

func TestMain(m *testing.M) {
	if kind := os.Getenv(envChild); kind != "" {
		os.Exit(crashChild(Kind(kind)))
	}
	os.Exit(m.Run())
}

// childTB lets the test operator run in the child, where there is no *testing.T.
type childTB struct{ testing.TB }

func (childTB) Helper() {}
func (childTB) Errorf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "operator: "+format+"\n", a...)
}

// stopDead announces the kill point and waits to be killed.
func stopDead(what string) {
	fmt.Printf("KILLME %s\n", what)
	os.Stdout.Sync()
	for {
		time.Sleep(time.Hour)
	}
}

// killHSM stops the child right after the key reached the HSM, before the journal says so.
type killHSM struct{ *soft.HSM }

func (h killHSM) LoadBackupKey(ctx context.Context, mbk []byte) error {
	err := h.HSM.LoadBackupKey(ctx, mbk)
	if err == nil {
		stopDead("after-load")
	}
	return err
}

func crashChild(kind Kind) int {
	root := os.Getenv(envChildRoot)
	killAt := os.Getenv(envChildKill)
	pad, err := sim.Open(filepath.Join(root, "cards"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	h, err := soft.Open(filepath.Join(root, "hsm"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var dev HSM = h
	if killAt == "after-load" {
		dev = killHSM{h}
	}
	op := newOperator(childTB{}, pad)
	op.use(strings.Split(os.Getenv(envChildCards), ",")...)
	n := 0
	m, err := Open(context.Background(), Config{
		Dir: filepath.Join(root, "ceremony"), Pad: pad, HSM: dev, Timeouts: testTimeouts,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		AfterCommit: func(tr Transition) {
			n++
			fmt.Printf("COMMIT %d %s %s %s\n", n, tr.Status, tr.Phase, tr.Event)
			if strconv.Itoa(n) == killAt {
				stopDead(killAt)
			}
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	qk, _ := strconv.Atoi(os.Getenv(envChildK))
	qn, _ := strconv.Atoi(os.Getenv(envChildN))
	hd, err := m.Start(context.Background(), "CN=child", Request{Kind: kind, K: qk, N: qn})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	j, err := hd.Wait(context.Background())
	fmt.Printf("DONE %s %v\n", j.Status, err)
	m.Close()
	return 0
}

// childRun is what one child run reported.
type childRun struct {
	killed  bool
	commits []string // "status phase event" of each committed transition
	output  []byte   // everything it printed (searched for secrets)
}

// runChild runs a 2-of-3 ceremony in the child on root until it reaches killAt (and is
// SIGKILLed) or finishes.
func runChild(t *testing.T, kind Kind, root string, cards []string, killAt string) childRun {
	t.Helper()
	return runChildQuorum(t, kind, 2, 3, root, cards, killAt)
}

// runChildQuorum runs the child asking for a k-of-n ceremony.
func runChildQuorum(t *testing.T, kind Kind, k, n int, root string, cards []string, killAt string) childRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+string(kind), envChildRoot+"="+root,
		envChildCards+"="+strings.Join(cards, ","), envChildKill+"="+killAt,
		envChildK+"="+strconv.Itoa(k), envChildN+"="+strconv.Itoa(n))
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var run childRun
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		switch {
		case strings.HasPrefix(line, "COMMIT "):
			f := strings.SplitN(line, " ", 3)
			run.commits = append(run.commits, f[2])
		case strings.HasPrefix(line, "KILLME "):
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			run.killed = true
		}
		if run.killed {
			break
		}
	}
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	run.output = append([]byte(out.String()), stderr.Bytes()...)
	if ctx.Err() != nil {
		t.Fatalf("child did not finish: %s", run.output)
	}
	if !run.killed && err != nil {
		t.Fatalf("child failed: %v\n%s", err, run.output)
	}
	if run.killed {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child not killed by SIGKILL: %v", err)
		}
	}
	return run
}

// makeCards makes n blank cards in root's simulator.
func makeCards(t *testing.T, root string, n int) []string {
	t.Helper()
	pad, err := sim.Open(filepath.Join(root, "cards"))
	if err != nil {
		t.Fatal(err)
	}
	defer pad.Close()
	var out []string
	for i := 0; i < n; i++ {
		s, err := pad.NewCard()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestCrashGenerate(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary for every transition")
	}
	seen := 0
	for n := 1; ; n++ {
		killAt := strconv.Itoa(n)
		done := t.Run("kill at "+killAt, func(t *testing.T) { seen = crashGenerateAt(t, killAt) })
		if !done {
			t.FailNow()
		}
		if seen < n {
			break // the child finished before transition n: every transition was a kill point
		}
	}
	if seen < 12 {
		t.Fatalf("a whole 2-of-3 generation committed only %d transitions", seen)
	}
	t.Run("kill after the key was loaded", func(t *testing.T) { crashGenerateAt(t, "after-load") })
}

// crashGenerateAt kills a 2-of-3 generation at killAt, recovers and checks; it returns how many
// transitions the child committed.
func crashGenerateAt(t *testing.T, killAt string) int {
	root := t.TempDir()
	cards := makeCards(t, root, 3)
	run := runChild(t, KindGenerate, root, append(cards, cards[0]), killAt)

	e := newEnv(t, withRoot(root))
	e.logs.Write(run.output)
	o, err := e.m.Overview(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := o.Last
	if last == nil {
		t.Fatal("no ceremony in the journal")
	}
	t.Logf("killed=%v after %d transitions (%s): %s; next %q", run.killed, len(run.commits), lastOf(run.commits), last.Outcome, last.Next)
	if !run.killed {
		// The child finished: nothing to recover.
		if last.Status != StatusDone || o.Pending != nil || e.backupKeyID() != last.KeyID {
			t.Fatalf("finished generation: %+v, pending %+v", last, o.Pending)
		}
		return len(run.commits)
	}

	written := 0
	for _, c := range last.Cards {
		if c.Role == RoleShare && (c.State == CardWriting || c.State == CardWritten || c.State == CardUnusable) {
			written++
		}
	}
	phase := last.Phase
	switch {
	case last.Status == StatusDone:
		// Killed after the final commit, or after the key reached the HSM (then Open finished it).
		if e.backupKeyID() != last.KeyID || o.Pending != nil || o.KeySet == nil || o.KeySet.KeyID != last.KeyID {
			t.Fatalf("done: hsm %q, %+v, pending %+v", e.backupKeyID(), last, o.Pending)
		}
		if killAt == "after-load" && !strings.Contains(last.Outcome, "just before the interruption") {
			t.Fatalf("outcome %q", last.Outcome)
		}

	case phase == PhaseReading || phase == PhaseLoading:
		// All three cards written: resume at reading.
		if last.Status != StatusInterrupted || last.Next != NextResume || o.Pending == nil || o.Pending.Next != NextResume {
			t.Fatalf("after all cards were written: %+v, pending %+v", last, o.Pending)
		}
		if !strings.Contains(last.Outcome, "after all 3 cards were written") || !strings.Contains(last.Outcome, "Resume") {
			t.Fatalf("outcome %q", last.Outcome)
		}
		if _, err := e.m.Start(context.Background(), "CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}); !isPending(err, NextResume) {
			t.Fatalf("new generation while resumable: %v", err)
		}
		e.op.use(cards[1], cards[2])
		h, err := e.m.Resume(context.Background(), "CN=alice")
		if err != nil {
			t.Fatal(err)
		}
		j := e.mustSucceed(h)
		if e.backupKeyID() != j.KeyID || j.KeyID != last.KeyID {
			t.Fatalf("resumed: hsm %q journal %q", e.backupKeyID(), j.KeyID)
		}

	case written > 0:
		// Killed while writing: the cards touched are unusable, a reset is required.
		if last.Status != StatusInterrupted || last.Next != NextReset || o.Pending == nil || o.Pending.Next != NextReset {
			t.Fatalf("while writing: %+v, pending %+v", last, o.Pending)
		}
		if len(last.Unusable) != written || !strings.Contains(last.Outcome, "unusable") || !strings.Contains(last.Outcome, "factory reset") {
			t.Fatalf("outcome %q, unusable %v (%d cards touched)", last.Outcome, last.Unusable, written)
		}
		for _, s := range last.Unusable {
			if !strings.Contains(last.Outcome, s) {
				t.Fatalf("outcome %q does not name card %s", last.Outcome, s)
			}
		}
		for _, kind := range []Kind{KindGenerate, KindLoad} {
			if _, err := e.m.Start(context.Background(), "CN=alice", Request{Kind: kind, K: 2, N: 3}); !isPending(err, NextReset) {
				t.Fatalf("%s before the reset: %v", kind, err)
			}
		}
		e.reset()
		e.op.use(cards[0], cards[1], cards[2], cards[0])
		e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}))

	default:
		// Killed before any card was touched: nothing to undo, start again.
		if last.Status != StatusInterrupted || last.Next != NextNone || o.Pending != nil || !strings.Contains(last.Outcome, "before any card was written") {
			t.Fatalf("before writing: %+v, pending %+v", last, o.Pending)
		}
		e.op.use(cards[0], cards[1], cards[2], cards[0])
		e.mustSucceed(e.start("CN=alice", Request{Kind: KindGenerate, K: 2, N: 3}))
	}
	e.verifyAudit()
	return len(run.commits)
}

func lastOf(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[len(s)-1]
}

func TestCrashLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary for every transition")
	}
	// One 2-of-3 set, made once; every run gets a copy of the cards, a new HSM and journal: a
	// disaster-recovery appliance.
	master := t.TempDir()
	gen := newEnv(t, withRoot(master))
	cards, genJournal := gen.generate(2, 3)
	gen.close()

	seen := 0
	for n := 1; ; n++ {
		killAt := strconv.Itoa(n)
		t.Run("kill at "+killAt, func(t *testing.T) { seen = crashLoadAt(t, master, cards, genJournal.KeyID, killAt) })
		if t.Failed() {
			t.FailNow()
		}
		if seen < n {
			break
		}
	}
	if seen < 5 {
		t.Fatalf("a whole load committed only %d transitions", seen)
	}
	t.Run("kill after the key was loaded", func(t *testing.T) { crashLoadAt(t, master, cards, genJournal.KeyID, "after-load") })
}

func crashLoadAt(t *testing.T, master string, cards []string, keyID string, killAt string) int {
	root := t.TempDir()
	if err := os.CopyFS(filepath.Join(root, "cards"), os.DirFS(filepath.Join(master, "cards"))); err != nil {
		t.Fatal(err)
	}
	run := runChild(t, KindLoad, root, []string{cards[2], cards[0]}, killAt)

	e := newEnv(t, withRoot(root))
	e.logs.Write(run.output)
	o, err := e.m.Overview(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := o.Last
	t.Logf("killed=%v after %d transitions (%s): %s; next %q", run.killed, len(run.commits), lastOf(run.commits), last.Outcome, last.Next)
	switch {
	case last.Status == StatusDone:
		if e.backupKeyID() != keyID || o.Pending != nil {
			t.Fatalf("done: hsm %q, %+v", e.backupKeyID(), last)
		}
		if killAt == "after-load" && !strings.Contains(last.Outcome, "just before the interruption") {
			t.Fatalf("outcome %q", last.Outcome)
		}
	default:
		if last.Status != StatusInterrupted || last.Next != NextRestartRead || o.Pending == nil || o.Pending.Next != NextRestartRead {
			t.Fatalf("interrupted load: %+v, pending %+v", last, o.Pending)
		}
		if !strings.Contains(last.Outcome, "load was interrupted before the key was loaded") || !strings.Contains(last.Outcome, "Resume") {
			t.Fatalf("outcome %q", last.Outcome)
		}
		if e.backupKeyID() != "" {
			t.Fatal("hsm holds a key after an interrupted load")
		}
		e.op.use(cards[1], cards[2])
		h, err := e.m.Resume(context.Background(), "CN=dr-team")
		if err != nil {
			t.Fatal(err)
		}
		j := e.mustSucceed(h)
		if e.backupKeyID() != keyID || j.Attempt != 2 {
			t.Fatalf("resumed load: hsm %q attempt %d", e.backupKeyID(), j.Attempt)
		}
	}
	e.verifyAudit()
	return len(run.commits)
}

// TestCrashReissue kills a 2-of-3 → 3-of-5 re-issue at every journaled transition: until the
// new set is complete the old set stays current and a key load from its cards still works on a
// freshly reset HSM; once all five new cards were written and verified, the re-issue is finished
// (at the latest by the recovery) and the old cards are refused.
func TestCrashReissue(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary for every transition")
	}
	master := t.TempDir()
	gen := newEnv(t, withRoot(master))
	old, genJournal := gen.generate(2, 3)
	if gen.pad.State().Inserted != "" {
		gen.pad.Remove()
	}
	fresh := gen.newCards(5)
	gen.close()

	seen := 0
	for n := 1; ; n++ {
		killAt := strconv.Itoa(n)
		t.Run("kill at "+killAt, func(t *testing.T) { seen = crashReissueAt(t, master, old, fresh, genJournal, killAt) })
		if t.Failed() {
			t.FailNow()
		}
		if seen < n {
			break
		}
	}
	if seen < 14 {
		t.Fatalf("a whole re-issue committed only %d transitions", seen)
	}
}

func crashReissueAt(t *testing.T, master string, old, fresh []string, gen Journal, killAt string) int {
	root := t.TempDir()
	for _, d := range []string{"cards", "hsm", "ceremony"} {
		dst := filepath.Join(root, d)
		if err := os.CopyFS(dst, os.DirFS(filepath.Join(master, d))); err != nil {
			t.Fatal(err)
		}
		// CopyFS makes files 0644; the soft HSM refuses a device key others can read.
		filepath.WalkDir(dst, func(p string, de os.DirEntry, err error) error {
			if err == nil && !de.IsDir() {
				err = os.Chmod(p, 0o600)
			}
			return err
		})
	}
	run := runChildQuorum(t, KindReissue, 3, 5, root, append([]string{old[0], old[1]}, fresh...), killAt)

	e := newEnv(t, withRoot(root))
	e.logs.Write(run.output)
	o, err := e.m.Overview(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := o.Last
	if last == nil || last.Kind != KindReissue {
		t.Fatalf("last ceremony %+v", last)
	}
	t.Logf("killed=%v after %d transitions (%s): %s", run.killed, len(run.commits), lastOf(run.commits), last.Outcome)
	if e.backupKeyID() != gen.KeyID {
		t.Fatalf("the HSM's key changed to %q", e.backupKeyID())
	}
	if o.Pending != nil || last.Next != NextNone {
		t.Fatalf("a re-issue leaves nothing pending: %+v, next %q", o.Pending, last.Next)
	}
	cur := e.currentSet()
	if e.pad.State().Inserted != "" {
		e.pad.Remove()
	}
	switch {
	case last.Status == StatusDone:
		if cur == nil || cur.SetID != last.SetID || cur.K != 3 || cur.N != 5 || e.setStatus(gen.SetID) != SetRetired ||
			o.KeySet == nil || o.KeySet.SetID != last.SetID {
			t.Fatalf("finished re-issue: current %+v, key set %+v", cur, o.KeySet)
		}
		if run.killed && len(run.commits) > 0 && !strings.HasPrefix(lastOf(run.commits), "done") &&
			!strings.Contains(last.Outcome, "just before the interruption") {
			t.Fatalf("outcome %q", last.Outcome)
		}
		// The new set loads on a freshly reset HSM; an old card is refused.
		e.reset()
		e.pad.Remove()
		e.op.use(old[2], fresh[4], fresh[1], fresh[3])
		e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
		if !e.problemWith(old[2], "this card belongs to a retired set") {
			t.Fatalf("problems %q", e.events.problems())
		}
	default:
		if last.Status != StatusInterrupted || !strings.Contains(last.Outcome, "stays current") {
			t.Fatalf("interrupted re-issue: %+v", last)
		}
		if cur == nil || cur.SetID != gen.SetID || o.KeySet == nil || o.KeySet.SetID != gen.SetID {
			t.Fatalf("the old set is not current: %+v, key set %+v", cur, o.KeySet)
		}
		if last.SetID != "" && e.setStatus(last.SetID) != SetAbandoned {
			t.Fatalf("new set %s is %q", last.SetID, e.setStatus(last.SetID))
		}
		touched := 0
		for _, c := range last.Cards {
			if c.Role == RoleShare {
				touched++
			}
		}
		if len(last.Unusable) > touched {
			t.Fatalf("unusable %v of %d cards touched", last.Unusable, touched)
		}
		// A key load from the old cards still works, on a freshly reset HSM.
		e.reset()
		e.pad.Remove()
		e.op.use(old[2], old[0])
		l := e.mustSucceed(e.start("CN=dr-team", Request{Kind: KindLoad}))
		if l.SetID != gen.SetID || e.backupKeyID() != gen.KeyID {
			t.Fatalf("load from the old cards: %+v", l)
		}
	}
	e.verifyAudit()
	return len(run.commits)
}
