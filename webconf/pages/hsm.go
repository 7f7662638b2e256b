package pages

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// hsmHandlers serve the HSM page: the key, backup download, restore upload and the key load
// ceremony (disaster recovery, cluster join).
type hsmHandlers struct {
	hsm       web.BackupHSM
	records   web.CeremonyRecords
	audit     operator.AuditRecorder // backups and restores are audited
	maxUpload int64
	rd        *Renderer
	log       *slog.Logger
}

func newHSMHandlers(h web.BackupHSM, records web.CeremonyRecords, audit operator.AuditRecorder, maxUpload int64, rd *Renderer, log *slog.Logger) *hsmHandlers {
	return &hsmHandlers{hsm: h, records: records, audit: audit, maxUpload: maxUpload, rd: rd, log: log}
}

// record writes an audit entry of the HSM page; a failure is logged (the backup or restore
// has happened, and the service log keeps it).
func (h *hsmHandlers) record(op, event, message string) {
	if err := h.audit.RecordAudit(op, event, message); err != nil {
		h.log.Error("audit entry not recorded", "event", event, "err", err)
	}
}

// hsmView is the HSM page.
type hsmView struct {
	Overview  ceremony.Overview
	MaxUpload string
	Restored  bool
	Created   bool
	// The object store: every object and whether a backup carries it.
	HasObjects   bool
	Objects      []objectRow
	ObjectsError string
	Carried      int
	NotCarried   int
	Pending      string // a restore that stopped half-way
	CanCreate    bool   // the HSM makes and imports objects (the soft HSM)
	Kinds        []string
}

// objectRow is one object on the HSM page.
type objectRow struct {
	Kind, Label, ID, Why string
	Own, Carried         bool
}

func rowOf(o hsm.Object) objectRow {
	id := hex.EncodeToString(o.ID)
	if id == "" {
		id = "–"
	}
	label := o.Label
	if o.Application != "" {
		label += " (application " + o.Application + ")"
	}
	return objectRow{Kind: o.Kind(), Label: label, ID: id, Why: o.Why, Own: o.Own, Carried: o.Carried}
}

func (h *hsmHandlers) page(w http.ResponseWriter, r *http.Request) {
	ov, err := h.records.Overview(r.Context())
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v := hsmView{Overview: ov, MaxUpload: web.ByteSize(h.maxUpload), Restored: r.URL.Query().Get("restored") == "1",
		Created: r.URL.Query().Get("created") == "1", Kinds: hsm.CreatableKinds}
	h.objectsView(r.Context(), &v)
	h.rd.HTML(w, r, http.StatusOK, hsmPage(h.rd.Page(r, "HSM", "hsm"), v))
}

// objectsView fills the page's object list.
func (h *hsmHandlers) objectsView(ctx context.Context, v *hsmView) {
	store, ok := h.hsm.(hsm.ObjectStore)
	if !ok {
		return
	}
	v.HasObjects = true
	_, v.CanCreate = h.hsm.(hsm.ObjectCreator)
	objs, err := store.Objects(ctx)
	if err != nil {
		v.ObjectsError = err.Error()
		return
	}
	for _, o := range objs {
		v.Objects = append(v.Objects, rowOf(o))
		switch {
		case o.Own:
		case o.Carried:
			v.Carried++
		default:
			v.NotCarried++
		}
	}
	if p, err := store.PendingRestore(ctx); err == nil && p != nil {
		v.Pending = p.String()
	}
}

// firstWrite sets the download's headers at its first byte: a backup refused before that gets
// a problem page, never a file holding the page or a cut download.
type firstWrite struct {
	w       http.ResponseWriter
	headers func()
	n       int64
}

func (f *firstWrite) Write(p []byte) (int, error) {
	if f.n == 0 && len(p) > 0 {
		f.headers()
	}
	n, err := f.w.Write(p)
	f.n += int64(n)
	return n, err
}

// backup streams a backup of the HSM's key database, encrypted under the MBK. A missing MBK is
// found before the first byte, so it gets an error page; a failure in the middle of the stream
// can only cut it off (the backup format detects the truncation when it is restored).
func (h *hsmHandlers) backup(w http.ResponseWriter, r *http.Request) {
	id, err := h.hsm.BackupKeyID(r.Context())
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/hsm"))
		return
	}
	name := fmt.Sprintf("keyquorum-backup-%s-%s.kqb", id, time.Now().UTC().Format("20060102-150405"))
	fw := &firstWrite{w: w, headers: func() {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	}}
	op := operator.NameOf(r)
	skip := r.URL.Query().Get("skip") != ""
	web.ExtendForWork(w, web.SlowWork)
	if err := web.BackupTo(r.Context(), h.hsm, fw, skip); err != nil {
		if fw.n == 0 {
			h.log.Info("backup refused", "operator", op, "err", err)
			var ie *hsm.IncompleteBackupError
			if errors.As(err, &ie) {
				h.record(op, cluster.AuditBackupRefused, fmt.Sprintf("backup by %s refused, nothing written: %v", op, err))
			}
			h.rd.Problem(w, r, web.For(err, "/hsm"))
			return
		}
		h.log.Error("backup failed", "operator", op, "err", err)
		panic(http.ErrAbortHandler) // cut the download off rather than end it as if complete
	}
	h.log.Info("backup downloaded", "operator", op, "key_id", id.String())
	h.record(op, cluster.AuditBackup, fmt.Sprintf("backup of the HSM's key database downloaded by %s, encrypted under the master backup key %s", op, id))
}

// planView is the page of a restore's plan: what it did, or (preview) would do.
type planView struct {
	Source, Created, BackupID string
	DryRun, MakeEqual         bool
	Counts                    map[string]int
	Items                     []planRow
	Skipped                   []string
	SkippedMore               int
}

type planRow struct {
	Action string
	Object objectRow
}

func planViewOf(p *hsm.RestorePlan) planView {
	v := planView{Source: p.Backup.Source, Created: p.Backup.Created.UTC().Format(time.RFC3339), BackupID: p.Backup.ID,
		DryRun: p.DryRun, MakeEqual: p.MakeEqual, Counts: map[string]int{}, SkippedMore: p.SkippedMore}
	for _, a := range []string{hsm.ActionAdd, hsm.ActionReplace, hsm.ActionUnchanged, hsm.ActionKeep, hsm.ActionRemove} {
		v.Counts[a] = p.Count(a)
	}
	for _, it := range p.Items {
		if it.Action != hsm.ActionUnchanged {
			v.Items = append(v.Items, planRow{Action: it.Action, Object: rowOf(it.Object)})
		}
	}
	for _, s := range p.Skipped {
		v.Skipped = append(v.Skipped, s.String())
	}
	return v
}

// uploadedBackup streams the "backup" file of a multipart form into fn, with the form's fields
// sent before it (the form puts its options first); it answers the upload's own problems.
func (h *hsmHandlers) uploadedBackup(w http.ResponseWriter, r *http.Request, fn func(form url.Values, body io.Reader) error) (error, bool) {
	// The upload stream continues after the leading fields (tokens, options) the CSRF check read.
	mr, err := web.MultipartReader(r)
	if err != nil {
		h.rd.Problem(w, r, web.BadForm("The form must be sent as a file upload (multipart/form-data)."))
		return nil, false
	}
	form := url.Values{}
	for k, v := range mr.Fields {
		form.Set(k, v)
	}
	for {
		part, err := mr.NextPart()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				h.rd.Problem(w, r, web.TooLarge(h.maxUpload))
				return nil, false
			}
			if errors.Is(err, web.ErrFieldOutOfPlace) {
				h.rd.Problem(w, r, web.BadForm(outOfPlace(err)))
				return nil, false
			}
			h.rd.Problem(w, r, web.BadForm("The upload holds no backup file: choose the backup file and send the form again."))
			return nil, false
		}
		if part.FormName() != "backup" {
			// Another file: not the form's; its options are the leading fields alone.
			part.Close()
			continue
		}
		// The backup itself may be at most maxUpload bytes; cluster.RestoreWith reports a
		// backup that hits the bound as cluster.ErrTooLarge.
		err = fn(form, http.MaxBytesReader(nil, part, h.maxUpload))
		part.Close()
		return err, true
	}
}

// restore streams an uploaded backup into the HSM in constant memory: its objects are added,
// those of the same identity replaced, the others kept (make_equal: removed). The HSM changes
// nothing unless the whole backup was read and authenticated. The answer is the plan: what was
// done, and what the backup left out when it was made.
func (h *hsmHandlers) restore(w http.ResponseWriter, r *http.Request) {
	op := operator.NameOf(r)
	var hdr *backup.Header
	var plan *hsm.RestorePlan
	err, ok := h.uploadedBackup(w, r, func(form url.Values, body io.Reader) error {
		var err error
		hdr, plan, err = cluster.RestoreWith(r.Context(), h.hsm, body, hsm.RestoreOptions{MakeEqual: form.Get("make_equal") != ""})
		return err
	})
	if !ok {
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || errors.Is(err, cluster.ErrTooLarge) {
		h.log.Info("restore refused: upload too large", "operator", op)
		h.record(op, cluster.AuditRestoreRefused, fmt.Sprintf("restore by %s refused: the upload is larger than %s", op, web.ByteSize(h.maxUpload)))
		h.rd.Problem(w, r, web.TooLarge(h.maxUpload))
		return
	}
	if err != nil {
		h.log.Info("restore refused", "operator", op, "err", err)
		h.record(op, cluster.AuditRestoreRefused, fmt.Sprintf("restore by %s refused, nothing changed: %v", op, err))
		h.rd.Problem(w, r, web.For(err, "/hsm"))
		return
	}
	h.log.Info("backup restored", "operator", op)
	if plan == nil {
		h.record(op, cluster.AuditRestore, fmt.Sprintf("backup of %s restored into the HSM by %s", hdr.Source, op))
		http.Redirect(w, r, "/hsm?restored=1", http.StatusSeeOther)
		return
	}
	h.record(op, cluster.AuditRestore, fmt.Sprintf("backup %s of %s restored into the HSM by %s: %s", plan.Backup.ID, hdr.Source, op, web.PlanSummary(plan)))
	h.rd.HTML(w, r, http.StatusOK, planPage(h.rd.Page(r, "Restore", "hsm"), planViewOf(plan)))
}

// preview shows what a restore of the uploaded backup would do. Nothing changes.
func (h *hsmHandlers) preview(w http.ResponseWriter, r *http.Request) {
	var plan *hsm.RestorePlan
	err, ok := h.uploadedBackup(w, r, func(form url.Values, body io.Reader) error {
		var err error
		_, plan, err = cluster.RestoreWith(r.Context(), h.hsm, body, hsm.RestoreOptions{DryRun: true, MakeEqual: form.Get("make_equal") != ""})
		return err
	})
	if !ok {
		return
	}
	if errors.Is(err, cluster.ErrTooLarge) {
		h.rd.Problem(w, r, web.TooLarge(h.maxUpload))
		return
	}
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/hsm"))
		return
	}
	h.rd.HTML(w, r, http.StatusOK, planPage(h.rd.Page(r, "Restore preview", "hsm"), planViewOf(plan)))
}

func (h *hsmHandlers) creator(w http.ResponseWriter, r *http.Request) (hsm.ObjectCreator, bool) {
	c, ok := h.hsm.(hsm.ObjectCreator)
	if !ok {
		p := web.NotSupported("create or import objects")
		p.Back = "/hsm"
		h.rd.Problem(w, r, p)
	}
	return c, ok
}

func formID(s string) ([]byte, error) {
	id, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%w (hex digits)", hsm.ErrInvalidID)
	}
	if len(id) == 0 {
		return nil, nil
	}
	return id, nil
}

// createObject makes a key in the HSM from the page's form (kind, label, id).
func (h *hsmHandlers) createObject(w http.ResponseWriter, r *http.Request) {
	c, ok := h.creator(w, r)
	if !ok {
		return
	}
	id, err := formID(r.FormValue("id"))
	if err == nil {
		var objs []hsm.Object
		objs, err = c.CreateObject(r.Context(), hsm.ObjectSpec{Kind: r.FormValue("kind"), Label: r.FormValue("label"), ID: id})
		h.recordCreated(r, "created", objs)
	}
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/hsm"))
		return
	}
	http.Redirect(w, r, "/hsm?created=1", http.StatusSeeOther)
}

// importObject stores an uploaded private key, certificate or data object.
func (h *hsmHandlers) importObject(w http.ResponseWriter, r *http.Request) {
	c, ok := h.creator(w, r)
	if !ok {
		return
	}
	// The upload stream continues after the leading fields (tokens, options) the CSRF check
	// read; any further fields and the file come in the form's order, the file last.
	mr, err := web.MultipartReader(r)
	if err != nil {
		h.rd.Problem(w, r, web.BadForm("The import form must be sent as a file upload of at most 1 MiB."))
		return
	}
	form := url.Values{}
	for k, v := range mr.Fields { // the leading fields the CSRF check read
		form.Set(k, v)
	}
	var data []byte
	for {
		part, perr := mr.NextPart()
		if errors.Is(perr, web.ErrFieldOutOfPlace) {
			h.rd.Problem(w, r, web.BadForm(outOfPlace(perr)))
			return
		}
		if perr != nil {
			break
		}
		if part.FormName() == "file" {
			data, err = io.ReadAll(io.LimitReader(part, 1<<20+1))
			part.Close()
			break
		}
		// Another file: not the form's; its options are the leading fields alone.
		part.Close()
	}
	if len(data) == 0 && err == nil { // no file part, or a file input left empty
		h.rd.Problem(w, r, web.BadForm("Choose the file to import and send the form again."))
		return
	}
	if len(data) > 1<<20 {
		hsm.Zero(data)
		h.rd.Problem(w, r, web.BadForm("The import form must be sent as a file upload of at most 1 MiB."))
		return
	}
	defer hsm.Zero(data)
	id, ierr := formID(form.Get("id"))
	if err == nil {
		err = ierr
	}
	if err == nil {
		var objs []hsm.Object
		objs, err = c.ImportObject(r.Context(), hsm.ImportSpec{What: form.Get("what"), Label: form.Get("label"), ID: id,
			Application: form.Get("application"), Data: data})
		h.recordCreated(r, "imported", objs)
	}
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/hsm"))
		return
	}
	http.Redirect(w, r, "/hsm?created=1", http.StatusSeeOther)
}

func (h *hsmHandlers) recordCreated(r *http.Request, verb string, objs []hsm.Object) {
	op := operator.NameOf(r)
	for _, o := range objs {
		h.log.Info("hsm object "+verb, "operator", op, "object", o.String())
		h.record(op, cluster.AuditObjectCreated, fmt.Sprintf("%s %s in the HSM by %s", o, verb, op))
	}
}

// actionWord says a plan's action: "add" in a preview, "added" once done.
func actionWord(dryRun bool, action string) string {
	if dryRun {
		return action
	}
	return map[string]string{hsm.ActionAdd: "added", hsm.ActionReplace: "replaced", hsm.ActionKeep: "kept",
		hsm.ActionRemove: "removed", hsm.ActionUnchanged: "unchanged"}[action]
}

func makeEqualNote(makeEqual bool) string {
	if makeEqual {
		return ", made equal to the backup"
	}
	return ""
}

// outOfPlace explains web.ErrFieldOutOfPlace to the operator.
func outOfPlace(err error) string {
	return "The form is not in its order: " + err.Error() + ". Its options are confirmed with the security key as they come before the file. Reload the page and send the form from it."
}
