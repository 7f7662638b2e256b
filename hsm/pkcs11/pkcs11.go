//go:build cgo

// Package pkcs11 is the [hsm.HSM] of a real hardware security module, spoken to through
// PKCS#11 (github.com/miekg/pkcs11). Tests run it against SoftHSM2, with objects put on the token
// by another program (OpenSC's pkcs11-tool).
//
// # Objects on the token
//
// Keyquorum's own objects, all private token objects:
//
//	label "keyquorum master backup key"    AES secret key, the MBK: sensitive, not extractable,
//	                                       wrap/unwrap only; CKA_ID holds its key ID, since its
//	                                       value cannot be read
//	label "keyquorum slot credential key"  generic secret, sensitive, not extractable, sign only:
//	                                       the HMAC-SHA256 key of slot user credentials
//	label "keyquorum authenticator key"    generic secret, sensitive, not extractable, sign only:
//	                                       the HMAC-SHA256 key of [hsm.Authenticator], derived
//	                                       from the MBK; CKA_ID holds the MBK's key ID
//	data "keyquorum key database"          (CKA_APPLICATION "keyquorum") the CKA_IDs of the AES
//	                                       keys Keyquorum created ([HSM.CreateKey]), each a length
//	                                       byte and the ID: what a factory reset destroys
//	data "keyquorum restore journal"       (CKA_APPLICATION "keyquorum") a restore in progress:
//	                                       the backup's ID, source and time, steps in all and done
//
// Every other object is the token's object store, whoever made it: the backup carries all of
// it. [HSM.Objects] lists each object with what a backup does with it. A backup carries every
// private key (RSA, EC, EdDSA), public key, secret key (AES of every length, generic secret,
// DES3), X.509 certificate and data object, with the attributes of [hsm.CarriedAttrs], as object
// records (hsm/backup); secret and private keys are wrapped under the MBK on the token with
// CKM_AES_KEY_WRAP_PAD (RFC 5649; a private key as PKCS#8), no key leaves it in clear. Before a
// byte is written every key is wrapped once in a trial: an object that cannot leave (not
// extractable, CKA_WRAP_WITH_TRUSTED, a key the token will not wrap, an unsupported kind, a
// trusted certificate) refuses the backup with an [*hsm.IncompleteBackupError] naming each,
// unless the caller asks to skip them (they are then listed in the backup's header). The backup
// format's own data key the token wraps with the MBK too.
//
// The authenticator key is derived from the MBK by LoadBackupKey, the one call where the MBK
// passes through the host anyway ([hsm.AuthenticatorKeyOf]), and made a sign-only object.
// Deriving it on the token instead (C_DeriveKey) would need CKA_DERIVE on the MBK, which lets
// anyone logged in derive keys of their own template from it: an extractable key whose value is
// the MBK's encryption of chosen data. It is not in backups; loading the same MBK again (a key
// load ceremony) re-creates it where it is missing, e.g. on a token whose MBK an older keyquorum
// loaded.
//
// # Restore
//
// An object's identity is its class, type, CKA_ID and CKA_LABEL ([hsm.Object.Identity]). A
// restore unwraps (keys) or creates (the others) every object of the backup as a session object
// first; only once the whole backup was read and authenticated does the token change, identity
// by identity: the backup's objects are copied onto the token, and only then the token's old
// objects of that identity destroyed. Objects of other identities stay, unless the restore is
// asked to make the token equal to the backup (then they are destroyed last). A dry run stops
// before any change and returns the plan. The journal object names the backup and the progress;
// after a crash at any point, [HSM.PendingRestore] names it, and the same restore run again
// recognises the objects already copied by their content (attributes and key material wrapped
// under the MBK, which AES key wrap makes deterministic) and finishes without duplicates. A
// restore of another backup is refused while one is pending ([*hsm.PendingRestoreError]).
//
// [HSM.Reset], the factory reset, destroys Keyquorum's own objects and the keys it created;
// [HSM.Wipe] destroys every object on the token.
//
// # What this package must never do
//
// Make the MBK, the authenticator key or the slot key extractable, read a key's value (only the
// backup's own data key, which the host must hold to run AES-GCM, is unwrapped to a readable
// session object), or log in with a PIN kept longer than Open needs it.
//
// Limits: github.com/miekg/pkcs11 copies attribute values and PINs into C memory that it frees
// without clearing; the MBK passes through it once, at LoadBackupKey. Attributes the token
// computes (CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_KEY_GEN_MECHANISM) and
// CKA_VALUE_LEN are not carried: a restored key is a copy, not made on the token. SoftHSM2 2.6
// does not wrap EdDSA private keys (CKR_KEY_NOT_WRAPPABLE): they are listed, and refuse a backup,
// as objects that cannot leave. SoftHSM2 re-reads objects another process made only on a
// search: every write here follows one.
package pkcs11

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"unsafe"

	p11 "github.com/miekg/pkcs11"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
	"github.com/keyquorum/keyquorum/hsm/internal/slotcred"
)

// ContentType names the content of a PKCS#11 backup: object records (hsm/backup) whose key
// material is wrapped under the MBK by the token with CKM_AES_KEY_WRAP_PAD. Backups of content
// "keyquorum/pkcs11-keys/1" (AES-256 keys only, from earlier versions) are restored too.
const ContentType = "keyquorum/pkcs11-objects/2"

const (
	labelMBK     = "keyquorum master backup key"
	labelSlotKey = "keyquorum slot credential key"
	labelAuthKey = "keyquorum authenticator key"
	appKeyIDSize = 16
)

// Config says which token to use.
type Config struct {
	Module string // path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	Token  string // label of the token
	PIN    []byte // the user PIN; Open zeroes nothing of the caller's, and keeps no copy
	Source string // this node's name in backups; the host name when empty
}

// Errors of this backend.
var (
	// ErrTokenNotFound means no slot holds a token of the configured label.
	ErrTokenNotFound = errors.New("no pkcs11 token with that label")
	// ErrReservedLabel means an application key label is one the backend uses itself.
	ErrReservedLabel = errors.New("key label is reserved for keyquorum's own keys")
)

// modules counts the users of each loaded PKCS#11 library: C_Initialize and C_Finalize act on
// the whole process, so the library is initialised by the first Open and finalised by the last
// Close.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

type module struct {
	ctx  *p11.Ctx
	refs int
}

func acquire(path string) (*p11.Ctx, error) {
	modules.Lock()
	defer modules.Unlock()
	if m, ok := modules.m[path]; ok {
		m.refs++
		return m.ctx, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("load pkcs11 module: %w", err)
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("load pkcs11 module %s: not a pkcs11 library", path)
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("initialize pkcs11 module: %w", err)
	}
	modules.m[path] = &module{ctx: ctx, refs: 1}
	return ctx, nil
}

func release(path string) {
	modules.Lock()
	defer modules.Unlock()
	m := modules.m[path]
	if m == nil {
		return
	}
	if m.refs--; m.refs == 0 {
		m.ctx.Finalize()
		m.ctx.Destroy()
		delete(modules.m, path)
	}
}

// reserved reports whether label is one of the backend's own keys, never an application key.
func reserved(label string) bool {
	return label == labelMBK || label == labelSlotKey || label == labelAuthKey
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// HSM is a PKCS#11 token as an [hsm.HSM] and [hsm.KeyStore].
type HSM struct {
	module string
	source string

	mu     sync.Mutex // one PKCS#11 operation at a time on the session
	ctx    *p11.Ctx
	sh     p11.SessionHandle
	active map[uint]string
	closed bool
}

var (
	_ hsm.HSM           = (*HSM)(nil)
	_ hsm.KeyStore      = (*HSM)(nil)
	_ hsm.Authenticator = (*HSM)(nil)
	_ hsm.ObjectStore   = (*HSM)(nil)
)

// Open opens a read-write session on the token labelled cfg.Token and logs in as its user.
func Open(ctx context.Context, cfg Config) (*HSM, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open pkcs11 hsm: %w", err)
	}
	c, err := acquire(cfg.Module)
	if err != nil {
		return nil, fmt.Errorf("open pkcs11 hsm: %w", err)
	}
	h := &HSM{module: cfg.Module, source: cfg.Source, ctx: c, active: map[uint]string{}}
	if h.source == "" {
		h.source, _ = os.Hostname()
	}
	if err := h.open(cfg); err != nil {
		release(cfg.Module)
		return nil, fmt.Errorf("open pkcs11 hsm: %w", err)
	}
	return h, nil
}

func (h *HSM) open(cfg Config) error {
	slots, err := h.ctx.GetSlotList(true)
	if err != nil {
		return err
	}
	slot, found := uint(0), false
	for _, s := range slots {
		ti, err := h.ctx.GetTokenInfo(s)
		if err == nil && ti.Label == cfg.Token {
			slot, found = s, true
			break
		}
	}
	if !found {
		return fmt.Errorf("%w: %q", ErrTokenNotFound, cfg.Token)
	}
	sh, err := h.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	// The library wants the PIN as a string; view the caller's bytes as one rather than copy
	// them into a string nobody can clear.
	var pin string
	if len(cfg.PIN) > 0 {
		pin = unsafe.String(&cfg.PIN[0], len(cfg.PIN))
	}
	if err := h.ctx.Login(sh, p11.CKU_USER, pin); err != nil && !isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		h.ctx.CloseSession(sh)
		if isCode(err, p11.CKR_PIN_INCORRECT) {
			return errors.New("log in to token: wrong PIN")
		}
		return fmt.Errorf("log in to token: %w", err)
	}
	h.sh = sh
	return nil
}

func (h *HSM) check(ctx context.Context) error {
	if h.closed {
		return hsm.ErrClosed
	}
	return ctx.Err()
}

// find returns the token's secret keys matching the extra attributes.
func (h *HSM) find(extra ...*p11.Attribute) ([]p11.ObjectHandle, error) {
	tmpl := append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}, extra...)
	if err := h.ctx.FindObjectsInit(h.sh, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		objs, _, err := h.ctx.FindObjects(h.sh, 64)
		if err != nil {
			h.ctx.FindObjectsFinal(h.sh)
			return nil, err
		}
		all = append(all, objs...)
		if len(objs) < 64 {
			break
		}
	}
	return all, h.ctx.FindObjectsFinal(h.sh)
}

// refresh searches the token before a write. SoftHSM2 re-reads its token directory when another
// process changed it, but only on a read: a write first would hide the other process's objects
// from this one until the next change (SoftHSM2 2.6). Every write here follows a search.
func (h *HSM) refresh() error {
	_, err := h.findOne(labelMBK)
	return err
}

// findOne returns the key of the reserved label, or 0.
func (h *HSM) findOne(label string) (p11.ObjectHandle, error) {
	objs, err := h.find(p11.NewAttribute(p11.CKA_LABEL, label))
	if err != nil || len(objs) == 0 {
		return 0, err
	}
	return objs[0], nil
}

// LoadBackupKey implements [hsm.HSM]. The MBK becomes a sensitive, non-extractable AES key on
// the token; whether a loaded MBK is the same as mbk is decided by the key ID stored beside it.
func (h *HSM) LoadBackupKey(ctx context.Context, mbk []byte) error {
	if len(mbk) != hsm.KeySize {
		return fmt.Errorf("load backup key: %w", hsm.ErrKeySize)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	id := hsm.KeyIDOf(mbk)
	if old, err := h.findOne(labelMBK); err != nil {
		return fmt.Errorf("load backup key: %w", err)
	} else if old != 0 {
		oldID, err := h.keyID(old)
		if err != nil {
			return fmt.Errorf("load backup key: %w", err)
		}
		if oldID != id {
			return fmt.Errorf("load backup key: %w", hsm.ErrBackupKeySet)
		}
		if err := h.ensureAuthKey(mbk, id); err != nil {
			return fmt.Errorf("load backup key: %w", err)
		}
		return nil
	}
	value := p11.NewAttribute(p11.CKA_VALUE, bytes.Clone(mbk)) // NewAttribute keeps the slice: give it a copy to clear
	defer hsm.Zero(value.Value)
	_, err := h.ctx.CreateObject(h.sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_LABEL, labelMBK),
		p11.NewAttribute(p11.CKA_ID, id[:]),
		value,
	})
	if err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	// Made after the MBK: a crash in between leaves a token that LoadBackupKey of the same key
	// completes.
	if err := h.ensureAuthKey(mbk, id); err != nil {
		return fmt.Errorf("load backup key: %w", err)
	}
	return nil
}

// ensureAuthKey makes the authenticator key of the MBK mbk (key ID id) unless the token holds
// it, and destroys any of another MBK.
func (h *HSM) ensureAuthKey(mbk []byte, id hsm.KeyID) error {
	objs, err := h.find(p11.NewAttribute(p11.CKA_LABEL, labelAuthKey))
	if err != nil {
		return err
	}
	have := false
	for _, o := range objs {
		oid, err := h.keyID(o)
		if err == nil && oid == id && !have {
			have = true
			continue
		}
		if err := h.ctx.DestroyObject(h.sh, o); err != nil {
			return fmt.Errorf("destroy stale authenticator key: %w", err)
		}
	}
	if have {
		return nil
	}
	value := p11.NewAttribute(p11.CKA_VALUE, hsm.AuthenticatorKeyOf(mbk))
	defer hsm.Zero(value.Value)
	_, err = h.ctx.CreateObject(h.sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_LABEL, labelAuthKey),
		p11.NewAttribute(p11.CKA_ID, id[:]),
		value,
	})
	if err != nil {
		return fmt.Errorf("create authenticator key: %w", err)
	}
	return nil
}

// authKey returns the authenticator key of the loaded MBK.
func (h *HSM) authKey() (p11.ObjectHandle, error) {
	mbk, err := h.findOne(labelMBK)
	if err != nil {
		return 0, err
	}
	if mbk == 0 {
		return 0, hsm.ErrNoBackupKey
	}
	id, err := h.keyID(mbk)
	if err != nil {
		return 0, err
	}
	objs, err := h.find(p11.NewAttribute(p11.CKA_LABEL, labelAuthKey), p11.NewAttribute(p11.CKA_ID, id[:]))
	if err != nil {
		return 0, err
	}
	if len(objs) == 0 {
		return 0, hsm.ErrNoAuthenticatorKey
	}
	return objs[0], nil
}

// Authenticate implements [hsm.Authenticator]: CKM_SHA256_HMAC on the token.
func (h *HSM) Authenticate(ctx context.Context, msg []byte) ([]byte, error) {
	if err := hsm.ValidateAuthenticated(msg); err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	tag, err := h.authenticate(msg)
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return tag, nil
}

func (h *HSM) authenticate(msg []byte) ([]byte, error) {
	key, err := h.authKey()
	if err != nil {
		return nil, err
	}
	if err := h.ctx.SignInit(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}, key); err != nil {
		return nil, err
	}
	return h.ctx.Sign(h.sh, msg)
}

// CheckAuthenticator implements [hsm.Authenticator].
func (h *HSM) CheckAuthenticator(ctx context.Context, msg, tag []byte) error {
	if err := hsm.ValidateAuthenticated(msg); err != nil {
		return fmt.Errorf("check authenticator: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("check authenticator: %w", err)
	}
	want, err := h.authenticate(msg)
	if err != nil {
		return fmt.Errorf("check authenticator: %w", err)
	}
	if !hmac.Equal(want, tag) {
		return fmt.Errorf("check authenticator: %w", hsm.ErrAuthenticatorMismatch)
	}
	return nil
}

func (h *HSM) keyID(obj p11.ObjectHandle) (hsm.KeyID, error) {
	var id hsm.KeyID
	attrs, err := h.ctx.GetAttributeValue(h.sh, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, nil)})
	if err != nil {
		return id, err
	}
	if len(attrs[0].Value) != len(id) {
		return id, errors.New("the master backup key on the token has no key id")
	}
	copy(id[:], attrs[0].Value)
	return id, nil
}

// BackupKeyID implements [hsm.HSM].
func (h *HSM) BackupKeyID(ctx context.Context) (hsm.KeyID, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return hsm.KeyID{}, fmt.Errorf("read backup key id: %w", err)
	}
	obj, err := h.findOne(labelMBK)
	if err == nil && obj == 0 {
		err = hsm.ErrNoBackupKey
	}
	if err != nil {
		return hsm.KeyID{}, fmt.Errorf("read backup key id: %w", err)
	}
	id, err := h.keyID(obj)
	if err != nil {
		return id, fmt.Errorf("read backup key id: %w", err)
	}
	return id, nil
}

var kwp = []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}

// tokenWrap is the MBK on the token as a [backup.KeyWrapper]. Its callers hold h.mu.
type tokenWrap struct {
	h   *HSM
	mbk p11.ObjectHandle
	id  hsm.KeyID
}

func (h *HSM) tokenWrap() (*tokenWrap, error) {
	obj, err := h.findOne(labelMBK)
	if err != nil {
		return nil, err
	}
	if obj == 0 {
		return nil, hsm.ErrNoBackupKey
	}
	id, err := h.keyID(obj)
	if err != nil {
		return nil, err
	}
	return &tokenWrap{h: h, mbk: obj, id: id}, nil
}

func (w *tokenWrap) KeyID() hsm.KeyID { return w.id }

// WrapKey puts key into a transient session object and lets the token wrap it.
func (w *tokenWrap) WrapKey(ctx context.Context, key []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	value := p11.NewAttribute(p11.CKA_VALUE, bytes.Clone(key))
	defer hsm.Zero(value.Value)
	obj, err := w.h.ctx.CreateObject(w.h.sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		value,
	})
	if err != nil {
		return nil, err
	}
	defer w.h.ctx.DestroyObject(w.h.sh, obj)
	return w.h.ctx.WrapKey(w.h.sh, kwp, w.mbk, obj)
}

// unwrapFailed tells a wrapped key that does not open from a failing token.
func unwrapFailed(err error) bool {
	for _, c := range []uint{p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE,
		p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE, p11.CKR_GENERAL_ERROR} {
		if isCode(err, c) {
			return true
		}
	}
	return false
}

// UnwrapKey unwraps into a transient, readable session object: the backup's data key must be
// in the host's memory to run AES-GCM over the stream.
func (w *tokenWrap) UnwrapKey(ctx context.Context, wrapped []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	obj, err := w.h.ctx.UnwrapKey(w.h.sh, kwp, w.mbk, wrapped, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_SENSITIVE, false),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
	})
	if err != nil {
		if unwrapFailed(err) {
			return nil, backup.ErrUnwrap
		}
		return nil, err
	}
	defer w.h.ctx.DestroyObject(w.h.sh, obj)
	attrs, err := w.h.ctx.GetAttributeValue(w.h.sh, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	if err != nil {
		return nil, err
	}
	return attrs[0].Value, nil
}

// ulong reads a CK_ULONG as the library returns it: native byte order, native size.
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

// CreateKey implements [hsm.KeyStore]: an AES-256 key generated on the token, sensitive and
// extractable (so that backups can wrap it).
func (h *HSM) CreateKey(ctx context.Context, label string) (hsm.KeyInfo, error) {
	if err := hsm.ValidateLabel(label); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	if reserved(label) {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", ErrReservedLabel)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	id := make([]byte, appKeyIDSize)
	if _, err := rand.Read(id); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	if err := h.refresh(); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	_, err := h.ctx.GenerateKey(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
		appKeyTemplate(true, label, id, p11.NewAttribute(p11.CKA_VALUE_LEN, 32)))
	if err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: %w", err)
	}
	// Listed after it is made: a crash in between leaves a key that a factory reset keeps,
	// never one it destroys without having made it.
	if err := h.addManaged(string(id)); err != nil {
		return hsm.KeyInfo{}, fmt.Errorf("create key: the key is made but not listed as keyquorum's: %w", err)
	}
	return hsm.KeyInfo{ID: hex.EncodeToString(id), Label: label, Algorithm: hsm.AlgorithmAES256}, nil
}

func appKeyTemplate(token bool, label string, id []byte, extra ...*p11.Attribute) []*p11.Attribute {
	return append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, token),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, id),
	}, extra...)
}

// Keys implements [hsm.KeyStore]: every secret and private key on the token but Keyquorum's
// own, ordered by ID.
func (h *HSM) Keys(ctx context.Context) ([]hsm.KeyInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	objs, err := h.scan()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	if mbk, err := h.findOne(labelMBK); err == nil && mbk != 0 {
		h.trialWrap(mbk, objs) // finds the length of AES keys that have no CKA_VALUE_LEN
	}
	return keyInfos(objs), nil
}

func keyInfos(objs []tokObj) []hsm.KeyInfo {
	var infos []hsm.KeyInfo
	for _, t := range objs {
		o := t.obj
		if o.Own || (o.Class != hsm.ClassSecretKey && o.Class != hsm.ClassPrivateKey) {
			continue
		}
		infos = append(infos, hsm.KeyInfo{ID: hex.EncodeToString(o.ID), Label: o.Label, Algorithm: hsm.AlgorithmOf(o)})
	}
	slices.SortStableFunc(infos, func(a, b hsm.KeyInfo) int { return compareStr(a.ID, b.ID) })
	return infos
}

// slotMAC returns the HMAC of slot credentials under the token's slot key, generating the
// key on first use when create is set.
func (h *HSM) slotMAC(create bool) (slotcred.MAC, error) {
	key, err := h.findOne(labelSlotKey)
	if err != nil {
		return nil, err
	}
	if key == 0 {
		if !create {
			return nil, hsm.ErrCredentialInvalid
		}
		key, err = h.ctx.GenerateKey(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_SIGN, true),
			p11.NewAttribute(p11.CKA_VERIFY, true),
			p11.NewAttribute(p11.CKA_LABEL, labelSlotKey),
		})
		if err != nil {
			return nil, fmt.Errorf("generate slot credential key: %w", err)
		}
	}
	return func(msg []byte) ([]byte, error) {
		if err := h.ctx.SignInit(h.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_SHA256_HMAC, nil)}, key); err != nil {
			return nil, err
		}
		return h.ctx.Sign(h.sh, msg)
	}, nil
}

// IssueSlotCredential implements [hsm.HSM].
func (h *HSM) IssueSlotCredential(ctx context.Context, slot uint, cardSerial string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	mac, err := h.slotMAC(true)
	if err != nil {
		return nil, fmt.Errorf("issue slot credential: %w", err)
	}
	return slotcred.Issue(slot, cardSerial, mac)
}

// ActivateSlot implements [hsm.HSM].
func (h *HSM) ActivateSlot(ctx context.Context, slot uint, cardSerial string, credential []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("activate slot %d: %w", slot, err)
	}
	mac, err := h.slotMAC(false)
	if err != nil {
		return fmt.Errorf("activate slot %d: %w", slot, err)
	}
	if err := slotcred.Check(slot, cardSerial, credential, mac); err != nil {
		return err
	}
	h.active[slot] = cardSerial
	return nil
}

// ActiveSlots lists the slots activated since Open, in order.
func (h *HSM) ActiveSlots() []uint {
	h.mu.Lock()
	defer h.mu.Unlock()
	slots := make([]uint, 0, len(h.active))
	for s := range h.active {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots
}

// Reset implements [hsm.HSM], the factory reset: Keyquorum's own objects (the MBK, the
// authenticator and slot credential keys, the restore journal, its key list) and the application
// keys it created are destroyed. Every other object on the token stays; [HSM.Wipe] destroys
// those too.
func (h *HSM) Reset(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("reset hsm: %w", err)
	}
	objs, err := h.scan()
	if err != nil {
		return fmt.Errorf("reset hsm: %w", err)
	}
	// Managed keys first, the key list last: a reset cut short is finished by running it again.
	var own []tokObj
	for _, t := range objs {
		switch {
		case t.obj.Managed:
			if err := h.ctx.DestroyObject(h.sh, t.h); err != nil {
				return fmt.Errorf("reset hsm: destroy %s: %w", t.obj, err)
			}
		case t.obj.Own:
			own = append(own, t)
		}
	}
	slices.SortStableFunc(own, func(a, b tokObj) int {
		return compareU32(a.obj.Class, b.obj.Class) // secret keys (4) before the data objects (0)
	})
	slices.Reverse(own)
	for _, t := range own {
		if err := h.ctx.DestroyObject(h.sh, t.h); err != nil {
			return fmt.Errorf("reset hsm: destroy %s: %w", t.obj.Label, err)
		}
	}
	clear(h.active)
	return nil
}

// Wipe implements [hsm.ObjectStore]: every object on the token that this session sees is
// destroyed, other software's too.
func (h *HSM) Wipe(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(ctx); err != nil {
		return fmt.Errorf("wipe token: %w", err)
	}
	objs, err := h.findAll()
	if err != nil {
		return fmt.Errorf("wipe token: %w", err)
	}
	for _, o := range objs {
		if err := h.ctx.DestroyObject(h.sh, o); err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			return fmt.Errorf("wipe token: %w", err)
		}
	}
	clear(h.active)
	return nil
}

// Close implements [hsm.HSM]: the session ends, and with the last session the login.
func (h *HSM) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	clear(h.active)
	err := h.ctx.CloseSession(h.sh)
	release(h.module)
	if err != nil {
		return fmt.Errorf("close pkcs11 hsm: %w", err)
	}
	return nil
}
