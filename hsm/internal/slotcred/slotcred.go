// Package slotcred is the PKCS#11 slot user credential both HSM backends issue and check: a
// random nonce bound to (slot, card serial) by a MAC under a key only the HSM holds. The MAC
// itself is the backend's (HMAC-SHA256 in software, CKM_SHA256_HMAC on a token); this package
// only lays out the bytes and decides which error a presented credential earns. It never sees
// the MAC key.
//
// Layout (version 1), at most 126 bytes so that it fits a card's user slot:
//
//	offset  size  field
//	0       4     magic "KQSC"
//	4       1     version (1)
//	5       4     slot, big-endian
//	9       16    nonce (random)
//	25      1     serial length L (1..64)
//	26      L     card serial (printable ASCII)
//	26+L    32    MAC over "keyquorum slot credential v1" and everything before it
package slotcred

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/keyquorum/keyquorum/hsm"
)

const (
	magic     = "KQSC"
	version   = 1
	nonceSize = 16
	macSize   = 32
	domain    = "keyquorum slot credential v1"
	// MaxSize is the largest credential this package issues.
	MaxSize = 26 + 64 + macSize
)

// MAC computes the backend's MAC of msg under its slot credential key. It returns a
// 32-byte tag.
type MAC func(msg []byte) ([]byte, error)

// macInput is what the MAC covers: a domain separator and the credential without its tag.
func macInput(body []byte) []byte {
	return append([]byte(domain), body...)
}

// Issue returns a new credential for slot and serial.
func Issue(slot uint, serial string, mac MAC) ([]byte, error) {
	if slot > math.MaxUint32 {
		return nil, fmt.Errorf("issue slot credential: slot %d is out of range", slot)
	}
	if err := hsm.ValidateSerial(serial); err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	body := make([]byte, 0, MaxSize)
	body = append(body, magic...)
	body = append(body, version)
	body = binary.BigEndian.AppendUint32(body, uint32(slot))
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	body = append(body, nonce...)
	body = append(body, byte(len(serial)))
	body = append(body, serial...)
	tag, err := mac(macInput(body))
	if err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	if len(tag) != macSize {
		return nil, fmt.Errorf("issue slot credential: mac of %d bytes, want %d", len(tag), macSize)
	}
	return append(body, tag...), nil
}

// Credential is a decoded credential. Serial and Slot are only trustworthy after [Check].
type Credential struct {
	Slot   uint32
	Serial string
	body   []byte
	tag    []byte
}

// Decode parses a credential strictly. Any malformation is [hsm.ErrCredentialInvalid].
func Decode(b []byte) (*Credential, error) {
	if len(b) < 26+1+macSize || len(b) > MaxSize || !bytes.Equal(b[:4], []byte(magic)) || b[4] != version {
		return nil, hsm.ErrCredentialInvalid
	}
	l := int(b[25])
	if len(b) != 26+l+macSize {
		return nil, hsm.ErrCredentialInvalid
	}
	serial := string(b[26 : 26+l])
	if hsm.ValidateSerial(serial) != nil {
		return nil, hsm.ErrCredentialInvalid
	}
	return &Credential{
		Slot:   binary.BigEndian.Uint32(b[5:9]),
		Serial: serial,
		body:   b[:26+l],
		tag:    b[26+l:],
	}, nil
}

// Check verifies a credential presented for slot from the card with serial. The MAC is
// checked first, so that the serial named in a [*hsm.CardMismatchError] is the one this HSM
// really issued the credential to. Its errors are ready for the operator: the mismatch errors
// name the slot themselves, the others say "activate slot N: ...".
func Check(slot uint, serial string, credential []byte, mac MAC) error {
	c, err := Decode(credential)
	if err != nil {
		return fmt.Errorf("activate slot %d: %w", slot, err)
	}
	want, err := mac(macInput(c.body))
	if err != nil {
		return fmt.Errorf("activate slot %d: %w", slot, err)
	}
	defer hsm.Zero(want)
	if subtle.ConstantTimeCompare(want, c.tag) != 1 {
		return fmt.Errorf("activate slot %d: %w", slot, hsm.ErrCredentialInvalid)
	}
	if c.Serial != serial {
		return &hsm.CardMismatchError{Slot: slot, Issued: c.Serial, Presented: serial}
	}
	if uint(c.Slot) != slot {
		return &hsm.SlotMismatchError{Issued: uint(c.Slot), Presented: slot}
	}
	return nil
}
