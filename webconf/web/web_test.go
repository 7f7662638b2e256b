package web

import (
	"net/url"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/sharing"
)

// FuzzParseQuorum feeds the wizard's form values: whatever an operator (or anyone with a
// certificate) sends, the result is a valid quorum and label or an error.
func FuzzParseQuorum(f *testing.F) {
	f.Add("quorum=2-3")
	f.Add("quorum=3-5&label=DC1")
	f.Add("quorum=custom&k=4&n=7")
	f.Add("quorum=custom&k=300&n=2")
	f.Fuzz(func(t *testing.T, query string) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		c, err := ParseQuorum(v.Get)
		if err != nil {
			return
		}
		if sharing.ValidateQuorum(c.K, c.N) != nil || ValidLabel(c.Label) != nil {
			t.Fatalf("accepted %+v from %q", c, query)
		}
	})
}

// FuzzLocalPath checks that a redirect target from a form never leaves this server.
func FuzzLocalPath(f *testing.F) {
	for _, s := range []string{"/", "/ceremony", "//evil.example", "/\\evil.example", "https://evil.example", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got := LocalPath(p, "/")
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\\\") {
			t.Fatalf("localPath(%q) = %q", p, got)
		}
		if u, err := url.Parse(got); err == nil && (u.Host != "" || u.Scheme != "") {
			t.Fatalf("localPath(%q) = %q leaves the server", p, got)
		}
		// What a browser makes of a Location: tabs and line breaks removed, backslashes as
		// slashes (WHATWG URL parsing of special schemes).
		seen := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(got)
		if strings.HasPrefix(seen, "//") {
			t.Fatalf("localPath(%q) = %q, which a browser reads as %q: another site", p, got, seen)
		}
	})
}

// TestSecurityLocalPath: redirect targets a browser would read as another site are refused.
func TestSecurityLocalPath(t *testing.T) {
	for _, p := range []string{"/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/ /evil.example", "/\\evil.example",
		"//evil.example", "/\x00/x", "https://evil.example", "/a\\b"} {
		if got := LocalPath(p, "/"); got != "/" {
			t.Errorf("LocalPath(%q) = %q", p, got)
		}
	}
	for _, p := range []string{"/", "/ceremony", "/cards?x=1", "/a/b#c", "/%09/x"} {
		if got := LocalPath(p, "/"); got != p {
			t.Errorf("LocalPath(%q) = %q, want it kept", p, got)
		}
	}
}
