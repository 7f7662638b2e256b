package monitor

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm"
)

// KeyIDer is the part of the HSM the probes use: an answer, key or no key, means reachable.
type KeyIDer interface {
	BackupKeyID(ctx context.Context) (hsm.KeyID, error)
}

// PadPresence reports whether the PIN pad is connected. A pad that cannot tell (nil) counts
// as present.
type PadPresence interface {
	Present(ctx context.Context) bool
}

// Probes are what health and the scrape-time gauges ask.
type Probes struct {
	DataDir string
	HSM     KeyIDer
	Pad     PadPresence // nil: always present (the simulator)
	Logger  *slog.Logger
}

// probeTimeout bounds one probe: a hung HSM makes the check fail, not the scrape hang.
const probeTimeout = 2 * time.Second

// Metrics holds Keyquorum's Prometheus collectors. The zero value is not usable: call [New].
type Metrics struct {
	reg       *prometheus.Registry
	probes    Probes
	started   *prometheus.CounterVec
	ended     *prometheus.CounterVec
	stalls    *prometheus.CounterVec
	requests  *prometheus.HistogramVec
	transfers *prometheus.CounterVec
	transferD *prometheus.HistogramVec
	handshake *prometheus.CounterVec
	revoked   prometheus.Counter

	mu   sync.Mutex
	last map[string]bool // health check → ok, to log changes once
}

// Outcomes of a ceremony in keyquorum_ceremonies_ended_total.
var outcomes = map[string]string{
	ceremony.AuditCeremonyDone:        "done",
	ceremony.AuditCeremonyAborted:     "aborted",
	ceremony.AuditCeremonyInterrupted: "interrupted",
}

// Handshake failure reasons: a fixed set, so a client cannot invent label values.
var handshakeReasons = []struct{ match, reason string }{
	{"client didn't provide a certificate", "no_certificate"},
	{"certificate signed by unknown authority", "unknown_ca"},
	{"unknown certificate authority", "unknown_ca"},
	{"certificate has expired", "expired_certificate"},
	{"expired", "expired_certificate"},
	{"bad certificate", "bad_certificate"},
	{"certificate", "bad_certificate"},
	{"protocol version", "protocol_version"},
	{"no cipher suite", "no_common_cipher"},
	{"first record does not look like a TLS handshake", "not_tls"},
	{"i/o timeout", "timeout"},
	{"EOF", "eof"},
	{"connection reset", "eof"},
}

// New registers every collector:
//
//	keyquorum_ceremonies_started_total{kind}
//	keyquorum_ceremonies_ended_total{kind,outcome}       outcome: done, aborted, interrupted
//	keyquorum_ceremony_stalls_total{kind}
//	keyquorum_pinpad_present                             1 or 0, asked at scrape time
//	keyquorum_hsm_reachable                              1 or 0, asked at scrape time
//	keyquorum_key_loaded                                 1 or 0, asked at scrape time
//	keyquorum_hsm_transfers_total{operation,outcome}     operation: backup, restore; outcome: ok, failed
//	keyquorum_hsm_transfer_duration_seconds{operation}
//	keyquorum_http_request_duration_seconds{route,code}  route: the route pattern, e.g. "GET /status"
//	keyquorum_tls_handshake_failures_total{reason}
//	keyquorum_revoked_certificate_refusals_total
//
// and the Go runtime and process collectors.
func New(p Probes) *Metrics {
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{reg: prometheus.NewRegistry(), probes: p, last: map[string]bool{}}
	m.started = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyquorum_ceremonies_started_total", Help: "Ceremonies started, by kind."}, []string{"kind"})
	m.ended = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyquorum_ceremonies_ended_total", Help: "Ceremonies ended, by kind and outcome (done, aborted, interrupted)."}, []string{"kind", "outcome"})
	m.stalls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyquorum_ceremony_stalls_total", Help: "Ceremony steps that stalled and wait for Retry, by kind."}, []string{"kind"})
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyquorum_http_request_duration_seconds", Help: "WebConf request latencies, by route pattern and status code.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5}}, []string{"route", "code"})
	m.transfers = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyquorum_hsm_transfers_total", Help: "HSM backups and restores, by operation and outcome."}, []string{"operation", "outcome"})
	m.transferD = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyquorum_hsm_transfer_duration_seconds", Help: "Duration of HSM backups and restores.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 8)}, []string{"operation"})
	m.handshake = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyquorum_tls_handshake_failures_total", Help: "TLS handshakes WebConf refused or lost, by reason."}, []string{"reason"})
	m.revoked = prometheus.NewCounter(prometheus.CounterOpts{Name: "keyquorum_revoked_certificate_refusals_total", Help: "Requests refused because the client certificate is revoked or its CRL is unusable."})
	gauge := func(name, help string, f func() bool) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if f() {
				return 1
			}
			return 0
		})
	}
	m.reg.MustRegister(m.started, m.ended, m.stalls, m.requests, m.transfers, m.transferD, m.handshake, m.revoked,
		gauge("keyquorum_pinpad_present", "1 when the PIN pad is connected.", m.padPresent),
		gauge("keyquorum_hsm_reachable", "1 when the HSM answers.", func() bool { ok, _ := m.hsmState(); return ok }),
		gauge("keyquorum_key_loaded", "1 when the HSM holds a master backup key.", func() bool { _, loaded := m.hsmState(); return loaded }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every label combination that is known in advance starts at zero, so that a rate over a
	// counter that has not moved yet is 0, not absent.
	for _, k := range []ceremony.Kind{ceremony.KindGenerate, ceremony.KindLoad, ceremony.KindCopyCard, ceremony.KindChangePIN,
		ceremony.KindSlotUserCard, ceremony.KindActivateSlot, ceremony.KindFactoryReset, ceremony.KindReissue, ceremony.KindCardCheck} {
		m.started.WithLabelValues(string(k))
		m.stalls.WithLabelValues(string(k))
		for _, o := range outcomes {
			m.ended.WithLabelValues(string(k), o)
		}
	}
	for _, op := range []string{"backup", "restore"} {
		m.transfers.WithLabelValues(op, "ok")
		m.transfers.WithLabelValues(op, "failed")
	}
	m.revoked.Add(0)
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.probes.Logger.Handler(), slog.LevelWarn)})
}

// ObserveAudit counts a committed audit entry (ceremony.Config.OnAudit). Only the kind and
// the event key are read: never a serial or a message.
func (m *Metrics) ObserveAudit(e ceremony.AuditEntry) {
	kind := string(e.Kind)
	if kind == "" {
		return
	}
	switch e.Event {
	case ceremony.AuditCeremonyStarted:
		m.started.WithLabelValues(kind).Inc()
	case ceremony.AuditCeremonyStalled:
		m.stalls.WithLabelValues(kind).Inc()
	default:
		if o, ok := outcomes[e.Event]; ok {
			m.ended.WithLabelValues(kind, o).Inc()
		}
	}
}

// ObserveRequest records one WebConf request. route is the route pattern that served it ("" for
// none: "unmatched"), never the raw path.
func (m *Metrics) ObserveRequest(route string, c int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	code := "other"
	if c >= 100 && c <= 599 {
		code = strconv.Itoa(c)
	}
	m.requests.WithLabelValues(route, code).Observe(d.Seconds())
}

// ObserveTransfer records a finished backup or restore.
func (m *Metrics) ObserveTransfer(operation string, d time.Duration, err error) {
	if operation != "backup" && operation != "restore" {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	m.transfers.WithLabelValues(operation, outcome).Inc()
	m.transferD.WithLabelValues(operation).Observe(d.Seconds())
}

// RevokedRefused counts a request refused for a revoked certificate (or an unusable CRL).
func (m *Metrics) RevokedRefused() { m.revoked.Inc() }

// HandshakeFailed counts a failed TLS handshake, classified from the error text net/http logs.
func (m *Metrics) HandshakeFailed(msg string) {
	m.handshake.WithLabelValues(HandshakeReason(msg)).Inc()
}

// HandshakeReason maps a TLS handshake error text to one of a fixed set of reasons.
func HandshakeReason(msg string) string {
	for _, r := range handshakeReasons {
		if strings.Contains(msg, r.match) {
			return r.reason
		}
	}
	return "other"
}

// ErrorLogWriter is an io.Writer for http.Server.ErrorLog (through log.New): it counts the
// "TLS handshake error" lines by reason and hands every line on to next.
func (m *Metrics) ErrorLogWriter(next func(line string)) *errorLog {
	return &errorLog{m: m, next: next}
}

type errorLog struct {
	m    *Metrics
	next func(string)
}

func (w *errorLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if i := strings.Index(line, "TLS handshake error"); i >= 0 {
		w.m.HandshakeFailed(line[i:])
	}
	if w.next != nil {
		w.next(line)
	}
	return len(p), nil
}

func (m *Metrics) padPresent() bool {
	if m.probes.Pad == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	return m.probes.Pad.Present(ctx)
}

// hsmState asks the HSM once: reachable, and whether a master backup key is loaded.
func (m *Metrics) hsmState() (reachable, loaded bool) {
	if m.probes.HSM == nil {
		return false, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	_, err := m.probes.HSM.BackupKeyID(ctx)
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, hsm.ErrNoBackupKey):
		return true, false
	}
	return false, false
}

func (m *Metrics) dataDirWritable() bool {
	f, err := os.CreateTemp(m.probes.DataDir, ".healthz-*")
	if err != nil {
		return false
	}
	name := f.Name()
	f.Close()
	return os.Remove(filepath.Clean(name)) == nil
}

// Health serves /healthz: "up" (200) when the data directory is writable, the HSM answers and
// the PIN pad is present, else "degraded" (503). It needs no client certificate and says
// nothing else; a change of a check is logged once.
func (m *Metrics) Health() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reachable, _ := m.hsmState()
		checks := map[string]bool{"data_dir_writable": m.dataDirWritable(), "hsm_reachable": reachable, "pinpad_present": m.padPresent()}
		up := true
		m.mu.Lock()
		for name, ok := range checks {
			up = up && ok
			if was, seen := m.last[name]; !seen || was != ok {
				if ok {
					m.probes.Logger.Info("health check passes", "check", name)
				} else {
					m.probes.Logger.Warn("health check fails", "check", name)
				}
				m.last[name] = ok
			}
		}
		m.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !up {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("degraded\n"))
			return
		}
		w.Write([]byte("up\n"))
	})
}
