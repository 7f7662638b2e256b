//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
)

// pkcs11Tool runs OpenSC's pkcs11-tool (Debian package opensc) on the token of h: the "other
// program" that puts objects on the token. With CI=true a missing pkcs11-tool fails the test.
func pkcs11Tool(t *testing.T, h hsm.HSM, args ...string) {
	t.Helper()
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("pkcs11-tool is needed and CI=true: install the Debian package opensc (scripts/deps)")
		}
		t.Skip("pkcs11-tool missing (Debian package opensc)")
	}
	label, ok := labels.Load(h)
	if !ok {
		t.Fatal("token of the hsm unknown")
	}
	full := append([]string{"--module", env.module, "--token-label", label.(string), "--login", "--pin", userPIN}, args...)
	if out, err := exec.Command(tool, full...).CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool %v: %v\n%s", args, err, out)
	}
}

// testCertificate returns a self-signed X.509 certificate, DER.
func testCertificate(t *testing.T) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4711), Subject: pkix.Name{CommonName: "Keyquorum test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// populate puts the objects of issue 14 onto the token with pkcs11-tool: RSA-3072 and EC P-256
// key pairs, AES-128, AES-192 (without CKA_ID) and AES-256 keys, a generic secret, a certificate and a data object.
func populate(t *testing.T, h hsm.HSM) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "ca.der")
	data := filepath.Join(dir, "data.bin")
	os.WriteFile(cert, testCertificate(t), 0o600)
	os.WriteFile(data, []byte("configuration of another program\n"), 0o600)
	x := []string{"--extractable", "--sensitive", "--private"}
	pkcs11Tool(t, h, append([]string{"--keypairgen", "--key-type", "rsa:3072", "--id", "a1", "--label", "CA RSA signing key", "--usage-sign"}, x...)...)
	pkcs11Tool(t, h, append([]string{"--keypairgen", "--key-type", "EC:prime256v1", "--id", "a2", "--label", "CA EC signing key", "--usage-sign"}, x...)...)
	pkcs11Tool(t, h, append([]string{"--keygen", "--key-type", "AES:16", "--id", "b1", "--label", "aes 128"}, x...)...)
	pkcs11Tool(t, h, append([]string{"--keygen", "--key-type", "AES:32", "--id", "b2", "--label", "aes 256"}, x...)...)
	pkcs11Tool(t, h, append([]string{"--keygen", "--key-type", "GENERIC:32", "--id", "b3", "--label", "hmac secret"}, x...)...)
	pkcs11Tool(t, h, append([]string{"--keygen", "--key-type", "AES:24", "--label", "aes 192 without an id"}, x...)...)
	pkcs11Tool(t, h, "--write-object", cert, "--type", "cert", "--id", "a1", "--label", "CA certificate")
	pkcs11Tool(t, h, "--write-object", data, "--type", "data", "--label", "app config", "--application-label", "other program")
}

// locked makes an AES key that is not extractable, with pkcs11-tool.
func locked(t *testing.T, h hsm.HSM) string {
	pkcs11Tool(t, h, "--keygen", "--key-type", "AES:32", "--id", "c1", "--label", "stays on the token", "--sensitive")
	return "stays on the token"
}

// handleOf finds the token object of o's class, ID and label.
func (h *HSM) handleOf(t *testing.T, class uint32, o hsm.Object) p11.ObjectHandle {
	t.Helper()
	tmpl := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, uint(class)), p11.NewAttribute(p11.CKA_LABEL, o.Label)}
	if len(o.ID) > 0 {
		tmpl = append(tmpl, p11.NewAttribute(p11.CKA_ID, o.ID))
	}
	objs, err := h.findAll(tmpl...)
	if err != nil || len(objs) != 1 {
		t.Fatalf("%s: %d objects, %v", o, len(objs), err)
	}
	return objs[0]
}

// compute runs mechanism m with key o of h over msg: sign for private and MAC keys, encrypt for
// AES keys.
func (h *HSM) compute(t *testing.T, o hsm.Object, m uint, msg []byte) []byte {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	key := h.handleOf(t, o.Class, o)
	mech := []*p11.Mechanism{p11.NewMechanism(m, nil)}
	if o.Type == hsm.KeyAES {
		if err := h.ctx.EncryptInit(h.sh, mech, key); err != nil {
			t.Fatal(err)
		}
		out, err := h.ctx.Encrypt(h.sh, msg)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := h.ctx.SignInit(h.sh, mech, key); err != nil {
		t.Fatalf("%s: sign init: %v", o, err)
	}
	out, err := h.ctx.Sign(h.sh, msg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// verify checks sig over msg with the public key of o's identity in h.
func (h *HSM) verify(t *testing.T, o hsm.Object, m uint, msg, sig []byte) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	pub := h.handleOf(t, hsm.ClassPublicKey, o)
	if err := h.ctx.VerifyInit(h.sh, []*p11.Mechanism{p11.NewMechanism(m, nil)}, pub); err != nil {
		t.Fatal(err)
	}
	if err := h.ctx.Verify(h.sh, msg, sig); err != nil {
		t.Fatalf("%s: a signature of the restored key does not verify under the original public key: %v", o, err)
	}
}

// decrypt decrypts with AES key o of h.
func (h *HSM) decrypt(t *testing.T, o hsm.Object, ct []byte) []byte {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	key := h.handleOf(t, o.Class, o)
	if err := h.ctx.DecryptInit(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_ECB, nil)}, key); err != nil {
		t.Fatal(err)
	}
	out, err := h.ctx.Decrypt(h.sh, ct)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameResults checks that key o computes in b what it computes in a.
func sameResults(t *testing.T, ah, bh hsm.HSM, o hsm.Object) {
	a, b := ah.(*HSM), bh.(*HSM)
	msg := sha256.Sum256([]byte("keyquorum " + o.Label))
	switch {
	case o.Class == hsm.ClassSecretKey && o.Type == hsm.KeyAES:
		ca, cb := a.compute(t, o, p11.CKM_AES_ECB, msg[:]), b.compute(t, o, p11.CKM_AES_ECB, msg[:])
		if !bytes.Equal(ca, cb) {
			t.Fatalf("%s encrypts differently after the restore", o)
		}
		if !bytes.Equal(b.decrypt(t, o, ca), msg[:]) {
			t.Fatalf("%s does not decrypt what the original encrypted", o)
		}
	case o.Class == hsm.ClassSecretKey:
		if !bytes.Equal(a.compute(t, o, p11.CKM_SHA256_HMAC, msg[:]), b.compute(t, o, p11.CKM_SHA256_HMAC, msg[:])) {
			t.Fatalf("%s computes another HMAC after the restore", o)
		}
	case o.Type == hsm.KeyRSA:
		sa, sb := a.compute(t, o, p11.CKM_SHA256_RSA_PKCS, msg[:]), b.compute(t, o, p11.CKM_SHA256_RSA_PKCS, msg[:])
		if !bytes.Equal(sa, sb) {
			t.Fatalf("%s signs differently after the restore", o)
		}
		a.verify(t, o, p11.CKM_SHA256_RSA_PKCS, msg[:], sb)
	case o.Type == hsm.KeyEC:
		a.verify(t, o, p11.CKM_ECDSA, msg[:], b.compute(t, o, p11.CKM_ECDSA, msg[:]))
		b.verify(t, o, p11.CKM_ECDSA, msg[:], a.compute(t, o, p11.CKM_ECDSA, msg[:]))
	case o.Type == hsm.KeyECEdwards:
		const ckmEdDSA = 0x1057
		sa, sb := a.compute(t, o, ckmEdDSA, msg[:]), b.compute(t, o, ckmEdDSA, msg[:])
		if !bytes.Equal(sa, sb) {
			t.Fatalf("%s signs differently after the restore", o)
		}
		a.verify(t, o, ckmEdDSA, msg[:], sb)
	default:
		t.Fatalf("no computation for %s", o)
	}
}

func objectBackend() hsmtest.Backend {
	return hsmtest.Backend{
		Fresh: func(t *testing.T) hsm.HSM { return freshHSM(t) },
		Reopen: func(t *testing.T, h hsm.HSM) hsm.HSM {
			label, _ := labels.Load(h)
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			n := openToken(t, label.(string))
			labels.Store(n, label)
			return n
		},
		Fingerprint: func(t *testing.T, h hsm.HSM, id string) []byte { return h.(*HSM).fingerprint(t, id) },
		Dirs:        func(hsm.HSM) []string { return []string{env.tokenDir} },
		ContentType: ContentType,
		Populate:    populate,
		Locked:      locked,
		SameResults: sameResults,
	}
}

// TestPKCS11WholeToken: on SoftHSM2, objects made by pkcs11-tool (RSA-3072, EC P-256 and
// Ed25519 key pairs, AES-128 and AES-256 keys, a generic secret, a certificate, a data object)
// are backed up and restored on a fresh token after a key load: every object's attributes
// compare equal, every key computes the same results; a restore keeps an object made after the
// backup and the made-equal restore removes it; a key that is not extractable refuses the backup
// before a byte is written, named; a factory reset keeps other software's objects.
func TestPKCS11WholeToken(t *testing.T) {
	requireSoftHSM(t)
	hsmtest.RunObjects(t, objectBackend())
}

// TestPKCS11WholeTokenEdDSA: SoftHSM2 2.6 holds Ed25519 keys but will not wrap an EdDSA private
// key (CKR_KEY_NOT_WRAPPABLE). The listing says so, and the backup refuses up front, naming it,
// instead of leaving it out; its public key is carried.
func TestPKCS11WholeTokenEdDSA(t *testing.T) {
	h := freshHSM(t)
	if err := h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t)); err != nil {
		t.Fatal(err)
	}
	pkcs11Tool(t, h, "--keypairgen", "--key-type", "EC:edwards25519", "--id", "e1", "--label", "ed25519 key", "--extractable", "--sensitive", "--private")
	objs, err := h.Objects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var priv, pub *hsm.Object
	for i, o := range objs {
		switch {
		case o.Label == "ed25519 key" && o.Class == hsm.ClassPrivateKey:
			priv = &objs[i]
		case o.Label == "ed25519 key" && o.Class == hsm.ClassPublicKey:
			pub = &objs[i]
		}
	}
	if priv == nil || pub == nil || priv.Type != hsm.KeyECEdwards || !pub.Carried {
		t.Fatalf("listing: %+v", objs)
	}
	if priv.Carried {
		t.Log("this SoftHSM2 wraps EdDSA private keys: the key is carried")
		return
	}
	if !strings.Contains(priv.Why, "wrap") {
		t.Fatalf("why the EdDSA key is not carried: %q", priv.Why)
	}
	var out bytes.Buffer
	var ie *hsm.IncompleteBackupError
	if err := h.Backup(t.Context(), &out); !errors.As(err, &ie) || len(ie.Objects) != 1 || !strings.Contains(err.Error(), "ed25519 key") || out.Len() != 0 {
		t.Fatalf("backup: %v, %d bytes", err, out.Len())
	}
}

// TestPKCS11ResetKeepsReplacedKey: a key of Keyquorum's replaced by a restore with another
// program's key of the same identity is no longer Keyquorum's: a factory reset keeps it.
func TestPKCS11ResetKeepsReplacedKey(t *testing.T) {
	ctx := t.Context()
	mbk := hsmtest.NewMBK(t)
	h := freshHSM(t)
	if err := h.LoadBackupKey(ctx, mbk); err != nil {
		t.Fatal(err)
	}
	mine, err := h.CreateKey(ctx, "shared label")
	if err != nil {
		t.Fatal(err)
	}
	src := freshHSM(t)
	if err := src.LoadBackupKey(ctx, mbk); err != nil {
		t.Fatal(err)
	}
	pkcs11Tool(t, src, "--keygen", "--key-type", "AES:32", "--id", mine.ID, "--label", "shared label", "--extractable", "--sensitive", "--private")
	var buf bytes.Buffer
	if err := src.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	plan, err := h.RestoreObjects(ctx, &buf, hsm.RestoreOptions{})
	if err != nil || plan.Count(hsm.ActionReplace) != 1 {
		t.Fatalf("restore: %+v, %v", plan, err)
	}
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	left := hsmtest.Objects(t, h)
	if len(left) != 1 || left[0].Label != "shared label" || left[0].Managed {
		t.Fatalf("after the reset: %v", left)
	}
}
