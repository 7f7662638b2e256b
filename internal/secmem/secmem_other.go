//go:build !linux

package secmem

import "errors"

// Elsewhere than Linux the buffers come from Go's heap: zeroed on Free, not locked.
func newArena() *arena {
	return &arena{
		mmap:    func(int) ([]byte, error) { return nil, errors.New("locked key buffers need Linux") },
		protect: func([]byte) error { return nil },
	}
}
