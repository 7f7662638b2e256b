package webconf

import (
	"net/url"
	"testing"
	"unicode/utf8"

	"github.com/keyquorum/keyquorum/ceremony"
)

// FuzzParseUPN feeds the subjectAltName decoder with what a client certificate of a bundle CA
// may carry: a UPN comes out printable, or an error.
func FuzzParseUPN(f *testing.F) {
	f.Add(sanWithUPN("alice@corp.example", "alice@corp.example"))
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x05, 0xa0, 0x03, 0x06, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		upn, err := parseUPN(der)
		if err != nil {
			if upn != "" {
				t.Fatalf("error %v with upn %q", err, upn)
			}
			return
		}
		if !utf8.ValidString(upn) || !printable(upn, 256) {
			t.Fatalf("accepted upn %q", upn)
		}
	})
}

// FuzzParseCRL feeds the --crl decoder (PEM or DER): a list or an error, never a panic.
func FuzzParseCRL(f *testing.F) {
	f.Add([]byte("-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := parseCRL(data)
		if (err == nil) == (list == nil) {
			t.Fatalf("list %v with error %v", list, err)
		}
	})
}

// FuzzCeremonyFormAction: whatever a start form names, starting it is never allowed to an
// auditor or an operator without a role, and always needs a fresh assertion.
func FuzzCeremonyFormAction(f *testing.F) {
	f.Add("kind=generate&quorum=2-3")
	f.Add("kind=change-pin&slot=share")
	f.Add("kind=")
	f.Add("kind=..%2Fview")
	f.Fuzz(func(t *testing.T, query string) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		a, ok := actionOf("POST /ceremonies", v)
		if !ok {
			t.Fatal("no rule for the start form")
		}
		op := &Operator{}
		if Allowed(RoleAuditor, a) || Allowed(RoleNone, a) || !needsFresh(a, op) {
			t.Fatalf("start form %q: action %q open to auditors or without an assertion", query, a)
		}
		if k := ceremony.Kind(v.Get("kind")); k != ceremony.KindCopyCard && k != ceremony.KindChangePIN && Allowed(RoleCustodian, a) {
			t.Fatalf("start form %q: custodians may %q", query, a)
		}
	})
}
