package webconf

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// admitProblem explains why [operator.Auth.Admit] refused a certificate of identity id.
func admitProblem(id operator.Identity, err error) web.Problem {
	var re *operator.RevokedError
	var ce *operator.CRLError
	switch {
	case errors.As(err, &re):
		return web.Revoked(re.ID, re.By)
	case errors.As(err, &ce):
		return web.Problem{Status: http.StatusForbidden, Title: "Revocation list unusable",
			What: fmt.Sprintf("Certificates of %s are checked against the revocation list %s, which cannot be used: %s.", id.Issuer, ce.Path, ce.Problem),
			Todo: "Ask the appliance's administrator to install a current CRL of your CA at that path (replace the file; WebConf reads it again by itself). Until then certificates of your CA are refused."}
	case errors.Is(err, operator.ErrSubjectUnusable):
		return web.Problem{Status: http.StatusForbidden, Title: "Certificate subject not usable",
			What: "The client certificate's subject is empty, not printable, or longer than 256 characters, so it cannot name you in the audit log.",
			Todo: "Use a client certificate with a subject that names you (issued by the management CA or your organisation's CA)."}
	}
	return web.Problem{Status: http.StatusInternalServerError, Title: "Operator list unavailable",
		What: "WebConf could not read its operator list: " + err.Error(),
		Todo: "Check the service log and the data directory's disk, then reload."}
}

// authorizeRoutes is the middleware between the CSRF checks and the routes: it finds the
// request's route, its action, and lets it through only if the operator's role allows the
// action and, for a dangerous one, the request carries a fresh assertion's token.
func (s *Server) authorizeRoutes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isPublic(r.URL.Path) {
			mux.ServeHTTP(w, r)
			return
		}
		_, pattern := mux.Handler(r)
		a, ok := actionOf(pattern, formOf(r))
		if !ok {
			s.log.Error("route without an access rule refused: add it to routeActions in routeactions.go", "pattern", pattern, "path", r.URL.Path)
			s.rd.Problem(w, r, web.Problem{Status: http.StatusForbidden, Title: "No access rule for this page",
				What: "This page has no rule that says which roles may use it, so nobody may.",
				Todo: "This is a defect of this WebConf build: note the address and report it."})
			return
		}
		if a != actionInHandler && !s.authorize(w, r, a) {
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// formOf is the request's urlencoded form (the CSRF check has parsed it, or parses it now);
// other bodies are not read here.
func formOf(r *http.Request) url.Values {
	if r.Method != http.MethodPost {
		return nil
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return nil
	}
	return r.PostForm
}

// authorize checks that the request's operator may do a, and for a dangerous action consumes
// the token of a fresh WebAuthn assertion made for a (the ApprovalHeader or the form field
// "webauthn", an upload's leading field). When it returns false it has answered the request. The
// handlers of the JSON API that learn their action from the body call it themselves.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, a operator.Action) bool {
	op, ok := operator.FromContext(r.Context())
	if !ok {
		s.rd.Problem(w, r, web.NoCertificate(s.cfg.PKI))
		return false
	}
	if !operator.Allowed(op.Role, a) {
		s.log.Info("action refused for the operator's role", "operator", op.Name, "role", op.Role.String(), "action", a)
		if op.Role == operator.RoleNone {
			s.rd.Problem(w, r, web.NoRole(op))
		} else {
			s.rd.Problem(w, r, web.NotAllowed(op, a))
		}
		return false
	}
	if !operator.NeedsFresh(a, &op.Rec) {
		return true
	}
	if len(op.Rec.Keys) == 0 {
		s.rd.Problem(w, r, web.RegisterKey(op, a, s.auth.RPID()))
		return false
	}
	d, bound, err := requestDetails(r, a)
	if err != nil {
		s.rd.Problem(w, r, web.Problem{Status: http.StatusBadRequest, Code: web.CodeBadRequest, Title: "Request not accepted",
			What: "The request's details cannot be taken for its approval: " + err.Error() + ".",
			Todo: "Check the request (keyquorum help) and send it again."})
		return false
	}
	var dp *operator.Details
	if bound {
		dp = &d
	}
	now := time.Now()
	tok := stepUpToken(r)
	if err := s.auth.Steps().Consume(tok, op.ID, a, dp, now); err != nil {
		s.log.Info("dangerous action refused without a fresh assertion", "operator", op.Name, "action", a, "err", err)
		p := web.NeedAssertion(a, err)
		if web.IsAPI(r) && bound {
			// The command line cannot ask for a security key: the request waits, by a short ID
			// and in words, on the operator's account page for exactly this approval.
			if pr, herr := s.auth.Steps().Hold(op.ID, d, now); herr == nil {
				p = web.ApproveRequest(pr, err, tok != "")
			}
		}
		s.rd.Problem(w, r, p)
		return false
	}
	s.log.Info("fresh assertion accepted", "operator", op.Name, "action", a)
	return true
}

// requestDetails are the parameters of a dangerous request that its approval binds (see
// operator.Details): an urlencoded form's fields (without the CSRF and approval tokens), or an
// API request's JSON body (kept by protect) and query parameters (with an upload's SHA-256),
// or an upload form's leading fields. bound is false for registering a further security key,
// whose approval binds the action alone.
func requestDetails(r *http.Request, a operator.Action) (d operator.Details, bound bool, err error) {
	if a == operator.ActionKeyAdd {
		// A further security key: the assertion is made for registering a key on this page;
		// the key's name is no detail worth binding.
		return operator.Details{Action: a}, false, nil
	}
	if web.IsAPI(r) {
		body, _ := r.Context().Value(jsonBodyKey{}).([]byte)
		d, err := operator.DetailsOfJSON(a, body, r.URL.Query())
		if err == nil && apiUpload(r) {
			// The file itself: its SHA-256, which protect checks the body against.
			sum := strings.ToLower(r.Header.Get(operator.ContentDigestHeader))
			if sum == "" {
				return d, true, errors.New("an upload that needs an approval must name its content: send its SHA-256 in the " + operator.ContentDigestHeader + " header (the keyquorum command does)")
			}
			d.Fields = append(d.Fields, [2]string{"content_sha256", sum})
			d = operator.NewDetails(d.Action, fieldsOf(d))
		}
		return d, true, err
	}
	if m := web.MultipartOf(r); m != nil {
		// An upload form: the fields the page puts before its file (ReadLeading); the file
		// itself is not bound.
		form := url.Values{}
		for k, v := range m.Fields {
			form.Set(k, v)
		}
		return operator.NewDetails(a, detailFields(form)), true, nil
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
		// The CSRF check reads every upload's leading fields; without them there is nothing
		// an approval could bind, and the handler would take options unbound.
		return d, true, errors.New("the upload form's leading fields were not read")
	}
	return operator.NewDetails(a, detailFields(formOf(r))), true, nil
}

// fieldsOf are d's fields as form values (to build Details again, sorted, with one more).
func fieldsOf(d operator.Details) url.Values {
	out := url.Values{}
	for _, f := range d.Fields {
		out[f[0]] = append(out[f[0]], f[1])
	}
	return out
}

// detailFields are the fields of a form that say what it does: not its CSRF token, its
// approval token, the page script's own fields (named "_…"), nor a password (the page script
// leaves password inputs out; an upload's leading fields stop at one).
func detailFields(form url.Values) url.Values {
	out := url.Values{}
	for k, v := range form {
		if k != csrfField && k != stepUpField && !strings.HasPrefix(k, "_") && !strings.Contains(strings.ToLower(k), "password") {
			out[k] = v
		}
	}
	return out
}

// jsonBodyKey keeps an API request's JSON body in its context (see protect): the handler reads
// the body, and the approval check its details.
type jsonBodyKey struct{}

// stepUpField is the form field of the approval token (an upload's leading field).
const stepUpField = "webauthn"

func stepUpToken(r *http.Request) string {
	if t := r.Header.Get(operator.ApprovalHeader); t != "" {
		return t
	}
	if m := web.MultipartOf(r); m != nil {
		return m.Fields[stepUpField]
	}
	if f := formOf(r); f != nil {
		return f.Get(stepUpField)
	}
	return ""
}
