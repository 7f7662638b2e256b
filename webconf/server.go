package webconf

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/monitor"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/pages"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// DefaultMaxUpload bounds a backup upload: far above the key database of an appliance, far
// below what would fill its disk or memory.
const DefaultMaxUpload = 64 << 20

// maxForm bounds every other request body.
const maxForm = 64 << 10

// Config is what a Server is built from. PKI, Runner, Records, Audit and HSM are required.
type Config struct {
	PKI *operator.PKI
	// CABundle are further CAs whose client certificates are accepted (optional).
	CABundle []*x509.Certificate
	Runner   web.CeremonyRunner
	Records  web.CeremonyRecords
	Audit    web.AuditReader
	HSM      web.BackupHSM
	// Sim is the simulator PIN pad; nil with a real pad (then there is no simulator panel).
	Sim simpanel.Simulator
	// Surveyor surveys the card in the reader for the Smart cards page and the API (optional:
	// without it the survey answers that it is not available).
	Surveyor  web.CardSurveyor
	Appliance web.Appliance
	// MaxUpload bounds a backup upload, in bytes; 0 means DefaultMaxUpload.
	MaxUpload int64
	// Logger receives operational logs (never secrets); nil discards.
	Logger *slog.Logger

	// Operators is the operator list: roles, security keys, revocations (required; open it
	// with operator.OpenOperators, e.g. at filepath.Join(pki.Dir, operator.OperatorsFile)).
	Operators *operator.Operators
	// Recorder writes operator events to the audit log; nil means Audit, which must then
	// implement operator.AuditRecorder (*ceremony.Manager does).
	Recorder operator.AuditRecorder
	// CRLFiles are CRLs of the CA bundle's CAs (PEM or DER); a certificate of a CA with a CRL
	// is checked against it on every request, and refused while the CRL is unusable.
	CRLFiles []string
	// RPID is the WebAuthn relying party ID: the host name operators open WebConf at (the
	// first --host). Empty means operator.DefaultRPID ("localhost").
	RPID string
	// RecoverAdmin, set at a start by someone with access to the appliance's data directory,
	// gives the first administrator's certificate (admin.p12) the admin role again and removes
	// its security keys, so that it can register a new one: the way out when every
	// administrator has lost their security key. It is audited.
	RecoverAdmin bool
	// Attestation restricts which security keys may be registered (serve --webauthn-aaguids,
	// --webauthn-attestation-formats, --webauthn-attestation-roots); zero: any.
	Attestation operator.AttestationPolicy
	// MaxConnections bounds the connections served at once; 0 means DefaultMaxConnections.
	MaxConnections int
	// ClusterAddress is this node's address as its cluster peers reach it (https://host:port);
	// NodeName its name among them until a join names it ("" is the host name).
	ClusterAddress, NodeName string
	// OfferInterval is how often this node offers its changed shared state to the nodes that
	// joined it (cluster.Node.Watch); 0 never.
	OfferInterval time.Duration

	// Monitor, when set, serves /healthz without a client certificate and receives request
	// latencies, backup and restore outcomes, TLS handshake failures and revoked-certificate
	// refusals (webconf/monitor).
	Monitor *monitor.Metrics
}

// Server is WebConf.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	csrf    *csrfGuard
	rd      *pages.Renderer
	auth    *operator.Auth
	audit   operator.AuditRecorder
	cluster *cluster.Node
	streams streamLimit

	mu       sync.Mutex
	base     context.Context // lives as long as Serve: ceremonies started by requests run under it
	stopping chan struct{}   // closed when Serve is shutting down: long-lived streams end
}

// New builds the server and its routes.
func New(cfg Config) (*Server, error) {
	if cfg.PKI == nil || cfg.Runner == nil || cfg.Records == nil || cfg.Audit == nil || cfg.HSM == nil {
		return nil, errors.New("new webconf: pki, ceremony manager and hsm are required")
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = DefaultMaxUpload
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := cfg.PKI.CSRFKey()
	if len(key) == 0 { // a PKI not made by LoadPKI: tokens then last as long as the process
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("new webconf: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: log, csrf: newCSRFGuard(key), stopping: make(chan struct{})}
	if cfg.Operators == nil {
		return nil, errors.New("new webconf: the operator list is required (OpenOperators)")
	}
	rec := cfg.Recorder
	if rec == nil {
		rec, _ = cfg.Audit.(operator.AuditRecorder)
	}
	if rec == nil {
		return nil, errors.New("new webconf: an audit recorder is required (the ceremony manager)")
	}
	a, err := operator.NewAuth(operator.AuthConfig{PKI: cfg.PKI, Operators: cfg.Operators, CABundle: cfg.CABundle, CRLFiles: cfg.CRLFiles,
		Recorder: rec, RPID: cfg.RPID, RecoverAdmin: cfg.RecoverAdmin, Attestation: cfg.Attestation, Logger: log}, time.Now())
	if err != nil {
		return nil, err
	}
	s.auth, s.audit = a, rec
	s.rd = pages.NewRenderer(cfg.Sim, a, log)
	s.cluster = &cluster.Node{HSM: cfg.HSM, Issuer: a, CA: cfg.PKI.CA, Audit: a, MaxUpload: cfg.MaxUpload, Log: log,
		Dir: cfg.PKI.Dir, Name: cfg.NodeName, Address: cfg.ClusterAddress}
	// The card set registry travels with the cluster state when the ceremony manager keeps it.
	if reg, ok := cfg.Records.(cluster.Registry); ok {
		s.cluster.Registry = reg
	}
	s.handler = s.routes()
	return s, nil
}

// TLSConfig is the server's TLS configuration: TLS 1.3 only, the management server
// certificate, client certificates verified against the management CA and the bundle.
//
// A client certificate is verified when one is sent (a certificate of another CA fails the
// handshake) but not demanded at the TLS layer, so that a browser without one gets a page that
// says how to install it instead of a bare handshake error; the HTTP layer then refuses every
// page but /ca.pem and the static files to a request without one.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cfg.PKI.Server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    s.cfg.PKI.ClientCAs(s.cfg.CABundle),
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// RecoveryCode is the one-time code the first security key after an administrator recovery
// needs ("" when none is pending): serve prints it on the appliance's console, nowhere else.
func (s *Server) RecoveryCode() string { return s.auth.RecoveryCode() }

// Handler is the whole of WebConf as an http.Handler (it expects TLS connection state).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTPS on ln until ctx ends, then shuts down gracefully: live streams end at once,
// other requests get up to ten seconds to finish. Every connection has read, write and idle
// deadlines and at most Config.MaxConnections are served at once (see deadlines.go). Ceremonies started through the server run
// under ctx: when it ends they are journaled as interrupted.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.base = ctx
	s.mu.Unlock()
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: readHeaderTimeout, // also the TLS handshake's
		ReadTimeout:       readTimeout,
		// The live view and downloads extend it before each write (deadlines.go).
		WriteTimeout: writeTimeout,
		IdleTimeout:  idleTimeout,
		ErrorLog:     s.errorLog(),
		BaseContext: func(net.Listener) context.Context {
			return context.WithoutCancel(ctx)
		},
	}
	errc := make(chan error, 1)
	if s.cfg.OfferInterval > 0 {
		go s.cluster.Watch(ctx, s.cfg.OfferInterval) // offers this node's changes to the nodes that pull from it
	}
	ln = netutil.LimitListener(ln, s.cfg.MaxConnections)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		s.stop()
		return fmt.Errorf("serve webconf: %w", err)
	case <-ctx.Done():
	}
	s.stop()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
		return fmt.Errorf("shut down webconf: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve webconf: %w", err)
	}
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopping:
	default:
		close(s.stopping)
	}
}

// ceremonyContext is the context ceremonies run under: the server's, not a request's (a
// ceremony outlives the request that started it).
func (s *Server) ceremonyContext() (context.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base == nil {
		return nil, errors.New("start ceremony: the server is not serving")
	}
	select {
	case <-s.stopping:
		return nil, errors.New("start ceremony: the server is shutting down")
	default:
	}
	return s.base, nil
}
