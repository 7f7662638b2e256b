package hsm

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// # The object store
//
// An HSM holds objects of five classes, the classes of PKCS#11: private keys (RSA, EC, EdDSA),
// public keys, secret keys (AES of every length, generic secrets, DES3), certificates (X.509) and
// data objects. Both backends describe them with the same model: an [Object] says what an object
// is without any key material, and the attributes that define it are PKCS#11 attributes (the
// numbers below), whatever the backend, so that one description and one backup record fit both.
//
// An object's identity is its class, its type (key type, certificate type; for data objects the
// CKA_APPLICATION), its CKA_ID and its CKA_LABEL ([Object.Identity]). A restore replaces the
// token's objects of an identity that the backup holds, adds the others, and leaves every other
// object alone unless asked to make the token equal to the backup ([RestoreOptions.MakeEqual]).
//
// Keyquorum's own objects (the MBK, the authenticator and slot credential keys, the restore
// journal) are listed with [Object.Own] set; they are never in a backup (the MBK comes from the
// cards, the others are re-created) and a restore never touches them.

// Object classes, as PKCS#11 CKO_* values.
const (
	ClassData        uint32 = 0x0
	ClassCertificate uint32 = 0x1
	ClassPublicKey   uint32 = 0x2
	ClassPrivateKey  uint32 = 0x3
	ClassSecretKey   uint32 = 0x4
)

// Key types (PKCS#11 CKK_*) and the certificate type (CKC_*) the model knows.
const (
	KeyRSA           uint32 = 0x00
	KeyEC            uint32 = 0x03
	KeyGenericSecret uint32 = 0x10
	KeyDES3          uint32 = 0x15
	KeyAES           uint32 = 0x1f
	KeyECEdwards     uint32 = 0x40
	CertX509         uint32 = 0x00
	// NoType is the type field of a data object.
	NoType uint32 = 0xffffffff
)

// PKCS#11 attributes (CKA_*) that the model carries.
const (
	AttrPrivate             uint32 = 0x002
	AttrLabel               uint32 = 0x003
	AttrApplication         uint32 = 0x010
	AttrValue               uint32 = 0x011
	AttrObjectID            uint32 = 0x012
	AttrCertificateType     uint32 = 0x080
	AttrIssuer              uint32 = 0x081
	AttrSerialNumber        uint32 = 0x082
	AttrTrusted             uint32 = 0x086
	AttrCertificateCategory uint32 = 0x087
	AttrKeyType             uint32 = 0x100
	AttrSubject             uint32 = 0x101
	AttrID                  uint32 = 0x102
	AttrSensitive           uint32 = 0x103
	AttrEncrypt             uint32 = 0x104
	AttrDecrypt             uint32 = 0x105
	AttrWrap                uint32 = 0x106
	AttrUnwrap              uint32 = 0x107
	AttrSign                uint32 = 0x108
	AttrSignRecover         uint32 = 0x109
	AttrVerify              uint32 = 0x10a
	AttrVerifyRecover       uint32 = 0x10b
	AttrDerive              uint32 = 0x10c
	AttrModulus             uint32 = 0x120
	AttrPublicExponent      uint32 = 0x122
	AttrValueLen            uint32 = 0x161
	AttrExtractable         uint32 = 0x162
	AttrModifiable          uint32 = 0x170
	AttrECParams            uint32 = 0x180
	AttrECPoint             uint32 = 0x181
	AttrAlwaysAuthenticate  uint32 = 0x202
	AttrWrapWithTrusted     uint32 = 0x210
)

// AttrKind is how an attribute's value is encoded in the model: PKCS#11 CK_BBOOL is one byte
// (0 or 1), CK_ULONG is 8 bytes big-endian (whatever the platform's CK_ULONG), everything else
// is the bytes as the token holds them.
type AttrKind int

const (
	KindBytes AttrKind = iota
	KindBool
	KindULong
)

// AttrSpec says how one attribute is carried.
type AttrSpec struct {
	Type uint32
	Name string
	Kind AttrKind
	// Derived attributes are computed by the token from the key material (a private key's
	// modulus, its curve): carried and compared after a restore, never set in a template.
	Derived bool
}

var (
	common   = []AttrSpec{{AttrLabel, "CKA_LABEL", KindBytes, false}, {AttrPrivate, "CKA_PRIVATE", KindBool, false}, {AttrModifiable, "CKA_MODIFIABLE", KindBool, false}}
	keyAttrs = []AttrSpec{{AttrID, "CKA_ID", KindBytes, false}, {AttrDerive, "CKA_DERIVE", KindBool, false}}
	secret   = []AttrSpec{{AttrSensitive, "CKA_SENSITIVE", KindBool, false}, {AttrExtractable, "CKA_EXTRACTABLE", KindBool, false},
		{AttrEncrypt, "CKA_ENCRYPT", KindBool, false}, {AttrDecrypt, "CKA_DECRYPT", KindBool, false},
		{AttrWrap, "CKA_WRAP", KindBool, false}, {AttrUnwrap, "CKA_UNWRAP", KindBool, false},
		{AttrSign, "CKA_SIGN", KindBool, false}, {AttrVerify, "CKA_VERIFY", KindBool, false}}
	private = []AttrSpec{{AttrSensitive, "CKA_SENSITIVE", KindBool, false}, {AttrExtractable, "CKA_EXTRACTABLE", KindBool, false},
		{AttrDecrypt, "CKA_DECRYPT", KindBool, false}, {AttrSign, "CKA_SIGN", KindBool, false},
		{AttrSignRecover, "CKA_SIGN_RECOVER", KindBool, false}, {AttrUnwrap, "CKA_UNWRAP", KindBool, false},
		{AttrSubject, "CKA_SUBJECT", KindBytes, false}, {AttrAlwaysAuthenticate, "CKA_ALWAYS_AUTHENTICATE", KindBool, false}}
	public = []AttrSpec{{AttrEncrypt, "CKA_ENCRYPT", KindBool, false}, {AttrVerify, "CKA_VERIFY", KindBool, false},
		{AttrVerifyRecover, "CKA_VERIFY_RECOVER", KindBool, false}, {AttrWrap, "CKA_WRAP", KindBool, false},
		{AttrSubject, "CKA_SUBJECT", KindBytes, false}}
	rsaPriv  = []AttrSpec{{AttrModulus, "CKA_MODULUS", KindBytes, true}, {AttrPublicExponent, "CKA_PUBLIC_EXPONENT", KindBytes, true}}
	ecPriv   = []AttrSpec{{AttrECParams, "CKA_EC_PARAMS", KindBytes, true}}
	rsaPub   = []AttrSpec{{AttrModulus, "CKA_MODULUS", KindBytes, false}, {AttrPublicExponent, "CKA_PUBLIC_EXPONENT", KindBytes, false}}
	ecPub    = []AttrSpec{{AttrECParams, "CKA_EC_PARAMS", KindBytes, false}, {AttrECPoint, "CKA_EC_POINT", KindBytes, false}}
	certAttr = []AttrSpec{{AttrID, "CKA_ID", KindBytes, false}, {AttrValue, "CKA_VALUE", KindBytes, false},
		{AttrSubject, "CKA_SUBJECT", KindBytes, false}, {AttrIssuer, "CKA_ISSUER", KindBytes, false},
		{AttrSerialNumber, "CKA_SERIAL_NUMBER", KindBytes, false}, {AttrCertificateCategory, "CKA_CERTIFICATE_CATEGORY", KindULong, false}}
	dataAttr = []AttrSpec{{AttrApplication, "CKA_APPLICATION", KindBytes, false}, {AttrObjectID, "CKA_OBJECT_ID", KindBytes, false},
		{AttrValue, "CKA_VALUE", KindBytes, false}}
)

func cat(lists ...[]AttrSpec) []AttrSpec {
	var out []AttrSpec
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// Supported reports whether the model carries objects of this class and type, and if not, why.
func Supported(class, typ uint32) (bool, string) {
	switch class {
	case ClassSecretKey:
		switch typ {
		case KeyAES, KeyGenericSecret, KeyDES3:
			return true, ""
		}
	case ClassPrivateKey, ClassPublicKey:
		switch typ {
		case KeyRSA, KeyEC, KeyECEdwards:
			return true, ""
		}
	case ClassCertificate:
		if typ == CertX509 {
			return true, ""
		}
	case ClassData:
		return true, ""
	default:
		return false, fmt.Sprintf("objects of class 0x%x are not carried by backups", class)
	}
	return false, fmt.Sprintf("%s is a kind that backups do not carry", KindName(class, typ, 0))
}

// CarriedAttrs lists the attributes a backup carries for objects of this class and type, in
// ascending order of type number, or nil for a kind the model does not carry. Class and type
// are not among them: they are fields of their own.
func CarriedAttrs(class, typ uint32) []AttrSpec {
	if ok, _ := Supported(class, typ); !ok {
		return nil
	}
	var l []AttrSpec
	switch class {
	case ClassSecretKey:
		l = cat(common, keyAttrs, secret)
	case ClassPrivateKey:
		l = cat(common, keyAttrs, private)
		if typ == KeyRSA {
			l = cat(l, rsaPriv)
		} else {
			l = cat(l, ecPriv)
		}
	case ClassPublicKey:
		l = cat(common, keyAttrs, public)
		if typ == KeyRSA {
			l = cat(l, rsaPub)
		} else {
			l = cat(l, ecPub)
		}
	case ClassCertificate:
		l = cat(common, certAttr)
	case ClassData:
		l = cat(common, dataAttr)
	}
	// Sort by type (insertion sort: the lists are short).
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j].Type < l[j-1].Type; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
	return l
}

// HasMaterial reports whether objects of the class carry secret key material (wrapped under the
// MBK in a backup).
func HasMaterial(class uint32) bool { return class == ClassSecretKey || class == ClassPrivateKey }

// Attr is one attribute of an object, its value encoded as [AttrKind] says.
type Attr struct {
	Type  uint32
	Value []byte
}

// Object describes one object in an HSM. It never holds key material.
type Object struct {
	Class uint32 // ClassSecretKey, ...
	Type  uint32 // key type, certificate type, or NoType for data objects
	Label string
	ID    []byte
	// Application is a data object's CKA_APPLICATION.
	Application string
	// Bits is a key's size (RSA modulus, EC curve, secret key length), 0 when unknown.
	Bits int
	// Own marks Keyquorum's own objects (MBK, authenticator key, slot credential key, restore
	// journal): never in a backup, never touched by a restore.
	Own bool
	// Managed marks the application keys Keyquorum created ([KeyStore.CreateKey]): the key
	// database a factory reset clears.
	Managed bool
	// Carried says whether a backup carries the object; Why says why not.
	Carried bool
	Why     string
	// Attrs are the carried attributes ([CarriedAttrs]) as read, for comparison and display;
	// the listing of a backend may leave them out.
	Attrs []Attr
}

// Identity is what a restore matches objects by: class, type (for data objects the
// application), CKA_ID and CKA_LABEL.
func (o Object) Identity() string {
	t := fmt.Sprintf("%08x", o.Type)
	if o.Class == ClassData {
		t = hex.EncodeToString([]byte(o.Application))
	}
	return fmt.Sprintf("%x/%s/%s/%s", o.Class, t, hex.EncodeToString(o.ID), hex.EncodeToString([]byte(o.Label)))
}

// Kind names the object's kind for people: "RSA-3072 private key", "AES-128 secret key",
// "X.509 certificate", "data object".
func (o Object) Kind() string { return KindName(o.Class, o.Type, o.Bits) }

// KindName names a kind of object for people.
func KindName(class, typ uint32, bits int) string {
	var t string
	switch typ {
	case KeyRSA:
		t = "RSA"
	case KeyEC:
		t = "EC"
	case KeyECEdwards:
		t = "EdDSA"
	case KeyAES:
		t = "AES"
	case KeyGenericSecret:
		t = "generic"
	case KeyDES3:
		t = "DES3"
	default:
		t = fmt.Sprintf("type 0x%x", typ)
	}
	if bits > 0 && typ != KeyDES3 {
		t = fmt.Sprintf("%s-%d", t, bits)
	}
	switch class {
	case ClassPrivateKey:
		return t + " private key"
	case ClassPublicKey:
		return t + " public key"
	case ClassSecretKey:
		return t + " secret key"
	case ClassCertificate:
		if typ == CertX509 {
			return "X.509 certificate"
		}
		return fmt.Sprintf("certificate of type 0x%x", typ)
	case ClassData:
		return "data object"
	}
	return fmt.Sprintf("object of class 0x%x", class)
}

// String names the object for an operator: kind, label and ID. Never key material.
func (o Object) String() string {
	id := hex.EncodeToString(o.ID)
	if id == "" {
		id = "none"
	}
	return fmt.Sprintf("%s %q (id %s)", o.Kind(), o.Label, id)
}

// IncompleteBackupError is a backup refused before a byte was written, because objects in the
// HSM cannot be carried by it. Each of Objects says why ([Object.Why]). A backup with
// [BackupOptions.Skip] leaves them out, and lists them in its header.
type IncompleteBackupError struct {
	Objects []Object
}

func (e *IncompleteBackupError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backup refused: %d object(s) in the hsm cannot be carried by a backup: ", len(e.Objects))
	for i, o := range e.Objects {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", o, o.Why)
	}
	b.WriteString(". Nothing was written. To make a backup without them, ask for one that skips them explicitly")
	return b.String()
}

// BackupOptions choose what a backup does with objects it cannot carry.
type BackupOptions struct {
	// Skip leaves objects that cannot be carried out of the backup, listing them in its header,
	// instead of refusing the backup.
	Skip bool
}

// RestoreOptions choose how a restore treats the HSM's objects.
type RestoreOptions struct {
	// MakeEqual also removes the objects the backup does not hold — except Keyquorum's own and
	// those the backup lists as left out ([RestorePlan.LeftOut]: a key that could not leave is
	// kept): the HSM ends with the backup's objects and the ones it could not carry.
	MakeEqual bool
	// DryRun reads and authenticates the whole backup and returns the plan without changing
	// anything.
	DryRun bool
}

// Plan actions.
const (
	ActionAdd       = "add"       // the backup's object is new to the HSM
	ActionReplace   = "replace"   // an object of the same identity is replaced by the backup's
	ActionUnchanged = "unchanged" // the HSM holds the backup's object already, the same
	ActionKeep      = "keep"      // the HSM's object is not in the backup and stays
	ActionRemove    = "remove"    // the HSM's object is not in the backup and goes (MakeEqual)
)

// PlanItem is one step of a restore.
type PlanItem struct {
	Action string
	Object Object
}

// SkippedObject is an object a backup left out on request, as its header lists it.
type SkippedObject struct {
	Kind   string
	Label  string
	ID     []byte
	Reason string
}

// SkippedEntry is how a backup's header names o when it leaves it out: kind, label and reason
// (o.Why) cut to 255 bytes at a character boundary with control characters replaced, the ID cut
// to 255 bytes.
func SkippedEntry(o Object) SkippedObject {
	clean := func(s string) string {
		s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return '?'
			}
			return r
		}, strings.ToValidUTF8(s, "?"))
		for len(s) > 255 {
			_, size := utf8.DecodeLastRuneInString(s)
			s = s[:len(s)-size]
		}
		return s
	}
	s := SkippedObject{Kind: clean(o.Kind()), Label: clean(o.Label), ID: o.ID, Reason: clean(o.Why)}
	if len(s.ID) > 255 {
		s.ID = s.ID[:255]
	}
	return s
}

// LeftOut reports whether the plan's backup says it left o out when it was made (its header
// names o among the skipped objects). A restore that makes the HSM equal to the backup keeps
// such an object: the backup could not carry it, so its absence there is no deletion, and a
// key that cannot leave its HSM is in no backup at all. When the header had no room to name
// every skipped object, every object is taken as possibly left out.
func (p *RestorePlan) LeftOut(o Object) bool {
	if p.SkippedMore > 0 {
		return true
	}
	e := SkippedEntry(o)
	for _, s := range p.Skipped {
		if s.Kind == e.Kind && s.Label == e.Label && bytes.Equal(s.ID, e.ID) {
			return true
		}
	}
	return false
}

func (s SkippedObject) String() string {
	id := hex.EncodeToString(s.ID)
	if id == "" {
		id = "none"
	}
	return fmt.Sprintf("%s %q (id %s): %s", s.Kind, s.Label, id, s.Reason)
}

// BackupRef names a backup: its ID (random, in its header), where and when it was made.
type BackupRef struct {
	ID      string // hex
	Source  string
	Created time.Time
}

// RestorePlan is what a restore does, or did.
type RestorePlan struct {
	Backup BackupRef
	Items  []PlanItem
	// Skipped are the objects the backup says it left out when it was made.
	Skipped []SkippedObject
	// SkippedMore counts skipped objects the header had no room to name.
	SkippedMore int
	DryRun      bool
	MakeEqual   bool
}

// Count returns how many items of the plan have the action.
func (p *RestorePlan) Count(action string) int {
	n := 0
	for _, it := range p.Items {
		if it.Action == action {
			n++
		}
	}
	return n
}

// PendingRestore is a restore that stopped before it finished (a crash, a kill): which backup,
// how far. Running the same restore again finishes it.
type PendingRestore struct {
	Backup    BackupRef
	Done      int // steps finished
	Total     int // steps in all
	MakeEqual bool
	Started   time.Time
}

func (p *PendingRestore) String() string {
	return fmt.Sprintf("a restore of backup %s (made on %q at %s) stopped after %d of %d steps: run the same restore again to finish it",
		p.Backup.ID, p.Backup.Source, p.Backup.Created.UTC().Format(time.RFC3339), p.Done, p.Total)
}

// ObjectStore is the optional part of an HSM that holds a whole object store and backs it up
// whole. Both backends implement it. [HSM.Backup] is BackupObjects without options and
// [HSM.Restore] is RestoreObjects without options.
type ObjectStore interface {
	// Objects lists every object in the HSM, Keyquorum's own included, each saying whether a
	// backup carries it and if not, why.
	Objects(ctx context.Context) ([]Object, error)
	// BackupObjects writes a backup of every object a backup can carry. Unless opts.Skip, it
	// refuses with an [*IncompleteBackupError] before writing anything when an object cannot
	// be carried.
	BackupObjects(ctx context.Context, w io.Writer, opts BackupOptions) error
	// RestoreObjects restores a backup: its objects are added, objects of the same identity
	// replaced, others kept (removed with opts.MakeEqual). With opts.DryRun nothing changes.
	// Nothing changes unless the whole backup was read and authenticated.
	RestoreObjects(ctx context.Context, r io.Reader, opts RestoreOptions) (*RestorePlan, error)
	// PendingRestore returns the restore that stopped before it finished, or nil.
	PendingRestore(ctx context.Context) (*PendingRestore, error)
	// Wipe destroys every object in the HSM, other software's too, and the MBK: more than the
	// factory reset ([HSM.Reset]), which clears only Keyquorum's own objects and key database.
	Wipe(ctx context.Context) error
}

// ObjectSpec asks an HSM to generate an object.
type ObjectSpec struct {
	// Kind is one of the [CreatableKinds]: "RSA-2048", "RSA-3072", "RSA-4096", "EC-P256",
	// "EC-P384", "Ed25519", "AES-128", "AES-192", "AES-256", "generic-secret-<bytes>".
	Kind  string
	Label string
	ID    []byte // nil: a random 16-byte ID
	// NotExtractable makes a key that never leaves the HSM, not even wrapped: no backup
	// carries it.
	NotExtractable bool
}

// CreatableKinds are the kinds [ObjectCreator.CreateObject] generates.
var CreatableKinds = []string{"RSA-2048", "RSA-3072", "RSA-4096", "EC-P256", "EC-P384", "Ed25519",
	"AES-128", "AES-192", "AES-256", "generic-secret-32"}

// ImportSpec brings an object in from outside: a private key (PKCS#8, DER or PEM), a
// certificate (X.509, DER or PEM) or a data object.
type ImportSpec struct {
	// What is "private-key", "certificate" or "data".
	What  string
	Label string
	ID    []byte // nil: a random ID (private keys, certificates)
	// Application names a data object's owner (CKA_APPLICATION).
	Application string
	Data        []byte // secret for private keys: the caller zeroes it
}

// ObjectCreator is the optional part of an HSM that makes objects on an operator's request:
// the soft HSM implements it, so that a fresh machine holds the same kinds a token does.
type ObjectCreator interface {
	// CreateObject generates a key (a key pair makes two objects, the private and the public
	// key, of the same label and ID) and returns what it made.
	CreateObject(ctx context.Context, spec ObjectSpec) ([]Object, error)
	// ImportObject stores an object brought from outside and returns what it made.
	ImportObject(ctx context.Context, spec ImportSpec) ([]Object, error)
}

// MaxIDLen bounds an object ID made through [ObjectCreator], in bytes.
const MaxIDLen = 64

// Conditions of objects made through [ObjectCreator].
var (
	// ErrInvalidID means an object ID is longer than MaxIDLen bytes.
	ErrInvalidID = errors.New("object ID must be at most 64 bytes (128 hex digits)")
	// ErrObjectExists means an object of the same identity (class, type, ID, label) exists.
	ErrObjectExists = errors.New("an object of the same class, type, ID and label exists already")
	// ErrUnknownKind means a kind of object that cannot be made or imported.
	ErrUnknownKind = errors.New("unknown kind of object")
	// ErrImport means the data to import is not what it was said to be.
	ErrImport = errors.New("the data to import does not decode")
)

// Curve OIDs as DER in CKA_EC_PARAMS, and the key size they stand for.
var curveBits = map[string]int{
	"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07": 256, // P-256
	"\x06\x05\x2b\x81\x04\x00\x22":             384, // P-384
	"\x06\x05\x2b\x81\x04\x00\x23":             521, // P-521
	"\x06\x03\x2b\x65\x70":                     255, // Ed25519
	"\x13\x0cedwards25519":                     255, // Ed25519 as a printable string
	"\x06\x03\x2b\x65\x71":                     448, // Ed448
}

// BitsOf returns a key's size from what describes it: an RSA modulus, EC parameters, or a secret
// key's length in bytes; 0 when unknown.
func BitsOf(class, typ uint32, modulus, ecParams []byte, valueLen int) int {
	if class != ClassPrivateKey && class != ClassPublicKey && class != ClassSecretKey {
		return 0
	}
	switch typ {
	case KeyRSA:
		for len(modulus) > 0 && modulus[0] == 0 {
			modulus = modulus[1:]
		}
		if len(modulus) == 0 {
			return 0
		}
		bits := 8 * len(modulus)
		for b := modulus[0]; b&0x80 == 0; b <<= 1 {
			bits--
		}
		return bits
	case KeyEC, KeyECEdwards:
		return curveBits[string(ecParams)]
	}
	return 8 * valueLen
}

// AttrClass is PKCS#11 CKA_CLASS.
const AttrClass uint32 = 0x000

// PendingRestoreError is a restore refused because another backup's restore stopped half-way:
// finish that one first (run it again), so that no object is left twice.
type PendingRestoreError struct {
	Pending PendingRestore
}

func (e *PendingRestoreError) Error() string {
	return "restore refused: " + e.Pending.String() + "; a restore of another backup would leave its objects half-replaced"
}

// AlgorithmOf names a key's algorithm as [KeyInfo] does: "AES-256", "RSA-3072", "EC-256".
func AlgorithmOf(o Object) string {
	k := KindName(o.Class, o.Type, o.Bits)
	for _, suffix := range []string{" secret key", " private key", " public key"} {
		k = strings.TrimSuffix(k, suffix)
	}
	return k
}
