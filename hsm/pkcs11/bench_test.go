//go:build cgo

package pkcs11

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
	"github.com/keyquorum/keyquorum/internal/memstat"
)

// mixedToken puts n objects of every kind onto the token, in equal parts: RSA-2048 and EC P-256
// key pairs, AES-128/256 keys, generic secrets, certificates, data objects (copies of one
// generated object each, relabelled: generating thousands of RSA keys would measure key
// generation).
func mixedToken(b *testing.B, h *HSM, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pairs := [][2][]*p11.Attribute{
		{{p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_VERIFY, true), p11.NewAttribute(p11.CKA_MODULUS_BITS, 2048),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1})},
			{p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_SIGN, true), p11.NewAttribute(p11.CKA_SENSITIVE, true),
				p11.NewAttribute(p11.CKA_EXTRACTABLE, true), p11.NewAttribute(p11.CKA_PRIVATE, true)}},
		{{p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_VERIFY, true), p11.NewAttribute(p11.CKA_EC_PARAMS, []byte("\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"))},
			{p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_SIGN, true), p11.NewAttribute(p11.CKA_SENSITIVE, true),
				p11.NewAttribute(p11.CKA_EXTRACTABLE, true), p11.NewAttribute(p11.CKA_PRIVATE, true)}},
	}
	var protos []p11.ObjectHandle
	for i, mech := range []uint{p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_EC_KEY_PAIR_GEN} {
		pub, priv, err := h.ctx.GenerateKeyPair(h.sh, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, pairs[i][0], pairs[i][1])
		if err != nil {
			b.Fatal(err)
		}
		protos = append(protos, priv, pub)
	}
	for _, kt := range []struct {
		mech, typ uint
		n         int
	}{{p11.CKM_AES_KEY_GEN, p11.CKK_AES, 16}, {p11.CKM_AES_KEY_GEN, p11.CKK_AES, 32}, {p11.CKM_GENERIC_SECRET_KEY_GEN, p11.CKK_GENERIC_SECRET, 32}} {
		k, err := h.ctx.GenerateKey(h.sh, []*p11.Mechanism{p11.NewMechanism(kt.mech, nil)}, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, kt.typ),
			p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_VALUE_LEN, kt.n),
			p11.NewAttribute(p11.CKA_SENSITIVE, true), p11.NewAttribute(p11.CKA_EXTRACTABLE, true), p11.NewAttribute(p11.CKA_PRIVATE, true)})
		if err != nil {
			b.Fatal(err)
		}
		protos = append(protos, k)
	}
	for _, tmpl := range [][]*p11.Attribute{
		{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE), p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509),
			p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_SUBJECT, []byte("0\x00")), p11.NewAttribute(p11.CKA_VALUE, bytes.Repeat([]byte{0x30}, 600))},
		{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA), p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_APPLICATION, "bench"), p11.NewAttribute(p11.CKA_VALUE, bytes.Repeat([]byte("d"), 200))},
	} {
		o, err := h.ctx.CreateObject(h.sh, tmpl)
		if err != nil {
			b.Fatal(err)
		}
		protos = append(protos, o)
	}
	for i := range n {
		label := fmt.Sprintf("object %d", i)
		t := []*p11.Attribute{p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, label)}
		p := protos[i%len(protos)]
		if i%len(protos) != len(protos)-1 { // data objects have no CKA_ID
			t = append(t, p11.NewAttribute(p11.CKA_ID, []byte(label)))
		}
		if _, err := h.ctx.CopyObject(h.sh, p, t); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range protos {
		h.ctx.DestroyObject(h.sh, p)
	}
}

// BenchmarkPKCS11BackupRestore10k: backup, then restore onto an empty SoftHSM2 token, of a token
// of 10 000 mixed objects (KQ_BENCH_OBJECTS sets another number); reports the time of each and
// the process's peak RSS during each (SoftHSM2 runs in the process).
func BenchmarkPKCS11BackupRestore10k(b *testing.B) {
	if env.missing != "" {
		if os.Getenv("CI") == "true" {
			b.Fatal("SoftHSM2 missing: " + env.missing)
		}
		b.Skip("SoftHSM2 missing: " + env.missing)
	}
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("KQ_BENCH_OBJECTS")); err == nil {
		n = v
	}
	mbk := hsmtest.NewMBK(b)
	src := benchToken(b)
	src.LoadBackupKey(b.Context(), mbk)
	mixedToken(b, src, n)
	var backupNS, restoreNS, backupPeak, restorePeak float64
	var size int
	for b.Loop() {
		b.StopTimer()
		dst := benchToken(b)
		dst.LoadBackupKey(b.Context(), mbk)
		var buf bytes.Buffer
		runtime.GC()
		memstat.ResetPeak()
		b.StartTimer()
		t0 := time.Now()
		if err := src.Backup(b.Context(), &buf); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		backupPeak = max(backupPeak, memstat.PeakMiB())
		b.StopTimer()
		size = buf.Len()
		runtime.GC()
		memstat.ResetPeak()
		b.StartTimer()
		t2 := time.Now()
		plan, err := dst.RestoreObjects(b.Context(), bytes.NewReader(buf.Bytes()), hsm.RestoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		restorePeak = max(restorePeak, memstat.PeakMiB())
		if plan.Count(hsm.ActionAdd) != n {
			b.Fatalf("restored %d objects", plan.Count(hsm.ActionAdd))
		}
		backupNS += float64(t1.Sub(t0))
		restoreNS += float64(t3.Sub(t2))
	}
	b.ReportMetric(backupNS/float64(b.N)/1e6, "backup-ms")
	b.ReportMetric(restoreNS/float64(b.N)/1e6, "restore-ms")
	b.ReportMetric(backupPeak, "backup-peak-RSS-MiB")
	b.ReportMetric(restorePeak, "restore-peak-RSS-MiB")
	b.ReportMetric(float64(size)/(1<<20), "backup-MiB")
	b.ReportMetric(float64(n), "objects")
}

// benchToken opens a token of the pool for a benchmark.
func benchToken(b *testing.B) *HSM {
	env.mu.Lock()
	if env.next == tokenPool {
		env.mu.Unlock()
		b.Fatal("token pool exhausted")
	}
	label := tokenLabel(env.next)
	env.next++
	env.mu.Unlock()
	h, err := Open(b.Context(), Config{Module: env.module, Token: label, PIN: []byte(userPIN), Source: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

// BenchmarkPKCS11StoreGrowth: backup, and restore onto an empty SoftHSM2 token, of a token of
// mixed objects at each size of KQ_PKCS11_SIZES (100 / 1 000 / 10 000 unless set: every object
// is a file of SoftHSM2's token, so 100 000 take many minutes to put there); each operation
// also reports the process's peak RSS during it.
func BenchmarkPKCS11StoreGrowth(b *testing.B) {
	if env.missing != "" {
		if os.Getenv("CI") == "true" {
			b.Fatal("SoftHSM2 missing: " + env.missing)
		}
		b.Skip("SoftHSM2 missing: " + env.missing)
	}
	v := os.Getenv("KQ_PKCS11_SIZES")
	if v == "" {
		v = "100,1000,10000"
	}
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("KQ_PKCS11_SIZES: %q is not an object count", s)
		}
		mbk := hsmtest.NewMBK(b)
		src := benchToken(b)
		src.LoadBackupKey(b.Context(), mbk)
		mixedToken(b, src, n)
		var backup bytes.Buffer
		if err := src.Backup(b.Context(), &backup); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("backup/objects=%d", n), func(b *testing.B) {
			var peak float64
			var buf bytes.Buffer
			for b.Loop() {
				b.StopTimer()
				buf.Reset()
				runtime.GC()
				memstat.ResetPeak()
				b.StartTimer()
				if err := src.Backup(b.Context(), &buf); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, memstat.PeakMiB())
			}
			b.ReportMetric(peak, "peak-RSS-MiB")
		})
		b.Run(fmt.Sprintf("restore/objects=%d", n), func(b *testing.B) {
			var peak float64
			for b.Loop() {
				b.StopTimer()
				dst := benchToken(b)
				dst.LoadBackupKey(b.Context(), mbk)
				runtime.GC()
				memstat.ResetPeak()
				b.StartTimer()
				plan, err := dst.RestoreObjects(b.Context(), bytes.NewReader(backup.Bytes()), hsm.RestoreOptions{})
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, memstat.PeakMiB())
				if plan.Count(hsm.ActionAdd) != n {
					b.Fatalf("restored %d objects of %d", plan.Count(hsm.ActionAdd), n)
				}
			}
			b.ReportMetric(peak, "peak-RSS-MiB")
		})
	}
}
