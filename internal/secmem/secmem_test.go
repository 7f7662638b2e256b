package secmem

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mappingFlags returns the VmFlags of the mapping that holds addr (/proc/self/smaps).
func mappingFlags(t *testing.T, addr uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 && strings.Contains(strings.Fields(line)[0], "-") {
			in = addr >= lo && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return nil
}

func vmLck(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmLck:"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}

// canLock says whether this process may lock a chunk: root (CAP_IPC_LOCK) or a limit that
// leaves room. Otherwise the test checks the fallback instead, and says so.
func canLock() bool {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &r) != nil {
		return false
	}
	return os.Geteuid() == 0 || r.Cur == unix.RLIM_INFINITY || r.Cur >= 2*ChunkSize
}

// TestBufferLockedAndZeroed: a key buffer lives in a mapping that the kernel reports locked
// ("lo") and left out of core dumps ("dd"), VmLck counts it, and Free zeroes it.
func TestBufferLockedAndZeroed(t *testing.T) {
	a := newArena()
	before := vmLck(t)
	b := a.alloc(32)
	if len(b.Bytes()) != 32 || cap(b.Bytes()) != 32 {
		t.Fatalf("len %d cap %d", len(b.Bytes()), cap(b.Bytes()))
	}
	for i := range b.Bytes() {
		b.Bytes()[i] = 0xA5
	}
	addr := uintptr(unsafe.Pointer(&b.Bytes()[0]))
	flags := mappingFlags(t, addr)
	if !contains(flags, "dd") {
		t.Errorf("mapping flags %v: not excluded from core dumps", flags)
	}
	if canLock() {
		if !b.Locked() || !contains(flags, "lo") {
			t.Fatalf("locked %v, mapping flags %v, note %q", b.Locked(), flags, a.note)
		}
		if got := vmLck(t); got < before+ChunkSize/1024 {
			t.Errorf("VmLck %d kB → %d kB, want +%d kB", before, got, ChunkSize/1024)
		}
	} else {
		if b.Locked() || a.note == "" {
			t.Fatalf("lock limit too low, but locked %v, note %q", b.Locked(), a.note)
		}
		t.Logf("memory-lock limit too low here: checked the fallback (%s)", a.note)
	}
	// Free zeroes the memory (read through the chunk, which stays mapped) and recycles the slot.
	slot := b.Bytes()
	b.Free()
	for i, v := range slot {
		if v != 0 {
			t.Fatalf("byte %d is %#x after Free", i, v)
		}
	}
	if b.Bytes() != nil || b.Locked() {
		t.Error("a freed buffer still hands out its bytes")
	}
	b.Free() // idempotent
	c := a.alloc(16)
	if uintptr(unsafe.Pointer(&c.Bytes()[0])) != addr {
		t.Error("the freed slot was not reused")
	}
	c.Free()
}

// TestFallbacks: a buffer larger than a slot, a refused mlock and a refused mmap each still give
// a working buffer that is zeroed on Free, and the reason is kept for Status.
func TestFallbacks(t *testing.T) {
	a := newArena()
	big := a.alloc(SlotSize + 1)
	if big.Locked() || len(big.Bytes()) != SlotSize+1 || !strings.Contains(a.note, "larger") {
		t.Fatalf("big: locked %v, note %q", big.Locked(), a.note)
	}
	big.Bytes()[0] = 1
	mem := big.Bytes()
	big.Free()
	if mem[0] != 0 {
		t.Error("a heap buffer was not zeroed")
	}

	a = newArena()
	a.protect = func([]byte) error { return errors.New("mlock: cannot allocate memory (limit 0 bytes)") }
	b := a.alloc(32)
	if b.Locked() || len(b.Bytes()) != 32 {
		t.Fatal("a buffer of an unlocked chunk says it is locked")
	}
	if ok, why := a.status(); ok || !strings.Contains(why, "limit 0") {
		t.Fatalf("status %v %q", ok, why)
	}
	b.Free()

	a = newArena()
	a.mmap = func(int) ([]byte, error) { return nil, unix.ENOMEM }
	c := a.alloc(32)
	if c.Locked() || len(c.Bytes()) != 32 || !strings.Contains(a.note, "mmap") {
		t.Fatalf("no mmap: locked %v, note %q", c.Locked(), a.note)
	}
	c.Free()
}

// TestManyBuffers fills more than one chunk and frees everything; every buffer is distinct.
func TestManyBuffers(t *testing.T) {
	a := newArena()
	seen := map[uintptr]bool{}
	var bufs []*Buf
	for i := 0; i < ChunkSize/SlotSize+10; i++ {
		b := a.alloc(SlotSize)
		p := uintptr(unsafe.Pointer(&b.Bytes()[0]))
		if seen[p] {
			t.Fatalf("buffer %d handed out twice", i)
		}
		seen[p] = true
		bufs = append(bufs, b)
	}
	if len(a.chunks) != 2 {
		t.Fatalf("%d chunks", len(a.chunks))
	}
	for _, b := range bufs {
		b.Free()
	}
	if n := len(a.chunks[0].free) + len(a.chunks[1].free); n != 2*ChunkSize/SlotSize {
		t.Fatalf("%d slots free", n)
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
