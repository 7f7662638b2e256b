package secmem

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func newArena() *arena {
	return &arena{mmap: mmapAnon, protect: protect}
}

func mmapAnon(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

// protect keeps mem out of core dumps and locks it in RAM.
func protect(mem []byte) error {
	var dump string
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		dump = fmt.Sprintf(" (and MADV_DONTDUMP: %v)", err)
	}
	if err := unix.Mlock(mem); err != nil {
		var r unix.Rlimit
		limit := "unknown"
		if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &r) == nil {
			limit = fmt.Sprintf("%d bytes", r.Cur)
		}
		return fmt.Errorf("mlock of a %d-byte chunk for key buffers: %v (memory-lock limit %s; LimitMEMLOCK in the unit raises it): key buffers can be swapped out%s", len(mem), err, limit, dump)
	}
	if dump != "" {
		return fmt.Errorf("key buffers are locked but may appear in a core dump%s", dump)
	}
	return nil
}
