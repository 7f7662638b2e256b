package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
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
