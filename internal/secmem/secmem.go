// Package secmem allocates buffers for key material — the master backup key, shares, the
// secrets the soft HSM unseals — in memory that is locked against swapping (mlock) and left out
// of core dumps (MADV_DONTDUMP) where the operating system allows, and zeroes them when they
// are freed.
//
// # How
//
// Buffers of up to [SlotSize] bytes are slots of 64 KiB chunks mapped with mmap outside Go's
// heap (the garbage collector never moves or copies them), each chunk locked with mlock and
// marked MADV_DONTDUMP once, when it is mapped. [Buf.Free] zeroes the slot and returns it to
// its chunk for the next buffer. Chunks stay mapped and locked for the life of the process: a
// slice kept by mistake past Free then reads zeros instead of faulting, and the locked memory
// is bounded by [MaxChunks] chunks.
//
// Where locking is not possible (RLIMIT_MEMLOCK too low for a chunk and no CAP_IPC_LOCK, mmap
// refused, more than MaxChunks chunks in use, a buffer larger than SlotSize) a buffer still
// works: it comes from an unlocked chunk or Go's heap, is zeroed on Free like the others, and
// the reason is logged once and reported by [Status] (keyquorum serve logs it at start).
//
// # What it does not cover
//
// Only the bytes of a Buf are protected. Go code that computes with them makes its own copies
// in the heap that no one can lock or reliably zero: hashicorp/vault/shamir's polynomials and
// the results of Split and Combine (copied into Bufs and zeroed at once, but they existed),
// crypto/hmac's padded key blocks, the AES key schedules inside cipher.AEAD values (the soft
// HSM's sealing keys live there for the life of the process), and whatever the runtime
// copied while growing a stack. mlockall (cmd/keyquorum: when the limit is unlimited) and the
// unit's MemorySwapMax=0 cover those against swap, LimitCORE=0 and the process's RLIMIT_CORE=0
// against core dumps.
package secmem

import (
	"fmt"
	"log/slog"
	"sync"
)

// SlotSize is the largest buffer served from locked memory: a share record is at most 179
// bytes, a key 32.
const SlotSize = 256

// ChunkSize is the size of one mapped, locked chunk: 256 slots.
const ChunkSize = 64 << 10

// MaxChunks bounds the locked memory: 64 chunks, 4 MiB, 16,384 buffers at once.
const MaxChunks = 64

// Buf is a secret buffer. It is owned by one goroutine at a time; Free is idempotent.
type Buf struct {
	b      []byte
	c      *chunk // nil: from the heap
	slot   int
	locked bool
	freed  bool
}

// Bytes is the buffer: len as asked, zeroed when new. It must not be used after Free.
func (b *Buf) Bytes() []byte {
	if b == nil || b.freed {
		return nil
	}
	return b.b
}

// Locked reports whether the buffer is in locked memory.
func (b *Buf) Locked() bool { return b != nil && !b.freed && b.locked }

// Free zeroes the buffer and gives its memory back. Calling it again does nothing.
func (b *Buf) Free() {
	if b == nil || b.freed {
		return
	}
	b.freed = true
	clear(b.b)
	if b.c != nil {
		b.c.a.release(b.c, b.slot)
	}
	b.b = nil
}

// New returns a zeroed buffer of n bytes, in locked memory where possible.
func New(n int) *Buf { return def.alloc(n) }

// Clone returns a new buffer holding a copy of src.
func Clone(src []byte) *Buf {
	b := New(len(src))
	copy(b.b, src)
	return b
}

// Status reports whether the buffers handed out so far are in locked memory, and if not, why.
// Before the first buffer it maps and locks the first chunk, so that a service can say at start
// whether its key buffers will be locked.
func Status() (locked bool, why string) { return def.status() }

// arena hands out slots of chunks. Its functions for the system calls can be replaced by tests.
type arena struct {
	mu     sync.Mutex
	chunks []*chunk
	note   string // why memory is not locked; "" while it is
	warned bool

	mmap func(size int) ([]byte, error)
	// protect locks mem and marks it MADV_DONTDUMP; an error says locking failed (the chunk is
	// still used, unlocked).
	protect func(mem []byte) error
}

type chunk struct {
	a      *arena
	mem    []byte
	locked bool
	free   []int // free slot numbers
}

var def = newArena()

func (a *arena) alloc(n int) *Buf {
	if n < 0 {
		panic("secmem: negative size")
	}
	if n > SlotSize {
		a.noteOnce(fmt.Sprintf("a %d-byte buffer is larger than the %d bytes served from locked memory: it is in Go's heap", n, SlotSize))
		return &Buf{b: make([]byte, n), slot: -1}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.freeChunk()
	if c == nil {
		return &Buf{b: make([]byte, n), slot: -1}
	}
	slot := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	off := slot * SlotSize
	return &Buf{b: c.mem[off : off+n : off+n], c: c, slot: slot, locked: c.locked}
}

// freeChunk returns a chunk with a free slot, mapping a new one if needed; nil when none can be
// had (the reason is noted). a.mu is held.
func (a *arena) freeChunk() *chunk {
	for _, c := range a.chunks {
		if len(c.free) > 0 {
			return c
		}
	}
	if len(a.chunks) >= MaxChunks {
		a.noteLocked(fmt.Sprintf("more than %d key buffers at once: the others are in Go's heap", MaxChunks*ChunkSize/SlotSize))
		return nil
	}
	mem, err := a.mmap(ChunkSize)
	if err != nil {
		a.noteLocked(fmt.Sprintf("mmap of a %d-byte chunk for key buffers: %v; they are in Go's heap", ChunkSize, err))
		return nil
	}
	c := &chunk{a: a, mem: mem, locked: true}
	if err := a.protect(mem); err != nil {
		c.locked = false
		a.noteLocked(err.Error())
	}
	c.free = make([]int, 0, ChunkSize/SlotSize)
	for i := ChunkSize/SlotSize - 1; i >= 0; i-- {
		c.free = append(c.free, i)
	}
	a.chunks = append(a.chunks, c)
	return c
}

func (a *arena) release(c *chunk, slot int) {
	a.mu.Lock()
	c.free = append(c.free, slot)
	a.mu.Unlock()
}

func (a *arena) noteOnce(why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.noteLocked(why)
}

// noteLocked records why memory is not locked and logs it the first time.
func (a *arena) noteLocked(why string) {
	if a.note == "" {
		a.note = why
	}
	if !a.warned {
		a.warned = true
		slog.Warn("key buffers are not all in locked memory", "why", why)
	}
}

func (a *arena) status() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.chunks) == 0 && a.note == "" {
		a.freeChunk()
	}
	return a.note == "", a.note
}
