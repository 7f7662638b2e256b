package soft

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

// populate makes one object of every kind on the soft HSM, through its operator interface.
func populate(t *testing.T, hh hsm.HSM) {
	h := hh.(*HSM)
	for _, k := range []string{"RSA-2048", "EC-P256", "EC-P384", "Ed25519", "AES-128", "AES-192", "AES-256", "generic-secret-32"} {
		if _, err := h.CreateObject(t.Context(), hsm.ObjectSpec{Kind: k, Label: "made " + k}); err != nil {
			t.Fatal(err)
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if _, err := h.ImportObject(t.Context(), hsm.ImportSpec{What: "private-key", Label: "imported CA key", ID: []byte{0xca},
		Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "soft CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	cert, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if _, err := h.ImportObject(t.Context(), hsm.ImportSpec{What: "certificate", Label: "imported CA certificate", ID: []byte{0xca},
		Data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert})}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ImportObject(t.Context(), hsm.ImportSpec{What: "data", Label: "settings", Application: "other program",
		Data: []byte("some configuration")}); err != nil {
		t.Fatal(err)
	}
}

func locked(t *testing.T, hh hsm.HSM) string {
	if _, err := hh.(*HSM).CreateObject(t.Context(), hsm.ObjectSpec{Kind: "AES-256", Label: "never leaves", NotExtractable: true}); err != nil {
		t.Fatal(err)
	}
	return "never leaves"
}

// signerOf returns the private key of o in h.
func (h *HSM) signerOf(t *testing.T, o hsm.Object) crypto.Signer {
	t.Helper()
	raw, err := h.unsealObject(h.entryOf(t, hsm.ClassPrivateKey, string(hexOf(o.ID))))
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

// sameResults: the key computes in b what it computes in a.
func sameResults(t *testing.T, ah, bh hsm.HSM, o hsm.Object) {
	a, b := ah.(*HSM), bh.(*HSM)
	msg := sha256.Sum256([]byte(o.Label))
	switch o.Class {
	case hsm.ClassSecretKey:
		ka, kb := a.material(t, string(hexOf(o.ID))), b.material(t, string(hexOf(o.ID)))
		if o.Type == hsm.KeyAES {
			ca, _ := aes.NewCipher(ka)
			cb, _ := aes.NewCipher(kb)
			x, y := make([]byte, 16), make([]byte, 16)
			ca.Encrypt(x, msg[:16])
			cb.Encrypt(y, msg[:16])
			if !bytes.Equal(x, y) {
				t.Fatalf("%s encrypts differently after the restore", o)
			}
			return
		}
		ma, mb := hmac.New(sha256.New, ka), hmac.New(sha256.New, kb)
		ma.Write(msg[:])
		mb.Write(msg[:])
		if !hmac.Equal(ma.Sum(nil), mb.Sum(nil)) {
			t.Fatalf("%s computes another HMAC after the restore", o)
		}
	case hsm.ClassPrivateKey:
		sa, sb := a.signerOf(t, o), b.signerOf(t, o)
		switch ka := sa.(type) {
		case *rsa.PrivateKey:
			x, _ := rsa.SignPKCS1v15(nil, ka, crypto.SHA256, msg[:])
			y, _ := rsa.SignPKCS1v15(nil, sb.(*rsa.PrivateKey), crypto.SHA256, msg[:])
			if !bytes.Equal(x, y) {
				t.Fatalf("%s signs differently after the restore", o)
			}
		case *ecdsa.PrivateKey:
			sig, _ := ecdsa.SignASN1(rand.Reader, sb.(*ecdsa.PrivateKey), msg[:])
			if !ecdsa.VerifyASN1(&ka.PublicKey, msg[:], sig) {
				t.Fatalf("%s: a signature of the restored key does not verify under the original", o)
			}
		case ed25519.PrivateKey:
			if !bytes.Equal(ed25519.Sign(ka, msg[:]), ed25519.Sign(sb.(ed25519.PrivateKey), msg[:])) {
				t.Fatalf("%s signs differently after the restore", o)
			}
		}
	}
}

// TestObjectRules: labels, IDs, kinds and identities are checked with clear errors, and nothing
// is stored on a refusal.
func TestObjectRules(t *testing.T) {
	h := openT(t, t.TempDir())
	ctx := t.Context()
	cases := []struct {
		spec hsm.ObjectSpec
		want error
	}{
		{hsm.ObjectSpec{Kind: "AES-256", Label: ""}, hsm.ErrInvalidLabel},
		{hsm.ObjectSpec{Kind: "AES-256", Label: "bad\nlabel"}, hsm.ErrInvalidLabel},
		{hsm.ObjectSpec{Kind: "AES-256", Label: "long id", ID: make([]byte, 65)}, hsm.ErrInvalidID},
		{hsm.ObjectSpec{Kind: "AES-512", Label: "x"}, hsm.ErrUnknownKind},
		{hsm.ObjectSpec{Kind: "generic-secret-3", Label: "x"}, hsm.ErrUnknownKind},
	}
	for _, c := range cases {
		if _, err := h.CreateObject(ctx, c.spec); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.spec, err, c.want)
		}
	}
	if _, err := h.CreateObject(ctx, hsm.ObjectSpec{Kind: "EC-P256", Label: "pair", ID: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	_, err := h.CreateObject(ctx, hsm.ObjectSpec{Kind: "EC-P256", Label: "pair", ID: []byte{1}})
	if !errors.Is(err, hsm.ErrObjectExists) || !strings.Contains(err.Error(), `"pair"`) {
		t.Errorf("same identity twice: %v", err)
	}
	for _, imp := range []hsm.ImportSpec{
		{What: "private-key", Label: "k", Data: []byte("not a key")},
		{What: "certificate", Label: "c", Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})},
		{What: "certificate", Label: "c", Data: []byte("junk")},
	} {
		if _, err := h.ImportObject(ctx, imp); !errors.Is(err, hsm.ErrImport) {
			t.Errorf("import %s of junk: %v", imp.What, err)
		}
	}
	if _, err := h.ImportObject(ctx, hsm.ImportSpec{What: "secret", Label: "s"}); !errors.Is(err, hsm.ErrUnknownKind) {
		t.Errorf("import of an unknown kind: %v", err)
	}
	objs, err := h.Objects(ctx)
	if err != nil || len(objs) != 2 {
		t.Fatalf("objects after refusals: %v, %v", objs, err)
	}
}
