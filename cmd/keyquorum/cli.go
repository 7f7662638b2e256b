package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// The client subcommands talk to a running `keyquorum serve` through its JSON API
// (webconf/api.go), with a client certificate, in the manner of `vault operator …`. Every
// message says what happened and what to do; the exit status says which kind of outcome it
// was (exitCodesHelp).

// cliCommand is one client subcommand: its usage text and what it does once its flags are
// parsed and the connection is set up. args are the positional arguments.
type cliCommand struct {
	usage string // "status [flags]" and what it does
	// approval says the command sends an approval (--approval, KEYQUORUM_APPROVAL).
	approval bool
	flags    func(fs *flag.FlagSet) any
	nargs    [2]int // least and most positional arguments
	// offline runs before dialling; when it reports done, no connection is made.
	offline func(ctx context.Context, v any, args []string, stdout io.Writer) (bool, error)
	run     func(ctx context.Context, c *client, o *clientOptions, v any, args []string, stdout io.Writer) error
}

// runClient parses a subcommand's flags (anywhere among its arguments), connects and runs it.
func runClient(ctx context.Context, name string, cmd cliCommand, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var v any
	if cmd.flags != nil {
		v = cmd.flags(fs)
	}
	o := addClientFlags(fs, cmd.approval)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: keyquorum %s\n\nflags:\n", cmd.usage)
		printFlags(stderr, fs)
		env := clientEnvHelp
		if cmd.approval {
			env += approvalEnvHelp
		}
		fmt.Fprintf(stderr, "\n%s\n%s", env, exitCodesHelp)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < cmd.nargs[0] || len(pos) > cmd.nargs[1] {
		fmt.Fprintf(stderr, "keyquorum %s: wrong number of arguments\nusage: keyquorum %s\n", name, firstLine(cmd.usage))
		return errUsage
	}
	if cmd.offline != nil {
		done, err := cmd.offline(ctx, v, pos, stdout)
		if done || err != nil {
			return err
		}
	}
	c, err := o.dial()
	if err != nil {
		return err
	}
	err = cmd.run(ctx, c, o, v, pos, stdout)
	var ae *apiError
	if o.json && errors.As(err, &ae) {
		printJSON(stdout, ae.problem)
	}
	return err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// parseInterspersed parses flags that may come before, between or after the positional
// arguments ("restore FILE --approval T").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// group dispatches the subcommands of a command with several (ceremony, audit, card, cluster).
func group(name string, subs map[string]cliCommand) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprintf(stderr, "usage: keyquorum %s <subcommand> [flags]\n\nsubcommands:\n", name)
			var names []string
			for n := range subs {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(stderr, "  keyquorum %s\n", firstLine(subs[n].usage))
			}
			fmt.Fprintf(stderr, "\n'keyquorum %s SUBCOMMAND --help' shows a subcommand's flags.\n\n%s", name, exitCodesHelp)
			if len(args) == 0 {
				return errUsage
			}
			return nil
		}
		sub, ok := subs[args[0]]
		if !ok {
			fmt.Fprintf(stderr, "keyquorum %s: unknown subcommand %q ('keyquorum %s --help' lists them)\n", name, args[0], name)
			return errUsage
		}
		return runClient(ctx, name+" "+args[0], sub, args[1:], stdout, stderr)
	}
}

func single(name string, cmd cliCommand) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return runClient(ctx, name, cmd, args, stdout, stderr)
	}
}

var (
	runStatus   = single("status", statusCmd)
	runBackup   = single("backup", backupCmd)
	runRestore  = single("restore", restoreCmd)
	runCeremony = group("ceremony", map[string]cliCommand{
		"start": ceremonyStartCmd, "cancel": steerCmd("cancel"), "retry": steerCmd("retry"),
		"resume": resumeCmd, "answer": answerCmd, "state": ceremonyStateCmd, "watch": watchCmd,
	})
	runAudit   = group("audit", map[string]cliCommand{"verify": auditVerifyCmd, "export": auditExportCmd, "checkpoint": auditCheckpointCmd})
	runCard    = group("card", map[string]cliCommand{"info": cardInfoCmd, "check": cardCheckCmd})
	runCluster = group("cluster", map[string]cliCommand{"add-node": addNodeCmd, "join": joinCmd, "sync": syncCmd, "status": clusterStatusCmd})
)

// ---- status

var statusCmd = cliCommand{
	usage: "status [flags]\n\nShows the HSM's master backup key, the card set, the running or last ceremony and the application keys.",
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, _ []string, w io.Writer) error {
		var st api.StatusJSON
		if err := c.call(ctx, http.MethodGet, "/api/v1/status", nil, &st, false); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, st)
		}
		fmt.Fprintf(w, "Keyquorum at %s\n", c.base)
		fmt.Fprintf(w, "  you:                %s (%s)\n", st.Operator, st.Role)
		if st.PadProblem != "" {
			fmt.Fprintf(w, "  PIN pad:            %s: %s (plug it in; a waiting ceremony goes on with retry)\n", st.Pad, st.PadProblem)
		} else {
			fmt.Fprintf(w, "  PIN pad:            %s\n", st.Pad)
		}
		if pt := st.PadTimeouts; pt.PIN > 0 {
			fmt.Fprintf(w, "  pad waits:          OK %ds, card %ds, PIN %ds, removal %ds\n", pt.OK, pt.Card, pt.PIN, pt.Removal)
		}
		fmt.Fprintf(w, "  HSM:                %s\n", st.HSM)
		switch {
		case st.BackupKeyID != "":
			fmt.Fprintf(w, "  master backup key:  %s\n", st.BackupKeyID)
		case st.HSMError != "":
			fmt.Fprintf(w, "  master backup key:  unknown: %s\n", st.HSMError)
		default:
			fmt.Fprintf(w, "  master backup key:  none loaded (run the key setup, or load it from the cards)\n")
		}
		if ks := st.KeySet; ks != nil {
			label := ""
			if ks.Label != "" {
				label = ", label " + ks.Label
			}
			fmt.Fprintf(w, "  card set:           %s, %d of %d%s, loaded %s by ceremony #%d\n", ks.SetID, ks.K, ks.N, label, ks.Loaded.UTC().Format(time.RFC3339), ks.Ceremony)
		}
		fmt.Fprintf(w, "  application keys:   %d\n", len(st.Keys))
		for _, k := range st.Keys {
			fmt.Fprintf(w, "    %s  %s  %s\n", k.ID, k.Algorithm, k.Label)
		}
		printCeremonyState(w, api.CeremonyStateJSON{Running: st.Running, Pending: st.Pending, Last: st.Last})
		return nil
	},
}

func printCeremonyState(w io.Writer, s api.CeremonyStateJSON) {
	if ev := s.Running; ev != nil {
		fmt.Fprintf(w, "  running ceremony:   %s #%d, %s, step %s", ev.Kind, ev.Ceremony, ev.Status, ev.Step)
		if ev.Display != "" {
			fmt.Fprintf(w, ", pad shows %q", oneLine(ev.Display))
		}
		fmt.Fprintln(w)
		if q := ev.Question; q != nil {
			fmt.Fprintf(w, "  question:           %q", oneLine(q.Text))
			if q.Detail != "" {
				fmt.Fprintf(w, ": %s", q.Detail)
			}
			fmt.Fprintln(w)
			if q.ID != "" {
				fmt.Fprintf(w, "  answer with:        %s\n", answerCommand(q))
			}
		}
		if ev.Error != "" {
			fmt.Fprintf(w, "  problem:            %s\n", ev.Error)
			if ev.Hint != "" {
				fmt.Fprintf(w, "  what to do:         %s\n", ev.Hint)
			}
		}
		if ev.Status == ceremony.StatusStalled {
			fmt.Fprintf(w, "  stalled:            fix the cause, then keyquorum ceremony retry (or keyquorum ceremony cancel)\n")
		}
	} else {
		fmt.Fprintf(w, "  running ceremony:   none\n")
	}
	if p := s.Pending; p != nil {
		fmt.Fprintf(w, "  needs attention:    %s #%d: %s (next: %s)\n", p.Kind, p.Ceremony, p.Message, p.Next)
	}
	if j := s.Last; j != nil {
		fmt.Fprintf(w, "  last ceremony:      %s #%d %s, started %s by %s", j.Kind, j.ID, j.Status, j.Started.UTC().Format(time.RFC3339), j.Operator)
		if j.Outcome != "" {
			fmt.Fprintf(w, ": %s", j.Outcome)
		}
		fmt.Fprintln(w)
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " / ") }

// ---- ceremony

type startFlags struct {
	k, n       int
	label      string
	slot       string
	pkcs11Slot int
	overwrite  bool
	confirm    string
	watch      bool
}

var ceremonyStartCmd = cliCommand{
	approval: true,
	usage: "ceremony start KIND [flags]\n\nStarts a ceremony on the appliance's PIN pad. KIND is one of " + kindNames() + ".\n" +
		"A start needs an approval for this very start: run it, approve the request it names on your\naccount page with your security key, run it again with --approval TOKEN.\n" +
		"generate and reissue take --k and --n (default 2 of 3) and --label (reissue: the new set's; without\n" +
		"--label it keeps the current set's); change-pin takes --slot share|user;\n" +
		"slot-user-card and activate-slot take --pkcs11-slot; copy-card may take --overwrite (it covers\n" +
		"other sets' shares only: a share of the set in use is asked about on the pad);\n" +
		"prepare-cards takes --n (how many cards to lay out in the card profile);\n" +
		"factory-reset needs --confirm \"" + web.ResetPhrase + "\". With --watch it follows the ceremony to its end.",
	nargs: [2]int{1, 1},
	flags: func(fs *flag.FlagSet) any {
		f := &startFlags{}
		fs.IntVar(&f.k, "k", 2, "generate, reissue: cards `needed` to load the key")
		fs.IntVar(&f.n, "n", 3, "generate, reissue: cards `written`; prepare-cards: cards to prepare")
		fs.StringVar(&f.label, "label", "", "generate, reissue: appliance or cluster `name` stored on the cards")
		fs.StringVar(&f.slot, "slot", "", "change-pin: `share` (backup key share PIN) or user (slot user PIN)")
		fs.IntVar(&f.pkcs11Slot, "pkcs11-slot", -1, "slot-user-card, activate-slot: the PKCS#11 `slot`")
		fs.BoolVar(&f.overwrite, "overwrite", false, "copy-card: overwrite a target card holding a share of another set without asking (a share of the set in use is always asked about)")
		fs.StringVar(&f.confirm, "confirm", "", "factory-reset: the `phrase` \""+web.ResetPhrase+"\"")
		fs.BoolVar(&f.watch, "watch", false, "follow the ceremony until it ends (exit status 6 if it fails)")
		return f
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		f := v.(*startFlags)
		req := api.StartRequest{Kind: ceremony.Kind(args[0])}
		switch req.Kind {
		case ceremony.KindGenerate, ceremony.KindReissue:
			req.K, req.N, req.Label = f.k, f.n, f.label
		case ceremony.KindPrepareCards:
			req.N = f.n
		case ceremony.KindChangePIN:
			req.Slot = f.slot
		case ceremony.KindSlotUserCard, ceremony.KindActivateSlot:
			if f.pkcs11Slot >= 0 {
				s := uint(f.pkcs11Slot)
				req.PKCS11Slot = &s
			}
		case ceremony.KindCopyCard:
			req.Overwrite = f.overwrite
		case ceremony.KindFactoryReset:
			req.Confirm = f.confirm
		}
		var out api.StartedJSON
		if err := c.call(ctx, http.MethodPost, "/api/v1/ceremony/start", req, &out, true); err != nil {
			return err
		}
		if o.json && !f.watch {
			return printJSON(w, out)
		}
		fmt.Fprintf(w, "started %s ceremony #%d: follow the PIN pad\n", out.Kind, out.Ceremony)
		if f.watch {
			return watch(ctx, c, w)
		}
		return nil
	},
}

func kindNames() string {
	var ks []string
	for _, k := range ceremony.Kinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

// watchFlag is --watch of the commands that set a ceremony going.
type watchFlag struct{ watch bool }

func addWatchFlag(fs *flag.FlagSet) any {
	f := &watchFlag{}
	fs.BoolVar(&f.watch, "watch", false, "follow the ceremony until it ends (exit status 6 if it fails)")
	return f
}

func steerCmd(what string) cliCommand {
	help := map[string]string{
		"cancel": "Cancels the running ceremony (a clean abort, journaled).",
		"retry":  "Repeats the step of a stalled ceremony (after a pad timeout or a disconnected reader).\nWith --watch it follows the ceremony to its end.",
	}
	cmd := cliCommand{
		usage: "ceremony " + what + " [flags]\n\n" + help[what],
		run: func(ctx context.Context, c *client, o *clientOptions, v any, _ []string, w io.Writer) error {
			f, watching := v.(*watchFlag)
			watching = watching && f.watch
			// The stall a retry ends stays the latest event until the ceremony has journaled
			// the retry and moved on; a watch that starts before that must not show it as if
			// the ceremony had stalled again. Events up to the one seen before the retry are
			// left out.
			var before uint64
			var st api.CeremonyStateJSON
			if watching || what == "cancel" {
				if err := c.call(ctx, http.MethodGet, "/api/v1/ceremony", nil, &st, false); err != nil {
					return err
				}
				if st.Running != nil {
					before = st.Running.Seq
				}
			}
			if err := c.call(ctx, http.MethodPost, "/api/v1/ceremony/"+what, struct{}{}, nil, false); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s sent\n", what)
			if what == "cancel" && st.Running != nil && st.Running.Waiting == ceremony.WaitPIN {
				// A real pad's PIN entry cannot be stopped from the computer (PC/SC has no
				// abort of a PIN_VERIFY): the ceremony ends when the pad gives up.
				// Only the simulator pad (not the virtual cyberJack, which is reached through
				// PC/SC like a real one) ends a PIN entry when the ceremony is cancelled.
				var status api.StatusJSON
				err := c.call(ctx, http.MethodGet, "/api/v1/status", nil, &status, false)
				if simPad := status.Simulator && !strings.Contains(status.Pad, "PC/SC"); err == nil && !simPad {
					fmt.Fprintln(w, "The PIN pad is waiting for a PIN, which the computer cannot interrupt: press Cancel on the pad (or the ceremony ends when the pad's PIN timeout runs out).")
				}
			}
			if watching {
				return watchAfter(ctx, c, w, before)
			}
			return nil
		},
	}
	if what == "retry" {
		cmd.flags = addWatchFlag
	}
	return cmd
}

var resumeCmd = cliCommand{
	approval: true,
	usage:    "ceremony resume [flags]\n\nResumes an interrupted ceremony (reading the cards again). Needs an approval.\nWith --watch it follows the ceremony to its end.",
	flags:    addWatchFlag,
	run: func(ctx context.Context, c *client, o *clientOptions, v any, _ []string, w io.Writer) error {
		var out api.StartedJSON
		if err := c.call(ctx, http.MethodPost, "/api/v1/ceremony/resume", struct{}{}, &out, true); err != nil {
			return err
		}
		fmt.Fprintf(w, "resumed %s ceremony #%d: follow the PIN pad\n", out.Kind, out.Ceremony)
		if v.(*watchFlag).watch {
			return watch(ctx, c, w)
		}
		return nil
	},
}

var answerCmd = cliCommand{
	approval: true,
	usage: "ceremony answer ok|cancel QUESTION [flags]\n\nAnswers a question the PIN pad cannot ask itself (a PC/SC pad's OK and Cancel do not reach the host).\n" +
		"QUESTION is the question's ID, as ceremony state and ceremony watch show it: an answer to a question that\n" +
		"is no longer asked is refused (exit status 5), so a late answer never answers the next question.\n" +
		"OK to a question that destroys data on a card (an overwrite, the last PIN try) needs an approval for\n" +
		"ceremony.answer-destructive (--approval).",
	nargs: [2]int{2, 2},
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, args []string, w io.Writer) error {
		var ok bool
		switch args[0] {
		case "ok":
			ok = true
		case "cancel":
		default:
			return &exitError{exitUsage, fmt.Errorf("answer ok or cancel, not %q", args[0])}
		}
		if err := c.call(ctx, http.MethodPost, "/api/v1/ceremony/answer", api.AnswerRequest{Question: args[1], OK: &ok}, nil, true); err != nil {
			return err
		}
		fmt.Fprintf(w, "answered %s to question %s\n", args[0], args[1])
		return nil
	},
}

var ceremonyStateCmd = cliCommand{
	usage: "ceremony state [flags]\n\nShows the running ceremony, what an interrupted one requires, and the last ceremony.",
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, _ []string, w io.Writer) error {
		var st api.CeremonyStateJSON
		if err := c.call(ctx, http.MethodGet, "/api/v1/ceremony", nil, &st, false); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, st)
		}
		printCeremonyState(w, st)
		return nil
	},
}

var watchCmd = cliCommand{
	usage: "ceremony watch [flags]\n\nFollows the running ceremony, one line per change, until it ends; exit status 0 when it\nsucceeded, 6 when it did not. With no ceremony running it reports the last one's outcome.",
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, _ []string, w io.Writer) error {
		return watch(ctx, c, w)
	},
}

// errCeremonyFailed is a watched ceremony that ended without success.
func ceremonyFailed(kind ceremony.Kind, id uint64, status ceremony.Status, outcome string) error {
	return &exitError{exitCeremony, fmt.Errorf("%s ceremony #%d %s: %s", kind, id, status, outcome)}
}

func watch(ctx context.Context, c *client, w io.Writer) error { return watchAfter(ctx, c, w, 0) }

// watchAfter follows the running ceremony, leaving out the events up to sequence number
// before (events already seen).
func watchAfter(ctx context.Context, c *client, w io.Writer, before uint64) error {
	var st api.CeremonyStateJSON
	if err := c.call(ctx, http.MethodGet, "/api/v1/ceremony", nil, &st, false); err != nil {
		return err
	}
	if st.Running == nil {
		j := st.Last
		if j == nil {
			fmt.Fprintln(w, "no ceremony has run yet")
			return nil
		}
		if j.Status != ceremony.StatusDone {
			return ceremonyFailed(j.Kind, j.ID, j.Status, j.Outcome)
		}
		fmt.Fprintf(w, "%s ceremony #%d done: %s\n", j.Kind, j.ID, j.Outcome)
		return nil
	}
	resp, err := c.request(ctx, http.MethodGet, "/api/v1/ceremony/events?until=outcome", nil, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var last string
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev ceremony.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("read the event stream: %w", err)
		}
		if ev.Seq <= before && ev.Type != ceremony.EventOutcome {
			continue
		}
		if ev.Type == ceremony.EventOutcome {
			if ev.Status != ceremony.StatusDone {
				return ceremonyFailed(ev.Kind, ev.Ceremony, ev.Status, ev.Outcome)
			}
			fmt.Fprintf(w, "%s ceremony #%d done: %s\n", ev.Kind, ev.Ceremony, ev.Outcome)
			return nil
		}
		// A line per change of what the operator sees; the end of a wait alone is no change.
		quiet := ev
		quiet.Waiting, quiet.Deadline, quiet.PINTries = "", time.Time{}, -1
		if k := eventLine(quiet); k != last {
			fmt.Fprintln(w, eventLine(ev))
			last = k
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return &unreachableError{addr: c.base.Host, err: fmt.Errorf("event stream broken: %w", err)}
	}
	return &exitError{exitUnreachable, errors.New("the event stream ended before the ceremony did (the service stopped?): see keyquorum ceremony state")}
}

// eventLine is one line of `ceremony watch` for an event. It leaves out the deadline's
// seconds, so a countdown does not print a line every second.
func eventLine(ev ceremony.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s #%d %s", ev.Kind, ev.Ceremony, ev.Step)
	if ev.Display != "" {
		fmt.Fprintf(&b, ": pad shows %q", oneLine(ev.Display))
	}
	if ev.CardsTotal > 0 {
		fmt.Fprintf(&b, " [cards %d/%d]", ev.CardsDone, ev.CardsTotal)
	}
	if ev.Waiting != "" {
		fmt.Fprintf(&b, " waiting for %s", ev.Waiting)
		if !ev.Deadline.IsZero() {
			fmt.Fprintf(&b, " until %s", ev.Deadline.UTC().Format(time.TimeOnly))
		}
	}
	if ev.PINTries >= 0 && ev.Waiting == ceremony.WaitPIN {
		fmt.Fprintf(&b, " (%d PIN tries left)", ev.PINTries)
	}
	if q := ev.Question; q != nil && q.ID != "" {
		fmt.Fprintf(&b, "\n  question: %s\n  answer with: %s", oneLine(q.Detail), answerCommand(q))
	}
	if ev.Error != "" {
		fmt.Fprintf(&b, "\n  problem: %s", ev.Error)
		if ev.Hint != "" {
			fmt.Fprintf(&b, "\n  what to do: %s", ev.Hint)
		}
	}
	if ev.Status == ceremony.StatusStalled {
		b.WriteString("\n  stalled: fix the cause, then keyquorum ceremony retry (or cancel)")
	}
	return b.String()
}

// answerCommand is the command that answers q, the approval named when its OK destroys data.
func answerCommand(q *ceremony.Question) string {
	if q.Destructive {
		return fmt.Sprintf("keyquorum ceremony answer ok|cancel %s (OK destroys data on the card: it needs --approval for ceremony.answer-destructive)", q.ID)
	}
	return "keyquorum ceremony answer ok|cancel " + q.ID
}

// ---- backup and restore

type outFlag struct {
	out  string
	skip bool
}

var backupCmd = cliCommand{
	usage: "backup --o FILE [flags]\n\nDownloads a backup of the HSM's whole object store (every key, certificate and data object),\nencrypted under the master backup key. An object that cannot leave the HSM (not extractable,\n...) refuses the backup before anything is written, naming it (exit status 1, code\nbackup_incomplete); --skip-uncarried leaves such objects out instead and lists them in the\nbackup's header (keyquorum hsm objects shows which). FILE \"-\" writes to stdout; otherwise FILE\nis written whole or not at all (mode 0600).",
	flags: func(fs *flag.FlagSet) any {
		f := &outFlag{}
		fs.StringVar(&f.out, "o", "", "`file` to write the backup to (\"-\": stdout)")
		fs.BoolVar(&f.skip, "skip-uncarried", false, "leave out the objects a backup cannot carry (listed in its header) instead of refusing")
		return f
	},
	offline: func(_ context.Context, v any, _ []string, _ io.Writer) (bool, error) {
		if v.(*outFlag).out == "" {
			return false, &exitError{exitUsage, errors.New("give the file to write with --o FILE")}
		}
		return false, nil
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, _ []string, w io.Writer) error {
		out := v.(*outFlag).out
		path := "/api/v1/backup"
		if v.(*outFlag).skip {
			path += "?skip_uncarried=true"
		}
		resp, err := c.request(ctx, http.MethodGet, path, nil, false)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		keyID := resp.Header.Get(cluster.KeyIDHeader)
		if out == "-" {
			if _, err := io.Copy(w, resp.Body); err != nil {
				return fmt.Errorf("download backup: %w (the backup is incomplete)", err)
			}
			return nil
		}
		n, err := writeFileWhole(out, resp.Body)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "backup under master backup key %s written to %s (%d bytes)\n", keyID, out, n)
		return nil
	},
}

// writeFileWhole writes r to path through a temporary file renamed at the end, so a broken
// download leaves no file that looks like a backup.
func writeFileWhole(path string, r io.Reader) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err != nil {
		tmp.Close()
		return n, fmt.Errorf("download to %s: %w (nothing was written)", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	return n, nil
}

type restoreFlags struct{ dryRun, makeEqual bool }

var restoreCmd = cliCommand{
	approval: true,
	usage:    "restore FILE [flags]\n\nRestores a backup into the HSM: the backup's objects are added, objects of the same identity\n(class, type, ID, label) replaced, every other object kept; --make-equal removes those too.\n--dry-run only shows what a restore would add, replace, keep and remove (no approval needed).\nThe HSM must hold the master backup key the backup was made under (load it from the cards\nfirst); a backup of another key is refused before anything changes. Needs an approval.",
	nargs:    [2]int{1, 1},
	flags: func(fs *flag.FlagSet) any {
		f := &restoreFlags{}
		fs.BoolVar(&f.dryRun, "dry-run", false, "show what the restore would do; change nothing")
		fs.BoolVar(&f.makeEqual, "make-equal", false, "also remove the objects the backup does not hold (Keyquorum's own excepted)")
		return f
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		fl := v.(*restoreFlags)
		f, err := os.Open(args[0])
		if err != nil {
			return &exitError{exitUsage, fmt.Errorf("open backup: %w", err)}
		}
		defer f.Close()
		path := "/api/v1/restore"
		if fl.dryRun {
			path += "/preview"
		}
		if fl.makeEqual {
			path += "?make_equal=true"
		}
		var out api.PlanJSON
		if err := c.call(ctx, http.MethodPost, path, f, &out, !fl.dryRun); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, out)
		}
		if fl.dryRun {
			fmt.Fprintf(w, "restore preview, nothing changed: backup of %s made %s under master backup key %s\n",
				out.Source, out.Created.Format(time.RFC3339), out.BackupKeyID)
		} else {
			fmt.Fprintf(w, "restored: backup of %s made %s under master backup key %s; the HSM holds %d application keys\n",
				out.Source, out.Created.Format(time.RFC3339), out.BackupKeyID, out.Keys)
		}
		printPlan(w, out)
		return nil
	},
}

// ---- audit

type auditVerifyFlags struct{ file, checkpoint string }

// readCheckpoint reads an auditor's checkpoint file (keyquorum audit checkpoint -o FILE).
func readCheckpoint(path string) (ceremony.AuditCheckpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return ceremony.AuditCheckpoint{}, &exitError{exitUsage, fmt.Errorf("open checkpoint: %w", err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, ceremony.MaxCheckpoint+1))
	if err != nil {
		return ceremony.AuditCheckpoint{}, &exitError{exitUsage, fmt.Errorf("read checkpoint: %w", err)}
	}
	cp, err := ceremony.DecodeCheckpoint(bytes.TrimSpace(data))
	if err != nil {
		return ceremony.AuditCheckpoint{}, &exitError{exitUsage, fmt.Errorf("checkpoint %s: %w", path, err)}
	}
	return cp, nil
}

// printAuditSummary says how far the log is authenticated and how each run of entries is.
func printAuditSummary(w io.Writer, sum ceremony.AuditSummary) {
	switch {
	case sum.Entries == 0:
	case sum.KeyID != "":
		fmt.Fprintf(w, "authenticated up to entry %d under master backup key %s (%d MACs checked)\n", sum.Authenticated, sum.KeyID, sum.MACsChecked)
	default:
		fmt.Fprintf(w, "MACs not checked: %s\n", sum.NotChecked)
	}
	for _, sp := range sum.Spans {
		what := "appended without a key (no MAC)"
		switch {
		case sp.KeyID != "" && sp.Checks:
			what = "MACs checked under key " + sp.KeyID
		case sp.KeyID != "":
			what = "MACs under key " + sp.KeyID + ", not checked here"
		}
		fmt.Fprintf(w, "  entries %d–%d: %s\n", sp.First, sp.Last, what)
	}
}

var auditVerifyCmd = cliCommand{
	usage: "audit verify [flags]\n\nVerifies the appliance's audit log: the hash chain, and the MAC of every entry authenticated\nunder the master backup key the HSM holds. With --checkpoint, also that the log extends an\nauditor's checkpoint (keyquorum audit checkpoint). With --file, an export (keyquorum audit\nexport) on this machine, without connecting: its chain (and --checkpoint), not its MACs,\nwhich only the appliance can check. Exit status 1 when it does not verify.",
	flags: func(fs *flag.FlagSet) any {
		f := &auditVerifyFlags{}
		fs.StringVar(&f.file, "file", "", "verify this audit export `file` offline instead")
		fs.StringVar(&f.checkpoint, "checkpoint", "", "also prove the log extends this checkpoint `file` (keyquorum audit checkpoint)")
		return f
	},
	offline: func(_ context.Context, v any, _ []string, w io.Writer) (bool, error) {
		fl := v.(*auditVerifyFlags)
		if fl.file == "" {
			return false, nil
		}
		var cp *ceremony.AuditCheckpoint
		if fl.checkpoint != "" {
			c, err := readCheckpoint(fl.checkpoint)
			if err != nil {
				return true, err
			}
			cp = &c
		}
		f, err := os.Open(fl.file)
		if err != nil {
			return true, &exitError{exitUsage, fmt.Errorf("open audit export: %w", err)}
		}
		defer f.Close()
		var sum ceremony.AuditSummary
		if cp != nil {
			sum, err = ceremony.VerifyAuditExportCheckpoint(f, *cp)
		} else {
			sum, err = ceremony.VerifyAuditExport(f)
		}
		if err != nil {
			return true, &exitError{exitFailed, fmt.Errorf("audit export %s does not verify: %w", fl.file, err)}
		}
		fmt.Fprintf(w, "audit export intact: %d entries, head %s\n", sum.Entries, sum.Head)
		if cp != nil {
			fmt.Fprintf(w, "it extends the checkpoint at entry %d\n", cp.Seq)
		}
		printAuditSummary(w, sum)
		return true, nil
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, _ []string, w io.Writer) error {
		fl := v.(*auditVerifyFlags)
		path := "/api/v1/audit/verify"
		var cp ceremony.AuditCheckpoint
		if fl.checkpoint != "" {
			var err error
			if cp, err = readCheckpoint(fl.checkpoint); err != nil {
				return err
			}
			q := url.Values{"seq": {strconv.FormatUint(cp.Seq, 10)}, "hash": {cp.Hash}}
			if cp.MAC != "" {
				q.Set("key_id", cp.KeyID)
				q.Set("mac", cp.MAC)
			}
			path += "?" + q.Encode()
		}
		var sum ceremony.AuditSummary
		if err := c.call(ctx, http.MethodGet, path, nil, &sum, false); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.problem.Code == web.CodeAuditBroken {
				return &exitError{exitFailed, err}
			}
			return err
		}
		if o.json {
			return printJSON(w, sum)
		}
		fmt.Fprintf(w, "audit log intact: %d entries, head %s\n", sum.Entries, sum.Head)
		if fl.checkpoint != "" {
			fmt.Fprintf(w, "it extends the checkpoint at entry %d\n", cp.Seq)
		}
		printAuditSummary(w, sum)
		return nil
	},
}

var auditCheckpointCmd = cliCommand{
	usage: "audit checkpoint [--o FILE] [flags]\n\nVerifies the appliance's audit log and writes the checkpoint of its last entry (seq, hash,\nMAC, key ID, time) as JSON, to stdout or FILE. Keep it outside the appliance: audit verify\n--checkpoint FILE later proves the log still extends it, which finds a rewritten or cut\nhistory even if whoever did it holds the master backup key.",
	flags: func(fs *flag.FlagSet) any {
		f := &outFlag{}
		fs.StringVar(&f.out, "o", "-", "`file` to write (\"-\": stdout)")
		return f
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, _ []string, w io.Writer) error {
		var cp ceremony.AuditCheckpoint
		if err := c.call(ctx, http.MethodGet, "/api/v1/audit/checkpoint", nil, &cp, false); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.problem.Code == web.CodeAuditBroken {
				return &exitError{exitFailed, err}
			}
			return err
		}
		raw, err := json.MarshalIndent(cp, "", "  ")
		if err != nil {
			return err
		}
		raw = append(raw, '\n')
		if out := v.(*outFlag).out; out != "-" {
			n, err := writeFileWhole(out, bytes.NewReader(raw))
			if err == nil {
				fmt.Fprintf(w, "checkpoint of entry %d written to %s (%d bytes): keep it outside the appliance\n", cp.Seq, out, n)
			}
			return err
		}
		_, err = w.Write(raw)
		return err
	},
}

var auditExportCmd = cliCommand{
	usage: "audit export [--o FILE] [flags]\n\nWrites the audit log as JSON lines (to stdout, or whole to FILE); audit verify --file checks it.",
	flags: func(fs *flag.FlagSet) any {
		f := &outFlag{}
		fs.StringVar(&f.out, "o", "-", "`file` to write (\"-\": stdout)")
		return f
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, _ []string, w io.Writer) error {
		resp, err := c.request(ctx, http.MethodGet, "/api/v1/audit/export", nil, false)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if out := v.(*outFlag).out; out != "-" {
			n, err := writeFileWhole(out, resp.Body)
			if err == nil {
				fmt.Fprintf(w, "audit log written to %s (%d bytes)\n", out, n)
			}
			return err
		}
		_, err = io.Copy(w, resp.Body)
		return err
	},
}

// ---- card

var cardInfoCmd = cliCommand{
	usage: "card info [flags]\n\nShows the card in the PIN pad (simulator: the virtual pad's card, its PIN tries and\nwhether it belongs to the loaded key's set). A real pad reads a card only inside a ceremony.",
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, _ []string, w io.Writer) error {
		var ci api.CardJSON
		if err := c.call(ctx, http.MethodGet, "/api/v1/card", nil, &ci, false); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, ci)
		}
		fmt.Fprintf(w, "pad shows %q", oneLine(ci.Display))
		if ci.Waiting != "" {
			fmt.Fprintf(w, ", waiting for %s", ci.Waiting)
		}
		fmt.Fprintln(w)
		if ci.Inserted == nil {
			fmt.Fprintln(w, "no card in the reader")
			return nil
		}
		k := ci.Inserted
		if k.Foreign {
			fmt.Fprintf(w, "card %s: not a card of this appliance (not TCOS)\n", k.Serial)
			return nil
		}
		fmt.Fprintf(w, "card %s: share PIN %s, slot user PIN %s", k.Serial, tries(k.ShareTries, k.ShareBlocked), tries(k.UserTries, k.UserBlocked))
		if ci.InKeySet {
			fmt.Fprintf(w, "; holds a share of the loaded key's set")
		}
		fmt.Fprintln(w)
		return nil
	},
}

var cardCheckCmd = cliCommand{
	approval: true,
	usage: "card check [flags]\n\nChecks one card alone (a card-check ceremony: the card and its PIN on the PIN pad, no quorum):\n" +
		"says whether it holds an intact share of the current set (which share, written when), an\n" +
		"altered one, one of a retired or foreign set, or no share. Needs an approval. Exit status 0\n" +
		"when the card is intact, 1 for any other verdict, 6 when the check ended without one.",
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, _ []string, w io.Writer) error {
		var out api.StartedJSON
		if err := c.call(ctx, http.MethodPost, "/api/v1/ceremony/start", api.StartRequest{Kind: ceremony.KindCardCheck}, &out, true); err != nil {
			return err
		}
		if !o.json {
			fmt.Fprintf(w, "started card check #%d: insert the card in the PIN pad and enter its PIN there\n", out.Ceremony)
		}
		progress := w
		if o.json {
			progress = io.Discard
		}
		if err := watch(ctx, c, progress); err != nil {
			return err
		}
		var st api.CeremonyStateJSON
		if err := c.call(ctx, http.MethodGet, "/api/v1/ceremony", nil, &st, false); err != nil {
			return err
		}
		j := st.Last
		if j == nil || j.ID != out.Ceremony || j.Check == nil {
			return &exitError{exitCeremony, fmt.Errorf("card check #%d left no verdict: see keyquorum ceremony state", out.Ceremony)}
		}
		if o.json {
			if err := printJSON(w, j.Check); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(w, "verdict: %s\n", j.Check.Verdict)
		}
		if j.Check.Verdict != ceremony.VerdictIntact {
			return &exitError{exitFailed, fmt.Errorf("card %s: %s", j.Check.Serial, j.Check.Verdict)}
		}
		return nil
	},
}

func tries(n int, blocked bool) string {
	if blocked {
		return "blocked"
	}
	if n < 0 {
		return "tries unknown"
	}
	return fmt.Sprintf("%d tries left", n)
}

// ---- cluster

var addNodeCmd = cliCommand{
	approval: true,
	usage:    "cluster add-node NAME --o FILE [flags]\n\nOn a node of the cluster: issues a node certificate for a new node NAME (a client certificate\nof this node's management CA, with this CA) as a PKCS#12 FILE and its one-time password in\nFILE.password (both mode 0600). Carry both to the new node's administrator, the password\napart; it can be revoked on the Operators page. Needs an approval for managing operators.",
	nargs:    [2]int{1, 1},
	flags: func(fs *flag.FlagSet) any {
		f := &outFlag{}
		fs.StringVar(&f.out, "o", "", "`file` to write the node's PKCS#12 to")
		return f
	},
	offline: func(_ context.Context, v any, _ []string, _ io.Writer) (bool, error) {
		if v.(*outFlag).out == "" {
			return false, &exitError{exitUsage, errors.New("give the file to write with --o FILE")}
		}
		return false, nil
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		out := v.(*outFlag).out
		var nb cluster.NodeBundle
		if err := c.call(ctx, http.MethodPost, "/api/v1/cluster/nodes", cluster.NodeRequest{Name: args[0]}, &nb, true); err != nil {
			return err
		}
		defer clear(nb.P12)
		if err := os.WriteFile(out+".password", []byte(nb.Password+"\n"), 0o600); err != nil {
			return fmt.Errorf("write node password: %w", err)
		}
		if _, err := writeFileWhole(out, bytes.NewReader(nb.P12)); err != nil {
			return err
		}
		fmt.Fprintf(w, "node certificate %s (serial %s, valid until %s) written to %s, its password to %s\n",
			nb.Subject, nb.Serial, nb.NotAfter.Format(time.DateOnly), out, out+".password")
		fmt.Fprintf(w, "this node's CA fingerprint (SHA-256): %s\n", nb.CAFingerprint)
		fmt.Fprintf(w, "on the new node: load the key from the cards, then keyquorum cluster join %s --node %s\n", c.base, out)
		return nil
	},
}

type joinFlags struct{ node, password string }

var joinCmd = cliCommand{
	approval: true,
	usage:    "cluster join PEER --node FILE [flags]\n\nOn the new node (its master backup key loaded from k cards of the cluster's set): takes over\nthe state of PEER (https://host:port) over mutually authenticated TLS with the node file made\nby `cluster add-node` on PEER. The transfer is encrypted under the master backup key; a peer\nof another key, or one not authenticated by the node file's CA, is refused before anything\nchanges. --addr is this (the new) node. Needs an approval for a cluster join.",
	nargs:    [2]int{1, 1},
	flags: func(fs *flag.FlagSet) any {
		f := &joinFlags{}
		fs.StringVar(&f.node, "node", "", "the node PKCS#12 `file` from cluster add-node")
		fs.StringVar(&f.password, "node-password-file", "", "`file` holding its password (default FILE.password)")
		return f
	},
	offline: func(_ context.Context, v any, _ []string, _ io.Writer) (bool, error) {
		if v.(*joinFlags).node == "" {
			return false, &exitError{exitUsage, errors.New("give the node file with --node FILE (made by keyquorum cluster add-node on the peer)")}
		}
		return false, nil
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		f := v.(*joinFlags)
		p12, err := os.ReadFile(f.node)
		if err != nil {
			return &exitError{exitUsage, fmt.Errorf("read node file: %w", err)}
		}
		defer clear(p12)
		pwFile := f.password
		if pwFile == "" {
			pwFile = f.node + ".password"
		}
		pw, err := os.ReadFile(pwFile)
		if err != nil {
			return &exitError{exitUsage, fmt.Errorf("read node file password: %w (give --node-password-file)", err)}
		}
		defer clear(pw)
		req := cluster.JoinRequest{Peer: args[0], NodeP12: p12, NodePassword: strings.TrimRight(string(pw), "\r\n")}
		var out cluster.Applied
		if err := c.call(ctx, http.MethodPost, "/api/v1/cluster/join", req, &out, true); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, out)
		}
		fmt.Fprintf(w, "joined %s: its key database (made %s) is restored here under master backup key %s; %d application keys\n",
			out.Peer, out.Created.Format(time.RFC3339), out.BackupKeyID, out.Keys)
		printShared(w, &out)
		return nil
	},
}

// printShared says what a join or sync took besides the key database.
func printShared(w io.Writer, a *cluster.Applied) {
	fmt.Fprintf(w, "shared state version %s, digest %s\n", a.Version, shortDigest(a.Digest))
	if a.Sets {
		fmt.Fprintln(w, "card sets: taken over (the same sets are current, retired and checkable here)")
	}
	if a.SlotKey {
		fmt.Fprintln(w, "slot credential key: taken over (slot user cards of the peer activate here)")
	}
	for _, warn := range a.Warnings {
		fmt.Fprintln(w, "warning: "+warn)
	}
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

type syncFlags struct{ peer string }

var syncCmd = cliCommand{
	approval: true,
	usage:    "cluster sync [flags]\n\nOn a node that joined a peer: pulls the peer's shared state again (key database, card sets,\nslot credential key) over mutually authenticated TLS with the node file kept at the join, and\ntakes it over when it is newer than this node's. An older state, or one in conflict with this\nnode's changes, is refused (exit 5) and nothing changes. Needs an approval for a cluster join.",
	nargs:    [2]int{0, 0},
	flags: func(fs *flag.FlagSet) any {
		f := &syncFlags{}
		fs.StringVar(&f.peer, "peer", "", "the peer's `name`, node ID or address, when this node knows several")
		return f
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		var out cluster.SyncResult
		if err := c.call(ctx, http.MethodPost, "/api/v1/cluster/sync", api.SyncRequest{Peer: v.(*syncFlags).peer}, &out, true); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, out)
		}
		a := out.Applied
		if a.InStep {
			fmt.Fprintf(w, "in step with %s: both hold version %s, nothing to take\n", out.Peer, a.Version)
			return nil
		}
		fmt.Fprintf(w, "synced from %s: version %s taken over, master backup key %s, %d application keys\n", out.Peer, a.Version, a.BackupKeyID, a.Keys)
		printShared(w, a)
		return nil
	},
}

var clusterStatusCmd = cliCommand{
	usage: "cluster status [flags]\n\nLists this node and the nodes it knows: name, address, role, master backup key, version and\ndigest of the shared state, last sync, and whether each is in step with this node. A node of\nanother key is listed as such. The peer this node joined is asked live.",
	nargs: [2]int{0, 0},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		var st cluster.ClusterStatus
		if err := c.call(ctx, http.MethodGet, "/api/v1/cluster/status", nil, &st, false); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, st)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tADDRESS\tROLE\tKEY\tVERSION\tDIGEST\tLAST SYNC\tIN STEP")
		for _, n := range st.Nodes {
			key := n.KeyID
			if n.OtherKey {
				key = "another key"
			}
			last := "-"
			if !n.LastSync.IsZero() {
				last = n.LastSync.UTC().Format(time.RFC3339)
			}
			step := "yes"
			if !n.InStep {
				step = "no"
			}
			if n.Problem != "" {
				step += " (" + n.Problem + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, orDash(n.Address), n.Role, orDash(key), n.Version, orDash(shortDigest(n.Digest)), last, step)
		}
		return tw.Flush()
	},
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
