// Package memstat reads a process's peak resident set size for benchmarks: Linux keeps it in
// /proc/self/status (VmHWM) and resets it when "5" is written to /proc/self/clear_refs.
package memstat

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// ResetPeak resets the peak RSS of this process; false where the kernel does not allow it.
func ResetPeak() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// PeakMiB returns the peak RSS of this process since the start or the last ResetPeak, in MiB,
// or 0 where it cannot be read.
func PeakMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// AnonMiB returns the anonymous resident memory of this process (RssAnon: heap and stacks, not
// the pages of mapped files such as a bbolt database), in MiB, or 0 where it cannot be read.
func AnonMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// WatchAnon samples AnonMiB every 10 ms until the returned function is called, which returns
// the highest sample. The peak RSS (PeakMiB) of a process that reads a memory-mapped file
// counts every page of the file it touched; this is what it holds besides.
func WatchAnon() (stop func() float64) {
	done := make(chan struct{})
	peak := make(chan float64)
	go func() {
		hi := AnonMiB()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				hi = max(hi, AnonMiB())
			case <-done:
				peak <- max(hi, AnonMiB())
				return
			}
		}
	}()
	return func() float64 {
		close(done)
		return <-peak
	}
}
