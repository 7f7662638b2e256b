package main

import "syscall"

// disableCoreDumps sets the core file size limit to zero for this process and its children, so
// that a crash of a process holding the master backup key or shares in memory writes nothing
// to disk. The systemd unit sets LimitCORE=0 as well; this covers a start by hand.
func disableCoreDumps() error {
	return syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: 0})
}
