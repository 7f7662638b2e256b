package operator

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/webauthn"
)

// AttestationPolicy restricts which security keys may be registered (serve
// --webauthn-aaguids, --webauthn-attestation-formats, --webauthn-attestation-roots). The zero
// policy requires no attestation: any FIDO2 key with user verification may be registered, and the
// browser is asked for none (it then sends no model either).
//
// With a policy, registration asks for direct attestation and the attestation statement the
// library verified (the signature of "packed" self or basic attestation, of "fido-u2f", "tpm", …
// over the authenticator data and the client data) must also satisfy the policy:
//
//   - Formats: the attestation statement format is one of these ("packed", "fido-u2f", "tpm",
//     "apple", "android-key", "none").
//   - AAGUIDs: the authenticator model (its AAGUID) is one of these; a registration without
//     attestation (format "none") is refused, since its model is not stated.
//   - Roots: the attestation certificate chain (x5c) verifies to one of these CAs (the vendors'
//     attestation roots): only then is the model proven rather than claimed by the key itself.
//     Self attestation (no certificate) is refused.
type AttestationPolicy struct {
	AAGUIDs []string // canonical, lower-case UUIDs
	Formats []string
	Roots   []*x509.Certificate
}

// attestationFormats are the formats a policy may name (those go-webauthn verifies).
var attestationFormats = []string{"packed", "fido-u2f", "tpm", "apple", "android-key", "android-safetynet", "compound", "none"}

// ErrAttestationPolicy is a policy setting that cannot be used.
var ErrAttestationPolicy = errors.New("attestation policy")

// ParseAAGUIDs reads a comma-separated list of AAGUIDs (UUIDs, with or without dashes).
func ParseAAGUIDs(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		raw, err := hex.DecodeString(strings.ReplaceAll(f, "-", ""))
		if err != nil || len(raw) != 16 {
			return nil, fmt.Errorf("%w: %q is not an AAGUID (a UUID like cb69481e-8ff7-4039-93ec-0a2729a154a8)", ErrAttestationPolicy, f)
		}
		out = append(out, formatAAGUID(raw))
	}
	return out, nil
}

// ParseAttestationFormats reads a comma-separated list of attestation statement formats.
func ParseAttestationFormats(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		if !slices.Contains(attestationFormats, f) {
			return nil, fmt.Errorf("%w: %q is not an attestation format (one of %s)", ErrAttestationPolicy, f, strings.Join(attestationFormats, ", "))
		}
		out = append(out, f)
	}
	return out, nil
}

func formatAAGUID(b []byte) string {
	if len(b) != 16 {
		return hex.EncodeToString(b)
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Required reports whether the policy asks for attestation at all.
func (p AttestationPolicy) Required() bool {
	return len(p.AAGUIDs) > 0 || len(p.Roots) > 0 || (len(p.Formats) > 0 && !slices.Equal(p.Formats, []string{"none"}))
}

// Describe says the policy in words for the account page.
func (p AttestationPolicy) Describe() string {
	if len(p.AAGUIDs) == 0 && len(p.Formats) == 0 && len(p.Roots) == 0 {
		return "No attestation is required: any FIDO2 security key with a PIN or fingerprint can be registered (its model is not checked)."
	}
	var parts []string
	if len(p.AAGUIDs) > 0 {
		parts = append(parts, "only these authenticator models (AAGUID): "+strings.Join(p.AAGUIDs, ", "))
	}
	if len(p.Formats) > 0 {
		parts = append(parts, "only the attestation formats "+strings.Join(p.Formats, ", "))
	}
	if len(p.Roots) > 0 {
		var names []string
		for _, r := range p.Roots {
			names = append(names, r.Subject.CommonName)
		}
		parts = append(parts, "only keys whose attestation certificate chains to "+strings.Join(names, ", "))
	} else if len(p.AAGUIDs) > 0 {
		parts = append(parts, "the model is the one the key states in its signed attestation (no vendor root is configured to prove it)")
	}
	return "Security keys are restricted: " + strings.Join(parts, "; ") + "."
}

// AttestationError is a registration the policy refuses: what the key presented and why.
type AttestationError struct {
	AAGUID string // the key's model as it stated it ("" when not stated)
	Format string // its attestation statement format
	Why    string
}

func (e *AttestationError) Error() string {
	model := e.AAGUID
	if model == "" || model == "00000000-0000-0000-0000-000000000000" {
		model = "not stated"
	}
	return fmt.Sprintf("this security key is not allowed here: %s (its model: %s, attestation: %s)", e.Why, model, e.Format)
}

// Check refuses a registered credential the policy does not allow. The attestation statement
// was verified by FinishRegistration; Check adds the policy on top.
func (p AttestationPolicy) Check(cred *webauthn.Credential, now time.Time) error {
	format := cred.AttestationFormat
	if format == "" {
		format = "none"
	}
	e := &AttestationError{AAGUID: formatAAGUID(cred.Authenticator.AAGUID), Format: format}
	if len(p.Formats) > 0 && !slices.Contains(p.Formats, format) {
		e.Why = "its attestation format is not one of " + strings.Join(p.Formats, ", ")
		return e
	}
	if (len(p.AAGUIDs) > 0 || len(p.Roots) > 0) && format == "none" {
		e.Why = "it (or the browser) sent no attestation, so its model cannot be told; the browser may have asked whether to share the key's make and model: allow it"
		return e
	}
	if len(p.AAGUIDs) > 0 && !slices.Contains(p.AAGUIDs, e.AAGUID) {
		e.Why = "its model is not one of the allowed " + strings.Join(p.AAGUIDs, ", ")
		return e
	}
	if len(p.Roots) > 0 {
		chain, err := attestationChain(cred.Attestation.Object)
		if err != nil {
			e.Why = "its attestation cannot be read: " + err.Error()
			return e
		}
		if len(chain) == 0 {
			e.Why = "it attests itself (no attestation certificate), so its vendor is not proven"
			return e
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, r := range p.Roots {
			roots.AddCert(r)
		}
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			e.Why = "its attestation certificate (" + chain[0].Subject.String() + ") does not chain to an allowed vendor root: " + err.Error()
			return e
		}
	}
	return nil
}

// attestationChain is the x5c certificate chain of a raw attestation object (none for self
// attestation or format "none").
func attestationChain(raw []byte) ([]*x509.Certificate, error) {
	var att protocol.AttestationObject
	if err := webauthncbor.Unmarshal(raw, &att); err != nil {
		return nil, fmt.Errorf("decode attestation object: %w", err)
	}
	x5c, ok := att.AttStatement["x5c"].([]any)
	if !ok {
		return nil, nil
	}
	var out []*x509.Certificate
	for _, v := range x5c {
		b, ok := v.([]byte)
		if !ok {
			return nil, errors.New("decode attestation object: an x5c entry is not a certificate")
		}
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("decode attestation object: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}
