package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// Exit statuses of the CLI subcommands: what a script can rely on.
const (
	exitOK          = 0 // done
	exitFailed      = 1 // the operation failed or was refused for its content (e.g. a backup of another key)
	exitUsage       = 2 // wrong arguments: nothing was sent
	exitUnreachable = 3 // the service could not be reached, or TLS failed (wrong CA, certificate refused)
	exitDenied      = 4 // refused for who you are: no or revoked certificate, role, missing approval
	exitConflict    = 5 // refused for the appliance's state now: busy, no key loaded, nothing to resume, …
	exitCeremony    = 6 // the ceremony watched ended without success (aborted or interrupted)
)

// exitCodesHelp is the table every client subcommand's --help prints.
const exitCodesHelp = `exit status:
  0  done
  1  failed, or refused for its content (e.g. a backup of another master backup key)
  2  usage error: nothing was sent
  3  the service could not be reached, or TLS failed (wrong --ca, certificate not accepted)
  4  refused for who you are: no or revoked certificate, your role, a missing approval
  5  refused for the appliance's state: a ceremony runs, no key is loaded, nothing to resume, …
  6  the ceremony ended without success (aborted, cancelled, interrupted)
Errors go to stderr as "keyquorum CMD: TITLE: WHAT" and a line saying what to do; with --json
the API's problem object {"code", "title", "what", "todo"} is printed to stdout as well.
`

// clientEnvHelp documents the connection settings.
const clientEnvHelp = `connection (flags, else environment, else the defaults):
  --addr      KEYQUORUM_ADDR              WebConf's address (default https://127.0.0.1:8443)
  --p12       KEYQUORUM_P12               client certificate as PKCS#12 (default
                                          keyquorum-data/webconf/admin.p12 if it exists)
  --p12-password-file KEYQUORUM_P12_PASSWORD_FILE   its password (default: FILE.password
                                          beside it, as serve writes admin.p12.password)
  --cert/--key KEYQUORUM_CLIENT_CERT/KEYQUORUM_CLIENT_KEY   PEM certificate and key instead
  --ca        KEYQUORUM_CA                CA certificate(s) the server must chain to (default
                                          keyquorum-data/webconf/ca.pem if it exists)
`

// approvalEnvHelp documents the approval of the commands that need one.
const approvalEnvHelp = `  --approval  KEYQUORUM_APPROVAL          approval token for this very request: run the
                                          command without it first; it is refused (exit 4)
                                          and names a request (e.g. KQ7D-M2XA) with what it
                                          would do; approve that request on your account
                                          page with your security key, then run the same
                                          command again with the token shown. It is spent
                                          by the first request that uses it, and refused for
                                          a request with other values (quorum, label, peer)
`

// exitError carries an exit status and, when the message was printed already, nothing more.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// apiError is a problem answered by the service.
type apiError struct {
	status  int
	problem web.APIProblem
}

func (e *apiError) Error() string {
	msg := e.problem.Title
	if e.problem.What != "" {
		msg += ": " + e.problem.What
	}
	if e.problem.Todo != "" {
		msg += "\n  " + e.problem.Todo
	}
	return msg
}

func (e *apiError) ExitCode() int {
	switch {
	case e.status == http.StatusUnauthorized || e.status == http.StatusForbidden:
		return exitDenied
	case e.status == http.StatusConflict:
		return exitConflict
	}
	return exitFailed
}

// unreachableError is a failure to connect or to complete TLS.
type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string {
	hint := "check --addr and that keyquorum serve runs there"
	var cve *tls.CertificateVerificationError
	if errors.As(e.err, &cve) {
		hint = "the server's certificate is not from the CA given with --ca (or KEYQUORUM_CA): check you reach the right appliance and trust its ca.pem"
	} else if strings.Contains(e.err.Error(), "certificate") {
		hint = "the service refused the client certificate: use a certificate of its management CA (or of a CA it trusts)"
	}
	return fmt.Sprintf("connect to %s: %v\n  %s", e.addr, e.err, hint)
}
func (e *unreachableError) Unwrap() error { return e.err }
func (e *unreachableError) ExitCode() int { return exitUnreachable }

// clientOptions are the connection flags every client subcommand takes.
type clientOptions struct {
	addr, p12, p12Password, cert, key, ca, approval string
	json                                            bool
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func existing(path string) string {
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return ""
}

// addClientFlags registers the connection flags on fs, and --approval for a command that
// needs one.
func addClientFlags(fs *flag.FlagSet, approval bool) *clientOptions {
	o := &clientOptions{}
	def := filepath.Join("keyquorum-data", "webconf")
	fs.StringVar(&o.addr, "addr", envOr("KEYQUORUM_ADDR", "https://127.0.0.1:8443"), "WebConf's `address`")
	fs.StringVar(&o.p12, "p12", os.Getenv("KEYQUORUM_P12"), "client certificate and key as a PKCS#12 `file`")
	fs.StringVar(&o.p12Password, "p12-password-file", os.Getenv("KEYQUORUM_P12_PASSWORD_FILE"), "`file` holding the PKCS#12 password (default FILE.password)")
	fs.StringVar(&o.cert, "cert", os.Getenv("KEYQUORUM_CLIENT_CERT"), "client certificate, PEM `file` (with --key)")
	fs.StringVar(&o.key, "key", os.Getenv("KEYQUORUM_CLIENT_KEY"), "client key, PEM `file` (with --cert)")
	fs.StringVar(&o.ca, "ca", envOr("KEYQUORUM_CA", existing(filepath.Join(def, operator.CACertFile))), "PEM `file` of the CA the server certificate must chain to")
	if approval {
		secretVar(fs, &o.approval, "approval", "KEYQUORUM_APPROVAL", "approval `token` for this action (from your account page)")
	}
	fs.BoolVar(&o.json, "json", false, "print the service's JSON answer instead of text")
	return o
}

// client is a connection to WebConf's JSON API.
type client struct {
	base     *url.URL
	hc       *http.Client
	approval string
}

func (o *clientOptions) dial() (*client, error) {
	base, err := url.Parse(strings.TrimRight(o.addr, "/"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, &exitError{exitUsage, fmt.Errorf("--addr must be an https address like https://127.0.0.1:8443, not %q", o.addr)}
	}
	cert, err := o.certificate()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if o.ca != "" {
		pem, err := os.ReadFile(o.ca)
		if err != nil {
			return nil, &exitError{exitUsage, fmt.Errorf("read --ca: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &exitError{exitUsage, fmt.Errorf("read --ca %s: no PEM certificate in it", o.ca)}
		}
		cfg.RootCAs = pool
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext, TLSHandshakeTimeout: 10 * time.Second}
	return &client{base: base, hc: &http.Client{Transport: tr}, approval: o.approval}, nil
}

// certificate loads the client certificate: --cert/--key, else --p12, else the local
// administrator's PKCS#12 file of a service started in this directory.
func (o *clientOptions) certificate() (tls.Certificate, error) {
	if o.cert != "" || o.key != "" {
		if o.cert == "" || o.key == "" || o.p12 != "" {
			return tls.Certificate{}, errors.New("give --cert and --key together, or --p12 alone")
		}
		c, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load client certificate: %w", err)
		}
		return c, nil
	}
	p12 := o.p12
	if p12 == "" {
		p12 = existing(filepath.Join("keyquorum-data", "webconf", operator.AdminP12File))
	}
	if p12 == "" {
		return tls.Certificate{}, errors.New("no client certificate: give --p12 FILE (and its --p12-password-file) or --cert and --key, or set KEYQUORUM_P12")
	}
	pwFile := o.p12Password
	if pwFile == "" {
		pwFile = p12 + ".password"
	}
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read the PKCS#12 password: %w (give --p12-password-file)", err)
	}
	der, err := os.ReadFile(p12)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read client certificate: %w", err)
	}
	key, cert, cas, err := pkcs12.DecodeChain(der, strings.TrimRight(string(pw), "\r\n"))
	clear(pw)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read client certificate %s: %v (is the password file right?)", p12, err)
	}
	out := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	for _, c := range cas {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// request sends one API request. A body that is not an io.Reader is sent as JSON. A status
// other than 2xx is an *apiError; a failure to connect an *unreachableError.
func (c *client) request(ctx context.Context, method, path string, body any, approve bool) (*http.Response, error) {
	var rd io.Reader
	ctype, digest := "", ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "application/octet-stream"
		if rs, ok := b.(io.ReadSeeker); ok {
			// The file's SHA-256 goes with it: an approval binds it, and the service refuses
			// the upload if the body turns out to be another file.
			h := sha256.New()
			if _, err := io.Copy(h, rs); err != nil {
				return nil, fmt.Errorf("read the file to send: %w", err)
			}
			if _, err := rs.Seek(0, io.SeekStart); err != nil {
				return nil, fmt.Errorf("read the file to send: %w", err)
			}
			digest = hex.EncodeToString(h.Sum(nil))
		}
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	ref, err := url.Parse(path)
	if err != nil {
		return nil, err
	}
	u := c.base.JoinPath(ref.Path)
	u.RawQuery = ref.RawQuery
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	} else if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	if approve && c.approval != "" {
		req.Header.Set(operator.ApprovalHeader, c.approval)
	}
	if digest != "" {
		req.Header.Set(operator.ContentDigestHeader, digest)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &unreachableError{addr: c.base.Host, err: unwrapURL(err)}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		e := &apiError{status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e.problem) != nil || e.problem.Title == "" {
			e.problem = web.APIProblem{Code: "http", Title: resp.Status, What: strings.TrimSpace(string(b))}
		}
		return nil, e
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// call sends a request and decodes a JSON answer into out (nil: discard).
func (c *client) call(ctx context.Context, method, path string, body, out any, approve bool) error {
	resp, err := c.request(ctx, method, path, body, approve)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the service's answer: %w", err)
	}
	return nil
}

// printJSON prints v indented, for --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
