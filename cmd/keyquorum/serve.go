package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/pkcs11"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/internal/secmem"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/pcsc"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/webconf"
	"github.com/keyquorum/keyquorum/webconf/monitor"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// serveConfig is what `keyquorum serve` runs with, after its flags are checked.
type serveConfig struct {
	dataDir      string
	listen       string
	pinpad       string // "sim" or "pcsc"
	reader       string
	profile      *tcos.Profile // the card profile cards are read and written in
	virtual      string        // control socket of the virtual cyberJack driver, "" for a real reader
	hsm          string        // "soft" or "pkcs11"
	pkcs11Module string
	slot         string // token label
	pinFile      string
	caBundle     string
	crls         []string
	hosts        []string
	attest       operator.AttestationPolicy // Roots are read at start from attestRoots
	attestRoots  string
	recoverAdmin bool
	softReal     bool // --allow-soft-hsm-with-real-cards
	maxUpload    int64
	nodeName     string
	clusterAddr  string
	offerEvery   time.Duration
	verbose      bool
	logFormat    string // "text" or "json"
	configFile   string
	check        bool // only check the flags and the configuration file, print them, exit
	metricsAddr  string
	timeouts     ceremony.Timeouts
}

const serveUsage = `usage: keyquorum serve [flags]

Runs WebConf, the browser interface of the key ceremonies, over HTTPS with client certificates.
With no flags: data in ./keyquorum-data, the simulator PIN pad, the embedded soft HSM, listening
on https://127.0.0.1:8443. On first start it creates a management CA, a server certificate and
the first administrator's client certificate (PKCS#12, password in a file beside it) under
DATA/webconf, and prints where they are.

PINs are never given on the command line: the PKCS#11 user PIN is read from --pin-file.

--config FILE reads these flags from a file, one "name = value" per line ('#' starts a comment;
a repeatable flag is repeated); a flag given on the command line wins over the file. The Debian
package's service runs "keyquorum serve --config /etc/keyquorum/keyquorum.conf".

KEYQUORUM_CPUPROFILE=FILE in the environment writes a CPU profile of the run to FILE when serve
stops (bench/webload uses it to show where a request's time goes).

Under systemd (Type=notify) the service reports ready once WebConf is listening. Core dumps are
switched off at start, so a crash cannot write key material to disk.

flags:
`

const serveExitHelp = `
exit status:
  0  stopped cleanly (SIGINT or SIGTERM); a ceremony running then is journaled as interrupted
  1  could not start (data directory, PIN pad, HSM, TLS) or failed while running
  2  usage error: contradictory or malformed flags, nothing was started
`

// parseServe reads serve's flags; contradictory settings are refused with a message saying why.
func parseServe(args []string, stderr io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, serveUsage)
		printFlags(stderr, fs)
		fmt.Fprint(stderr, serveExitHelp)
	}
	fs.StringVar(&c.dataDir, "data", "keyquorum-data", "`dir`ectory of the journal, the audit log, the soft HSM, the simulator's cards and the management PKI (webconf/)")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8443", "`address` (host:port) to serve HTTPS on; the server certificate covers 127.0.0.1, ::1, localhost, this host and every --host")
	fs.StringVar(&c.pinpad, "pinpad", "sim", "PIN pad: `sim` (virtual pad and cards, operated in the browser; demos and tests only) or pcsc (a Reiner SCT cyberJack e-com through PC/SC)")
	fs.StringVar(&c.reader, "reader", "", "with --pinpad pcsc: the reader's `name` or a prefix of it (default \""+pcsc.DefaultReader+"\"); see `keyquorum reader diagnose`")
	profileArg := fs.String("card-profile", tcos.DefaultProfile, "card `profile`: the layout of the cards' data slots and PINs, a shipped name ("+strings.Join(profileNames(), ", ")+") or the path of a profile file; see `keyquorum card profiles` and `keyquorum card survey`")
	fs.StringVar(&c.virtual, "virtual-reader", "", "with --pinpad pcsc: the control `socket` of the virtual cyberJack driver (cmd/ifd-cyberjacksim, started by scripts/virtual-cyberjack); the simulator panel then operates that reader's virtual cards and keys, so the real PC/SC path can be tried by hand")
	fs.StringVar(&c.hsm, "hsm", "soft", "HSM: `soft` (embedded, keys sealed under a device key in the data dir) or pkcs11 (a real HSM through its PKCS#11 library)")
	fs.StringVar(&c.pkcs11Module, "pkcs11-module", "", "with --hsm pkcs11: `path` of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so")
	fs.StringVar(&c.slot, "slot", "", "with --hsm pkcs11: `label` of the token (the PKCS#11 slot) that holds Keyquorum's keys")
	fs.StringVar(&c.pinFile, "pin-file", "", "with --hsm pkcs11: `file` holding the token's user PIN (one line, readable by the owner only)")
	fs.StringVar(&c.caBundle, "ca-bundle", "", "PEM `file` of further CAs whose client certificates may sign in (e.g. the CA of operators' PIV cards); the management CA is always accepted")
	fs.Func("crl", "a CRL `file` (PEM or DER) of a --ca-bundle CA: its certificates are checked against it on every request, and refused while it is out of date; replace the file to update it (repeat or separate with commas)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				c.crls = append(c.crls, f)
			}
		}
		return nil
	})
	fs.Func("host", "a `name` the server certificate must also cover (DNS name or IP); repeat or separate with commas. The first DNS name is also the name security keys (WebAuthn) are bound to: operators open WebConf at https://NAME:PORT/ (default localhost)", func(v string) error {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				c.hosts = append(c.hosts, h)
			}
		}
		return nil
	})
	fs.Func("webauthn-aaguids", "allow only security keys of these models to be registered: their `AAGUID`s (UUIDs, e.g. cb69481e-8ff7-4039-93ec-0a2729a154a8); repeat or separate with commas. Registration then asks for the key's attestation and refuses a key that sends none. Default: any FIDO2 key", func(v string) error {
		ids, err := operator.ParseAAGUIDs(v)
		c.attest.AAGUIDs = append(c.attest.AAGUIDs, ids...)
		return err
	})
	fs.Func("webauthn-attestation-formats", "allow only registrations whose attestation statement has one of these `formats` (packed, fido-u2f, tpm, apple, android-key, none); repeat or separate with commas. Default: any", func(v string) error {
		formats, err := operator.ParseAttestationFormats(v)
		c.attest.Formats = append(c.attest.Formats, formats...)
		return err
	})
	fs.StringVar(&c.attestRoots, "webauthn-attestation-roots", "", "PEM `file` of the security key vendors' attestation root CAs: a key is registered only when its attestation certificate chains to one of them (proves its model; self-attested keys are refused). Default: none required")
	fs.StringVar(&c.nodeName, "node-name", "", "this node's `name` among its cluster's nodes until a join names it (default: the host name)")
	fs.StringVar(&c.clusterAddr, "cluster-address", "", "the `https://host:port` this node's cluster peers reach it at, told to the node it joins so that node can offer its changes (default: the address WebConf is served at)")
	fs.DurationVar(&c.offerEvery, "cluster-offer-interval", cluster.OfferInterval, "how often this node looks whether its shared state changed and offers it to the nodes that joined it (`duration`; 0: never, they get it when they sync)")
	fs.Int64Var(&c.maxUpload, "max-upload", webconf.DefaultMaxUpload, "largest backup upload accepted, in `bytes`")
	d := ceremony.DefaultTimeouts
	fs.DurationVar(&c.timeouts.OK, "timeout-ok", d.OK, "how long the PIN pad waits for OK or Cancel at a question (\"Write New Key press OK/Cancel\") before the ceremony stalls for Retry")
	fs.DurationVar(&c.timeouts.Card, "timeout-card", d.Card, "how long the PIN pad waits for a card and OK (\"Insert 1. card press OK/Cancel\")")
	fs.DurationVar(&c.timeouts.PIN, "timeout-pin", d.PIN, "how long the PIN pad waits for one PIN entry (each entry of a PIN change gets its own); at most 255s, the longest a pad can be asked to wait")
	fs.DurationVar(&c.timeouts.Removal, "timeout-removal", d.Removal, "how long the PIN pad waits for the card to be taken out")
	fs.BoolVar(&c.recoverAdmin, "recover-admin", false, "at this start, give the first administrator's certificate (DATA/webconf/admin.p12) the admin role again and remove its security keys, so it can register a new one: the way out when every administrator lost their security key (audited)")
	fs.BoolVar(&c.softReal, "allow-soft-hsm-with-real-cards", false, "accept --hsm soft with a real PIN pad (--pinpad pcsc without --virtual-reader): the soft HSM's master backup key can be opened from DATA/hsm alone (its device key lies beside it), so a real card set's key would live on the appliance's disk. Only for trials; never for a key that matters")
	fs.BoolVar(&c.verbose, "v", false, "log debug records too")
	fs.StringVar(&c.logFormat, "log-format", "text", "log lines as `text` (key=value) or json (one JSON object a line, for log shippers)")
	fs.StringVar(&c.configFile, "config", "", "read flags from this `file` (\"name = value\" lines); command-line flags win")
	fs.StringVar(&c.metricsAddr, "metrics-listen", "", "serve Prometheus metrics over plain HTTP at /metrics on this `address` (host:port, e.g. 127.0.0.1:9643); off when empty. They carry no secret and no card serial, and need no client certificate: keep the address on a management network or loopback")
	fs.BoolVar(&c.check, "check", false, "check the flags and the configuration file, print the settings in effect and exit (nothing is opened or created)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, usageErr(stderr, "unexpected argument %q (serve takes flags only)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.configFile != "" {
		if err := applyConfigFile(fs, c.configFile, set); err != nil {
			return nil, usageErr(stderr, "%v", err)
		}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	}

	switch c.pinpad {
	case "sim":
		for _, f := range []string{"reader", "virtual-reader"} {
			if set[f] {
				return nil, usageErr(stderr, "--%s names a PC/SC reader: it needs --pinpad pcsc", f)
			}
		}
	case "pcsc":
	default:
		return nil, usageErr(stderr, "--pinpad must be sim or pcsc, not %q", c.pinpad)
	}
	switch c.hsm {
	case "soft":
		for _, f := range []string{"pkcs11-module", "slot", "pin-file"} {
			if set[f] {
				return nil, usageErr(stderr, "--%s configures a PKCS#11 HSM: it needs --hsm pkcs11", f)
			}
		}
		if c.pinpad == "pcsc" && c.virtual == "" && !c.softReal {
			return nil, usageErr(stderr, "--hsm soft with a real PIN pad is refused: the soft HSM keeps the master backup key under a device key that lies beside it in DATA/hsm, so whoever copies the data directory opens the key of your real cards. Use --hsm pkcs11 with a real HSM, or, for a trial only, give --allow-soft-hsm-with-real-cards")
		}
	case "pkcs11":
		if c.pkcs11Module == "" || c.slot == "" || c.pinFile == "" {
			return nil, usageErr(stderr, "--hsm pkcs11 needs --pkcs11-module, --slot and --pin-file")
		}
		if c.pinpad == "sim" || c.virtual != "" {
			return nil, usageErr(stderr, "the simulator PIN pad cannot be used with a real HSM: its virtual cards are files, and a real master backup key must only go onto real cards (use --pinpad pcsc)")
		}
	default:
		return nil, usageErr(stderr, "--hsm must be soft or pkcs11, not %q", c.hsm)
	}
	if len(c.crls) > 0 && c.caBundle == "" {
		return nil, usageErr(stderr, "--crl lists revoked certificates of a --ca-bundle CA: it needs --ca-bundle (WebConf keeps the management CA's own revocations itself)")
	}
	if c.dataDir == "" {
		return nil, usageErr(stderr, "--data must name a directory")
	}
	for _, t := range []struct {
		flag string
		d    time.Duration
	}{{"timeout-ok", c.timeouts.OK}, {"timeout-card", c.timeouts.Card}, {"timeout-pin", c.timeouts.PIN}, {"timeout-removal", c.timeouts.Removal}} {
		if t.d < time.Second {
			return nil, usageErr(stderr, "--%s must be at least 1s, not %v", t.flag, t.d)
		}
	}
	if c.timeouts.PIN > 255*time.Second {
		return nil, usageErr(stderr, "--timeout-pin must be at most 255s: a PIN pad's timeout is one byte of seconds (bTimerOut)")
	}
	p, err := tcos.LoadProfile(*profileArg)
	if err != nil {
		return nil, usageErr(stderr, "--card-profile: %v", err)
	}
	c.profile = p
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return nil, usageErr(stderr, "--listen must be host:port, e.g. 127.0.0.1:8443: %v", err)
	}
	if c.clusterAddr != "" {
		if u, err := url.Parse(c.clusterAddr); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, usageErr(stderr, "--cluster-address must be like https://node-a.example:8443")
		}
	}
	if c.offerEvery < 0 {
		return nil, usageErr(stderr, "--cluster-offer-interval must not be negative")
	}
	if c.maxUpload <= 0 {
		return nil, usageErr(stderr, "--max-upload must be a positive number of bytes")
	}
	if c.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.metricsAddr); err != nil {
			return nil, usageErr(stderr, "--metrics-listen must be host:port, e.g. 127.0.0.1:9643: %v", err)
		}
		if c.metricsAddr == c.listen && !strings.HasSuffix(c.listen, ":0") {
			return nil, usageErr(stderr, "--metrics-listen must differ from --listen: metrics are served on a listener of their own")
		}
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, usageErr(stderr, "--log-format must be text or json, not %q", c.logFormat)
	}
	return c, nil
}

func profileNames() []string {
	var out []string
	for _, p := range tcos.Profiles() {
		out = append(out, p.Name)
	}
	return out
}

func usageErr(w io.Writer, format string, a ...any) error {
	fmt.Fprintf(w, "keyquorum serve: "+format+"\n", a...)
	return errUsage
}

// runServe is `keyquorum serve`: it opens the pad, the HSM and the journal, serves WebConf until
// ctx ends (SIGINT, SIGTERM), then shuts down in reverse order. A ceremony running at that
// moment is journaled as interrupted, exactly as if the process had died.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	if c.check {
		return printServeSettings(stdout, c)
	}
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if c.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(handler)
	if p := os.Getenv("KEYQUORUM_CPUPROFILE"); p != "" {
		// For bench/webload: where a request's CPU goes under load. A CPU profile holds stack
		// samples, no memory contents.
		stop, err := startCPUProfile(p)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := disableCoreDumps(); err != nil {
		// Not fatal: systemd's LimitCORE=0 does the same; say it so an operator can act.
		log.Warn("could not switch off core dumps", "err", err)
	}
	if locked, why := lockMemory(); locked {
		log.Info("memory locked: nothing of this process goes to swap")
	} else {
		log.Info("memory not locked (the systemd unit keeps the service out of swap with MemorySwapMax=0)", "why", why)
		// The buffers that hold the MBK and shares for minutes are locked one by one instead,
		// which needs only 64 KiB of the limit (internal/secmem).
		if ok, why := secmem.Status(); ok {
			log.Info("key buffers locked: the MBK and shares in ceremonies and the soft HSM are kept out of swap and core dumps")
		} else {
			log.Warn("key buffers not locked", "why", why)
		}
	}
	return serve(ctx, c, stdout, log)
}

func serve(ctx context.Context, c *serveConfig, stdout io.Writer, log *slog.Logger) error {
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	var bundle []*x509.Certificate
	if c.caBundle != "" {
		var err error
		if bundle, err = operator.LoadCABundle(c.caBundle); err != nil {
			return err
		}
	}
	if c.attestRoots != "" {
		roots, err := operator.LoadCABundle(c.attestRoots)
		if err != nil {
			return fmt.Errorf("--webauthn-attestation-roots: %w", err)
		}
		c.attest.Roots = roots
	}

	// Listen first: a port in use is found before anything else is touched.
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	defer ln.Close()
	hosts := c.hosts
	if h, _, _ := net.SplitHostPort(c.listen); h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	pki, err := operator.LoadPKI(filepath.Join(c.dataDir, "webconf"), hosts, time.Now())
	if err != nil {
		return err
	}

	var pad pinpad.Terminal
	var padStatus web.PadStatus // nil: the simulator, always there
	var simPad *sim.Pad
	var virtualPanel *cyberjacksim.Panel
	var padName string
	switch c.pinpad {
	case "sim":
		simPad, err = sim.Open(filepath.Join(c.dataDir, "sim"), sim.WithProfile(c.profile))
		if err != nil {
			return err
		}
		pad, padName = simPad, "SIMULATOR: "+simPad.Name()
	case "pcsc":
		t, err := pcsc.Open(ctx, pcsc.Options{Reader: c.reader, Profile: c.profile, Logger: log.With("room", "pinpad")})
		if err != nil {
			return fmt.Errorf("open PIN pad: %w", err)
		}
		pad, padName, padStatus = t, pcscPadName(ctx, t), pcscPadStatus{t: t}
		if c.virtual != "" {
			panel, err := cyberjacksim.OpenPanel(filepath.Join(c.dataDir, "cyberjacksim"), c.virtual, log.With("room", "pinpad"))
			if err != nil {
				return fmt.Errorf("open virtual reader: %w", err)
			}
			defer panel.Close()
			panel.SetProfile(c.profile)
			virtualPanel, padName = panel, "SIMULATOR: virtual cyberJack through PC/SC ("+t.Name()+")"
			padStatus = pcscPadStatus{t: t, virtual: true}
		}
	}
	defer pad.Close()

	var h hsm.HSM
	var hsmName string
	switch c.hsm {
	case "soft":
		s, err := soft.Open(filepath.Join(c.dataDir, "hsm"))
		if err != nil {
			return err
		}
		h, hsmName = s, "soft (embedded, "+filepath.Join(c.dataDir, "hsm")+")"
	case "pkcs11":
		pin, err := readPINFile(c.pinFile)
		if err != nil {
			return err
		}
		p, err := pkcs11.Open(ctx, pkcs11.Config{Module: c.pkcs11Module, Token: c.slot, PIN: pin})
		hsm.Zero(pin)
		if err != nil {
			return err
		}
		h, hsmName = p, "PKCS#11 token "+c.slot+" ("+c.pkcs11Module+")"
	}
	defer h.Close()
	warnPendingRestore(ctx, h, log.With("room", "hsm"))

	var metricsURL string
	probes := monitor.Probes{DataDir: c.dataDir, HSM: h, Logger: log.With("room", "monitor")}
	if padStatus != nil {
		probes.Pad = padPresence{padStatus}
	}
	metrics := monitor.New(probes)
	if c.metricsAddr != "" {
		mln, err := net.Listen("tcp", c.metricsAddr)
		if err != nil {
			return fmt.Errorf("listen on %s for metrics: %w", c.metricsAddr, err)
		}
		msrv := &http.Server{Handler: metricsMux(metrics), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
		go msrv.Serve(mln)
		defer msrv.Close()
		metricsURL = "http://" + mln.Addr().String() + "/metrics"
	}

	mgr, err := ceremony.Open(ctx, ceremony.Config{Dir: c.dataDir, Pad: pad, HSM: h, Timeouts: c.timeouts, Logger: log.With("room", "ceremony"), OnAudit: metrics.ObserveAudit})
	if err != nil {
		return err
	}
	defer mgr.Close()

	ops, err := operator.OpenOperators(filepath.Join(pki.Dir, operator.OperatorsFile))
	if err != nil {
		return err
	}
	defer ops.Close()
	rpID := relyingPartyID(c.hosts)

	cfg := webconf.Config{
		PKI: pki, CABundle: bundle, Runner: mgr, Records: mgr, Audit: mgr, HSM: h, MaxUpload: c.maxUpload,
		Appliance: web.Appliance{PadName: padName, Pad: padStatus, PadTimeouts: c.timeouts, HSMName: hsmName, DataDir: c.dataDir},
		Logger:    log.With("room", "webconf"),
		Operators: ops, CRLFiles: c.crls, RPID: rpID, RecoverAdmin: c.recoverAdmin,
		Attestation: c.attest, Monitor: metrics, NodeName: c.nodeName, OfferInterval: c.offerEvery, ClusterAddress: strings.TrimSuffix(c.clusterAddr, "/"),
	}
	if cfg.ClusterAddress == "" {
		cfg.ClusterAddress = "https://" + displayAddr(ln.Addr(), c.listen, rpID)
	}
	if simPad != nil {
		cfg.Sim = simPad
	}
	if virtualPanel != nil {
		cfg.Sim = virtualPanel
	}
	if sv, ok := pad.(web.CardSurveyor); ok {
		cfg.Surveyor = sv // the Smart cards page's card survey
	}
	srv, err := webconf.New(cfg)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Keyquorum WebConf: https://%s/\n", displayAddr(ln.Addr(), c.listen, rpID))
	if simPad != nil {
		fmt.Fprintf(stdout, "  PIN pad:       SIMULATOR (virtual pad and cards in the browser; demos and tests only)\n")
	} else {
		fmt.Fprintf(stdout, "  PIN pad:       %s\n", padName)
	}
	fmt.Fprintf(stdout, "  Pad timeouts:  OK %v, card %v, PIN %v, removal %v\n", c.timeouts.OK, c.timeouts.Card, c.timeouts.PIN, c.timeouts.Removal)
	fmt.Fprintf(stdout, "  Card profile:  %s (%s)\n", c.profile.Name, c.profile.Description)
	fmt.Fprintf(stdout, "  HSM:           %s\n", hsmName)
	if metricsURL != "" {
		fmt.Fprintf(stdout, "  Metrics:       %s (and /healthz there)\n", metricsURL)
	}
	fmt.Fprintf(stdout, "  CA certificate: %s (SHA-256 %s)\n", pki.CACertPath(), pki.Fingerprint())
	created := ""
	if pki.AdminCreated {
		created = " (created now)"
	}
	fmt.Fprintf(stdout, "  Administrator certificate%s: %s\n", created, pki.AdminP12Path())
	fmt.Fprintf(stdout, "  Its password:  %s\n", pki.AdminPasswordPath())
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	fmt.Fprintf(stdout, "  Security keys: work at https://%s/ only (WebAuthn relying party %s); register one on the Account page before any ceremony\n", net.JoinHostPort(rpID, port), rpID)
	fmt.Fprintf(stdout, "Import the administrator certificate into the browser, trust the CA certificate, then open the URL.\n")
	if c.hsm == "soft" && c.pinpad == "pcsc" && c.virtual == "" {
		fmt.Fprintf(stdout, "WARNING: the soft HSM with real cards (--allow-soft-hsm-with-real-cards): the master backup key can be opened from %s alone. Trials only.\n", filepath.Join(c.dataDir, "hsm"))
		log.Warn("soft HSM with a real PIN pad: the master backup key can be opened from the data directory alone", "data", c.dataDir)
	}
	if code := srv.RecoveryCode(); code != "" {
		fmt.Fprintf(stdout, "Administrator recovery pending: the recovered administrator's next security key needs this one-time code: %s\n", code)
	}

	// The listener is bound and the server is about to accept: systemd may start what waits for
	// us. Outside systemd (no NOTIFY_SOCKET) this does nothing.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("could not tell systemd the service is ready", "err", err)
	}
	err = srv.Serve(ctx, ln)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	log.Info("webconf stopped")
	return err
}

// metricsMux serves /metrics, and /healthz for a scraper that watches both on one address.
func metricsMux(m *monitor.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", m.Health())
	return mux
}

// relyingPartyID is the host name security keys are bound to: the first --host that is a DNS
// name (an IP address cannot be one), else localhost.
func relyingPartyID(hosts []string) string {
	for _, h := range hosts {
		if net.ParseIP(h) == nil {
			return strings.ToLower(h)
		}
	}
	return operator.DefaultRPID
}

// displayAddr is the address to print: the port actually bound (for ":0") at the name security
// keys are bound to (rpID) when that name reaches the listener, else the configured host.
func displayAddr(a net.Addr, configured, rpID string) string {
	host, _, _ := net.SplitHostPort(configured)
	_, port, _ := net.SplitHostPort(a.String())
	ip := net.ParseIP(host)
	switch {
	case rpID != operator.DefaultRPID:
		host = rpID // a configured host name: the server certificate covers it
	case host == "" || host == "localhost" || (ip != nil && (ip.IsUnspecified() || ip.IsLoopback())):
		host = operator.DefaultRPID
	}
	return net.JoinHostPort(host, port)
}

// readPINFile reads the PKCS#11 user PIN. A file others can read is refused: the PIN would not
// be a secret.
func readPINFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read pin file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read pin file %s: it is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pin file: %w", err)
	}
	pin := bytes.TrimRight(b, "\r\n")
	out := make([]byte, len(pin))
	copy(out, pin)
	hsm.Zero(b)
	if len(out) == 0 {
		return nil, errors.New("read pin file: it is empty")
	}
	return out, nil
}

// padPresence is a PIN pad that can say whether it is connected, as health and the metrics ask.
type padPresence struct{ s web.PadStatus }

func (p padPresence) Present(ctx context.Context) bool {
	_, err := p.s.Status(ctx)
	return err == nil
}

// pcscPadStatus is the PC/SC PIN pad as WebConf's status shows it: its name and firmware now,
// or why it is not there ("no PIN pad connected").
type pcscPadStatus struct {
	t       *pcsc.Terminal
	virtual bool // the virtual cyberJack: the page must say SIMULATOR
}

func (p pcscPadStatus) Status(ctx context.Context) (string, error) {
	if _, err := p.t.Status(ctx); err != nil {
		return "", err
	}
	if p.virtual {
		return "SIMULATOR: virtual cyberJack through PC/SC (" + pcscPadName(ctx, p.t) + ")", nil
	}
	return pcscPadName(ctx, p.t), nil
}

// pcscPadName says which PC/SC PIN pad the service found at start and its firmware, or that
// none is connected yet (the service then finds it when it is plugged in).
func pcscPadName(ctx context.Context, t *pcsc.Terminal) string {
	name, err := t.Status(ctx)
	if err != nil {
		return fmt.Sprintf("%s (%v: ceremonies wait until it is plugged in)", t.Name(), err)
	}
	fw, err := t.Firmware(ctx)
	switch {
	case err != nil:
		return name
	case fw.Revision >= 0 && fw.Older(part10.MinPINDirectFirmware):
		return fmt.Sprintf("%s (firmware %s: %v)", name, fw, &pinpad.FirmwareError{Firmware: fw.String(), Need: part10.MinPINDirectFirmware.String()})
	}
	return fmt.Sprintf("%s (firmware %s)", name, fw)
}
