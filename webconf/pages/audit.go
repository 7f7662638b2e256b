package pages

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// auditHandlers serve the audit log, its export and the printable ceremony protocol.
type auditHandlers struct {
	audit   web.AuditReader
	records web.CeremonyRecords
	rd      *Renderer
	log     *slog.Logger
}

func newAuditHandlers(a web.AuditReader, records web.CeremonyRecords, rd *Renderer, log *slog.Logger) *auditHandlers {
	return &auditHandlers{audit: a, records: records, rd: rd, log: log}
}

// auditPageSize is how many entries a page of the audit log shows; ceremonyPageSize how many
// ceremonies. Older ones are a click away; the export has all.
const (
	auditPageSize    = 200
	ceremonyPageSize = 20
)

// auditView is the audit log page.
type auditView struct {
	Summary    ceremony.AuditSummary
	Full       bool   // the whole chain was checked for this view (?verify=full)
	VerifyErr  string // the break in the chain, "" when intact
	Filter     auditFilter
	Page       ceremony.AuditPage
	Ceremonies []ceremony.Journal
	OlderCer   uint64 // cursor of the next page of ceremonies, 0 when none
}

// auditFilter is the page's query, as typed (kept for the form and the paging links).
type auditFilter struct {
	Event, Operator, Ceremony, Serial, Since, Until string
	Before, CerBefore                               uint64
}

// query turns the filter into an audit query; a bad value is a problem naming the field.
func (f auditFilter) query() (ceremony.AuditQuery, error) {
	q := ceremony.AuditQuery{Before: f.Before, Limit: auditPageSize, Event: f.Event, Operator: f.Operator, Serial: strings.ToUpper(f.Serial)}
	if f.Ceremony != "" {
		id, err := strconv.ParseUint(strings.TrimPrefix(f.Ceremony, "#"), 10, 64)
		if err != nil || id == 0 {
			return q, fmt.Errorf("ceremony %q is not a ceremony number (1, 2, …)", f.Ceremony)
		}
		q.Ceremony = id
	}
	var err error
	if q.Since, err = parseWhen(f.Since, false); err != nil {
		return q, fmt.Errorf("from: %v", err)
	}
	if q.Until, err = parseWhen(f.Until, true); err != nil {
		return q, fmt.Errorf("to: %v", err)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return q, errors.New("the time range ends before it begins")
	}
	return q, nil
}

// parseWhen reads a UTC date ("2026-11-30") or date and time ("2026-11-30 14:05" or
// "2026-11-30T14:05"); a date alone as an end means the end of that day.
func parseWhen(s string, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	t, err := time.ParseInLocation("2006-01-02", s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a date (2026-11-30) or a date and time (2026-11-30 14:05), in UTC", s)
	}
	if end {
		t = t.Add(24*time.Hour - time.Nanosecond)
	}
	return t, nil
}

// values is the filter as URL parameters, with before set to the given cursors.
func (f auditFilter) values(before, cerBefore uint64) url.Values {
	v := url.Values{}
	for k, x := range map[string]string{"event": f.Event, "operator": f.Operator, "ceremony": f.Ceremony, "serial": f.Serial, "since": f.Since, "until": f.Until} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if before != 0 {
		v.Set("before", strconv.FormatUint(before, 10))
	}
	if cerBefore != 0 {
		v.Set("cbefore", strconv.FormatUint(cerBefore, 10))
	}
	return v
}

// active reports whether any field filters entries.
func (f auditFilter) active() bool {
	return f.Event != "" || f.Operator != "" || f.Ceremony != "" || f.Serial != "" || f.Since != "" || f.Until != ""
}

func (h *auditHandlers) page(w http.ResponseWriter, r *http.Request) {
	qs := r.URL.Query()
	v := auditView{Filter: auditFilter{Event: strings.TrimSpace(qs.Get("event")), Operator: strings.TrimSpace(qs.Get("operator")),
		Ceremony: strings.TrimSpace(qs.Get("ceremony")), Serial: strings.TrimSpace(qs.Get("serial")),
		Since: strings.TrimSpace(qs.Get("since")), Until: strings.TrimSpace(qs.Get("until"))}}
	for _, c := range []struct {
		name string
		dst  *uint64
	}{{"before", &v.Filter.Before}, {"cbefore", &v.Filter.CerBefore}} {
		if x := qs.Get(c.name); x != "" {
			n, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				h.rd.Problem(w, r, badAuditQuery(fmt.Sprintf("%s %q is not an entry number", c.name, x)))
				return
			}
			*c.dst = n
		}
	}
	for _, f := range []string{v.Filter.Event, v.Filter.Operator, v.Filter.Serial} {
		if len(f) > 256 {
			h.rd.Problem(w, r, badAuditQuery("a filter is longer than 256 characters"))
			return
		}
	}
	q, err := v.Filter.query()
	if err != nil {
		h.rd.Problem(w, r, badAuditQuery(err.Error()))
		return
	}
	// A view checks what was appended since the last check; the whole chain on request
	// (and by `keyquorum audit verify`), since that reads every entry.
	v.Full = qs.Get("verify") == "full"
	verify := h.audit.VerifyAuditIncremental
	if v.Full {
		verify = h.audit.VerifyAudit
		web.ExtendForWork(w, web.SlowWork)
	}
	sum, err := verify()
	v.Summary = sum
	if err != nil {
		v.VerifyErr = err.Error()
		h.log.Warn("audit log verification failed", "err", err)
	}
	if v.Page, err = h.audit.AuditPage(q); err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	if v.Ceremonies, v.OlderCer, err = h.records.CeremoniesPage(ceremony.CeremonyQuery{Before: v.Filter.CerBefore, Limit: ceremonyPageSize}); err != nil {
		h.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	h.rd.HTML(w, r, http.StatusOK, auditPage(h.rd.Page(r, "Audit log", "audit"), v))
}

func badAuditQuery(what string) web.Problem {
	return web.Problem{Status: http.StatusBadRequest, Title: "Audit log filter not understood", What: "The filter could not be used: " + what + ".",
		Todo: "Correct the filter on the audit log page, or clear it to see the newest entries."}
}

// export downloads the whole log as JSON lines; `keyquorum audit verify` checks such a file.
func (h *auditHandlers) export(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="keyquorum-audit-`+time.Now().UTC().Format("20060102-150405")+`.jsonl"`)
	if err := h.audit.ExportAudit(w); err != nil {
		h.log.Error("audit export failed", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// checkpoint verifies the whole log and downloads the checkpoint of its newest entry, the file
// `keyquorum audit checkpoint -o FILE` writes and `keyquorum audit verify --checkpoint FILE`
// reads.
func (h *auditHandlers) checkpoint(w http.ResponseWriter, r *http.Request) {
	web.ExtendForWork(w, web.SlowWork)
	cp, _, err := h.audit.AuditCheckpoint()
	if err != nil {
		var ae *ceremony.AuditError
		if errors.As(err, &ae) {
			h.rd.Problem(w, r, web.Problem{Status: http.StatusConflict, Code: web.CodeAuditBroken, Title: "The audit log does not verify: no checkpoint taken",
				What: err.Error(), Todo: "Keep the data directory as it is and tell the appliance's auditors: an entry was altered, forged or removed."})
			return
		}
		h.rd.Problem(w, r, web.For(err, ""))
		return
	}
	raw, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		h.rd.Problem(w, r, web.For(err, ""))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="keyquorum-audit-checkpoint-%d.json"`, cp.Seq))
	w.Write(append(raw, '\n'))
}

func (h *auditHandlers) protocol(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		h.rd.Problem(w, r, web.NotFound())
		return
	}
	p, err := h.records.Protocol(id)
	if err != nil {
		h.rd.Problem(w, r, web.Problem{Status: http.StatusNotFound, Title: "No such ceremony",
			What: err.Error(), Todo: "Choose a ceremony from the list on the status page or the audit log."})
		return
	}
	h.rd.HTML(w, r, http.StatusOK, protocolPage(h.rd.Page(r, "Protocol of ceremony "+strconv.FormatUint(id, 10), "audit"), p))
}
