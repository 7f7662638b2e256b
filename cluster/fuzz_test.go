package cluster

import (
	"strings"
	"testing"
)

// FuzzParseKeyID: a key ID header is 16 hex digits or refused; accepted ones round-trip.
func FuzzParseKeyID(f *testing.F) {
	f.Add("0011223344556677")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parseKeyID(s)
		if ok && !strings.EqualFold(id.String(), strings.TrimSpace(s)) {
			t.Fatalf("%q parsed as %s", s, id)
		}
	})
}
