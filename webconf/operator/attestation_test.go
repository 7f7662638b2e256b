package operator

import (
	"errors"
	"testing"
)

// TestParseAttestationSettings: the serve flags' lists are read strictly, with what was wrong.
func TestParseAttestationSettings(t *testing.T) {
	ids, err := ParseAAGUIDs(" CB69481E8FF7403993EC0A2729A154A8, ee882879-721c-4913-9775-3dfcce97072a ,")
	if err != nil || len(ids) != 2 || ids[0] != "cb69481e-8ff7-4039-93ec-0a2729a154a8" || ids[1] != "ee882879-721c-4913-9775-3dfcce97072a" {
		t.Errorf("aaguids %v %v", ids, err)
	}
	for _, bad := range []string{"cb69481e", "zz69481e-8ff7-4039-93ec-0a2729a154a8", "cb69481e-8ff7-4039-93ec-0a2729a154a8aa"} {
		if _, err := ParseAAGUIDs(bad); !errors.Is(err, ErrAttestationPolicy) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if fs, err := ParseAttestationFormats("Packed, fido-u2f"); err != nil || len(fs) != 2 || fs[0] != "packed" {
		t.Errorf("formats %v %v", fs, err)
	}
	if _, err := ParseAttestationFormats("packed,x509"); !errors.Is(err, ErrAttestationPolicy) {
		t.Errorf("unknown format: %v", err)
	}
	if (AttestationPolicy{}).Required() || (AttestationPolicy{Formats: []string{"none"}}).Required() || !(AttestationPolicy{Formats: []string{"packed"}}).Required() {
		t.Error("Required")
	}
}

// FuzzAttestationChain feeds the attestation object decoder of the attestation policy: a chain,
// nothing, or an error — never a panic.
func FuzzAttestationChain(f *testing.F) {
	f.Add([]byte{0xa3, 0x63, 'f', 'm', 't', 0x64, 'n', 'o', 'n', 'e', 0x67, 'a', 't', 't', 'S', 't', 'm', 't', 0xa0, 0x68, 'a', 'u', 't', 'h', 'D', 'a', 't', 'a', 0x40})
	f.Add([]byte{0xa1, 0x67, 'a', 't', 't', 'S', 't', 'm', 't', 0xa1, 0x63, 'x', '5', 'c', 0x81, 0x41, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		chain, err := attestationChain(raw)
		if err != nil && chain != nil {
			t.Fatalf("chain %v with error %v", chain, err)
		}
	})
}
