//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
)

// The test harness: TestMain writes a SoftHSM2 configuration into a temp dir, points
// SOFTHSM2_CONF at it and initialises a pool of tokens with softhsm2-util; each test takes
// fresh tokens from the pool. With CI=true a missing SoftHSM2 fails the run; elsewhere the
// tests skip.

const (
	tokenPool = 40
	userPIN   = "1234"
	soPIN     = "12345678"
)

var env struct {
	module   string
	tokenDir string
	missing  string // why SoftHSM2 is unusable, if it is

	mu   sync.Mutex
	next int
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv(crashChildEnv) != "" {
		// A child of TestPKCS11RestoreCrash: the parent's SoftHSM2 configuration is inherited.
		env.module = os.Getenv("KQ_CRASH_MODULE")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "keyquorum-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := setupSoftHSM(dir); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: SoftHSM2 is needed for the pkcs11 tests and CI=true: %v (install it with scripts/deps)\n", err)
			return 1
		}
		env.missing = err.Error()
	}
	return m.Run()
}

func setupSoftHSM(dir string) error {
	candidates := []string{os.Getenv("SOFTHSM2_MODULE"), "/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so"}
	for _, c := range candidates {
		if _, err := os.Stat(c); c != "" && err == nil {
			env.module = c
			break
		}
	}
	if env.module == "" {
		return errors.New("libsofthsm2.so not found (Debian package softhsm2)")
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return errors.New("softhsm2-util not found (Debian package softhsm2)")
	}
	env.tokenDir = filepath.Join(dir, "tokens")
	if err := os.Mkdir(env.tokenDir, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", env.tokenDir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	for i := range tokenPool {
		out, err := exec.Command(util, "--init-token", "--free", "--label", tokenLabel(i), "--pin", userPIN, "--so-pin", soPIN).CombinedOutput()
		if err != nil {
			return fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
		}
	}
	return nil
}

func tokenLabel(i int) string { return fmt.Sprintf("kq-test-%02d", i) }

func requireSoftHSM(t *testing.T) {
	t.Helper()
	if env.missing != "" {
		t.Skip("SoftHSM2 missing: " + env.missing)
	}
}

// freshToken returns the label of a token no test has used.
func freshToken(t *testing.T) string {
	t.Helper()
	requireSoftHSM(t)
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.next == tokenPool {
		t.Fatal("token pool exhausted: raise tokenPool")
	}
	env.next++
	return tokenLabel(env.next - 1)
}

func openToken(t *testing.T, label string) *HSM {
	t.Helper()
	h, err := Open(t.Context(), Config{Module: env.module, Token: label, PIN: []byte(userPIN), Source: "test-node"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

var labels sync.Map // *HSM -> token label, for reopening

func freshHSM(t *testing.T) *HSM {
	label := freshToken(t)
	h := openToken(t, label)
	labels.Store(h, label)
	return h
}

// findByID returns the token key with CKA_ID id.
func (h *HSM) findByID(t *testing.T, id []byte) p11.ObjectHandle {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	objs, err := h.find(p11.NewAttribute(p11.CKA_ID, id))
	if err != nil || len(objs) != 1 {
		t.Fatalf("key %x: %d objects, %v", id, len(objs), err)
	}
	return objs[0]
}

// fingerprint encrypts a zero block with the key of the given ID, on the token.
func (h *HSM) fingerprint(t *testing.T, id string) []byte {
	t.Helper()
	raw, _ := hex.DecodeString(id)
	obj := h.findByID(t, raw)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.ctx.EncryptInit(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_ECB, nil)}, obj); err != nil {
		t.Fatal(err)
	}
	out, err := h.ctx.Encrypt(h.sh, make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPKCS11Contract(t *testing.T) {
	requireSoftHSM(t)
	hsmtest.Run(t, hsmtest.Backend{
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
	})
}

// TestPKCS11BackupKeyObject: the MBK on the token is sensitive and not extractable, its value
// cannot be read, and it cannot be wrapped out.
func TestPKCS11BackupKeyObject(t *testing.T) {
	h := freshHSM(t)
	mbk := hsmtest.NewMBK(t)
	if err := h.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	obj, err := h.findOne(labelMBK)
	if err != nil || obj == 0 {
		t.Fatalf("MBK object: %v", err)
	}
	attrs, err := h.ctx.GetAttributeValue(h.sh, obj, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_TOKEN, nil),
		p11.NewAttribute(p11.CKA_PRIVATE, nil),
		p11.NewAttribute(p11.CKA_ID, nil),
		p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	id := hsm.KeyIDOf(mbk)
	if attrs[0].Value[0] != 1 || attrs[1].Value[0] != 0 || attrs[2].Value[0] != 1 || attrs[3].Value[0] != 1 ||
		!bytes.Equal(attrs[4].Value, id[:]) || ulong(attrs[5].Value) != 32 {
		t.Fatalf("MBK attributes sensitive=%v extractable=%v token=%v private=%v id=%x len=%d",
			attrs[0].Value, attrs[1].Value, attrs[2].Value, attrs[3].Value, attrs[4].Value, ulong(attrs[5].Value))
	}
	if _, err := h.ctx.GetAttributeValue(h.sh, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); !isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
		t.Fatalf("reading the MBK's value: %v", err)
	}
	slotKey, err := h.ctx.GenerateKey(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32), p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_WRAP, true),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ctx.WrapKey(h.sh, kwp, slotKey, obj); !isCode(err, p11.CKR_KEY_UNEXTRACTABLE) {
		t.Fatalf("wrapping the MBK out: %v", err)
	}
}

// goBackup writes a backup in Go, as the format defines it, of keys wrapped under mbk in
// software: what the token must be able to read. Its content is key records, as the backups of
// earlier versions hold, which restore still reads.
func goBackup(t *testing.T, mbk []byte, keys [][]byte) []byte {
	t.Helper()
	kw, err := backup.NewKeyWrap(mbk)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Source: "go", Content: contentTypeV1})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		wrapped, err := kw.WrapKey(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		id := []byte(fmt.Sprintf("id-%06d", i))
		if err := backup.WriteRecord(w, &backup.KeyRecord{ID: id, Label: fmt.Sprintf("key %d", i), Algorithm: hsm.AlgorithmAES256, Material: wrapped}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rawKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a, 0xa5}, 8)
	}
	return keys
}

// TestPKCS11ReadsGoWrapping: a backup whose data key and keys were wrapped by Go's RFC 5649
// code restores on the token, to keys that encrypt as the raw keys do. With the suite's check
// that the token's wrapping opens in Go, this shows the two backends share one format.
func TestPKCS11ReadsGoWrapping(t *testing.T) {
	h := freshHSM(t)
	mbk := hsmtest.NewMBK(t)
	if err := h.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
	keys := rawKeys(3)
	if err := h.Restore(t.Context(), bytes.NewReader(goBackup(t, mbk, keys))); err != nil {
		t.Fatal(err)
	}
	infos, err := h.Keys(t.Context())
	if err != nil || len(infos) != 3 {
		t.Fatalf("keys %v, %v", infos, err)
	}
	for i, k := range keys {
		block, _ := aes.NewCipher(k)
		want := make([]byte, 16)
		block.Encrypt(want, want)
		if got := h.fingerprint(t, hex.EncodeToString([]byte(fmt.Sprintf("id-%06d", i)))); !bytes.Equal(got, want) {
			t.Fatalf("key %d on the token differs from the one in the backup", i)
		}
	}
}

// sessionObjects counts the session's secret keys that are not token objects.
func (h *HSM) sessionObjects(t *testing.T) int {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.ctx.FindObjectsInit(h.sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, false)}); err != nil {
		t.Fatal(err)
	}
	defer h.ctx.FindObjectsFinal(h.sh)
	objs, _, err := h.ctx.FindObjects(h.sh, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return len(objs)
}

// TestPKCS11RestoreIsAllOrNothing: a backup that fails in its last chunk, after more than a
// thousand keys were unwrapped, leaves the token as it was and no session object behind.
func TestPKCS11RestoreIsAllOrNothing(t *testing.T) {
	h := freshHSM(t)
	mbk := hsmtest.NewMBK(t)
	if err := h.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
	mine, err := h.CreateKey(t.Context(), "mine")
	if err != nil {
		t.Fatal(err)
	}
	b := goBackup(t, mbk, rawKeys(1500)) // ~100 KiB: two chunks
	if len(b) < backup.ChunkSize+1000 {
		t.Fatalf("backup of %d bytes is a single chunk", len(b))
	}
	for name, bad := range map[string][]byte{
		"truncated":  b[:len(b)-5],
		"bit flip":   func() []byte { c := bytes.Clone(b); c[len(b)-5] ^= 1; return c }(),
		"extra data": append(bytes.Clone(b), 'x'),
	} {
		err := h.Restore(t.Context(), bytes.NewReader(bad))
		var be *hsm.BackupError
		if !errors.As(err, &be) || be.Chunk < 1 {
			t.Fatalf("%s: %v", name, err)
		}
		infos, err := h.Keys(t.Context())
		if err != nil || len(infos) != 1 || infos[0] != mine {
			t.Fatalf("%s: keys after a failed restore %v, %v", name, infos, err)
		}
		if n := h.sessionObjects(t); n != 0 {
			t.Fatalf("%s: %d staged session objects left", name, n)
		}
	}
}

func TestPKCS11BackupRefusesUnextractableKey(t *testing.T) {
	h := freshHSM(t)
	if err := h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t)); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	_, err := h.ctx.GenerateKey(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32), p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false), p11.NewAttribute(p11.CKA_LABEL, "locked in"),
		p11.NewAttribute(p11.CKA_ID, []byte("locked")),
	})
	h.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var ie *hsm.IncompleteBackupError
	var out bytes.Buffer
	if err := h.Backup(t.Context(), &out); !errors.As(err, &ie) || len(ie.Objects) != 1 || ie.Objects[0].Label != "locked in" ||
		!strings.Contains(err.Error(), "not extractable") || out.Len() != 0 {
		t.Fatalf("backup with an unextractable key: %v (%d bytes written)", err, out.Len())
	}
}

func TestPKCS11Open(t *testing.T) {
	requireSoftHSM(t)
	label := freshToken(t)
	if _, err := Open(t.Context(), Config{Module: env.module, Token: "no such token", PIN: []byte(userPIN)}); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	if _, err := Open(t.Context(), Config{Module: env.module, Token: label, PIN: []byte("9999")}); err == nil {
		t.Fatal("wrong PIN accepted")
	}
	if _, err := Open(t.Context(), Config{Module: "/nonexistent/libpkcs11.so", Token: label}); err == nil {
		t.Fatal("missing module accepted")
	}
	// Two HSMs on two tokens of one module, closed in either order.
	a := openToken(t, label)
	b := openToken(t, freshToken(t))
	a.Close()
	if _, err := b.Keys(t.Context()); err != nil {
		t.Fatalf("second HSM after the first closed: %v", err)
	}
}

func TestPKCS11ReservedLabels(t *testing.T) {
	h := freshHSM(t)
	for _, l := range []string{labelMBK, labelSlotKey} {
		if _, err := h.CreateKey(t.Context(), l); !errors.Is(err, ErrReservedLabel) {
			t.Errorf("label %q: %v", l, err)
		}
	}
	// The MBK and slot key are not application keys.
	h.LoadBackupKey(t.Context(), hsmtest.NewMBK(t))
	h.IssueSlotCredential(t.Context(), 1, "S")
	if k, _ := h.Keys(t.Context()); len(k) != 0 {
		t.Fatalf("internal keys listed: %v", k)
	}
}

func TestPKCS11ActiveSlots(t *testing.T) {
	h := freshHSM(t)
	c, err := h.IssueSlotCredential(t.Context(), 7, "CARD-7")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ActivateSlot(t.Context(), 7, "CARD-7", c); err != nil {
		t.Fatal(err)
	}
	if got := h.ActiveSlots(); !slices.Equal(got, []uint{7}) {
		t.Fatalf("active slots %v", got)
	}
}

// TestPKCS11AuthenticatorKeyObject: the authenticator key is a sign-only token object that
// cannot be read, is in no backup and no key list, and a token whose MBK was loaded without it
// (by an older keyquorum) gets it from loading the same MBK again.
func TestPKCS11AuthenticatorKeyObject(t *testing.T) {
	ctx := t.Context()
	h := freshHSM(t)
	mbk := hsmtest.NewMBK(t)
	if err := h.LoadBackupKey(ctx, mbk); err != nil {
		t.Fatal(err)
	}
	msg := []byte("a share record")
	want := hsm.AuthenticatorOf(mbk, msg)

	h.mu.Lock()
	obj, err := h.findOne(labelAuthKey)
	if err != nil || obj == 0 {
		h.mu.Unlock()
		t.Fatalf("authenticator key object: %v", err)
	}
	attrs, err := h.ctx.GetAttributeValue(h.sh, obj, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_SIGN, nil),
		p11.NewAttribute(p11.CKA_DERIVE, nil),
		p11.NewAttribute(p11.CKA_ID, nil),
	})
	if err != nil {
		h.mu.Unlock()
		t.Fatal(err)
	}
	id := hsm.KeyIDOf(mbk)
	if attrs[0].Value[0] != 1 || attrs[1].Value[0] != 0 || attrs[2].Value[0] != 1 || attrs[3].Value[0] != 0 || !bytes.Equal(attrs[4].Value, id[:]) {
		h.mu.Unlock()
		t.Fatalf("authenticator key sensitive=%v extractable=%v sign=%v derive=%v id=%x", attrs[0].Value, attrs[1].Value, attrs[2].Value, attrs[3].Value, attrs[4].Value)
	}
	if _, err := h.ctx.GetAttributeValue(h.sh, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); !isCode(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
		h.mu.Unlock()
		t.Fatalf("reading the authenticator key: %v", err)
	}
	// An older keyquorum loaded the MBK alone.
	if err := h.ctx.DestroyObject(h.sh, obj); err != nil {
		h.mu.Unlock()
		t.Fatal(err)
	}
	h.mu.Unlock()

	if _, err := h.Authenticate(ctx, msg); !errors.Is(err, hsm.ErrNoAuthenticatorKey) {
		t.Fatalf("authenticate without the key object: %v", err)
	}
	if err := h.LoadBackupKey(ctx, mbk); err != nil {
		t.Fatalf("loading the same MBK again: %v", err)
	}
	if got, err := h.Authenticate(ctx, msg); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after loading again: %x, %v", got, err)
	}
	if _, err := h.CreateKey(ctx, labelAuthKey); !errors.Is(err, ErrReservedLabel) {
		t.Fatalf("application key with the authenticator key's label: %v", err)
	}
	if keys, err := h.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("key list %v, %v", keys, err)
	}
	var buf bytes.Buffer
	if err := h.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	kw, _ := backup.NewKeyWrap(mbk)
	br, err := backup.NewReader(ctx, bytes.NewReader(buf.Bytes()), kw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.NewRecordReader(br).Next(); err != io.EOF {
		t.Fatalf("the backup holds a record: %v", err)
	}
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	left, err := h.find(p11.NewAttribute(p11.CKA_LABEL, labelAuthKey))
	h.mu.Unlock()
	if err != nil || len(left) != 0 {
		t.Fatalf("after reset: %d authenticator keys, %v", len(left), err)
	}
}
