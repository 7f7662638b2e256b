//go:build !cgo

// Package pkcs11 is the hsm.HSM of a real hardware security module through PKCS#11. It needs
// cgo (the PKCS#11 library is loaded with dlopen); this build has none, so Open says so.
package pkcs11

import (
	"context"
	"errors"

	"github.com/keyquorum/keyquorum/hsm"
)

// ErrNoCgo means this binary was built without cgo and cannot load a PKCS#11 library.
var ErrNoCgo = errors.New("open pkcs11 hsm: this build has no cgo, so it cannot load a pkcs11 library: rebuild with CGO_ENABLED=1")

// Config says which token to use.
type Config struct {
	Module string
	Token  string
	PIN    []byte
	Source string
}

// HSM is unavailable without cgo.
type HSM struct{ hsm.HSM }

// Open fails with ErrNoCgo.
func Open(context.Context, Config) (*HSM, error) { return nil, ErrNoCgo }
