package soft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/hsmtest"
	"github.com/keyquorum/keyquorum/internal/memstat"
)

// mixedStore fills h with n objects of every kind, in equal parts: RSA-2048 and EC P-256 key
// pairs, AES-128/192/256 keys, generic secrets, certificates, data objects. Keys of a kind share
// their material (generating thousands of RSA keys would measure key generation).
func mixedStore(b *testing.B, h *HSM, n int) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	cert, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	rsaPair, rsaDER, _ := keyPair(rsaKey, "x", []byte{1}, true)
	ecPair, ecDER, _ := keyPair(ecKey, "x", []byte{1}, true)
	type obj struct {
		rec      *backup.ObjectRecord
		material []byte
	}
	kinds := []func(i int) obj{
		func(int) obj { return obj{rsaPair[0], rsaDER} },
		func(int) obj { return obj{rsaPair[1], nil} },
		func(int) obj { return obj{ecPair[0], ecDER} },
		func(int) obj { return obj{ecPair[1], nil} },
		func(int) obj { return obj{appKeyRecord("x", []byte{1}, 16), make([]byte, 16)} },
		func(int) obj { return obj{appKeyRecord("x", []byte{1}, 24), make([]byte, 24)} },
		func(int) obj { return obj{appKeyRecord("x", []byte{1}, 32), make([]byte, 32)} },
		func(int) obj {
			r := appKeyRecord("x", []byte{1}, 32)
			r.Type = hsm.KeyGenericSecret
			return obj{r, make([]byte, 32)}
		},
		func(int) obj {
			return obj{&backup.ObjectRecord{Class: hsm.ClassCertificate, Type: hsm.CertX509, Attrs: sortAttrs([]hsm.Attr{
				{Type: hsm.AttrLabel, Value: []byte("x")}, {Type: hsm.AttrID, Value: []byte{1}}, {Type: hsm.AttrValue, Value: cert}})}, nil}
		},
		func(int) obj {
			return obj{&backup.ObjectRecord{Class: hsm.ClassData, Type: hsm.NoType, Attrs: sortAttrs([]hsm.Attr{
				{Type: hsm.AttrLabel, Value: []byte("x")}, {Type: hsm.AttrValue, Value: bytes.Repeat([]byte("d"), 200)}})}, nil}
		},
	}
	for start := 0; start < n; start += 1000 {
		err := h.db.Update(func(tx *bolt.Tx) error {
			for i := start; i < min(n, start+1000); i++ {
				o := kinds[i%len(kinds)](i)
				rec := *o.rec
				rec.Flags = 0
				rec.Attrs = relabel(rec.Attrs, fmt.Sprintf("object %d", i))
				if _, err := h.putObject(tx.Bucket(bucketObjects), nil, &rec, o.material); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// relabel gives a copy of attrs the label and ID of one object.
func relabel(attrs []hsm.Attr, label string) []hsm.Attr {
	out := make([]hsm.Attr, len(attrs))
	copy(out, attrs)
	for i := range out {
		switch out[i].Type {
		case hsm.AttrLabel:
			out[i].Value = []byte(label)
		case hsm.AttrID:
			out[i].Value = []byte(label)
		}
	}
	return out
}

// BenchmarkSoftBackupRestore10k: backup, then restore onto an empty soft HSM, of a store of
// 10 000 mixed objects (KQ_BENCH_OBJECTS sets another number); reports the time of each and the process's peak RSS during each.
func BenchmarkSoftBackupRestore10k(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("KQ_BENCH_OBJECTS")); err == nil {
		n = v
	}
	mbk := hsmtest.NewMBK(b)
	src, err := Open(b.TempDir(), WithSource("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	src.LoadBackupKey(b.Context(), mbk)
	mixedStore(b, src, n)
	var backupNS, restoreNS, backupPeak, restorePeak float64
	var size int
	for b.Loop() {
		b.StopTimer()
		dst, err := Open(b.TempDir(), WithSource("bench"))
		if err != nil {
			b.Fatal(err)
		}
		dst.LoadBackupKey(b.Context(), mbk)
		var buf bytes.Buffer
		buf.Grow(8 << 20)
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
		b.StopTimer()
		dst.Close()
		b.StartTimer()
	}
	b.ReportMetric(backupNS/float64(b.N)/1e6, "backup-ms")
	b.ReportMetric(restoreNS/float64(b.N)/1e6, "restore-ms")
	b.ReportMetric(backupPeak, "backup-peak-RSS-MiB")
	b.ReportMetric(restorePeak, "restore-peak-RSS-MiB")
	b.ReportMetric(float64(size)/(1<<20), "backup-MiB")
}

// storeSizes are the object counts of the growth benchmarks: KQ_STORE_SIZES (comma-separated)
// or 100, 10 000 and 100 000.
func storeSizes(b *testing.B) []int {
	v := os.Getenv("KQ_STORE_SIZES")
	if v == "" {
		v = "100,10000,100000"
	}
	var sizes []int
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("KQ_STORE_SIZES: %q is not an object count", s)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// BenchmarkSoftStoreGrowth: backup, and restore onto an empty soft HSM, of a store of mixed
// objects at each size of KQ_STORE_SIZES (100 / 10 000 / 100 000 unless set), so that the
// report can show how the time grows with the store; each operation also reports the
// process's peak RSS during it.
func BenchmarkSoftStoreGrowth(b *testing.B) {
	for _, n := range storeSizes(b) {
		mbk := hsmtest.NewMBK(b)
		src, err := Open(b.TempDir(), WithSource("bench"))
		if err != nil {
			b.Fatal(err)
		}
		src.LoadBackupKey(b.Context(), mbk)
		mixedStore(b, src, n)
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
				dst, err := Open(b.TempDir(), WithSource("bench"))
				if err != nil {
					b.Fatal(err)
				}
				dst.LoadBackupKey(b.Context(), mbk)
				runtime.GC()
				memstat.ResetPeak()
				b.StartTimer()
				plan, err := dst.RestoreObjects(b.Context(), bytes.NewReader(backup.Bytes()), hsm.RestoreOptions{})
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, memstat.PeakMiB())
				b.StopTimer()
				if plan.Count(hsm.ActionAdd) != n {
					b.Fatalf("restored %d objects of %d", plan.Count(hsm.ActionAdd), n)
				}
				dst.Close()
				b.StartTimer()
			}
			b.ReportMetric(peak, "peak-RSS-MiB")
		})
		src.Close()
	}
}
