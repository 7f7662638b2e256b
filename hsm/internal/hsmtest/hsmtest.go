// Package hsmtest is the contract test of [hsm.HSM]: one suite that every backend runs against
// its real store (a data dir, a SoftHSM2 token), so that soft and pkcs11 behave alike.
package hsmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// Backend is what the suite needs of a backend.
type Backend struct {
	// Fresh returns a new, empty HSM on its own store. The backend closes it at cleanup.
	Fresh func(t *testing.T) hsm.HSM
	// Reopen closes h and opens its store again.
	Reopen func(t *testing.T, h hsm.HSM) hsm.HSM
	// Fingerprint returns a value derived from the application key id by using it (AES-256 of
	// a zero block), equal for two HSMs exactly when they hold the same key.
	Fingerprint func(t *testing.T, h hsm.HSM, id string) []byte
	// Dirs lists the directories holding h's store: no file in them may contain a secret.
	Dirs func(h hsm.HSM) []string
	// Secrets lists secrets h holds that the suite cannot know (raw application keys, the slot
	// key), where the backend can read them; nil where it cannot.
	Secrets func(t *testing.T, h hsm.HSM) [][]byte
	// ContentType is what the backend's backups hold.
	ContentType string

	// Populate puts one object of every kind the backend holds onto h, as other software
	// would: key pairs, secret keys, a certificate, a data object. All can be carried.
	Populate func(t *testing.T, h hsm.HSM)
	// Locked puts an object onto h that no backup can carry (a key that is not extractable)
	// and returns its label.
	Locked func(t *testing.T, h hsm.HSM) string
	// SameResults checks that key o computes in b what it computes in a (sign and verify,
	// encrypt and decrypt).
	SameResults func(t *testing.T, a, b hsm.HSM, o hsm.Object)
}

// NewMBK returns a random MBK.
func NewMBK(t testing.TB) []byte {
	k := make([]byte, hsm.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// Run runs the contract suite.
func Run(t *testing.T, b Backend) {
	s := &suite{Backend: b}
	t.Run("BackupKey", s.backupKey)
	t.Run("Persistence", s.persistence)
	t.Run("RoundTrip", s.roundTrip)
	t.Run("ForeignBackupKey", s.foreign)
	t.Run("DamagedBackup", s.damaged)
	t.Run("SlotCredential", s.slotCredential)
	t.Run("Authenticator", s.authenticator)
	t.Run("Reset", s.reset)
	t.Run("Closed", s.closed)
}

type suite struct {
	Backend
	secrets [][]byte // every secret the suite saw, checked against the stores at the end
}

func (s *suite) keep(secret []byte) { s.secrets = append(s.secrets, bytes.Clone(secret)) }

func keyStore(t *testing.T, h hsm.HSM) hsm.KeyStore {
	t.Helper()
	ks, ok := h.(hsm.KeyStore)
	if !ok {
		t.Fatal("backend does not implement hsm.KeyStore")
	}
	return ks
}

func keys(t *testing.T, h hsm.HSM) []hsm.KeyInfo {
	t.Helper()
	k, err := keyStore(t, h).Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func createKeys(t *testing.T, h hsm.HSM, labels ...string) []hsm.KeyInfo {
	t.Helper()
	for _, l := range labels {
		if _, err := keyStore(t, h).CreateKey(t.Context(), l); err != nil {
			t.Fatal(err)
		}
	}
	return keys(t, h)
}

func mustLoad(t *testing.T, h hsm.HSM, mbk []byte) {
	t.Helper()
	if err := h.LoadBackupKey(t.Context(), mbk); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) backupOf(t *testing.T, h hsm.HSM, mbk []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := h.Backup(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	hdr, err := backup.ReadHeader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if hdr.KeyID != hsm.KeyIDOf(mbk) || hdr.Content != s.ContentType {
		t.Fatalf("backup header names key %s, content %q", hdr.KeyID, hdr.Content)
	}
	kw, err := backup.NewKeyWrap(mbk)
	if err != nil {
		t.Fatal(err)
	}
	dataKey, err := kw.UnwrapKey(t.Context(), hdr.WrappedKey())
	if err != nil {
		t.Fatalf("the backup's data key does not unwrap under the MBK in software: %v", err)
	}
	s.keep(dataKey)
	return buf.Bytes()
}

func (s *suite) backupKey(t *testing.T) {
	ctx := t.Context()
	h := s.Fresh(t)
	if _, err := h.BackupKeyID(ctx); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("key ID of a fresh HSM: %v", err)
	}
	if err := h.Backup(ctx, &bytes.Buffer{}); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("backup without MBK: %v", err)
	}
	if err := h.LoadBackupKey(ctx, make([]byte, 16)); !errors.Is(err, hsm.ErrKeySize) {
		t.Fatalf("16-byte MBK: %v", err)
	}
	mbk := NewMBK(t)
	s.keep(mbk)
	given := bytes.Clone(mbk)
	mustLoad(t, h, given)
	hsm.Zero(given) // the HSM keeps its own copy
	id, err := h.BackupKeyID(ctx)
	if err != nil || id != hsm.KeyIDOf(mbk) {
		t.Fatalf("key ID %s, %v; want %s", id, err, hsm.KeyIDOf(mbk))
	}
	// The ceremony may retry after a crash: the same key again is fine.
	if err := h.LoadBackupKey(ctx, mbk); err != nil {
		t.Fatalf("loading the same MBK again: %v", err)
	}
	other := NewMBK(t)
	if err := h.LoadBackupKey(ctx, other); !errors.Is(err, hsm.ErrBackupKeySet) {
		t.Fatalf("replacing the MBK: %v", err)
	}
	if id, _ := h.BackupKeyID(ctx); id != hsm.KeyIDOf(mbk) {
		t.Fatalf("MBK changed to %s after a refused load", id)
	}
	s.backupOf(t, h, mbk) // the copy the HSM kept is intact
	s.checkStore(t, h)
}

func (s *suite) persistence(t *testing.T) {
	h := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, h, mbk)
	before := createKeys(t, h, "alpha", "beta")
	cred, err := h.IssueSlotCredential(t.Context(), 1, "SER-1")
	if err != nil {
		t.Fatal(err)
	}
	s.keep(cred)
	fp := s.Fingerprint(t, h, before[0].ID)

	h = s.Reopen(t, h)
	if id, err := h.BackupKeyID(t.Context()); err != nil || id != hsm.KeyIDOf(mbk) {
		t.Fatalf("after reopening: key ID %s, %v", id, err)
	}
	if err := h.LoadBackupKey(t.Context(), NewMBK(t)); !errors.Is(err, hsm.ErrBackupKeySet) {
		t.Fatalf("after reopening, replacing the MBK: %v", err)
	}
	if after := keys(t, h); !slices.Equal(after, before) {
		t.Fatalf("keys after reopening %v, before %v", after, before)
	}
	if !bytes.Equal(s.Fingerprint(t, h, before[0].ID), fp) {
		t.Fatal("key changed across reopening")
	}
	if err := h.ActivateSlot(t.Context(), 1, "SER-1", cred); err != nil {
		t.Fatalf("credential after reopening: %v", err)
	}
	s.checkStore(t, h)
}

func (s *suite) roundTrip(t *testing.T) {
	src := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, src, mbk)
	// The empty key database backs up and restores too.
	empty := s.backupOf(t, src, mbk)
	want := createKeys(t, src, "signing", "tls", "db encryption")
	b := s.backupOf(t, src, mbk)

	dst := s.Fresh(t)
	mustLoad(t, dst, mbk)
	if err := dst.Restore(t.Context(), bytes.NewReader(empty)); err != nil {
		t.Fatalf("restore an empty backup: %v", err)
	}
	if k := keys(t, dst); len(k) != 0 {
		t.Fatalf("after restoring an empty backup: %v", k)
	}
	kept := createKeys(t, dst, "kept by the restore")
	if err := dst.Restore(t.Context(), bytes.NewReader(b)); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got := keys(t, dst)
	if len(got) != len(want)+1 || !slices.Contains(got, kept[0]) {
		t.Fatalf("restored keys %v: want %v and the key made after the backup, %v", got, want, kept)
	}
	// Made equal to the backup, the HSM drops the key the backup does not hold.
	plan, err := objectStore(t, dst).RestoreObjects(t.Context(), bytes.NewReader(b), hsm.RestoreOptions{MakeEqual: true})
	if err != nil {
		t.Fatalf("restore, made equal: %v", err)
	}
	if plan.Count(hsm.ActionRemove) != 1 || plan.Count(hsm.ActionUnchanged) != len(want) {
		t.Fatalf("plan of the second restore: %+v", plan.Items)
	}
	got = keys(t, dst)
	if !slices.Equal(got, want) {
		t.Fatalf("restored keys %v, want %v", got, want)
	}
	for _, k := range want {
		if !bytes.Equal(s.Fingerprint(t, dst, k.ID), s.Fingerprint(t, src, k.ID)) {
			t.Fatalf("key %s (%s) differs after restore", k.ID, k.Label)
		}
	}
	// Restored keys back up again, and survive a restart.
	again := s.backupOf(t, dst, mbk)
	dst = s.Reopen(t, dst)
	if !slices.Equal(keys(t, dst), want) {
		t.Fatal("restored keys lost on reopening")
	}
	third := s.Fresh(t)
	mustLoad(t, third, mbk)
	if err := third.Restore(t.Context(), bytes.NewReader(again)); err != nil {
		t.Fatalf("restore the backup of a restored HSM: %v", err)
	}
	if !slices.Equal(keys(t, third), want) {
		t.Fatal("second-generation restore lost keys")
	}
	s.checkStore(t, src)
	s.checkStore(t, dst)
	s.checkStore(t, third)
}

func (s *suite) foreign(t *testing.T) {
	src := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, src, mbk)
	createKeys(t, src, "one")
	b := s.backupOf(t, src, mbk)

	dst := s.Fresh(t)
	if err := dst.Restore(t.Context(), bytes.NewReader(b)); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("restore without an MBK: %v", err)
	}
	other := NewMBK(t)
	s.keep(other)
	mustLoad(t, dst, other)
	mine := createKeys(t, dst, "mine")
	err := dst.Restore(t.Context(), bytes.NewReader(b))
	var fe *hsm.ForeignKeyError
	if !errors.As(err, &fe) || fe.Got != hsm.KeyIDOf(mbk) || fe.Want != hsm.KeyIDOf(other) {
		t.Fatalf("restore under another MBK: %v", err)
	}
	if !slices.Equal(keys(t, dst), mine) {
		t.Fatal("a refused restore changed the keys")
	}
	s.checkStore(t, dst)
}

func (s *suite) damaged(t *testing.T) {
	src := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, src, mbk)
	createKeys(t, src, "k1", "k2")
	b := s.backupOf(t, src, mbk)

	dst := s.Fresh(t)
	mustLoad(t, dst, mbk)
	mine := createKeys(t, dst, "mine")
	flip := func(off int) []byte { c := bytes.Clone(b); c[off] ^= 0x10; return c }
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"truncated in the chunk", b[:len(b)-20], hsm.ErrBackupTruncated},
		{"cut in half", b[:len(b)/2], hsm.ErrBackupTruncated},
		{"bit flip in the content", flip(len(b) - 30), hsm.ErrBackupTampered},
		{"bit flip in the tag", flip(len(b) - 1), hsm.ErrBackupTampered},
		{"bit flip in the header", flip(30), hsm.ErrBackupTampered},
		{"trailing data", append(bytes.Clone(b), 0), hsm.ErrBackupTrailingData},
		{"not a backup", []byte("hello"), hsm.ErrNotBackup},
	}
	for _, tc := range cases {
		err := dst.Restore(t.Context(), bytes.NewReader(tc.in))
		var be *hsm.BackupError
		if !errors.Is(err, tc.want) || !errors.As(err, &be) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if got := keys(t, dst); !slices.Equal(got, mine) {
			t.Fatalf("%s: a refused restore changed the keys to %v", tc.name, got)
		}
	}
	// Content of another kind of HSM is refused by name.
	var buf bytes.Buffer
	kw, _ := backup.NewKeyWrap(mbk)
	w, err := backup.NewWriter(t.Context(), &buf, kw, backup.Header{Source: "elsewhere", Content: "other/kind/1"})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	var ce *hsm.ContentError
	if err := dst.Restore(t.Context(), &buf); !errors.As(err, &ce) || ce.Got != "other/kind/1" {
		t.Errorf("restore of another content type: %v", err)
	}
	// A cancelled restore changes nothing.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := dst.Restore(ctx, bytes.NewReader(b)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled restore: %v", err)
	}
	if !slices.Equal(keys(t, dst), mine) {
		t.Fatal("a cancelled restore changed the keys")
	}
	s.checkStore(t, dst)
}

func (s *suite) slotCredential(t *testing.T) {
	ctx := t.Context()
	h := s.Fresh(t)
	if err := h.ActivateSlot(ctx, 1, "SER-1", []byte("nothing issued yet")); !errors.Is(err, hsm.ErrCredentialInvalid) {
		t.Fatalf("activate before any credential was issued: %v", err)
	}
	cred, err := h.IssueSlotCredential(ctx, 3, "SER-1")
	if err != nil {
		t.Fatal(err)
	}
	s.keep(cred)
	if len(cred) > 255 {
		t.Fatalf("credential of %d bytes does not fit a card slot", len(cred))
	}
	if err := h.ActivateSlot(ctx, 3, "SER-1", cred); err != nil {
		t.Fatalf("activate with the issued credential: %v", err)
	}
	// A byte-for-byte copy on another card does not activate the slot.
	err = h.ActivateSlot(ctx, 3, "SER-2", cred)
	var cm *hsm.CardMismatchError
	if !errors.As(err, &cm) || cm.Issued != "SER-1" || cm.Presented != "SER-2" || cm.Slot != 3 {
		t.Fatalf("copied credential: %v", err)
	}
	var sm *hsm.SlotMismatchError
	if err := h.ActivateSlot(ctx, 4, "SER-1", cred); !errors.As(err, &sm) || sm.Issued != 3 || sm.Presented != 4 {
		t.Fatalf("credential for another slot: %v", err)
	}
	for i := range cred {
		c := bytes.Clone(cred)
		c[i] ^= 0x01
		if err := h.ActivateSlot(ctx, 3, "SER-1", c); !errors.Is(err, hsm.ErrCredentialInvalid) {
			t.Fatalf("credential with byte %d altered: %v", i, err)
		}
	}
	for _, c := range [][]byte{nil, {}, cred[:len(cred)-1], append(bytes.Clone(cred), 0)} {
		if err := h.ActivateSlot(ctx, 3, "SER-1", c); !errors.Is(err, hsm.ErrCredentialInvalid) {
			t.Fatalf("malformed credential of %d bytes: %v", len(c), err)
		}
	}
	// Another HSM's credential for the same slot and card is not this one's.
	other := s.Fresh(t)
	foreign, err := other.IssueSlotCredential(ctx, 3, "SER-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ActivateSlot(ctx, 3, "SER-1", foreign); !errors.Is(err, hsm.ErrCredentialInvalid) {
		t.Fatalf("credential of another HSM: %v", err)
	}
	// Two credentials for one card are distinct (random nonce), both valid.
	second, err := h.IssueSlotCredential(ctx, 3, "SER-1")
	if err != nil || bytes.Equal(second, cred) {
		t.Fatalf("second credential: %v (equal to the first: %v)", err, bytes.Equal(second, cred))
	}
	if err := h.ActivateSlot(ctx, 3, "SER-1", second); err != nil {
		t.Fatal(err)
	}
	if _, err := h.IssueSlotCredential(ctx, 1, ""); !errors.Is(err, hsm.ErrInvalidSerial) {
		t.Fatalf("empty serial: %v", err)
	}
	if _, err := h.IssueSlotCredential(ctx, 1<<33, "SER-1"); err == nil {
		t.Fatal("slot beyond 32 bits accepted")
	}
	s.checkStore(t, h)
}

// authenticator: the authenticators of an HSM are those of its MBK, whichever HSM holds it and
// however often it was reopened, reset and loaded again; any change to the data or the tag is
// found; the authentication key is nowhere in the store in clear.
func (s *suite) authenticator(t *testing.T) {
	ctx := t.Context()
	h := s.Fresh(t)
	a, ok := h.(hsm.Authenticator)
	if !ok {
		t.Fatal("backend does not implement hsm.Authenticator")
	}
	msg := []byte("KQSR a share record stands here: the bytes a card holds")
	if _, err := a.Authenticate(ctx, msg); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("authenticate without an MBK: %v", err)
	}
	if err := a.CheckAuthenticator(ctx, msg, make([]byte, hsm.AuthenticatorSize)); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("check without an MBK: %v", err)
	}
	mbk := NewMBK(t)
	s.keep(mbk)
	s.keep(hsm.AuthenticatorKeyOf(mbk))
	mustLoad(t, h, mbk)
	tag, err := a.Authenticate(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(tag) != hsm.AuthenticatorSize || !bytes.Equal(tag, hsm.AuthenticatorOf(mbk, msg)) {
		t.Fatalf("authenticator %x differs from AuthenticatorOf the MBK", tag)
	}
	if err := a.CheckAuthenticator(ctx, msg, tag); err != nil {
		t.Fatalf("check a good authenticator: %v", err)
	}
	for i := range msg {
		m := bytes.Clone(msg)
		m[i] ^= 0x01
		if err := a.CheckAuthenticator(ctx, m, tag); !errors.Is(err, hsm.ErrAuthenticatorMismatch) {
			t.Fatalf("data with byte %d altered: %v", i, err)
		}
	}
	for _, bad := range [][]byte{nil, tag[:len(tag)-1], append(bytes.Clone(tag), 0), func() []byte { c := bytes.Clone(tag); c[0] ^= 0x80; return c }()} {
		if err := a.CheckAuthenticator(ctx, msg, bad); !errors.Is(err, hsm.ErrAuthenticatorMismatch) {
			t.Fatalf("altered tag of %d bytes: %v", len(bad), err)
		}
	}
	for _, m := range [][]byte{nil, make([]byte, hsm.MaxAuthenticated+1)} {
		if _, err := a.Authenticate(ctx, m); !errors.Is(err, hsm.ErrAuthenticatedSize) {
			t.Fatalf("authenticate %d bytes: %v", len(m), err)
		}
	}
	// Re-created wherever the MBK is: after reopening, on another HSM, after a reset and a load.
	h = s.Reopen(t, h)
	if err := h.(hsm.Authenticator).CheckAuthenticator(ctx, msg, tag); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
	other := s.Fresh(t)
	mustLoad(t, other, mbk)
	if got, err := other.(hsm.Authenticator).Authenticate(ctx, msg); err != nil || !bytes.Equal(got, tag) {
		t.Fatalf("another HSM with the same MBK: %x, %v", got, err)
	}
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.(hsm.Authenticator).CheckAuthenticator(ctx, msg, tag); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("after reset: %v", err)
	}
	foreign := NewMBK(t)
	s.keep(foreign)
	s.keep(hsm.AuthenticatorKeyOf(foreign))
	mustLoad(t, h, foreign)
	if err := h.(hsm.Authenticator).CheckAuthenticator(ctx, msg, tag); !errors.Is(err, hsm.ErrAuthenticatorMismatch) {
		t.Fatalf("under another MBK: %v", err)
	}
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, h, mbk)
	if err := h.(hsm.Authenticator).CheckAuthenticator(ctx, msg, tag); err != nil {
		t.Fatalf("after a reset and loading the same MBK again: %v", err)
	}
	s.checkStore(t, h)
	s.checkStore(t, other)
}

func (s *suite) reset(t *testing.T) {
	ctx := t.Context()
	h := s.Fresh(t)
	mbk := NewMBK(t)
	s.keep(mbk)
	mustLoad(t, h, mbk)
	createKeys(t, h, "doomed")
	for _, sec := range s.storeSecrets(t, h) {
		s.keep(sec)
	}
	cred, err := h.IssueSlotCredential(ctx, 2, "SER-9")
	if err != nil {
		t.Fatal(err)
	}
	b := s.backupOf(t, h, mbk)

	if err := h.Reset(ctx); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if _, err := h.BackupKeyID(ctx); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("MBK after reset: %v", err)
	}
	if k := keys(t, h); len(k) != 0 {
		t.Fatalf("keys after reset: %v", k)
	}
	if err := h.ActivateSlot(ctx, 2, "SER-9", cred); !errors.Is(err, hsm.ErrCredentialInvalid) {
		t.Fatalf("credential issued before reset: %v", err)
	}
	h = s.Reopen(t, h)
	if _, err := h.BackupKeyID(ctx); !errors.Is(err, hsm.ErrNoBackupKey) {
		t.Fatalf("MBK after reset and reopening: %v", err)
	}
	// After a reset a new MBK may be set, and the old backups are foreign.
	other := NewMBK(t)
	s.keep(other)
	mustLoad(t, h, other)
	var fe *hsm.ForeignKeyError
	if err := h.Restore(ctx, bytes.NewReader(b)); !errors.As(err, &fe) {
		t.Fatalf("old backup after reset and a new MBK: %v", err)
	}
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, h, mbk)
	if err := h.Restore(ctx, bytes.NewReader(b)); err != nil {
		t.Fatalf("restore after reset with the old MBK: %v", err)
	}
	if k := keys(t, h); len(k) != 1 || k[0].Label != "doomed" {
		t.Fatalf("restored after reset: %v", k)
	}
	if err := h.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	s.checkStore(t, h)
}

func (s *suite) closed(t *testing.T) {
	h := s.Fresh(t)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	ctx := t.Context()
	for name, err := range map[string]error{
		"LoadBackupKey": h.LoadBackupKey(ctx, NewMBK(t)),
		"Backup":        h.Backup(ctx, &bytes.Buffer{}),
		"Reset":         h.Reset(ctx),
	} {
		if !errors.Is(err, hsm.ErrClosed) {
			t.Errorf("%s after close: %v", name, err)
		}
	}
	if _, err := h.BackupKeyID(ctx); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("BackupKeyID after close: %v", err)
	}
}

func (s *suite) storeSecrets(t *testing.T, h hsm.HSM) [][]byte {
	if s.Secrets == nil {
		return nil
	}
	return s.Secrets(t, h)
}

// checkStore searches every file of h's store for every secret the suite has seen, raw, hex
// and base64.
func (s *suite) checkStore(t *testing.T, h hsm.HSM) {
	t.Helper()
	secrets := append(slices.Clone(s.secrets), s.storeSecrets(t, h)...)
	var forms [][]byte
	for _, sec := range secrets {
		if len(sec) < 16 {
			continue
		}
		forms = append(forms, sec, []byte(hex.EncodeToString(sec)), []byte(hex.EncodeToString(sec)[:32]),
			[]byte(base64.StdEncoding.EncodeToString(sec)), sec[:16])
	}
	files := 0
	for _, dir := range s.Dirs(h) {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			for i, f := range forms {
				if bytes.Contains(b, f) {
					t.Errorf("%s holds secret %d (form %d) in clear", path, i/5, i%5)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files == 0 {
		t.Fatal("no file found in the store to search")
	}
}
