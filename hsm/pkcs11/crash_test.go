//go:build cgo

package pkcs11

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
)

const crashChildEnv = "KQ_CRASH_CHILD"

// crashChild is the child side of TestPKCS11RestoreCrash: it restores the backup file onto the
// token and kills itself with SIGKILL before PKCS#11 write number KQ_CRASH_AT of the restore.
func crashChild(t *testing.T) {
	at, _ := strconv.Atoi(os.Getenv("KQ_CRASH_AT"))
	b, err := os.ReadFile(os.Getenv("KQ_CRASH_BACKUP"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := Open(t.Context(), Config{Module: env.module, Token: os.Getenv("KQ_CRASH_TOKEN"), PIN: []byte(userPIN)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	writeHook = func() {
		if n++; n == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	if _, err := h.RestoreObjects(t.Context(), bytes.NewReader(b), hsm.RestoreOptions{MakeEqual: os.Getenv("KQ_CRASH_EQUAL") != ""}); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("restore finished after %d writes\n", n)
}

// others puts the token's own objects onto h before a restore: objects the backup does not hold
// (kept), and an AES key of the identity of one in the backup, of another value (replaced).
func (h *HSM) others(t *testing.T, clash hsm.Object) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.refresh(); err != nil {
		t.Fatal(err)
	}
	_, err := h.ctx.CreateObject(h.sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA), p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, "other data"), p11.NewAttribute(p11.CKA_APPLICATION, "other program"),
		p11.NewAttribute(p11.CKA_VALUE, []byte("kept")),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		label string
		id    []byte
	}{{"other key", []byte("other")}, {clash.Label, clash.ID}} {
		_, err := h.ctx.GenerateKey(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 16), p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, true), p11.NewAttribute(p11.CKA_LABEL, k.label),
			p11.NewAttribute(p11.CKA_ID, k.id),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// clearOthers destroys every object on h but Keyquorum's MBK and authenticator key.
func (h *HSM) clearOthers(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	objs, err := h.scan()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.obj.Label == labelMBK || o.obj.Label == labelAuthKey {
			continue
		}
		if err := h.ctx.DestroyObject(h.sh, o.h); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPKCS11RestoreCrash: a child process restores a backup and is killed with SIGKILL before
// each PKCS#11 write of the restore in turn. After each kill the token still holds every object
// it held that the restore would not replace, and the next start names the half-done restore
// (which backup, how far) once its journal is written; the same restore run again ends with
// exactly the backup's objects and the token's others, none twice. Once plain, once made equal.
func TestPKCS11RestoreCrash(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild(t)
		return
	}
	requireSoftHSM(t)
	src := freshHSM(t)
	mbk := hsmtest.NewMBK(t)
	if err := src.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
	populate(t, src)
	if _, err := src.CreateKey(t.Context(), "keyquorum app key"); err != nil {
		t.Fatal(err)
	}
	want := hsmtest.Objects(t, src)
	clash := want[slices.IndexFunc(want, func(o hsm.Object) bool { return o.Label == "aes 128" })]
	var buf bytes.Buffer
	if err := src.Backup(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	hdr, err := backup.ReadHeader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.kqb")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	dstLabel := freshToken(t)
	dst := openToken(t, dstLabel)
	labels.Store(dst, dstLabel)
	if err := dst.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
	for _, equal := range []bool{false, true} {
		t.Run(fmt.Sprintf("makeEqual=%v", equal), func(t *testing.T) {
			kills := 0
			for at := 1; ; at++ {
				dst.clearOthers(t)
				dst.others(t, clash)
				before := hsmtest.Objects(t, dst)
				var kept []hsm.Object // the token's objects the restore does not replace
				for _, o := range before {
					if !slices.ContainsFunc(want, func(w hsm.Object) bool { return w.Identity() == o.Identity() }) {
						kept = append(kept, o)
					}
				}
				cmd := exec.Command(os.Args[0], "-test.run=^TestPKCS11RestoreCrash$", "-test.count=1")
				cmd.Env = append(os.Environ(), crashChildEnv+"=1", "KQ_CRASH_MODULE="+env.module, "KQ_CRASH_TOKEN="+dstLabel,
					"KQ_CRASH_BACKUP="+file, "KQ_CRASH_AT="+strconv.Itoa(at))
				if equal {
					cmd.Env = append(cmd.Env, "KQ_CRASH_EQUAL=1")
				}
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled()
				if err != nil && !killed {
					t.Fatalf("child (crash at write %d): %v\n%s", at, err, out)
				}
				after := hsmtest.Objects(t, dst)
				if killed {
					kills++
					// Nothing the restore would not replace is gone; every identity it replaces
					// still has an object.
					for _, o := range kept {
						if !slices.ContainsFunc(after, func(a hsm.Object) bool { return a.Identity() == o.Identity() }) && !equal {
							t.Fatalf("killed at write %d: %s is gone", at, o)
						}
					}
					if !slices.ContainsFunc(after, func(a hsm.Object) bool { return a.Identity() == clash.Identity() }) {
						t.Fatalf("killed at write %d: no object of %s is left", at, clash)
					}
					p, err := dst.PendingRestore(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					if at > 1 && (p == nil || p.Backup.ID != hex.EncodeToString(hdr.ID[:]) || p.Backup.Source != hdr.Source || p.Total == 0) {
						t.Fatalf("killed at write %d: pending restore %v", at, p)
					}
					if p != nil {
						t.Logf("killed at write %d: %s", at, p)
					}
					plan, err := dst.RestoreObjects(t.Context(), bytes.NewReader(buf.Bytes()), hsm.RestoreOptions{MakeEqual: equal})
					if err != nil {
						t.Fatalf("restore again after a kill at write %d: %v", at, err)
					}
					if plan.Count(hsm.ActionAdd)+plan.Count(hsm.ActionReplace)+plan.Count(hsm.ActionUnchanged) != len(want) {
						t.Fatalf("plan after a kill at write %d: %+v", at, plan.Items)
					}
					after = hsmtest.Objects(t, dst)
				}
				wantAfter := slices.Clone(want)
				if !equal {
					wantAfter = append(wantAfter, kept...)
				}
				if d := hsmtest.SameObjects(wantAfter, after); d != "" {
					t.Fatalf("after a kill at write %d and a second restore:\n%s", at, d)
				}
				if p, err := dst.PendingRestore(t.Context()); err != nil || p != nil {
					t.Fatalf("pending restore after the restore finished: %v, %v", p, err)
				}
				if !killed {
					t.Logf("the restore makes %d writes; killed before each", at-1)
					if kills < len(want) {
						t.Fatalf("only %d kills for %d objects", kills, len(want))
					}
					return
				}
			}
		})
	}
}
