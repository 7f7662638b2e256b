package pages

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
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
}

func (h *hsmHandlers) page(w http.ResponseWriter, r *http.Request) {
	ov, err := h.records.Overview(r.Context())
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v := hsmView{Overview: ov, MaxUpload: web.ByteSize(h.maxUpload), Restored: r.URL.Query().Get("restored") == "1"}
	h.rd.HTML(w, r, http.StatusOK, hsmPage(h.rd.Page(r, "HSM", "hsm"), v))
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
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	op := operator.NameOf(r)
	if err := cluster.SpoolBackup(r.Context(), h.hsm, w); err != nil {
		h.log.Error("backup failed", "operator", op, "err", err)
		panic(http.ErrAbortHandler) // cut the download off rather than end it as if complete
	}
	h.log.Info("backup downloaded", "operator", op, "key_id", id.String())
	h.record(op, cluster.AuditBackup, fmt.Sprintf("backup of the HSM's key database downloaded by %s, encrypted under the master backup key %s", op, id))
}

// limitFlag remembers that the upload hit its bound, whatever the HSM wraps the read error in.
type limitFlag struct {
	r   io.Reader
	hit bool
}

func (l *limitFlag) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		l.hit = true
	}
	return n, err
}

// restore spools an uploaded backup (constant memory) and restores it into the HSM once it is
// complete (cluster.SpoolRestore). The HSM changes nothing unless the whole backup was read and
// authenticated.
func (h *hsmHandlers) restore(w http.ResponseWriter, r *http.Request) {
	mr, err := web.MultipartReader(r)
	if err != nil {
		h.rd.Problem(w, r, web.BadForm("The restore form must be sent as a file upload (multipart/form-data)."))
		return
	}
	for {
		part, err := mr.NextPart()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				h.rd.Problem(w, r, web.TooLarge(h.maxUpload))
				return
			}
			h.rd.Problem(w, r, web.BadForm("The upload holds no backup file: choose the backup file and send the form again."))
			return
		}
		if part.FormName() != "backup" {
			part.Close()
			continue
		}
		// The backup itself may be at most maxUpload bytes.
		body := &limitFlag{r: http.MaxBytesReader(nil, part, h.maxUpload)}
		op := operator.NameOf(r)
		err = cluster.SpoolRestore(r.Context(), h.hsm, body)
		part.Close()
		if body.hit {
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
		h.record(op, cluster.AuditRestore, fmt.Sprintf("backup restored into the HSM by %s", op))
		http.Redirect(w, r, "/hsm?restored=1", http.StatusSeeOther)
		return
	}
}
