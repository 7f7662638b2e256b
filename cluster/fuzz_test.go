package cluster

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
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

// FuzzSnapshotHead feeds arbitrary bytes to the reader of a snapshot's head (what a peer sends
// before its backup): it refuses or returns parts that match the manifest's digests.
func FuzzSnapshotHead(f *testing.F) {
	f.Add(seedSnapshotHead(f))
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readSnapshotHead(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrSnapshot) && !errors.Is(err, ErrSnapshotForged) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if sum(h.registry) != h.manifest.Registry || len(h.tag) != hsm.AuthenticatorSize {
			t.Fatal("accepted a head whose registry does not match its digest")
		}
		if _, err := decodeManifest(h.rawManifest); err != nil {
			t.Fatalf("accepted manifest does not decode again: %v", err)
		}
		_ = h.manifest.Version.String()
		_ = h.manifest.Version.Compare(Version{"0011223344556677": 1})
	})
}

// seedSnapshotHead is a well-formed head (its tag is not checked here).
func seedSnapshotHead(tb testing.TB) []byte {
	reg := []byte(`{"format":1,"sets":[]}`)
	m := Manifest{Format: manifestFormat, KeyID: "0011223344556677", Node: "node-a", NodeID: "8899aabbccddeeff",
		Version: Version{"8899aabbccddeeff": 3}, Origin: "8899aabbccddeeff", Digest: sum([]byte("d")),
		Registry: sum(reg), Backup: sum([]byte("b")), BackupSize: 1}
	raw, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString(snapshotMagic)
	writePart(&buf, raw)
	buf.Write(make([]byte, hsm.AuthenticatorSize))
	writePart(&buf, reg)
	writePart(&buf, nil)
	buf.WriteString("b")
	return buf.Bytes()
}

// FuzzParseRegistration: a pulling node's address and CA headers are taken only when well
// formed; an address is kept only with a CA.
func FuzzParseRegistration(f *testing.F) {
	f.Add("https://node-b.example:8443", "")
	f.Add("http://x", "AAAA")
	f.Fuzz(func(t *testing.T, addr, ca string) {
		leaf := &x509.Certificate{SerialNumber: big.NewInt(7)}
		reg := ParseRegistration(leaf, addr, ca)
		if reg.Address != "" {
			if reg.CA == nil {
				t.Fatal("an address kept without a CA")
			}
			if _, err := parsePeerURL(reg.Address); err != nil {
				t.Fatalf("kept address %q does not parse: %v", reg.Address, err)
			}
		}
	})
}

// FuzzDecodeManifest: a manifest is decoded strictly; an accepted one encodes and decodes to
// the same version and digests.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"format":1,"key_id":"0011223344556677","node":"node-a","node_id":"8899aabbccddeeff","version":{"8899aabbccddeeff":3},"digest":"` +
		sum(nil) + `","made":"2026-11-30T07:00:00Z","registry_sha256":"` + sum(nil) + `","backup_sha256":"` + sum(nil) + `","backup_size":10}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(data)
		if err != nil {
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeManifest(raw)
		if err != nil || again.Version.Compare(m.Version) != Same || again.Digest != m.Digest || again.Backup != m.Backup {
			t.Fatalf("round trip: %+v %v", again, err)
		}
	})
}
