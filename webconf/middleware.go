package webconf

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// contentSecurityPolicy allows this origin's script, style and event stream and nothing else:
// no inline script, no framing, forms post only here.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders sets the headers every response carries, error pages included.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// public paths are served without a client certificate: what a browser needs to show the page
// that explains how to get one.
func isPublic(path string) bool {
	// A cluster peer's offer (cluster.OfferPath) carries a version and nothing else: the node
	// then pulls from the peer it knows, over mutual TLS.
	return path == "/ca.pem" || path == "/crl.pem" || strings.HasPrefix(path, "/static/") || path == cluster.OfferPath
}

// requireClientCert refuses every non-public request without a verified client certificate and
// puts the operator's identity into the request context. The TLS layer has verified the chain
// (against the management CA and the bundle) when one was sent; [operator.Auth.Admit] refuses a
// revoked certificate and finds the operator's role.
func (s *Server) requireClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isPublic(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			s.log.Info("request without client certificate refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			refuseUnread(w, r)
			s.rd.Problem(w, r, web.NoCertificate(s.cfg.PKI))
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		if cluster.IsNodeCert(leaf, s.cfg.PKI.CA) {
			// A node certificate fetches a challenge and the state and is nobody's account: no page, no
			// security key, no entry in the operator list.
			if r.URL.Path != cluster.StatePath && r.URL.Path != cluster.ChallengePath && r.URL.Path != cluster.SummaryPath {
				s.log.Info("node certificate refused outside the cluster state", "node", leaf.Subject.String(), "path", r.URL.Path)
				refuseUnread(w, r)
				s.rd.Problem(w, r, web.NodeNotOperator())
				return
			}
			op, err := s.auth.AdmitNode(r.TLS.VerifiedChains[0], r.URL.Path)
			if err != nil {
				s.countRevoked(err)
				refuseUnread(w, r)
				s.rd.Problem(w, r, admitProblem(op.Ident, err))
				return
			}
			next.ServeHTTP(w, r.WithContext(operator.NewContext(r.Context(), op)))
			return
		}
		op, err := s.auth.Admit(r.TLS.VerifiedChains[0], r.URL.Path, time.Now())
		if err != nil {
			s.countRevoked(err)
			refuseUnread(w, r)
			s.rd.Problem(w, r, admitProblem(op.Ident, err))
			return
		}
		op.CSRF = s.csrf.token(leaf, time.Now())
		next.ServeHTTP(w, r.WithContext(operator.NewContext(r.Context(), op)))
	})
}

// maxOffer bounds a peer's offer (cluster.Offer): a node ID and a version.
const maxOffer = 16 << 10

// refuseUnread makes a refusal end the connection instead of reading the request's body: left
// alone, net/http reads up to 256 KiB of an unread body after the answer (to keep an HTTP/1
// connection open, and again when it closes the body), at the pace the client chooses, until
// the read deadline. A read deadline in the past makes that read fail at once; the answer is
// written all the same. (HTTP/2 resets the stream without reading it.)
func refuseUnread(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
		http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
	}
}

// csrfGuard issues and checks the CSRF tokens. A token is HMAC-SHA256 under a key derived for
// its time bucket (csrfPeriod) from a master key kept beside the management PKI, over
// SHA-256(client certificate): it needs no session state, differs per operator and certificate,
// survives a restart, and rotates — a page's token is accepted in its own bucket and the next,
// so a token that leaks (a screenshot, a proxy log of a form) is worthless within at most two
// periods, and a page left open longer says to reload it.
type csrfGuard struct {
	key []byte
	cop *http.CrossOriginProtection
}

// csrfPeriod is a CSRF token's time bucket: a token is valid for one to two periods. Long
// enough for the longest ceremony with its live view open, short enough to age out a leak.
const csrfPeriod = 12 * time.Hour

func newCSRFGuard(key []byte) *csrfGuard {
	return &csrfGuard{key: key, cop: http.NewCrossOriginProtection()}
}

// token is the CSRF token of cert for the time bucket of now: what a page rendered now carries.
func (g *csrfGuard) token(cert *x509.Certificate, now time.Time) string {
	return g.tokenIn(cert, now.Unix()/int64(csrfPeriod/time.Second))
}

func (g *csrfGuard) tokenIn(cert *x509.Certificate, bucket int64) string {
	// The bucket's key: the master key's HMAC of the bucket number, so every period signs
	// with a key of its own.
	km := hmac.New(sha256.New, g.key)
	km.Write([]byte("keyquorum webconf csrf key\x00"))
	km.Write(binary.BigEndian.AppendUint64(nil, uint64(bucket)))
	sum := sha256.Sum256(cert.Raw)
	m := hmac.New(sha256.New, km.Sum(nil))
	m.Write([]byte("keyquorum webconf csrf v2\x00"))
	m.Write(sum[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// valid reports whether got is cert's token of now's bucket or the one before.
func (g *csrfGuard) valid(got string, cert *x509.Certificate, now time.Time) bool {
	b := now.Unix() / int64(csrfPeriod/time.Second)
	ok := 0
	for _, bucket := range []int64{b, b - 1} {
		ok |= subtle.ConstantTimeCompare([]byte(got), []byte(g.tokenIn(cert, bucket)))
	}
	return ok == 1
}

// csrfField is the form field, csrfHeader the header (script requests) that carry the token.
const (
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// errCSRF is a POST that failed a CSRF check.
var errCSRF = errors.New("csrf check failed")

// check runs both CSRF checks on a state-changing request. The body is bounded before it is
// parsed; a multipart upload carries its token (and its security key's) in its leading fields,
// which are read without reading the upload that follows (web.ReadLeading); the request it
// returns carries that stream on to the handler. No token is ever taken from the URL.
func (g *csrfGuard) check(r *http.Request) (*http.Request, error) {
	if err := g.cop.Check(r); err != nil {
		return r, fmt.Errorf("%w: %v", errCSRF, err)
	}
	got := r.Header.Get(csrfHeader)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if got == "" && web.IsAPI(r) {
		// The command line's JSON or backup: a browser cannot send either cross-site
		// without a CORS preflight, which WebConf never grants (see apiCSRF); the origin
		// checks above still ran.
		return r, apiCSRF(r)
	}
	if ct == "multipart/form-data" {
		// Read even when the header carries the token: the leading fields are what an
		// approval binds (requestDetails), and the handler takes its options from them.
		m, err := web.ReadLeading(r)
		if err != nil {
			return r, err
		}
		r = r.WithContext(web.WithMultipart(r.Context(), m))
		if got == "" {
			got = m.Fields[csrfField]
		}
	} else if got == "" {
		if err := r.ParseForm(); err != nil {
			return r, err
		}
		got = r.PostForm.Get(csrfField)
	}
	if got == "" {
		return r, fmt.Errorf("%w: no token", errCSRF)
	}
	if !g.valid(got, r.TLS.VerifiedChains[0][0], time.Now()) {
		return r, fmt.Errorf("%w: wrong or expired token", errCSRF)
	}
	return r, nil
}

// protect bounds request bodies and enforces the CSRF checks on every method but GET and HEAD
// (which change nothing here).
func (s *Server) protect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == cluster.OfferPath {
			// No operator, no cookie, no form: nothing to forge (see isPublic).
			r.Body = http.MaxBytesReader(w, r.Body, maxOffer)
			next.ServeHTTP(w, r)
			return
		}
		limit := int64(maxForm)
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
			limit = s.cfg.MaxUpload + maxForm // the file and the few fields around it
		} else if apiUpload(r) {
			limit = s.cfg.MaxUpload // the backup itself (POST /api/v1/restore)
		}
		if r.ContentLength > limit {
			s.rd.Problem(w, r, web.TooLarge(limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		op, ok := operator.FromContext(r.Context())
		if !ok {
			s.rd.Problem(w, r, web.NoCertificate(s.cfg.PKI))
			return
		}
		r, err := s.csrf.check(r)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.rd.Problem(w, r, web.TooLarge(limit))
				return
			}
			s.log.Warn("csrf check failed", "path", r.URL.Path, "operator", op.Name, "err", err)
			s.rd.Problem(w, r, web.Problem{Status: http.StatusForbidden, Code: web.CodeCSRF, Title: "Request refused (CSRF check)",
				What: "The form you sent did not carry this page's security token, its token has expired (tokens last 12 to 24 hours: a page left open that long), or it came from another site.",
				Todo: "Go back, reload the page and send the form again. If you did not send a form yourself, close the other site's tab."})
			return
		}
		if sum := r.Header.Get(operator.ContentDigestHeader); sum != "" && apiUpload(r) {
			want, err := hex.DecodeString(sum)
			if err != nil || len(want) != sha256.Size {
				s.rd.Problem(w, r, web.BadForm("The "+operator.ContentDigestHeader+" header must be the upload's SHA-256 in hex (64 digits)."))
				return
			}
			// The handlers read an upload whole before they change anything (a restore spools
			// it, an import reads it): the end of the body is where a file other than the
			// approved one is found, in time.
			r.Body = &digestReader{r: r.Body, h: sha256.New(), want: want}
		}
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); web.IsAPI(r) && ct == "application/json" {
			// A JSON body (at most maxForm) is kept for the approval check, which binds its
			// fields (requestDetails); the handler reads it as it came.
			b, err := io.ReadAll(r.Body)
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.rd.Problem(w, r, web.TooLarge(limit))
				return
			} else if err != nil {
				s.rd.Problem(w, r, web.BadForm("The request's body could not be read: "+err.Error()+"."))
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), jsonBodyKey{}, b))
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		next.ServeHTTP(w, r)
	})
}

// recoverPanics turns a panic in a handler into an error page instead of a dropped connection.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				s.rd.Problem(w, r, web.Problem{Status: http.StatusInternalServerError, Title: "Internal error",
					What: "WebConf hit an unexpected condition handling this request.",
					Todo: "Reload the page. If it happens again, note the time and check the service log."})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// apiCSRF is the CSRF rule of a state-changing API request.
//
// CSRF: the certificate is an ambient credential — a browser presents it to any page that
// makes it send a request here — so the API does not rely on it alone. A state-changing API
// request must have the content type application/json or application/octet-stream: a page of
// another site can send neither without a CORS preflight, which WebConf never grants, and
// forms can send neither at all. The Origin / Sec-Fetch-Site checks of the pages still run
// first. WebConf sets no cookies, so there is no session for a forged request to ride on, and a
// state-changing API request that carries a cookie anyway (set by another service on the same
// host name: cookies do not keep to a port) is refused: only a browser sends one, and no page
// of WebConf calls the API.
func apiCSRF(r *http.Request) error {
	if r.Header.Get("Cookie") != "" {
		// The command line sends none; a browser does when any site on this host set one
		// (cookies do not keep to a port). No page of WebConf calls the API.
		return fmt.Errorf("%w: an API request carries no cookies", errCSRF)
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" || ct == "application/octet-stream" {
		return nil
	}
	return fmt.Errorf("%w: an API request must be sent as application/json or application/octet-stream", errCSRF)
}

// digestReader is an upload's body that fails at its end, with web.ErrContentDigest, when its
// SHA-256 is not the one its header named.
type digestReader struct {
	r    io.ReadCloser
	h    hash.Hash
	want []byte
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF && !hmac.Equal(d.h.Sum(nil), d.want) {
		return n, web.ErrContentDigest
	}
	return n, err
}

func (d *digestReader) Close() error { return d.r.Close() }

// apiUpload reports whether a request is an API upload, bounded by MaxUpload rather than the
// form limit.
func apiUpload(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return web.IsAPI(r) && ct == "application/octet-stream"
}
