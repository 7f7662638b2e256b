package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/webconf/api"
)

// ---- hsm objects, create, import

var runHSM = group("hsm", map[string]cliCommand{"objects": hsmObjectsCmd, "create": hsmCreateCmd, "import": hsmImportCmd})

var hsmObjectsCmd = cliCommand{
	usage: "hsm objects [flags]\n\nLists every object in the HSM (keys, certificates, data objects, Keyquorum's own) and\nwhether a backup carries it: yes, or no and why.",
	run: func(ctx context.Context, c *client, o *clientOptions, _ any, _ []string, w io.Writer) error {
		var out api.ObjectsJSON
		if err := c.call(ctx, http.MethodGet, "/api/v1/hsm/objects", nil, &out, false); err != nil {
			return err
		}
		if o.json {
			return printJSON(w, out)
		}
		printObjects(w, out.Objects)
		if out.Pending != "" {
			fmt.Fprintf(w, "\nWARNING: %s\n", out.Pending)
		}
		return nil
	},
}

// printObjects prints objects as a table, then the reasons of those a backup does not carry.
func printObjects(w io.Writer, objs []api.ObjectJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tLABEL\tID\tCARRIED BY A BACKUP")
	carried, not := 0, 0
	for _, ob := range objs {
		id := ob.ID
		if id == "" {
			id = "-"
		}
		label := fmt.Sprintf("%q", ob.Label)
		if ob.Application != "" {
			label += " (application " + fmt.Sprintf("%q", ob.Application) + ")"
		}
		yes := "yes"
		switch {
		case ob.Keyquorum:
			yes = "no, Keyquorum's own: " + ob.Why
		case !ob.Carried:
			yes = "NO, because " + ob.Why
			not++
		default:
			carried++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ob.Kind, label, id, yes)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d object(s) carried by a backup", carried)
	if not > 0 {
		fmt.Fprintf(w, ", %d NOT: a backup is refused unless it skips them (keyquorum backup --skip-uncarried)", not)
	}
	fmt.Fprintln(w)
}

type createFlags struct{ label, id string }

var hsmCreateCmd = cliCommand{
	approval: true,
	usage:    "hsm create KIND --label LABEL [--id HEX] [flags]\n\nGenerates a key in the soft HSM. KIND is one of " + strings.Join(hsm.CreatableKinds, ", ") + ".\nA key pair makes two objects (private and public key) of the same label and ID. Needs an approval.",
	nargs:    [2]int{1, 1},
	flags: func(fs *flag.FlagSet) any {
		f := &createFlags{}
		fs.StringVar(&f.label, "label", "", "the object's `label` (1 to 64 bytes of printable UTF-8)")
		fs.StringVar(&f.id, "id", "", "the object's ID in `hex` (at most 64 bytes; random when empty)")
		return f
	},
	offline: func(_ context.Context, v any, _ []string, _ io.Writer) (bool, error) {
		return false, checkLabelID(v.(*createFlags).label, v.(*createFlags).id)
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		f := v.(*createFlags)
		var out api.CreatedJSON
		if err := c.call(ctx, http.MethodPost, "/api/v1/hsm/objects", api.CreateObjectRequest{Kind: args[0], Label: f.label, ID: f.id}, &out, true); err != nil {
			return err
		}
		return printCreated(w, o, "created", out)
	},
}

func checkLabelID(label, id string) error {
	if err := hsm.ValidateLabel(label); err != nil {
		return &exitError{exitUsage, fmt.Errorf("--label: %w", err)}
	}
	if b, err := hex.DecodeString(id); err != nil || len(b) > hsm.MaxIDLen {
		return &exitError{exitUsage, fmt.Errorf("--id: %w", hsm.ErrInvalidID)}
	}
	return nil
}

func printCreated(w io.Writer, o *clientOptions, verb string, out api.CreatedJSON) error {
	if o.json {
		return printJSON(w, out)
	}
	for _, ob := range out.Objects {
		fmt.Fprintf(w, "%s %s %q (id %s)\n", verb, ob.Kind, ob.Label, ob.ID)
	}
	return nil
}

type importFlags struct{ label, id, application string }

var hsmImportCmd = cliCommand{
	approval: true,
	usage:    "hsm import WHAT FILE --label LABEL [--id HEX] [--application NAME] [flags]\n\nImports an object into the soft HSM from FILE: WHAT is private-key (PKCS#8, PEM or DER;\nits public key is made too), certificate (X.509, PEM or DER) or data (the file's bytes, a data\nobject of -application). Needs an approval.",
	nargs:    [2]int{2, 2},
	flags: func(fs *flag.FlagSet) any {
		f := &importFlags{}
		fs.StringVar(&f.label, "label", "", "the object's `label` (1 to 64 bytes of printable UTF-8)")
		fs.StringVar(&f.id, "id", "", "the object's ID in `hex` (at most 64 bytes; random when empty)")
		fs.StringVar(&f.application, "application", "", "a data object's owner (`name`)")
		return f
	},
	offline: func(_ context.Context, v any, args []string, _ io.Writer) (bool, error) {
		switch args[0] {
		case "private-key", "certificate", "data":
		default:
			return false, &exitError{exitUsage, fmt.Errorf("WHAT must be private-key, certificate or data, not %q", args[0])}
		}
		return false, checkLabelID(v.(*importFlags).label, v.(*importFlags).id)
	},
	run: func(ctx context.Context, c *client, o *clientOptions, v any, args []string, w io.Writer) error {
		f := v.(*importFlags)
		file, err := os.Open(args[1])
		if err != nil {
			return &exitError{exitUsage, fmt.Errorf("open %s: %w", args[1], err)}
		}
		defer file.Close()
		q := url.Values{"what": {args[0]}, "label": {f.label}, "id": {f.id}, "application": {f.application}}
		var out api.CreatedJSON
		if err := c.call(ctx, http.MethodPost, "/api/v1/hsm/objects/import?"+q.Encode(), file, &out, true); err != nil {
			return err
		}
		return printCreated(w, o, "imported", out)
	},
}

// printPlan prints a restore's plan: counts, each object that changes or stays, and what the
// backup left out when it was made.
func printPlan(w io.Writer, p api.PlanJSON) {
	verbs := map[string]string{hsm.ActionAdd: "add", hsm.ActionReplace: "replace", hsm.ActionKeep: "keep", hsm.ActionRemove: "remove"}
	if !p.DryRun {
		verbs = map[string]string{hsm.ActionAdd: "added", hsm.ActionReplace: "replaced", hsm.ActionKeep: "kept", hsm.ActionRemove: "removed"}
	}
	fmt.Fprintf(w, "  %s %d, %s %d, unchanged %d, %s %d, %s %d\n", verbs[hsm.ActionAdd], p.Add, verbs[hsm.ActionReplace], p.Replace,
		p.Unchanged, verbs[hsm.ActionKeep], p.Keep, verbs[hsm.ActionRemove], p.Remove)
	for _, it := range p.Items {
		if it.Action == hsm.ActionUnchanged {
			continue
		}
		id := it.Object.ID
		if id == "" {
			id = "-"
		}
		fmt.Fprintf(w, "  %-8s %s %q (id %s)\n", verbs[it.Action], it.Object.Kind, it.Object.Label, id)
	}
	if n := len(p.Skipped) + p.SkippedMore; n > 0 {
		fmt.Fprintf(w, "  WARNING: the backup LEFT OUT %d object(s) when it was made; they are not in it:\n", n)
		for _, s := range p.Skipped {
			fmt.Fprintf(w, "    %s\n", s)
		}
		if p.SkippedMore > 0 {
			fmt.Fprintf(w, "    and %d more\n", p.SkippedMore)
		}
	}
}
