package hsm

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
)

// Authenticator is the optional part of an HSM that vouches for data with a key derived from
// the MBK. The ceremony keeps the authenticator of every share card's record when it writes the
// card; a card check later asks the HSM whether the record a card holds still matches it: one
// card, no quorum, the MBK never reconstructed.
//
// The authentication key is HMAC-SHA256(key = MBK, message = "keyquorum authenticator key v1")
// and an authenticator is HMAC-SHA256 of the message under it. So:
//
//   - an authenticator reveals nothing of the message (a share record) nor of the MBK, and can be
//     kept anywhere; only the HSM can make or check one;
//   - every HSM holding the same MBK computes the same authenticators (a cluster node, an
//     appliance rebuilt after a disaster): the key is re-created from the MBK wherever the MBK is
//     loaded, and is in no backup because it needs not be.
//
// The same key authenticates the audit log's entries (package ceremony: HMAC over an entry's
// seq and hash, so a rewritten history is found), answers a cluster peer's proof-of-key
// challenge and, as the authenticator of a fixed label, is the key that seals the node file a
// cluster node keeps (package cluster). Each use starts its messages with its own label, so an
// authenticator made for one is never valid for another.
//
// It is optional (not part of [HSM]) so that an HSM without it still does everything else: a
// card check then says the HSM cannot vouch for cards, and the audit log goes without MACs.
// Both backends implement it.
type Authenticator interface {
	// Authenticate returns the authenticator of msg (at most [MaxAuthenticated] bytes), or
	// [ErrNoBackupKey] when no MBK is loaded.
	Authenticate(ctx context.Context, msg []byte) ([]byte, error)
	// CheckAuthenticator returns nil when tag is the authenticator of msg under this HSM's MBK,
	// [ErrAuthenticatorMismatch] when it is not, [ErrNoBackupKey] when no MBK is loaded.
	CheckAuthenticator(ctx context.Context, msg, tag []byte) error
}

// AuthenticatorSize is the size of an authenticator: an HMAC-SHA256.
const AuthenticatorSize = sha256.Size

// MaxAuthenticated bounds what is authenticated: share records are at most 255 bytes.
const MaxAuthenticated = 4096

// authKeyLabel derives the authentication key from the MBK. Changing it orphans every
// authenticator ever stored.
const authKeyLabel = "keyquorum authenticator key v1"

// Conditions of authenticators.
var (
	// ErrAuthenticatorMismatch means the data is not what was authenticated: altered, or
	// authenticated under another MBK.
	ErrAuthenticatorMismatch = errors.New("the data does not match its authenticator: it was altered, or authenticated under another master backup key")
	// ErrAuthenticatedSize means the data to authenticate is empty or larger than
	// MaxAuthenticated.
	ErrAuthenticatedSize = errors.New("data to authenticate must be 1 to 4096 bytes")
	// ErrNoAuthenticatorKey means the HSM holds an MBK but not the authentication key derived
	// from it (a token whose MBK was loaded by an older keyquorum). Loading the same MBK again
	// (a key load with the cards) creates it.
	ErrNoAuthenticatorKey = errors.New("the hsm holds no authenticator key for its master backup key: run a key load with the cards once to create it")
)

// AuthenticatorKeyOf derives the authentication key from an MBK. The caller zeroes it. Backends
// use it where the MBK passes through their memory anyway (soft: unsealed for each use;
// pkcs11: at LoadBackupKey, where it becomes a sign-only token object).
func AuthenticatorKeyOf(mbk []byte) []byte {
	m := hmac.New(sha256.New, mbk)
	m.Write([]byte(authKeyLabel))
	return m.Sum(nil)
}

// AuthenticatorOf computes the authenticator of msg under the MBK outside an HSM: for the one
// moment the MBK exists only in memory, a key generation that writes its cards before the key
// is loaded. It equals [Authenticator.Authenticate] of an HSM holding mbk.
func AuthenticatorOf(mbk, msg []byte) []byte {
	key := AuthenticatorKeyOf(mbk)
	defer Zero(key)
	return AuthenticatorUnder(key, msg)
}

// AuthenticatorUnder computes the authenticator of msg under an authentication key.
func AuthenticatorUnder(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// ValidateAuthenticated checks the size of data to authenticate.
func ValidateAuthenticated(msg []byte) error {
	if len(msg) == 0 || len(msg) > MaxAuthenticated {
		return ErrAuthenticatedSize
	}
	return nil
}
