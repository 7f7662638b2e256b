package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestCLI runs the scripts under testdata/script: every client subcommand as an operator runs
// it, against real `keyquorum serve` processes, its success and its failures, with the exit
// statuses and messages a script relies on.
//
// Commands the scripts have besides testscript's own:
//
//	node NAME                 start keyquorum serve with data in $WORK/NAME and use it
//	use NAME                  point KEYQUORUM_ADDR, KEYQUORUM_P12 and KEYQUORUM_CA at node NAME
//	hsmkeys NAME LABEL...     put application keys into NAME's soft HSM (before `node NAME`)
//	hsmmbk NAME               load a random master backup key into NAME's soft HSM (before `node NAME`)
//	forgelog NAME SEQ         rewrite NAME's audit log from entry SEQ on, the unkeyed chain recomputed (NAME stopped)
//	hsmobject NAME KIND LABEL [locked]  put an object of KIND into NAME's soft HSM ("_" in LABEL
//	                          is a space; locked: not extractable)
//	approve NAME ACTION       arm an approval: the next kq refused for want of one has the request it
//	                          names approved with the administrator's security key (it must be of
//	                          ACTION) and runs again with KEYQUORUM_APPROVAL
//	cards NAME N              make N blank virtual cards on NAME: $NAME_CARD1 … $NAME_CARDN
//	insert NAME SERIAL        put a virtual card into NAME's pad
//	drive NAME SERIAL...      play the custodians on NAME's pad until the running ceremony ends
//	carry FROM TO SERIAL...   copy virtual cards' files from node FROM's data to TO's
//	stopnode NAME             stop node NAME
//	kq STATUS ARG...          run keyquorum ARG... and check its exit status (stdout and stderr
//	                          are then checked as after exec)
func TestCLI(t *testing.T) {
	testscript.Run(t, scriptParams(filepath.Join("testdata", "script")))
}

// scriptParams runs the scripts of dir with the commands above.
func scriptParams(dir string) testscript.Params {
	return testscript.Params{
		Dir: dir,
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", filepath.Dir(kqBin)+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Values[nodesKey{}] = &scriptNodes{m: map[string]*node{}}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"node":      cmdNode,
			"use":       cmdUse,
			"hsmkeys":   cmdHSMKeys,
			"hsmmbk":    cmdHSMMBK,
			"forgelog":  cmdForgeLog,
			"hsmobject": cmdHSMObject,
			"approve":   cmdApprove,
			"cards":     cmdCards,
			"insert":    cmdInsert,
			"drive":     cmdDrive,
			"carry":     cmdCarry,
			"stopnode":  cmdStopNode,
			"kq":        cmdKQ,
		},
	}
}

type nodesKey struct{}

type scriptNodes struct {
	mu sync.Mutex
	m  map[string]*node
}

func nodeOf(ts *testscript.TestScript, name string) *node {
	ns := ts.Value(nodesKey{}).(*scriptNodes)
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := ns.m[name]
	if n == nil {
		ts.Fatalf("no node %s: start it with `node %s`", name, name)
	}
	return n
}

func args(ts *testscript.TestScript, neg bool, args []string, least int, usage string) {
	if neg {
		ts.Fatalf("unsupported: ! %s", usage)
	}
	if len(args) < least {
		ts.Fatalf("usage: %s", usage)
	}
}

func cmdNode(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 1, "node NAME")
	n, err := startNode(a[0], ts.MkAbs(a[0]))
	ts.Check(err)
	ns := ts.Value(nodesKey{}).(*scriptNodes)
	ns.mu.Lock()
	ns.m[a[0]] = n
	ns.mu.Unlock()
	ts.Defer(func() {
		n.stop()
		ts.Logf("%s log:\n%s", a[0], n.log)
	})
	ts.Setenv(a[0]+"_ADDR", n.url(""))
	cmdUse(ts, false, a[:1])
}

func cmdUse(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 1, "use NAME")
	for _, kv := range nodeOf(ts, a[0]).env() {
		k, v, _ := strings.Cut(kv, "=")
		ts.Setenv(k, v)
	}
}

func cmdStopNode(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 1, "stopnode NAME")
	nodeOf(ts, a[0]).stop()
}

func cmdHSMKeys(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 2, "hsmkeys NAME LABEL...")
	ts.Check(createKeys(ts.MkAbs(a[0]), a[1:]...))
}

// cmdApprove arms an approval: the next kq command refused for want of one (exit 4, naming
// a pending request) has that request approved on node NAME with its security key — it must
// be of ACTION — and runs again with the token, as an operator does with the account page.
func cmdApprove(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 2, "approve NAME ACTION")
	n := nodeOf(ts, a[0])
	if n.key == nil {
		ts.Check(n.registerKey())
	}
	ts.Setenv("KQ_APPROVE", a[0]+" "+a[1])
}

func cmdCards(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 2, "cards NAME N")
	count, err := strconv.Atoi(a[1])
	ts.Check(err)
	serials, err := nodeOf(ts, a[0]).newCards(count)
	ts.Check(err)
	for i, s := range serials {
		ts.Setenv(fmt.Sprintf("%s_CARD%d", a[0], i+1), s)
	}
}

func cmdInsert(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 2, "insert NAME SERIAL")
	_, err := nodeOf(ts, a[0]).form("/sim/insert", map[string][]string{"serial": {a[1]}})
	ts.Check(err)
}

func cmdCarry(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 3, "carry FROM TO SERIAL...")
	ts.Check(copyCards(ts.MkAbs(a[0]), ts.MkAbs(a[1]), a[2:]...))
}

// cmdDrive drives the pad until no ceremony runs (at most a minute).
func cmdDrive(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 1, "drive NAME SERIAL...")
	n := nodeOf(ts, a[0])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- n.drive(ctx, a[1:]) }()
	for {
		var st api.CeremonyStateJSON
		ts.Check(n.getJSON("/api/v1/ceremony", &st))
		if st.Running == nil {
			cancel()
			ts.Check(<-errc)
			return
		}
		select {
		case err := <-errc:
			ts.Check(err)
			ts.Fatalf("the ceremony on %s did not end within a minute", a[0])
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func cmdKQ(ts *testscript.TestScript, neg bool, a []string) {
	args(ts, neg, a, 2, "kq STATUS ARG...")
	want, err := strconv.Atoi(a[0])
	ts.Check(err)
	err = ts.Exec("keyquorum", a[1:]...)
	if armed := ts.Getenv("KQ_APPROVE"); armed != "" && want != exitDenied {
		var ee *exec.ExitError
		if m := requestRE.FindStringSubmatch(ts.ReadFile("stderr")); m != nil && errors.As(err, &ee) && ee.ExitCode() == exitDenied {
			name, action, _ := strings.Cut(armed, " ")
			tok, got, aerr := nodeOf(ts, name).approveRequest(m[1])
			ts.Check(aerr)
			if got != action {
				ts.Fatalf("request %s is for %s, not %s", m[1], got, action)
			}
			ts.Setenv("KQ_APPROVE", "")
			ts.Setenv("KEYQUORUM_APPROVAL", tok)
			err = ts.Exec("keyquorum", a[1:]...)
		}
	}
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("run keyquorum: %v", err)
	}
	if got != want {
		ts.Fatalf("keyquorum %s: exit status %d, want %d", strings.Join(a[1:], " "), got, want)
	}
}
