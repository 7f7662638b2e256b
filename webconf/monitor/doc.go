// Package monitor is what watches Keyquorum from outside: /healthz, which a load balancer or
// systemd's watchdog may ask without a client certificate, and the Prometheus metrics that
// monitoring scrapes (github.com/prometheus/client_golang).
//
// # Health
//
// [Health] answers "up" (200) or "degraded" (503), nothing more: the request is not
// authenticated, so it learns only whether the appliance needs attention. Three checks decide:
// the data directory is writable (a file is created and removed), the HSM answers (its master
// backup key ID, or "no key loaded", both count as an answer), and the PIN pad is present
// (always, for the simulator; a connected reader, for PC/SC). Which check failed is in the
// metrics and in the log (once per change), not in the answer.
//
// # Metrics
//
// All names start with keyquorum_ (see [New] for the list). They are fed by the ceremony
// manager's committed audit entries ([Metrics.ObserveAudit]: ceremonies by kind and outcome,
// stalls), by WebConf (request latencies by route pattern, backups and restores, TLS handshake
// failures by reason, refusals of revoked certificates) and by probes asked at scrape time (HSM
// reachable, key loaded, PIN pad present). They are served on a listener of their own
// (serve --metrics-listen), never on WebConf's, so that a scraper needs no client certificate and
// WebConf's port stays the operators'.
//
// What this room must never do: carry a secret or a card serial in a metric, a label or the
// health answer; labels come from fixed sets (ceremony kinds, outcomes, route patterns, reason
// classes), never from what a client or a card sent.
package monitor
