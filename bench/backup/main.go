// Command backup measures the MBK-encrypted backup format (hsm/backup) on a large file, beside
// Go's raw AES-256-GCM on the same data and the age tool (X25519 recipient) on the same file,
// and prints a table of throughput and peak memory. bench/backup.sh runs it on 1 GiB.
//
// Every measurement runs in a child process of its own so that its peak RSS (getrusage
// ru_maxrss) is its own. They run in rounds, every method once per round; each figure is the
// median over the rounds, and each speed ratio the median of the ratios within a round. All
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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
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

// result is one method's runs: the time of each and the highest peak RSS of any.
type result struct {
	times   []time.Duration
	peakKiB int64
}

func (r result) median() time.Duration {
	t := slices.Clone(r.times)
	slices.Sort(t)
	if len(t)%2 == 1 {
		return t[len(t)/2]
	}
	return (t[len(t)/2-1] + t[len(t)/2]) / 2
}

// measure runs argv once and adds its time and peak RSS to r.
func measure(r *result, name string, argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, stderr.String())
	}
	r.times = append(r.times, time.Since(start))
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > r.peakKiB {
		r.peakKiB = ru.Maxrss // KiB on Linux
	}
	return nil
}

func medianOf(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
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
	runs := fs.Int("runs", 3, "rounds; each runs every method once, and the median counts")
	jsonOut := fs.String("json", "", "also write the results as JSON to `file` (for bench/report)")
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
		key, name string
		argv      []string
	}{
		{"raw-seal", "raw AES-256-GCM seal", []string{self, "raw-seal", p("data"), p("data.raw")}},
		{"backup", "backup (hsm/backup writer)", []string{self, "backup", p("data"), p("data.kqbk")}},
		{"age-encrypt", "age encrypt (X25519)", []string{agePath, "-r", strings.TrimSpace(string(recipient)), "-o", p("data.age"), p("data")}},
		{"raw-open", "raw AES-256-GCM open", []string{self, "raw-open", p("data.raw"), os.DevNull}},
		{"restore", "restore (hsm/backup reader)", []string{self, "restore", p("data.kqbk"), os.DevNull}},
		{"age-decrypt", "age decrypt (X25519)", []string{agePath, "-d", "-i", p("age.key"), "-o", os.DevNull, p("data.age")}},
	}
	// Rounds, not method after method: every method runs once per round, so a comparison is
	// between runs made moments apart, and a ratio is taken within each round.
	res := make([]result, len(steps))
	for round := range *runs {
		for i, s := range steps {
			if err := measure(&res[i], s.name, s.argv...); err != nil {
				return err
			}
		}
		fmt.Printf("round %d of %d done\n", round+1, *runs)
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
	mbps := func(d time.Duration) float64 { return bytesN / 1e6 / d.Seconds() }
	// ratio is the median over the rounds of method a's speed over method b's.
	ratio := func(a, b int) float64 {
		var v []float64
		for i := range res[a].times {
			v = append(v, res[b].times[i].Seconds()/res[a].times[i].Seconds())
		}
		return medianOf(v)
	}
	fmt.Printf("\n%d MiB, median of %d rounds, %d CPUs (%s/%s), MB = 10^6 bytes; ratios are medians of the per-round ratios\n\n",
		*sizeMiB, *runs, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("%-30s %10s %9s %13s %9s\n", "method", "MB/s", "time", "peak RSS", "vs raw")
	out := jsonResult{SizeMiB: *sizeMiB, Runs: *runs}
	for i, s := range steps {
		raw := 0
		if i >= 3 {
			raw = 3
		}
		r := res[i]
		fmt.Printf("%-30s %10.0f %8.2fs %9.1f MiB %8.0f%%\n", s.name, mbps(r.median()), r.median().Seconds(), float64(r.peakKiB)/1024, 100*ratio(i, raw))
		out.Methods = append(out.Methods, jsonMethod{Key: s.key, Name: s.name, MedianSeconds: r.median().Seconds(),
			MBps: mbps(r.median()), PeakMiB: float64(r.peakKiB) / 1024})
	}
	out.BackupVsRaw, out.BackupVsAge = ratio(1, 0), ratio(1, 2)
	out.RestoreVsRaw, out.RestoreVsAge = ratio(4, 3), ratio(4, 5)
	check := func(ok bool, what string) string {
		if ok {
			return "PASS  " + what
		}
		return "FAIL  " + what
	}
	fmt.Println()
	fmt.Println(check(out.BackupVsRaw >= 0.9, "backup at >= 90% of raw AES-256-GCM seal"))
	fmt.Println(check(out.RestoreVsRaw >= 0.9, "restore at >= 90% of raw AES-256-GCM open"))
	fmt.Println(check(out.BackupVsAge > 1, "backup faster than age encrypt"))
	fmt.Println(check(out.RestoreVsAge > 1, "restore faster than age decrypt"))
	fmt.Println(check(res[1].peakKiB < 64<<10 && res[4].peakKiB < 64<<10, "backup and restore peak RSS under 64 MiB"))
	if *jsonOut != "" {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

// jsonResult is what -json writes: each method's median and peak RSS, and the speed ratios
// (>1: the backup format is faster).
type jsonResult struct {
	SizeMiB      int          `json:"size_mib"`
	Runs         int          `json:"runs"`
	Methods      []jsonMethod `json:"methods"`
	BackupVsRaw  float64      `json:"backup_vs_raw"`
	BackupVsAge  float64      `json:"backup_vs_age"`
	RestoreVsRaw float64      `json:"restore_vs_raw"`
	RestoreVsAge float64      `json:"restore_vs_age"`
}

type jsonMethod struct {
	Key           string  `json:"key"`
	Name          string  `json:"name"`
	MedianSeconds float64 `json:"median_s"`
	MBps          float64 `json:"mbps"`
	PeakMiB       float64 `json:"peak_mib"`
}
