// Command backup measures the MBK-encrypted backup format (hsm/backup) on a large file, beside
// Go's raw AES-256-GCM on the same data and the age tool (X25519 recipient) on the same file,
// and prints a table of throughput and peak memory. bench/backup.sh runs it on 1 GiB.
//
// Every measurement runs in a child process of its own so that its peak RSS (getrusage
// ru_maxrss) is its own; each is run several times and the fastest run is reported. All
// methods read their input from the same file and write to the same place (encryption to a
// file in the work directory, decryption to /dev/null; every decryption is then checked
// against the input, untimed), so they pay the same I/O. bench/backup.sh puts the work
// directory on tmpfs when it can, so that disk writeback does not decide the race. The key is a
// fixed benchmark key, not a secret.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/keyquorum/keyquorum/hsm/backup"
)

const rawBlock = 1 << 20 // raw AES-GCM seals 1 MiB blocks: its best case

func benchKey() []byte {
	k := sha256.Sum256([]byte("keyquorum benchmark key, not a secret"))
	return k[:]
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: backup compare [-size MiB] [-dir DIR] [-runs N] | gen|raw-seal|raw-open|backup|restore IN OUT")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "compare":
		err = compare(os.Args[2:])
	case "gen", "raw-seal", "raw-open", "backup", "restore":
		if len(os.Args) != 4 {
			err = fmt.Errorf("%s needs IN OUT", os.Args[1])
			break
		}
		err = child(os.Args[1], os.Args[2], os.Args[3])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "backup bench:", err)
		os.Exit(1)
	}
}

// child runs one measured operation from file in to file out.
func child(mode, in, out string) error {
	if mode == "gen" {
		return generate(out, in)
	}
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		return err
	}
	defer dst.Close()
	ctx := context.Background()
	kw, err := backup.NewKeyWrap(benchKey())
	if err != nil {
		return err
	}
	switch mode {
	case "backup":
		w, err := backup.NewWriter(ctx, dst, kw, backup.Header{Source: "bench", Content: "keyquorum/bench/1"})
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, src); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	case "restore":
		r, err := backup.NewReader(ctx, src, kw)
		if err != nil {
			return err
		}
		if _, err := io.Copy(dst, r); err != nil {
			return err
		}
	case "raw-seal", "raw-open":
		if err := raw(mode == "raw-seal", src, dst); err != nil {
			return err
		}
	}
	return dst.Close()
}

// raw is AES-256-GCM and nothing else: 1 MiB blocks, a counter nonce, no framing.
func raw(seal bool, src io.Reader, dst io.Writer) error {
	block, err := aes.NewCipher(benchKey())
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	size := rawBlock
	if !seal {
		size += aead.Overhead()
	}
	in := make([]byte, size)
	out := make([]byte, 0, rawBlock+aead.Overhead())
	nonce := make([]byte, aead.NonceSize())
	for n := uint64(0); ; n++ {
		k, err := io.ReadFull(src, in)
		if err == io.EOF {
			return nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return err
		}
		binary.BigEndian.PutUint64(nonce[4:], n)
		if seal {
			out = aead.Seal(out[:0], nonce, in[:k], nil)
		} else if out, err = aead.Open(out[:0], nonce, in[:k], nil); err != nil {
			return err
		}
		if _, err := dst.Write(out); err != nil {
			return err
		}
	}
}

// generate writes size MiB of pseudo-random bytes (incompressible, like key material).
func generate(out, sizeMiB string) error {
	var mib int
	if _, err := fmt.Sscan(sizeMiB, &mib); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for range mib {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Close()
}

type result struct {
	name    string
	best    time.Duration
	peakKiB int64
}

// measure runs argv runs times and keeps the fastest run and the highest peak RSS.
func measure(name string, runs int, argv ...string) (result, error) {
	r := result{name: name}
	for i := 0; i < runs; i++ {
		cmd := exec.Command(argv[0], argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return r, fmt.Errorf("%s: %v: %s", name, err, stderr.String())
		}
		d := time.Since(start)
		if r.best == 0 || d < r.best {
			r.best = d
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > r.peakKiB {
			r.peakKiB = ru.Maxrss // KiB on Linux
		}
	}
	return r, nil
}

func sameFiles(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ra, rb := bufio.NewReaderSize(fa, 1<<20), bufio.NewReaderSize(fb, 1<<20)
	x, y := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		n, errA := io.ReadFull(ra, x)
		m, errB := io.ReadFull(rb, y)
		if n != m || !bytes.Equal(x[:n], y[:m]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == errA, nil
		}
		if errA != nil {
			return false, errA
		}
	}
}

func compare(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	sizeMiB := fs.Int("size", 1024, "size of the test file, MiB")
	dir := fs.String("dir", "", "work directory (default: a new temp dir, removed after)")
	runs := fs.Int("runs", 3, "runs of each method; the fastest counts")
	fs.Parse(args)
	if *dir == "" {
		d, err := os.MkdirTemp("", "kq-backup-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	agePath, err := exec.LookPath("age")
	if err != nil {
		return errors.New("age not found (Debian package age; scripts/deps installs it)")
	}
	p := func(name string) string { return filepath.Join(*dir, name) }
	fmt.Printf("generating %d MiB of test data in %s ...\n", *sizeMiB, *dir)
	if out, err := exec.Command(self, "gen", fmt.Sprint(*sizeMiB), p("data")).CombinedOutput(); err != nil {
		return fmt.Errorf("generate: %v: %s", err, out)
	}
	if out, err := exec.Command("age-keygen", "-o", p("age.key")).CombinedOutput(); err != nil {
		return fmt.Errorf("age-keygen: %v: %s", err, out)
	}
	recipient, err := exec.Command("age-keygen", "-y", p("age.key")).Output()
	if err != nil {
		return fmt.Errorf("age-keygen -y: %v", err)
	}
	// Read the input once so that every method starts from the page cache.
	if _, err := sameFiles(p("data"), p("data")); err != nil {
		return err
	}

	steps := []struct {
		name string
		argv []string
	}{
		{"raw AES-256-GCM seal", []string{self, "raw-seal", p("data"), p("data.raw")}},
		{"backup (hsm/backup writer)", []string{self, "backup", p("data"), p("data.kqbk")}},
		{"age encrypt (X25519)", []string{agePath, "-r", strings.TrimSpace(string(recipient)), "-o", p("data.age"), p("data")}},
		{"raw AES-256-GCM open", []string{self, "raw-open", p("data.raw"), os.DevNull}},
		{"restore (hsm/backup reader)", []string{self, "restore", p("data.kqbk"), os.DevNull}},
		{"age decrypt (X25519)", []string{agePath, "-d", "-i", p("age.key"), "-o", os.DevNull, p("data.age")}},
	}
	res := map[string]result{}
	for _, s := range steps {
		r, err := measure(s.name, *runs, s.argv...)
		if err != nil {
			return err
		}
		res[s.name] = r
	}
	// The timed decryptions wrote to /dev/null; decrypt once more, untimed, and compare.
	for i, argv := range [][]string{
		{self, "raw-open", p("data.raw"), p("check")},
		{self, "restore", p("data.kqbk"), p("check")},
		{agePath, "-d", "-i", p("age.key"), "-o", p("check"), p("data.age")},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", steps[3+i].name, err, out)
		}
		ok, err := sameFiles(p("data"), p("check"))
		os.Remove(p("check"))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s does not give back the input", steps[3+i].name)
		}
	}

	bytesN := float64(*sizeMiB) * (1 << 20)
	mbps := func(r result) float64 { return bytesN / 1e6 / r.best.Seconds() }
	fmt.Printf("\n%d MiB, best of %d runs, %d CPUs (%s/%s), MB = 10^6 bytes\n\n", *sizeMiB, *runs, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("%-30s %10s %9s %13s %9s\n", "method", "MB/s", "time", "peak RSS", "vs raw")
	for i, s := range steps {
		r := res[s.name]
		rawName := steps[0].name
		if i >= 3 {
			rawName = steps[3].name
		}
		fmt.Printf("%-30s %10.0f %8.2fs %9.1f MiB %8.0f%%\n", s.name, mbps(r), r.best.Seconds(), float64(r.peakKiB)/1024, 100*mbps(r)/mbps(res[rawName]))
	}
	check := func(ok bool, what string) string {
		if ok {
			return "PASS  " + what
		}
		return "FAIL  " + what
	}
	b, rs := res[steps[1].name], res[steps[4].name]
	fmt.Println()
	fmt.Println(check(mbps(b) >= 0.9*mbps(res[steps[0].name]), "backup at >= 90% of raw AES-256-GCM seal"))
	fmt.Println(check(mbps(rs) >= 0.9*mbps(res[steps[3].name]), "restore at >= 90% of raw AES-256-GCM open"))
	fmt.Println(check(mbps(b) > mbps(res[steps[2].name]), "backup faster than age encrypt"))
	fmt.Println(check(mbps(rs) > mbps(res[steps[5].name]), "restore faster than age decrypt"))
	fmt.Println(check(b.peakKiB < 64<<10 && rs.peakKiB < 64<<10, "backup and restore peak RSS under 64 MiB"))
	return nil
}
