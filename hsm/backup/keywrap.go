package backup

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/keyquorum/keyquorum/hsm"
)

// KeyWrapper is the MBK as the format needs it: it wraps a backup's data key and unwraps it
// again, with AES Key Wrap with Padding (RFC 5649, the same as PKCS#11 CKM_AES_KEY_WRAP_PAD) so
// that a backup written by one backend opens in another holding the same MBK. The soft backend
// wraps in memory ([NewKeyWrap]); the pkcs11 backend lets the token do it, the MBK never leaving
// it.
type KeyWrapper interface {
	// KeyID is the key ID of the MBK.
	KeyID() hsm.KeyID
	// WrapKey returns key wrapped under the MBK.
	WrapKey(ctx context.Context, key []byte) ([]byte, error)
	// UnwrapKey returns the key inside wrapped, or [ErrUnwrap] when wrapped was not made by
	// this MBK or was altered.
	UnwrapKey(ctx context.Context, wrapped []byte) ([]byte, error)
}

// ErrUnwrap means a wrapped key did not open under the MBK: altered, or wrapped by another key.
var ErrUnwrap = errors.New("wrapped key does not open under this master backup key")

// KeyWrap is a [KeyWrapper] that holds the MBK in memory, as an AES key schedule.
type KeyWrap struct {
	block cipher.Block
	id    hsm.KeyID
}

// NewKeyWrap returns a KeyWrapper for mbk. It keeps no copy of mbk itself (the caller zeroes
// its own); the AES key schedule it keeps lives until the KeyWrap is garbage.
func NewKeyWrap(mbk []byte) (*KeyWrap, error) {
	if len(mbk) != hsm.KeySize {
		return nil, hsm.ErrKeySize
	}
	b, err := aes.NewCipher(mbk)
	if err != nil {
		return nil, fmt.Errorf("new key wrap: %w", err)
	}
	return &KeyWrap{block: b, id: hsm.KeyIDOf(mbk)}, nil
}

// KeyID implements [KeyWrapper].
func (k *KeyWrap) KeyID() hsm.KeyID { return k.id }

// WrapKey implements [KeyWrapper].
func (k *KeyWrap) WrapKey(_ context.Context, key []byte) ([]byte, error) {
	return wrapPad(k.block, key)
}

// UnwrapKey implements [KeyWrapper].
func (k *KeyWrap) UnwrapKey(_ context.Context, wrapped []byte) ([]byte, error) {
	return unwrapPad(k.block, wrapped)
}

var kwpIV = [4]byte{0xa6, 0x59, 0x59, 0xa6} // RFC 5649 section 3, the alternative IV prefix

// WrappedLen is the length of a key of n bytes wrapped with RFC 5649.
func WrappedLen(n int) int { return (n+7)/8*8 + 8 }

// wrapPad is RFC 5649 AES Key Wrap with Padding.
func wrapPad(block cipher.Block, key []byte) ([]byte, error) {
	if len(key) == 0 || len(key) > 1<<16 {
		return nil, fmt.Errorf("wrap key: key of %d bytes", len(key))
	}
	n := (len(key) + 7) / 8 // 64-bit blocks of padded plaintext
	out := make([]byte, 8+8*n)
	copy(out[:4], kwpIV[:])
	binary.BigEndian.PutUint32(out[4:8], uint32(len(key)))
	copy(out[8:], key) // padding is already zero
	if n == 1 {
		block.Encrypt(out, out)
		return out, nil
	}
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], out[:8])
			copy(b[8:], out[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:8*i+8], b[8:])
		}
	}
	clear(b[:])
	return out, nil
}

// unwrapPad inverts wrapPad and checks the integrity value and the padding.
func unwrapPad(block cipher.Block, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 || len(wrapped) > 1<<16+16 {
		return nil, ErrUnwrap
	}
	n := len(wrapped)/8 - 1
	buf := make([]byte, len(wrapped))
	copy(buf, wrapped)
	if n == 1 {
		block.Decrypt(buf, buf)
	} else {
		var b [16]byte
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				t := uint64(n*j + i)
				binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(buf[:8])^t)
				copy(b[8:], buf[8*i:8*i+8])
				block.Decrypt(b[:], b[:])
				copy(buf[:8], b[:8])
				copy(buf[8*i:8*i+8], b[8:])
			}
		}
		clear(b[:])
	}
	mli := int(binary.BigEndian.Uint32(buf[4:8]))
	ok := subtle.ConstantTimeCompare(buf[:4], kwpIV[:])
	if mli <= 8*(n-1) || mli > 8*n {
		ok = 0
	} else {
		var pad byte
		for _, c := range buf[8+mli:] {
			pad |= c
		}
		ok &= subtle.ConstantTimeByteEq(pad, 0)
	}
	if ok != 1 {
		clear(buf)
		return nil, ErrUnwrap
	}
	key := make([]byte, mli)
	copy(key, buf[8:8+mli])
	clear(buf)
	return key, nil
}
