package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"

	"golang.org/x/sys/unix"
)

// disableCoreDumps sets the core file size limit to zero for this process and its children, so
// that a crash of a process holding the master backup key or shares in memory writes nothing
// to disk. The systemd unit sets LimitCORE=0 as well; this covers a start by hand.
func disableCoreDumps() error {
	return syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: 0})
}

// startCPUProfile writes a CPU profile of this process to path until stop is called
// (KEYQUORUM_CPUPROFILE, for bench/webload).
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// lockMemory keeps the process's memory — the master backup key, shares and PINs among it — out
// of swap, best effort: mlockall(MCL_CURRENT|MCL_FUTURE) when the memory-lock limit is unlimited
// (root started by hand, or a unit with LimitMEMLOCK=infinity). Under a smaller limit it locks
// nothing: with MCL_FUTURE every allocation past the limit would fail and the process die. The
// systemd unit keeps the service out of swap anyway (MemorySwapMax=0). It returns whether memory
// is locked, and if not, why.
func lockMemory() (bool, string) {
	return lockMemoryWith(func() (uint64, error) {
		var r unix.Rlimit
		err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &r)
		return r.Cur, err
	}, func() error { return unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE) })
}

func lockMemoryWith(limit func() (uint64, error), mlockall func() error) (bool, string) {
	cur, err := limit()
	if err != nil {
		return false, "the memory-lock limit cannot be read: " + err.Error()
	}
	if cur != unix.RLIM_INFINITY {
		return false, fmt.Sprintf("the memory-lock limit is %d bytes, not unlimited (LimitMEMLOCK=infinity, or ulimit -l unlimited, to lock)", cur)
	}
	if err := mlockall(); err != nil {
		return false, "mlockall: " + err.Error()
	}
	return true, ""
}
