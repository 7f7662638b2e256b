package hsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestKeyIDOf pins the key ID: it must stay equal to sharing.KeyIDOf, which the cards carry.
func TestKeyIDOf(t *testing.T) {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	if got := KeyIDOf(k).String(); got != "eb1e6725a3b8c077" {
		t.Errorf("KeyIDOf(00..1f) = %s", got)
	}
	if got := KeyIDOf(make([]byte, KeySize)).String(); got != "57e450443d88d946" {
		t.Errorf("KeyIDOf(zeros) = %s", got)
	}
}

func TestValidate(t *testing.T) {
	for _, l := range []string{"a", "signing key", "schlüssel", strings.Repeat("x", 64)} {
		if err := ValidateLabel(l); err != nil {
			t.Errorf("label %q: %v", l, err)
		}
	}
	for _, l := range []string{"", strings.Repeat("x", 65), "new\nline", "\x7f", "bad \xff utf8"} {
		if err := ValidateLabel(l); !errors.Is(err, ErrInvalidLabel) {
			t.Errorf("label %q accepted", l)
		}
	}
	for _, s := range []string{"", "a b", strings.Repeat("1", 65), "ü"} {
		if err := ValidateSerial(s); !errors.Is(err, ErrInvalidSerial) {
			t.Errorf("serial %q accepted", s)
		}
	}
}

// TestErrorTexts: every error text is lowercase, says what happened and where, and errors.Is
// and errors.As find the condition.
func TestErrorTexts(t *testing.T) {
	var a, b KeyID
	a[0], b[0] = 0xaa, 0xbb
	cases := []struct {
		err  error
		want string
		is   error
	}{
		{&ForeignKeyError{Got: a, Want: b}, "backup was made under master backup key aa00000000000000, this hsm holds bb00000000000000", nil},
		{&BackupError{Err: ErrBackupTruncated, Chunk: 3, Offset: 100, Detail: "the file ends inside the chunk"}, "read backup: backup is truncated: chunk 3 (byte 100): the file ends inside the chunk", ErrBackupTruncated},
		{&BackupError{Err: ErrBackupTampered, Chunk: -1, Offset: 30}, "read backup: backup was altered or damaged: header (byte 30)", ErrBackupTampered},
		{&BackupError{Err: ErrBackupReordered, Chunk: 1, Found: 2, Offset: 7}, "read backup: backup chunks are out of order: chunk 2 found where chunk 1 belongs (byte 7)", ErrBackupReordered},
		{&BackupError{Err: ErrBackupVersion, Chunk: -1, Version: 9}, "read backup: version 9 is not supported", ErrBackupVersion},
		{&ContentError{Got: "a", Want: "b"}, `restore backup: it holds "a", this hsm restores "b"`, nil},
		{&CardMismatchError{Slot: 2, Issued: "A1", Presented: "B2"}, "activate slot 2: credential was issued to card A1, not to card B2", nil},
		{&SlotMismatchError{Issued: 1, Presented: 2}, "activate slot 2: credential is for slot 1", nil},
		{fmt.Errorf("load backup key: %w", ErrBackupKeySet), "load backup key: a different master backup key is already loaded", ErrBackupKeySet},
	}
	for _, tc := range cases {
		msg := tc.err.Error()
		if !strings.HasPrefix(msg, tc.want) {
			t.Errorf("text %q, want prefix %q", msg, tc.want)
		}
		if msg[0] < 'a' || msg[0] > 'z' {
			t.Errorf("text %q does not start lowercase", msg)
		}
		if tc.is != nil && !errors.Is(tc.err, tc.is) {
			t.Errorf("%q is not %v", msg, tc.is)
		}
	}
}

// TestAuthenticatorOf pins the authenticator (the value was computed independently, with
// Python's hmac): authenticators stored by the ceremony must stay checkable by every later build
// and every backend.
func TestAuthenticatorOf(t *testing.T) {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	const want = "76c68dc1866c3b44575437c96319d1c923872f68108bb04f791c43a794484c0e"
	if got := fmt.Sprintf("%x", AuthenticatorOf(k, []byte("keyquorum"))); got != want {
		t.Errorf("AuthenticatorOf(00..1f, keyquorum) = %s, want %s", got, want)
	}
	if got := AuthenticatorUnder(AuthenticatorKeyOf(k), []byte("keyquorum")); fmt.Sprintf("%x", got) != want {
		t.Errorf("AuthenticatorUnder(AuthenticatorKeyOf) = %x", got)
	}
}
