package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIPrefix is where the JSON API for the command line lives. A POST there with a JSON body
// needs no CSRF token (a browser cannot send one from another site without a CORS preflight,
// which WebConf never grants; the Origin and Sec-Fetch-Site checks still apply), and its
// problems are answered as JSON.
const APIPrefix = "/api/"

// IsAPI reports whether a request goes to the JSON API.
func IsAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, APIPrefix) }

// WriteJSON answers a script request.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// RedirectBack answers a form POST: 204 for the page script (it updates the page itself), a 303
// to back for a plain form.
func RedirectBack(w http.ResponseWriter, r *http.Request, back string) {
	if r.Header.Get(FetchHeader) != "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// JoinWork is how long a cluster join may take, from the request to its answer: fetching and
// restoring a peer's state (bounded by --max-upload) over a slow link.
const JoinWork = 15 * time.Minute

// SlowWork is the time a handler may compute before its first byte: a backup of a large object
// store made into the spool under the HSM's lock, a verification of a long audit log. Past the
// server's write timeout the answer would otherwise be lost without a word.
const SlowWork = 15 * time.Minute

// ExtendForWork gives a handler that waits on something other than its client (a cluster join
// fetching a peer's state) time for it: the connection's write deadline (HTTP/2: the stream's)
// moves d ahead, past the server's write timeout.
func ExtendForWork(w http.ResponseWriter, d time.Duration) {
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
}

// LocalPath accepts only a path on this server as a redirect target: it starts with one "/", and
// has no backslash, space or control character anywhere — browsers drop tabs and line breaks
// from a Location, so "/\t/evil.example" would become "//evil.example", another site.
func LocalPath(p, fallback string) string {
	if p == "" || p[0] != '/' || len(p) > 2048 || strings.HasPrefix(p, "//") {
		return fallback
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '\\' {
			return fallback
		}
	}
	if u, err := url.Parse(p); err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return fallback
	}
	return p
}

// FormatTime shows a time to an operator, in UTC; "–" for none.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// FormatWait is a timeout as an operator reads it: "90 s", "2 min", "2 min 30 s".
func FormatWait(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s%60 == 0:
		return fmt.Sprintf("%d min", s/60)
	case s < 120:
		return fmt.Sprintf("%d s", s)
	}
	return fmt.Sprintf("%d min %d s", s/60, s%60)
}

// FormatRFC3339 is a time for the page script (RFC 3339 with nanoseconds); "" for none.
func FormatRFC3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Minutes says a duration in words for a page.
func Minutes(d time.Duration) string {
	if m := int(d / time.Minute); m != 1 {
		return fmt.Sprintf("%d minutes", m)
	}
	return "1 minute"
}
