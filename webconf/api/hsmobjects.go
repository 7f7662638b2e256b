package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// ObjectJSON is one object in the HSM, as GET /api/v1/hsm/objects lists it: what it is and
// whether a backup carries it. Never key material.
type ObjectJSON struct {
	Kind        string `json:"kind"`  // "RSA-3072 private key", "X.509 certificate", ...
	Class       string `json:"class"` // "private-key", "public-key", "secret-key", "certificate", "data"
	Label       string `json:"label"`
	ID          string `json:"id"` // hex
	Application string `json:"application,omitempty"`
	Keyquorum   bool   `json:"keyquorum,omitempty"` // Keyquorum's own object (MBK, ...)
	Managed     bool   `json:"managed,omitempty"`   // an application key Keyquorum created
	Carried     bool   `json:"carried"`
	Why         string `json:"why,omitempty"` // why a backup does not carry it
}

// ObjectOf describes o for the API.
func ObjectOf(o hsm.Object) ObjectJSON {
	return ObjectJSON{Kind: o.Kind(), Class: web.ClassName(o.Class), Label: o.Label, ID: hex.EncodeToString(o.ID),
		Application: o.Application, Keyquorum: o.Own, Managed: o.Managed, Carried: o.Carried, Why: o.Why}
}

// ObjectsJSON is GET /api/v1/hsm/objects.
type ObjectsJSON struct {
	Objects []ObjectJSON `json:"objects"`
	// Pending names a restore that stopped before it finished, if any.
	Pending string `json:"pending,omitempty"`
}

// objects is GET /api/v1/hsm/objects: every object in the HSM, each with "carried by a backup:
// yes / no, because ...".
func (a *Handlers) objects(w http.ResponseWriter, r *http.Request) {
	store, ok := a.cfg.HSM.(hsm.ObjectStore)
	if !ok {
		a.problem(w, r, web.NotSupported("list the HSM's objects"))
		return
	}
	objs, err := store.Objects(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := ObjectsJSON{Objects: []ObjectJSON{}}
	for _, o := range objs {
		out.Objects = append(out.Objects, ObjectOf(o))
	}
	if p, err := store.PendingRestore(r.Context()); err == nil && p != nil {
		out.Pending = p.String()
	}
	web.WriteJSON(w, out)
}

// CreateObjectRequest is POST /api/v1/hsm/objects: a key the HSM generates.
type CreateObjectRequest struct {
	Kind  string `json:"kind"`
	Label string `json:"label"`
	ID    string `json:"id,omitempty"` // hex; a random one when empty
}

// CreatedJSON answers a create or an import: the objects made.
type CreatedJSON struct {
	Objects []ObjectJSON `json:"objects"`
}

func (a *Handlers) creator(w http.ResponseWriter, r *http.Request) (hsm.ObjectCreator, bool) {
	c, ok := a.cfg.HSM.(hsm.ObjectCreator)
	if !ok {
		a.problem(w, r, web.NotSupported("create or import objects (the PKCS#11 token's own tools do that; Keyquorum backs up what they make)"))
	}
	return c, ok
}

// createObject is POST /api/v1/hsm/objects.
func (a *Handlers) createObject(w http.ResponseWriter, r *http.Request) {
	c, ok := a.creator(w, r)
	if !ok {
		return
	}
	var req CreateObjectRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	id, err := hex.DecodeString(req.ID)
	if err != nil {
		a.badRequest(w, r, "id must be hex digits")
		return
	}
	if req.ID == "" {
		id = nil
	}
	objs, err := c.CreateObject(r.Context(), hsm.ObjectSpec{Kind: req.Kind, Label: req.Label, ID: id})
	a.created(w, r, "created", objs, err)
}

// importObject is POST /api/v1/hsm/objects/import?what=private-key|certificate|data&label=...
// &id=...&application=...: the body is the object (PKCS#8 or X.509, PEM or DER; a data
// object's value).
func (a *Handlers) importObject(w http.ResponseWriter, r *http.Request) {
	c, ok := a.creator(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	id, err := hex.DecodeString(q.Get("id"))
	if err != nil {
		a.badRequest(w, r, "id must be hex digits")
		return
	}
	if q.Get("id") == "" {
		id = nil
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20+4096))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer hsm.Zero(data) // a private key
	objs, err := c.ImportObject(r.Context(), hsm.ImportSpec{What: q.Get("what"), Label: q.Get("label"), ID: id,
		Application: q.Get("application"), Data: data})
	a.created(w, r, "imported", objs, err)
}

func (a *Handlers) created(w http.ResponseWriter, r *http.Request, verb string, objs []hsm.Object, err error) {
	op := operator.NameOf(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := CreatedJSON{}
	for _, o := range objs {
		out.Objects = append(out.Objects, ObjectOf(o))
		a.record(op, cluster.AuditObjectCreated, fmt.Sprintf("%s %s in the HSM by %s (command line)", o, verb, op))
	}
	web.WriteJSON(w, out)
}

// PlanJSON answers a restore or its preview: what it does, or did.
type PlanJSON struct {
	cluster.Restored
	DryRun    bool           `json:"dry_run"`
	MakeEqual bool           `json:"make_equal"`
	Add       int            `json:"add"`
	Replace   int            `json:"replace"`
	Unchanged int            `json:"unchanged"`
	Keep      int            `json:"keep"`
	Remove    int            `json:"remove"`
	Items     []PlanItemJSON `json:"items"`
	// Skipped are the objects the backup says it left out when it was made.
	Skipped     []string `json:"skipped,omitempty"`
	SkippedMore int      `json:"skipped_more,omitempty"`
}

// PlanItemJSON is one step of a restore.
type PlanItemJSON struct {
	Action string     `json:"action"`
	Object ObjectJSON `json:"object"`
}

// PlanOf describes a restore plan.
func PlanOf(res cluster.Restored, p *hsm.RestorePlan) PlanJSON {
	out := PlanJSON{Restored: res, DryRun: p.DryRun, MakeEqual: p.MakeEqual,
		Add: p.Count(hsm.ActionAdd), Replace: p.Count(hsm.ActionReplace), Unchanged: p.Count(hsm.ActionUnchanged),
		Keep: p.Count(hsm.ActionKeep), Remove: p.Count(hsm.ActionRemove), Items: []PlanItemJSON{}, SkippedMore: p.SkippedMore}
	for _, it := range p.Items {
		out.Items = append(out.Items, PlanItemJSON{Action: it.Action, Object: ObjectOf(it.Object)})
	}
	for _, s := range p.Skipped {
		out.Skipped = append(out.Skipped, s.String())
	}
	return out
}

// restoreOptions reads ?make_equal=1 and ?dry_run=1.
func restoreOptions(r *http.Request) (hsm.RestoreOptions, error) {
	var o hsm.RestoreOptions
	for name, v := range map[string]*bool{"make_equal": &o.MakeEqual, "dry_run": &o.DryRun} {
		if s := r.URL.Query().Get(name); s != "" {
			b, err := strconv.ParseBool(s)
			if err != nil {
				return o, fmt.Errorf("%s must be true or false", name)
			}
			*v = b
		}
	}
	return o, nil
}

// restorePreview is POST /api/v1/restore/preview (?make_equal=1): what a restore of the body's
// backup would add, replace, keep and remove. Nothing changes; no approval is needed.
func (a *Handlers) restorePreview(w http.ResponseWriter, r *http.Request) {
	opts, err := restoreOptions(r)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	opts.DryRun = true
	hdr, plan, err := cluster.RestoreWith(r.Context(), a.cfg.HSM, r.Body, opts)
	if errors.Is(err, cluster.ErrTooLarge) {
		a.problem(w, r, web.TooLarge(a.cfg.MaxUpload))
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	web.WriteJSON(w, PlanOf(cluster.Result(r.Context(), a.cfg.HSM, hdr, ""), plan))
}

// countingWriter counts what reaches the response: a backup refused before its first byte gets
// a problem, one that fails later can only be cut off.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// skipParam reads ?skip_uncarried=.
func skipParam(r *http.Request) (bool, error) {
	s := r.URL.Query().Get("skip_uncarried")
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New("skip_uncarried must be true or false")
	}
	return b, nil
}
