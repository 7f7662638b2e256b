package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// Config is what the API's handlers are built from.
type Config struct {
	Runner    web.CeremonyRunner
	Records   web.CeremonyRecords
	Audit     web.AuditReader
	HSM       web.BackupHSM
	Sim       simpanel.Simulator // nil with a real pad
	Surveyor  web.CardSurveyor   // nil: no card survey
	Appliance web.Appliance
	MaxUpload int64
	// Auth is the operator list and its audit (the operators API).
	Auth *operator.Auth
	// Recorder writes the audit entries of backups and restores; a failure is logged.
	Recorder operator.AuditRecorder
	Cluster  *cluster.Node
	// Authorize checks the role and, for a dangerous action, the approval of an action the
	// handler learns from the body; when it returns false it has answered the request.
	Authorize func(w http.ResponseWriter, r *http.Request, a operator.Action) bool
	// CeremonyContext is the context ceremonies run under (the server's, not a request's).
	CeremonyContext func() (context.Context, error)
	// Stopping is closed when the server shuts down: event streams end.
	Stopping <-chan struct{}
	Log      *slog.Logger
}

// Handlers serve the JSON API.
type Handlers struct {
	cfg Config
	log *slog.Logger
}

// New builds the API's handlers.
func New(cfg Config) *Handlers {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handlers{cfg: cfg, log: log}
}

// Register adds the API's routes to mux; each has its entry in the server's route table.
func (a *Handlers) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/status", a.status)
	mux.HandleFunc("GET /api/v1/ceremony", a.ceremonyState)
	mux.HandleFunc("POST /api/v1/ceremony/start", a.start)
	mux.HandleFunc("POST /api/v1/ceremony/cancel", a.cancel)
	mux.HandleFunc("POST /api/v1/ceremony/retry", a.retry)
	mux.HandleFunc("POST /api/v1/ceremony/answer", a.answer)
	mux.HandleFunc("POST /api/v1/ceremony/resume", a.resume)
	mux.HandleFunc("GET /api/v1/ceremony/events", a.events)
	mux.HandleFunc("GET /api/v1/backup", a.backup)
	mux.HandleFunc("POST /api/v1/restore", a.restore)
	mux.HandleFunc("POST /api/v1/restore/preview", a.restorePreview)
	mux.HandleFunc("GET /api/v1/hsm/objects", a.objects)
	mux.HandleFunc("POST /api/v1/hsm/objects", a.createObject)
	mux.HandleFunc("POST /api/v1/hsm/objects/import", a.importObject)
	mux.HandleFunc("GET /api/v1/audit/verify", a.auditVerify)
	mux.HandleFunc("GET /api/v1/audit/export", a.auditExport)
	mux.HandleFunc("GET /api/v1/audit/checkpoint", a.auditCheckpoint)
	mux.HandleFunc("GET /api/v1/card", a.card)
	mux.HandleFunc("POST /api/v1/card/survey", a.survey)
	mux.HandleFunc("POST /api/v1/cluster/nodes", a.issueNode)
	mux.HandleFunc("GET "+cluster.StatePath, a.clusterState)
	mux.HandleFunc("GET "+cluster.ChallengePath, a.clusterChallenge)
	mux.HandleFunc("POST /api/v1/cluster/join", a.clusterJoin)
	mux.HandleFunc("GET "+cluster.SummaryPath, a.clusterSummary)
	mux.HandleFunc("POST /api/v1/cluster/sync", a.clusterSync)
	mux.HandleFunc("GET /api/v1/cluster/status", a.clusterStatus)
	mux.HandleFunc("POST "+cluster.OfferPath, a.clusterOffer)
	mux.HandleFunc("GET /api/v1/operators", a.operators)
	mux.HandleFunc("POST /api/v1/operators/role", a.setRole)
}

// problem answers with a JSON problem (every route of the API is under web.APIPrefix).
func (a *Handlers) problem(w http.ResponseWriter, r *http.Request, p web.Problem) {
	web.WriteProblem(w, p)
}

// fail answers with the problem an error of the ceremony manager, the HSM or the audit log is.
func (a *Handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.problem(w, r, web.For(err, ""))
}

func (a *Handlers) badRequest(w http.ResponseWriter, r *http.Request, what string) {
	a.problem(w, r, web.Problem{Status: http.StatusBadRequest, Code: web.CodeBadRequest, Title: "Request not accepted", What: what,
		Todo: "Check the command's arguments (keyquorum help) and run it again."})
}

// decodeJSON reads a request body into v, strictly: unknown fields and trailing data are
// refused, so a typo in a script is not silently ignored. An empty body is an empty object.
func decodeJSON(r io.Reader, v any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	if dec.More() {
		return errors.New("decode request: data after the JSON object")
	}
	return nil
}

// writeJSONStatus answers with v and status.
func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// apiKeepAlive is how often an idle event stream gets an empty line.
const apiKeepAlive = 15 * time.Second

// StatusJSON is GET /api/v1/status.
type StatusJSON struct {
	Operator string `json:"operator"`
	Role     string `json:"role"`
	Pad      string `json:"pad"`
	// PadProblem says why the PIN pad cannot be used now ("no PIN pad connected"); empty when
	// it can.
	PadProblem  string            `json:"pad_problem,omitempty"`
	PadTimeouts TimeoutsJSON      `json:"pad_timeouts"`
	HSM         string            `json:"hsm"`
	Simulator   bool              `json:"simulator"`
	BackupKeyID string            `json:"backup_key_id"` // "" when no MBK is loaded
	HSMError    string            `json:"hsm_error,omitempty"`
	KeySet      *ceremony.KeySet  `json:"key_set,omitempty"`
	Running     *ceremony.Event   `json:"running,omitempty"`
	Pending     *ceremony.Pending `json:"pending,omitempty"`
	Last        *ceremony.Journal `json:"last,omitempty"`
	// Keys are the HSM's application keys (the key database a backup carries), when the HSM
	// can list them.
	Keys []KeyJSON `json:"keys"`
}

// TimeoutsJSON are the ceremonies' waits on the PIN pad, in seconds.
type TimeoutsJSON struct {
	OK      int `json:"ok_seconds"`
	Card    int `json:"card_seconds"`
	PIN     int `json:"pin_seconds"`
	Removal int `json:"removal_seconds"`
}

// KeyJSON is one application key: never its material.
type KeyJSON struct {
	ID        string `json:"id"`
	Label     string `json:"label"`
	Algorithm string `json:"algorithm"`
}

func (a *Handlers) status(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	ov, err := a.cfg.Records.Overview(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	pad, padProblem := a.cfg.Appliance.PadNow(r.Context())
	t := a.cfg.Appliance.PadTimeouts
	out := StatusJSON{Operator: op.Name, Role: op.Role.String(), Pad: pad, PadProblem: padProblem, HSM: a.cfg.Appliance.HSMName,
		PadTimeouts: TimeoutsJSON{OK: int(t.OK.Seconds()), Card: int(t.Card.Seconds()), PIN: int(t.PIN.Seconds()), Removal: int(t.Removal.Seconds())},
		Simulator:   a.cfg.Sim != nil, BackupKeyID: ov.BackupKeyID, HSMError: ov.HSMError, KeySet: ov.KeySet,
		Running: ov.Running, Pending: ov.Pending, Last: ov.Last, Keys: []KeyJSON{}}
	if ks, ok := a.cfg.HSM.(hsm.KeyStore); ok {
		keys, err := ks.Keys(r.Context())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		for _, k := range keys {
			out.Keys = append(out.Keys, KeyJSON{ID: k.ID, Label: k.Label, Algorithm: k.Algorithm})
		}
	}
	web.WriteJSON(w, out)
}

// CeremonyStateJSON is GET /api/v1/ceremony: the running ceremony's latest event, what an
// interrupted one requires, and the last ceremony's journal.
type CeremonyStateJSON struct {
	Running *ceremony.Event   `json:"running,omitempty"`
	Pending *ceremony.Pending `json:"pending,omitempty"`
	Last    *ceremony.Journal `json:"last,omitempty"`
}

func (a *Handlers) ceremonyState(w http.ResponseWriter, r *http.Request) {
	ov, err := a.cfg.Records.Overview(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	web.WriteJSON(w, CeremonyStateJSON{Running: ov.Running, Pending: ov.Pending, Last: ov.Last})
}

// StartRequest is the body of POST /api/v1/ceremony/start.
type StartRequest struct {
	Kind  ceremony.Kind `json:"kind"`
	K     int           `json:"k,omitempty"`
	N     int           `json:"n,omitempty"`
	Label string        `json:"label,omitempty"`
	// Slot is the PIN a change-pin changes: "share" or "user".
	Slot string `json:"slot,omitempty"`
	// PKCS11Slot is the slot of a slot-user-card or activate-slot.
	PKCS11Slot *uint `json:"pkcs11_slot,omitempty"`
	Overwrite  bool  `json:"overwrite,omitempty"`
	// Confirm must be ResetPhrase for a factory reset.
	Confirm string `json:"confirm,omitempty"`
}

// StartedJSON answers a start or a resume.
type StartedJSON struct {
	Ceremony uint64        `json:"ceremony"`
	Kind     ceremony.Kind `json:"kind"`
}

// ceremonyRequest checks a start request and turns it into the manager's request.
func ceremonyRequest(sr StartRequest) (ceremony.Request, error) {
	req := ceremony.Request{Kind: sr.Kind}
	switch sr.Kind {
	case ceremony.KindGenerate, ceremony.KindReissue:
		c, err := web.ParseQuorum(func(f string) string {
			switch f {
			case "quorum":
				return "custom"
			case "k":
				return fmt.Sprint(sr.K)
			case "n":
				return fmt.Sprint(sr.N)
			case "label":
				return sr.Label
			}
			return ""
		})
		if err != nil {
			return req, err
		}
		req.K, req.N, req.Label = c.K, c.N, c.Label
	case ceremony.KindPrepareCards:
		if sr.N < 1 {
			return req, errors.New(`a prepare-cards needs "n": how many cards to prepare`)
		}
		req.N = sr.N
	case ceremony.KindLoad, ceremony.KindCardCheck:
	case ceremony.KindCopyCard:
		req.Overwrite = sr.Overwrite
	case ceremony.KindChangePIN:
		switch sr.Slot {
		case "share":
			req.Slot = pinpad.SlotShare
		case "user":
			req.Slot = pinpad.SlotUser
		default:
			return req, errors.New(`a change-pin needs "slot": "share" (the backup key share PIN) or "user" (the slot user PIN)`)
		}
	case ceremony.KindSlotUserCard, ceremony.KindActivateSlot:
		if sr.PKCS11Slot == nil {
			return req, fmt.Errorf("a %s needs the PKCS#11 slot (pkcs11_slot)", sr.Kind)
		}
		req.PKCS11Slot = *sr.PKCS11Slot
	case ceremony.KindFactoryReset:
		if strings.TrimSpace(sr.Confirm) != web.ResetPhrase {
			return req, fmt.Errorf("a factory reset erases the HSM's keys and the master backup key: confirm it with %q", web.ResetPhrase)
		}
	default:
		return req, fmt.Errorf("unknown ceremony kind %q (one of %s)", sr.Kind, kindList())
	}
	return req, nil
}

func kindList() string {
	var ks []string
	for _, k := range ceremony.Kinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

// start is POST /api/v1/ceremony/start. Its action depends on the kind in the body, so it
// authorizes itself (roles and approval) once the body is checked, before anything starts.
func (a *Handlers) start(w http.ResponseWriter, r *http.Request) {
	var sr StartRequest
	if err := decodeJSON(r.Body, &sr); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	// The request is checked before the approval is spent on it: a typo costs no new one.
	req, err := ceremonyRequest(sr)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	if !a.cfg.Authorize(w, r, operator.ActionForKind(sr.Kind)) {
		return
	}
	ctx, err := a.cfg.CeremonyContext()
	if err != nil {
		a.problem(w, r, web.For(ceremony.ErrClosed, ""))
		return
	}
	op := operator.NameOf(r)
	hd, err := a.cfg.Runner.Start(ctx, op, req)
	if err != nil {
		a.log.Info("ceremony refused", "kind", req.Kind, "operator", op, "err", err)
		a.fail(w, r, err)
		return
	}
	a.log.Info("ceremony started from the command line", "ceremony", hd.ID(), "kind", hd.Kind(), "operator", op)
	writeJSONStatus(w, http.StatusAccepted, StartedJSON{Ceremony: hd.ID(), Kind: hd.Kind()})
}

func (a *Handlers) resume(w http.ResponseWriter, r *http.Request) {
	if !a.emptyBody(w, r) {
		return
	}
	ctx, err := a.cfg.CeremonyContext()
	if err != nil {
		a.problem(w, r, web.For(ceremony.ErrClosed, ""))
		return
	}
	hd, err := a.cfg.Runner.Resume(ctx, operator.NameOf(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONStatus(w, http.StatusAccepted, StartedJSON{Ceremony: hd.ID(), Kind: hd.Kind()})
}

func (a *Handlers) cancel(w http.ResponseWriter, r *http.Request) {
	if a.emptyBody(w, r) {
		a.steer(w, r, func(op string) error { return a.cfg.Runner.Cancel(op) })
	}
}

func (a *Handlers) retry(w http.ResponseWriter, r *http.Request) {
	if a.emptyBody(w, r) {
		a.steer(w, r, func(op string) error { return a.cfg.Runner.Retry(op) })
	}
}

// emptyBody checks that a request without parameters has none ({} or nothing).
func (a *Handlers) emptyBody(w http.ResponseWriter, r *http.Request) bool {
	if err := decodeJSON(r.Body, &struct{}{}); err != nil {
		a.badRequest(w, r, err.Error())
		return false
	}
	return true
}

// AnswerRequest is the body of POST /api/v1/ceremony/answer: OK (true) or Cancel (false) to the
// question the PIN pad cannot ask itself, named by its ID (the running ceremony's
// question.id). An answer to a question no longer asked is refused (409, stale_answer); OK to
// a destructive question (question.destructive) needs an approval for
// "ceremony.answer-destructive", as a ceremony start needs one.
type AnswerRequest struct {
	Question string `json:"question"`
	OK       *bool  `json:"ok"`
}

// questionID is the shape of a ceremony.Question ID: "c<ceremony>-q<number>".
var questionID = regexp.MustCompile(`^c[1-9][0-9]{0,19}-q[1-9][0-9]{0,9}$`)

// parseAnswer decodes and checks the body of an answer.
func parseAnswer(body io.Reader) (AnswerRequest, error) {
	var req AnswerRequest
	if err := decodeJSON(body, &req); err != nil {
		return req, err
	}
	if req.OK == nil || !questionID.MatchString(req.Question) {
		return req, errors.New(`the body must be {"question": ID, "ok": true} or {"question": ID, "ok": false}, ID the question's (keyquorum ceremony state shows it, e.g. "c12-q3")`)
	}
	return req, nil
}

func (a *Handlers) answer(w http.ResponseWriter, r *http.Request) {
	req, err := parseAnswer(r.Body)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	if !a.cfg.Authorize(w, r, operator.ActionSteer) {
		return
	}
	// The question asked now decides whether the answer destroys data; an answer to another
	// question is refused by the ceremony as stale, before any approval is spent.
	q, asked := a.cfg.Runner.Question()
	steppedUp := false
	if asked && q.ID == req.Question && q.Destructive && *req.OK {
		if !a.cfg.Authorize(w, r, operator.ActionAnswerDestructive) {
			return
		}
		steppedUp = true
	}
	a.steer(w, r, func(op string) error {
		return a.cfg.Runner.Answer(op, ceremony.Answer{Question: req.Question, OK: *req.OK, SteppedUp: steppedUp})
	})
}

func (a *Handlers) steer(w http.ResponseWriter, r *http.Request, f func(op string) error) {
	if err := f(operator.NameOf(r)); err != nil {
		a.fail(w, r, err)
		return
	}
	web.WriteJSON(w, map[string]bool{"ok": true})
}

// events is GET /api/v1/ceremony/events: the ceremony's events as JSON lines
// (application/x-ndjson), the latest first, each a full snapshot (a slow reader loses
// intermediate ones, never the latest). With ?until=outcome the stream ends after the first
// outcome event; otherwise when the client goes or the server stops.
func (a *Handlers) events(w http.ResponseWriter, r *http.Request) {
	untilOutcome := r.URL.Query().Get("until") == "outcome"
	rc := http.NewResponseController(w)
	sub := a.cfg.Runner.Subscribe()
	defer sub.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	enc := json.NewEncoder(w)
	tick := time.NewTicker(apiKeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.cfg.Stopping:
			return
		case ev, ok := <-sub.C():
			if !ok {
				return
			}
			if enc.Encode(ev) != nil || rc.Flush() != nil {
				return
			}
			if untilOutcome && ev.Type == ceremony.EventOutcome {
				return
			}
		case <-tick.C:
			// An empty line keeps proxies from closing an idle stream; readers skip it.
			if _, err := io.WriteString(w, "\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

// backup is GET /api/v1/backup (?skip_uncarried=true): the HSM's object store encrypted under
// the MBK, as the HSM page's download. The key ID is in the X-Keyquorum-Key-ID header. Objects
// that cannot be carried refuse the backup before its first byte, as a problem
// (backup_incomplete) naming each, unless skip_uncarried asks to leave them out.
func (a *Handlers) backup(w http.ResponseWriter, r *http.Request) {
	skip, err := skipParam(r)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	id, err := a.cfg.HSM.BackupKeyID(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	op := operator.NameOf(r)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(cluster.KeyIDHeader, id.String())
	cw := &countingWriter{w: w}
	web.ExtendForWork(w, web.SlowWork)
	if err := web.BackupTo(r.Context(), a.cfg.HSM, cw, skip); err != nil {
		if cw.n == 0 {
			w.Header().Del(cluster.KeyIDHeader)
			a.log.Info("backup refused", "operator", op, "err", err)
			var ie *hsm.IncompleteBackupError
			if errors.As(err, &ie) {
				a.record(op, cluster.AuditBackupRefused, fmt.Sprintf("backup by %s (command line) refused, nothing written: %v", op, err))
			}
			a.fail(w, r, err)
			return
		}
		a.log.Error("backup failed", "operator", op, "err", err)
		panic(http.ErrAbortHandler) // cut the stream rather than end it as if complete
	}
	a.log.Info("backup downloaded", "operator", op, "key_id", id.String())
	a.record(op, cluster.AuditBackup, fmt.Sprintf("backup of the HSM's object store downloaded by %s (command line), encrypted under the master backup key %s", op, id))
}

func (a *Handlers) record(op, event, msg string) {
	if err := a.cfg.Recorder.RecordAudit(op, event, msg); err != nil {
		a.log.Error("audit entry not recorded", "event", event, "err", err)
	}
}

// RestoredJSON answers a restore or a cluster join.
type RestoredJSON = cluster.Restored

// restore is POST /api/v1/restore (?make_equal=true): the body is a backup
// (application/octet-stream, at most MaxUpload bytes). A backup of another master backup key is
// refused from its header, before the HSM is asked; the HSM changes nothing unless the whole
// backup authenticated. The answer is the restore's plan: what was added, replaced, kept (or,
// made equal, removed).
func (a *Handlers) restore(w http.ResponseWriter, r *http.Request) {
	op := operator.NameOf(r)
	opts, err := restoreOptions(r)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	if opts.DryRun {
		a.badRequest(w, r, "a dry run is POST /api/v1/restore/preview")
		return
	}
	hdr, plan, err := cluster.RestoreWith(r.Context(), a.cfg.HSM, r.Body, opts)
	if errors.Is(err, cluster.ErrTooLarge) {
		a.record(op, cluster.AuditRestoreRefused, fmt.Sprintf("restore by %s (command line) refused: the upload is larger than %s", op, web.ByteSize(a.cfg.MaxUpload)))
		a.problem(w, r, web.TooLarge(a.cfg.MaxUpload))
		return
	}
	if err != nil {
		a.log.Info("restore refused", "operator", op, "err", err)
		a.record(op, cluster.AuditRestoreRefused, fmt.Sprintf("restore by %s (command line) refused, nothing changed: %v", op, err))
		a.fail(w, r, err)
		return
	}
	a.log.Info("backup restored", "operator", op, "key_id", hdr.KeyID.String())
	res := cluster.Result(r.Context(), a.cfg.HSM, hdr, "")
	if plan == nil {
		a.record(op, cluster.AuditRestore, fmt.Sprintf("backup of %s made %s restored into the HSM by %s (command line)", hdr.Source, hdr.Created.UTC().Format(time.RFC3339), op))
		web.WriteJSON(w, PlanJSON{Restored: res, Items: []PlanItemJSON{}})
		return
	}
	a.record(op, cluster.AuditRestore, fmt.Sprintf("backup %s of %s made %s restored into the HSM by %s (command line): %s", plan.Backup.ID, hdr.Source,
		hdr.Created.UTC().Format(time.RFC3339), op, web.PlanSummary(plan)))
	web.WriteJSON(w, PlanOf(res, plan))
}

// auditVerify is GET /api/v1/audit/verify: the whole log, its chain and its MACs. With the query
// parameters of an auditor's checkpoint (seq, hash, and key_id and mac when it has them), also
// that the log extends it.
func (a *Handlers) auditVerify(w http.ResponseWriter, r *http.Request) {
	web.ExtendForWork(w, web.SlowWork)
	var sum ceremony.AuditSummary
	var err error
	if q := r.URL.Query(); q.Has("seq") {
		cp, cerr := checkpointOf(q)
		if cerr != nil {
			a.problem(w, r, web.Problem{Status: http.StatusBadRequest, Code: web.CodeBadRequest, Title: "Not a checkpoint",
				What: cerr.Error(), Todo: "Pass the file keyquorum audit checkpoint wrote, unchanged."})
			return
		}
		sum, err = a.cfg.Audit.VerifyAuditCheckpoint(cp)
	} else {
		sum, err = a.cfg.Audit.VerifyAudit()
	}
	if err != nil {
		var ae *ceremony.AuditError
		var ce *ceremony.CheckpointError
		switch {
		case errors.As(err, &ae):
			a.problem(w, r, web.Problem{Status: http.StatusConflict, Code: web.CodeAuditBroken, Title: "The audit log does not verify",
				What: err.Error(), Todo: "Keep the data directory as it is and tell the appliance's auditors: an entry was altered, forged or removed."})
		case errors.As(err, &ce):
			a.problem(w, r, web.Problem{Status: http.StatusConflict, Code: web.CodeAuditBroken, Title: "The audit log does not extend the checkpoint",
				What: err.Error(), Todo: "Keep the data directory as it is and tell the appliance's auditors: the history the checkpoint vouches for was rewritten or cut."})
		case errors.Is(err, ceremony.ErrBadCheckpoint):
			a.problem(w, r, web.Problem{Status: http.StatusBadRequest, Code: web.CodeBadRequest, Title: "Not a checkpoint of this appliance",
				What: err.Error(), Todo: "Pass the file keyquorum audit checkpoint wrote on this appliance, unchanged."})
		default:
			a.fail(w, r, err)
		}
		return
	}
	web.WriteJSON(w, sum)
}

// checkpointOf reads a checkpoint from query parameters, as strictly as from its file.
func checkpointOf(q url.Values) (ceremony.AuditCheckpoint, error) {
	seq, err := strconv.ParseUint(q.Get("seq"), 10, 64)
	if err != nil {
		return ceremony.AuditCheckpoint{}, ceremony.ErrBadCheckpoint
	}
	raw, err := json.Marshal(ceremony.AuditCheckpoint{Format: ceremony.CheckpointFormat, Seq: seq, Hash: q.Get("hash"), KeyID: q.Get("key_id"), MAC: q.Get("mac")})
	if err != nil {
		return ceremony.AuditCheckpoint{}, err
	}
	return ceremony.DecodeCheckpoint(raw)
}

// auditCheckpoint is GET /api/v1/audit/checkpoint: the whole log verified, and the checkpoint of
// its last entry (seq, hash, MAC, key ID, time) for an auditor to keep outside the appliance.
func (a *Handlers) auditCheckpoint(w http.ResponseWriter, r *http.Request) {
	web.ExtendForWork(w, web.SlowWork)
	cp, _, err := a.cfg.Audit.AuditCheckpoint()
	if err != nil {
		var ae *ceremony.AuditError
		if errors.As(err, &ae) {
			a.problem(w, r, web.Problem{Status: http.StatusConflict, Code: web.CodeAuditBroken, Title: "The audit log does not verify: no checkpoint taken",
				What: err.Error(), Todo: "Keep the data directory as it is and tell the appliance's auditors: an entry was altered, forged or removed."})
			return
		}
		a.fail(w, r, err)
		return
	}
	web.WriteJSON(w, cp)
}

func (a *Handlers) auditExport(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	if err := a.cfg.Audit.ExportAudit(w); err != nil {
		a.log.Error("audit export failed", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// CardJSON is GET /api/v1/card with the simulator: the pad and the card in its slot. Reading a
// real card needs its PIN on the pad (a card check ceremony), so a real pad answers
// not_available.
type CardJSON struct {
	Display  string `json:"display"`
	Waiting  string `json:"waiting"`
	Deadline string `json:"deadline,omitempty"` // RFC 3339 with nanoseconds: it tells one wait from the next
	Plugged  bool   `json:"plugged"`
	// Inserted is the card in the reader, nil when the slot is empty.
	Inserted *simpanel.Card `json:"inserted"`
	// InKeySet says whether the inserted card is one the loaded key's set was written to.
	InKeySet bool            `json:"in_key_set"`
	Cards    []simpanel.Card `json:"cards"`
}

// survey is POST /api/v1/card/survey: the card in the reader read without a PIN and without
// changing anything (tcos.SurveyReport), safe to send to support.
func (a *Handlers) survey(w http.ResponseWriter, r *http.Request) {
	rep, p := web.SurveyCard(r.Context(), a.cfg.Surveyor, a.cfg.Records, "")
	if p != nil {
		a.problem(w, r, *p)
		return
	}
	web.WriteJSON(w, rep)
}

func (a *Handlers) card(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Sim == nil {
		a.problem(w, r, web.Problem{Status: http.StatusNotImplemented, Code: web.CodeNotAvailable, Title: "No card information without a ceremony",
			What: "With a real PIN pad a card is read only with its PIN typed on the pad, inside a ceremony.",
			Todo: "Run a card check (or a copy or PIN change) ceremony; keyquorum status shows the loaded key's card set."})
		return
	}
	st := a.cfg.Sim.State()
	v := simpanel.ViewFrom(st, a.cfg.Sim.Cards())
	out := CardJSON{Display: v.Display, Waiting: v.Waiting, Plugged: v.Plugged, Cards: v.Cards}
	if !st.Deadline.IsZero() {
		out.Deadline = st.Deadline.UTC().Format(time.RFC3339Nano)
	}
	if i := slices.IndexFunc(v.Cards, func(c simpanel.Card) bool { return c.Inserted }); i >= 0 {
		c := v.Cards[i]
		out.Inserted = &c
		if ov, err := a.cfg.Records.Overview(r.Context()); err == nil && ov.KeySet != nil {
			out.InKeySet = slices.ContainsFunc(ov.KeySet.Cards, func(e ceremony.CardEntry) bool { return strings.EqualFold(e.Serial, c.Serial) })
		}
	}
	web.WriteJSON(w, out)
}
