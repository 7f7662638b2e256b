package operator

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/webauthn"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Role is what an operator may do in WebConf.
type Role string

// The roles. An operator without a role (RoleNone) is trusted by the TLS layer but may only see
// their own account page until an administrator gives them one.
const (
	RoleNone      Role = ""
	RoleAdmin     Role = "admin"     // ceremonies, restore, cluster join, factory reset, operators
	RoleCustodian Role = "custodian" // the smart card tools (PIN change, copy) on their own card
	RoleAuditor   Role = "auditor"   // read-only: status, audit log, protocols
)

// Roles are the roles an administrator can give, in the order the pages list them.
var Roles = []Role{RoleAdmin, RoleCustodian, RoleAuditor}

// ParseRole reads a role name; "" and "none" are RoleNone.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.TrimSpace(s)); r {
	case RoleAdmin, RoleCustodian, RoleAuditor:
		return r, nil
	case RoleNone, "none":
		return RoleNone, nil
	}
	return RoleNone, fmt.Errorf("parse role: %q is not a role (admin, custodian, auditor or none)", s)
}

func (r Role) String() string {
	if r == RoleNone {
		return "none"
	}
	return string(r)
}

// Identity is who a verified client certificate names.
type Identity struct {
	// ID keys the operator list: a hash of the public key of the CA that verified the chain
	// (see CA), the issuer's and the subject's distinguished names, so that a certificate of
	// another CA with the same subject is another operator — even when that CA has the same
	// name — and a renewed certificate (new key, new serial) is the same one.
	ID      string
	Subject string // RFC 2253, as the journal records it
	Issuer  string
	// CA is the hex SHA-256 of the SubjectPublicKeyInfo of the CA certificate the chain was
	// verified against (the management CA or a CA of --ca-bundle): what the operator is bound to.
	CA     string
	UPN    string // the Microsoft UPN of a PIV/CAC certificate's subject alternative name, if any
	Email  string // the first e-mail address of the subject alternative name, if any
	Serial string // hex
	// Management is true for a certificate of WebConf's own management CA (by its key).
	Management bool

	// legacyID is the key of schema 1 (issuer name and subject) under which an entry made
	// before operators were bound to their CA's key may wait; set only when the rule of
	// [Operators.Seen] allows this certificate to take such an entry over.
	legacyID string
}

// Name is the operator's name as the ceremony journal and the audit log record it: the subject,
// and the UPN or e-mail address in brackets when the certificate carries one.
func (id Identity) Name() string {
	alt := id.UPN
	if alt == "" {
		alt = id.Email
	}
	if alt != "" && !strings.Contains(id.Subject, alt) {
		if n := id.Subject + " (" + alt + ")"; len(n) <= 256 {
			return n
		}
	}
	return id.Subject
}

// oidUPN is the Microsoft User Principal Name otherName of smart card logon certificates.
var (
	oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
	oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// IdentityOf reads the identity of a leaf certificate; ca is the management CA.
func IdentityOf(cert *x509.Certificate, ca *x509.Certificate) Identity {
	return identityOfChain([]*x509.Certificate{cert}, ca, nil)
}

// ChainIdentity reads the identity of the leaf of a verified chain (leaf first, the CA it was
// verified against last); ca is the management CA.
func ChainIdentity(chain []*x509.Certificate, ca *x509.Certificate) Identity {
	return identityOfChain(chain, ca, nil)
}

// CAKey is the hex SHA-256 of a certificate's SubjectPublicKeyInfo: how a CA is named where
// names can be chosen by anybody who makes a CA.
func CAKey(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// identityOfChain reads the identity of the leaf of a chain the TLS layer verified: the chain
// ends at the CA it was verified against, and that CA's key — never its name — says whether the
// certificate is the management CA's and which CA the operator is bound to. A single
// certificate (no chain) is the management CA's when that CA signed it. bundle are the other
// configured CAs (for the rule that binds entries of schema 1, see [Operators.Seen]).
func identityOfChain(chain []*x509.Certificate, ca *x509.Certificate, bundle []*x509.Certificate) Identity {
	cert := chain[0]
	root := chain[len(chain)-1]
	if len(chain) == 1 {
		root = nil
		if bytes.Equal(cert.RawIssuer, ca.RawSubject) && cert.CheckSignatureFrom(ca) == nil {
			root = ca
		}
	}
	mgmtKey := CAKey(ca)
	id := Identity{
		Subject: cert.Subject.String(),
		Issuer:  cert.Issuer.String(),
		Serial:  SerialHex(cert),
	}
	if root != nil {
		id.CA = CAKey(root)
		id.Management = id.CA == mgmtKey
	}
	id.ID = operatorID(id.CA, cert.RawIssuer, cert.RawSubject)
	if root != nil && bytes.Equal(cert.RawIssuer, root.RawSubject) {
		// An entry of schema 1 is keyed by issuer name and subject only. It belongs to the
		// management CA when that CA has the name; to a bundle CA only when no other
		// configured CA (the management CA included) has the same name.
		named := 0
		for _, c := range append([]*x509.Certificate{ca}, bundle...) {
			if bytes.Equal(c.RawSubject, root.RawSubject) && CAKey(c) != id.CA {
				named++
			}
		}
		if id.Management || named == 0 {
			id.legacyID = legacyOperatorID(cert.RawIssuer, cert.RawSubject)
		}
	}
	for _, e := range cert.EmailAddresses {
		if Printable(e, 256) {
			id.Email = e
			break
		}
	}
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidSAN) {
			if upn, err := parseUPN(ext.Value); err == nil {
				id.UPN = upn
			}
		}
	}
	return id
}

// operatorID is the operator list's key of schema 2: the verifying CA's key hash, the issuer's
// and the subject's DER names.
func operatorID(caKey string, issuer, subject []byte) string {
	h := sha256.New()
	h.Write([]byte("keyquorum operator v2\x00"))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(caKey))))
	h.Write([]byte(caKey))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(issuer))))
	h.Write(issuer)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(subject))))
	h.Write(subject)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// legacyOperatorID is the key of schema 1: issuer and subject names only.
func legacyOperatorID(issuer, subject []byte) string {
	h := sha256.New()
	h.Write([]byte("keyquorum operator v1\x00"))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(issuer))))
	h.Write(issuer)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(subject))))
	h.Write(subject)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// SerialHex is a certificate's serial number in upper-case hex, as the operator list keys it.
func SerialHex(cert *x509.Certificate) string { return strings.ToUpper(cert.SerialNumber.Text(16)) }

// errNoUPN: the subject alternative name holds no UPN.
var errNoUPN = errors.New("no upn in the subject alternative name")

// parseUPN finds the UPN otherName in the DER of a subjectAltName extension:
//
//	GeneralNames ::= SEQUENCE OF GeneralName
//	otherName [0] IMPLICIT SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY }
//
// where a UPN's value is a UTF8String. It is strict about the structure it reads and refuses a
// UPN that is not printable text of at most 256 bytes.
func parseUPN(der []byte) (string, error) {
	in := cryptobyte.String(der)
	var names cryptobyte.String
	if !in.ReadASN1(&names, cbasn1.SEQUENCE) || !in.Empty() {
		return "", errors.New("parse upn: subject alternative name is not a sequence")
	}
	otherName := cbasn1.Tag(0).ContextSpecific().Constructed()
	for !names.Empty() {
		var gn cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return "", errors.New("parse upn: malformed general name")
		}
		if tag != otherName {
			continue
		}
		var typ asn1.ObjectIdentifier
		var val cryptobyte.String
		if !gn.ReadASN1ObjectIdentifier(&typ) || !gn.ReadASN1(&val, otherName) || !gn.Empty() {
			return "", errors.New("parse upn: malformed other name")
		}
		if !typ.Equal(oidUPN) {
			continue
		}
		var s cryptobyte.String
		if !val.ReadASN1(&s, cbasn1.UTF8String) || !val.Empty() {
			return "", errors.New("parse upn: the upn is not a UTF8String")
		}
		if !Printable(string(s), 256) {
			return "", errors.New("parse upn: the upn is not printable text of at most 256 bytes")
		}
		return string(s), nil
	}
	return "", errNoUPN
}

// Printable: valid UTF-8, 1 to max bytes, no control characters.
func Printable(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return false
		}
	}
	return true
}

// Operator is one entry of the operator list.
type Operator struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// CA is the key hash of the CA the operator is bound to (Identity.CA); "" on an entry of
	// schema 1 that has not been seen since (see Operators.Seen).
	CA    string `json:"ca,omitempty"`
	UPN   string `json:"upn,omitempty"`
	Email string `json:"email,omitempty"`
	Role  Role   `json:"role,omitempty"`
	// RoleBy and RoleAt say who gave the role, and when.
	RoleBy    string    `json:"role_by,omitempty"`
	RoleAt    time.Time `json:"role_at,omitzero"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// WebAuthnID is the random user handle the operator's security keys are registered under.
	WebAuthnID []byte        `json:"webauthn_id"`
	Keys       []SecurityKey `json:"keys,omitempty"`
	// RecoveryPending is set by an administrator recovery (serve --recover-admin): the next
	// security key needs the one-time code the appliance prints on its console at every start
	// until it is registered.
	RecoveryPending bool `json:"recovery_pending,omitempty"`
}

// Name is the operator's journal name (see [Identity.Name]).
func (o Operator) Name() string {
	return Identity{Subject: o.Subject, UPN: o.UPN, Email: o.Email}.Name()
}

// SecurityKey is a registered WebAuthn credential of an operator.
type SecurityKey struct {
	Name       string              `json:"name"`
	Added      time.Time           `json:"added"`
	LastUsed   time.Time           `json:"last_used,omitzero"`
	Credential webauthn.Credential `json:"credential"`
}

// KeyID is the credential ID in the form the pages and forms use.
func (k SecurityKey) KeyID() string { return hex.EncodeToString(k.Credential.ID) }

// The webauthn.User of an operator.
type WebAuthnUser struct{ Op *Operator }

func (u WebAuthnUser) WebAuthnID() []byte { return u.Op.WebAuthnID }
func (u WebAuthnUser) WebAuthnName() string {
	if u.Op.UPN != "" {
		return u.Op.UPN
	}
	if u.Op.Email != "" {
		return u.Op.Email
	}
	return u.Op.Subject
}
func (u WebAuthnUser) WebAuthnDisplayName() string { return u.Op.Subject }
func (u WebAuthnUser) WebAuthnCredentials() []webauthn.Credential {
	out := make([]webauthn.Credential, len(u.Op.Keys))
	for i, k := range u.Op.Keys {
		out[i] = k.Credential
	}
	return out
}

// IssuedCert is a client certificate of the management CA that WebConf knows of: the first
// administrator's, those issued from the Operators page, and any serial an administrator revoked.
type IssuedCert struct {
	Serial    string    `json:"serial"`
	Subject   string    `json:"subject,omitempty"`
	Issued    time.Time `json:"issued,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	By        string    `json:"by,omitempty"`
	Revoked   time.Time `json:"revoked,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
	// Node marks a cluster node's certificate ([Auth.IssueNode]): listed and revocable like
	// every certificate, never an operator.
	Node bool `json:"node,omitempty"`
}

// OperatorsFile is the operator list's bbolt file in the management PKI's directory.
const OperatorsFile = "operators.db"

// Operators is the operator list: roles, security keys and the management CA's certificates
// and revocations, in a bbolt file of its own beside the management PKI. The schema:
//
//	meta/
//	    schema      uint32 big-endian: the schema version (see operatorMigrations)
//	operators/
//	    <id>        JSON Operator (id: hex, see Identity.ID)
//	certs/
//	    <serial>    JSON IssuedCert (serial: upper-case hex)
//	crls/
//	    <ca key>    JSON CRLSeen: the last CRL accepted of a CA of --crl (key: CAKey), so that
//	                a restart with an older CRL file is refused
//
// The revoked serials are also kept in memory: every request is checked against them, whatever
// CA verified its certificate (a serial revoked here is refused from every trusted CA).
type Operators struct {
	db *bolt.DB

	mu      sync.RWMutex
	revoked map[string]bool
	// recorded counts the operators in the list, kept in memory so that the cap on recording
	// unknown certificates costs nothing per request (counting the bucket walks all of it).
	recorded int
	// seen caches decoded operator records by ID with the transaction ID they were read at:
	// admitting a request reads its operator without decoding JSON again while nothing was
	// written since (any write moves the transaction ID, so a changed role or key is never
	// served stale).
	seen map[string]seenOp
}

type seenOp struct {
	txid int
	op   Operator
}

// maxSeenCache bounds the cache of decoded operator records; when full it starts again.
const maxSeenCache = 4096

// cachedOperator reads the operator id inside tx through the cache.
func (o *Operators) cachedOperator(tx *bolt.Tx, id string) (*Operator, error) {
	txid := tx.ID()
	o.mu.RLock()
	c, ok := o.seen[id]
	o.mu.RUnlock()
	if ok && c.txid == txid {
		op := c.op.clone()
		return &op, nil
	}
	cur, err := getOperator(tx, id)
	if err != nil || cur == nil {
		return cur, err
	}
	o.mu.Lock()
	if o.seen == nil || len(o.seen) >= maxSeenCache {
		o.seen = map[string]seenOp{}
	}
	o.seen[id] = seenOp{txid: txid, op: cur.clone()}
	o.mu.Unlock()
	return cur, nil
}

// clone copies the record's slices, so that a caller's change cannot reach the cache.
func (op Operator) clone() Operator {
	op.WebAuthnID = slices.Clone(op.WebAuthnID)
	op.Keys = slices.Clone(op.Keys)
	return op
}

var (
	bucketOpMeta  = []byte("meta")
	bucketOps     = []byte("operators")
	bucketCerts   = []byte("certs")
	bucketCRLs    = []byte("crls")
	keyOpSchema   = []byte("schema")
	maxOperators  = 1000 // unknown certificates recorded at most; a flood of them is not kept
	seenRecording = time.Minute
)

// operatorMigrations bring the file from version i to i+1; never edited once released.
var operatorMigrations = []func(tx *bolt.Tx) error{
	func(tx *bolt.Tx) error { // 1: the buckets
		for _, b := range [][]byte{bucketOpMeta, bucketOps, bucketCerts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 2: operators are keyed by the key of the CA that verified them (Identity.ID of schema 2)
	// and carry that key ("ca"). An entry of schema 1 (keyed by issuer name and subject) keeps
	// its key and has no "ca" until a certificate that may take it over is seen (see
	// Operators.Seen); nothing is rewritten here because the CAs' keys are not known to the
	// file. The version keeps an older keyquorum, which would key by name, from opening it.
	func(tx *bolt.Tx) error { return nil },
	// 3: the last CRL seen of each CA with a configured CRL (CRLSeen), so that a CRL's number
	// and thisUpdate never go back, across restarts too.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketCRLs)
		return err
	},
}

// Conditions of the operator list.
var (
	ErrOperatorsLocked = errors.New("the operator list is in use by another keyquorum process")
	ErrNoSuchOperator  = errors.New("no such operator")
	ErrLastAdmin       = errors.New("the last administrator cannot lose the admin role: give another operator the admin role first")
	ErrNoSuchKey       = errors.New("no such security key")
	ErrKeyRegistered   = errors.New("this security key is registered already")
	ErrNoSuchCert      = errors.New("no certificate with that serial number")
	ErrOperatorsSchema = errors.New("the operator list was written by a newer version of keyquorum")
)

// OpenOperators opens (or creates) the operator list at path.
func OpenOperators(path string) (*Operators, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open operator list: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open operator list: %w", ErrOperatorsLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open operator list: %w", err)
	}
	o := &Operators{db: db, revoked: map[string]bool{}}
	if err := o.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		o.recorded = tx.Bucket(bucketOps).Stats().KeyN
		return tx.Bucket(bucketCerts).ForEach(func(k, v []byte) error {
			var c IssuedCert
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("certificate %s: %w", k, err)
			}
			if !c.Revoked.IsZero() {
				o.revoked[c.Serial] = true
			}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open operator list: %w", err)
	}
	return o, nil
}

func (o *Operators) migrate() error {
	return o.db.Update(func(tx *bolt.Tx) error {
		var have uint32
		if meta := tx.Bucket(bucketOpMeta); meta != nil {
			if v := meta.Get(keyOpSchema); len(v) == 4 {
				have = binary.BigEndian.Uint32(v)
			}
		}
		if int(have) > len(operatorMigrations) {
			return fmt.Errorf("open operator list: %w (schema %d)", ErrOperatorsSchema, have)
		}
		for v := int(have); v < len(operatorMigrations); v++ {
			if err := operatorMigrations[v](tx); err != nil {
				return fmt.Errorf("migrate operator list to schema %d: %w", v+1, err)
			}
		}
		return tx.Bucket(bucketOpMeta).Put(keyOpSchema, binary.BigEndian.AppendUint32(nil, uint32(len(operatorMigrations))))
	})
}

// Close closes the file.
func (o *Operators) Close() error { return o.db.Close() }

func getOperator(tx *bolt.Tx, id string) (*Operator, error) {
	v := tx.Bucket(bucketOps).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	op := &Operator{}
	if err := json.Unmarshal(v, op); err != nil {
		return nil, fmt.Errorf("operator %s: %w", id, err)
	}
	return op, nil
}

func putOperator(tx *bolt.Tx, op *Operator) error {
	b, err := json.Marshal(op)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketOps).Put([]byte(op.ID), b)
}

// Get returns the operator with that ID.
func (o *Operators) Get(id string) (Operator, error) {
	var op *Operator
	err := o.db.View(func(tx *bolt.Tx) (err error) {
		op, err = getOperator(tx, id)
		return err
	})
	if err != nil {
		return Operator{}, fmt.Errorf("read operator: %w", err)
	}
	if op == nil {
		return Operator{}, ErrNoSuchOperator
	}
	return *op, nil
}

// Seen returns the operator a certificate names, recording a new one (without a role) on first
// sight and the time of the last visit (at most once a minute). An operator list full of
// unknown certificates records no more of them; they are still shown the page that says they
// have no role.
func (o *Operators) Seen(id Identity, now time.Time) (Operator, error) {
	var cur *Operator
	legacy := false // an entry of schema 1 waits to be bound to this certificate's CA
	err := o.db.View(func(tx *bolt.Tx) (err error) {
		cur, err = o.cachedOperator(tx, id.ID)
		if err == nil && cur == nil && id.legacyID != "" {
			old, lerr := getOperator(tx, id.legacyID)
			legacy = lerr == nil && old != nil && old.CA == ""
		}
		return err
	})
	if err != nil {
		return Operator{}, fmt.Errorf("read operator: %w", err)
	}
	if cur != nil && now.Sub(cur.LastSeen) < seenRecording && cur.UPN == id.UPN && cur.Email == id.Email {
		return *cur, nil
	}
	unrecorded := Operator{ID: id.ID, Subject: id.Subject, Issuer: id.Issuer, CA: id.CA, UPN: id.UPN, Email: id.Email}
	o.mu.RLock()
	full := o.recorded >= maxOperators
	o.mu.RUnlock()
	if cur == nil && full && !legacy {
		// The list is full: an unknown certificate gets no role and no record, without a
		// write per request.
		return unrecorded, nil
	}
	var out Operator
	added := false
	err = o.db.Update(func(tx *bolt.Tx) error {
		op, err := getOperator(tx, id.ID)
		if err != nil {
			return err
		}
		if op == nil && id.legacyID != "" {
			if op, err = bindLegacy(tx, id); err != nil {
				return err
			}
		}
		if op == nil {
			if full {
				out = unrecorded
				return nil
			}
			if op, err = newOperator(id, now); err != nil {
				return err
			}
			added = true
		}
		op.UPN, op.Email, op.LastSeen = id.UPN, id.Email, now.UTC()
		out = *op
		return putOperator(tx, op)
	})
	if err != nil {
		return Operator{}, fmt.Errorf("record operator: %w", err)
	}
	if added {
		o.mu.Lock()
		o.recorded++
		o.mu.Unlock()
	}
	return out, nil
}

// bindLegacy moves an entry of schema 1 that id may take over (see identityOfChain: the
// management CA's certificate, or a bundle CA whose name no other configured CA has) to id's key
// and binds it to id's CA. It returns nil when there is none or it is bound already.
func bindLegacy(tx *bolt.Tx, id Identity) (*Operator, error) {
	op, err := getOperator(tx, id.legacyID)
	if err != nil || op == nil || op.CA != "" {
		return nil, err
	}
	if err := tx.Bucket(bucketOps).Delete([]byte(id.legacyID)); err != nil {
		return nil, err
	}
	op.ID, op.CA, op.Issuer = id.ID, id.CA, id.Issuer
	return op, nil
}

func newOperator(id Identity, now time.Time) (*Operator, error) {
	handle := make([]byte, 32)
	if _, err := rand.Read(handle); err != nil {
		return nil, err
	}
	return &Operator{ID: id.ID, Subject: id.Subject, Issuer: id.Issuer, CA: id.CA, UPN: id.UPN, Email: id.Email,
		FirstSeen: now.UTC(), WebAuthnID: handle}, nil
}

// List returns every operator, administrators first, then by subject.
func (o *Operators) List() ([]Operator, error) {
	out, err := decodeAll[Operator](o.db, bucketOps, "operator")
	if err != nil {
		return nil, fmt.Errorf("list operators: %w", err)
	}
	order := append(slices.Clone(Roles), RoleNone)
	rank := func(r Role) int { return slices.Index(order, r) }
	slices.SortFunc(out, func(a, b Operator) int {
		if d := rank(a.Role) - rank(b.Role); d != 0 {
			return d
		}
		return strings.Compare(a.Subject, b.Subject)
	})
	return out, nil
}

// decodeAll decodes every record of a bucket; what names a record in an error.
func decodeAll[T any](db *bolt.DB, bucket []byte, what string) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		out = make([]T, 0, b.Stats().KeyN) // one allocation, not a doubling copy per growth
		return b.ForEach(func(k, v []byte) error {
			var x T
			if err := json.Unmarshal(v, &x); err != nil {
				return fmt.Errorf("%s %s: %w", what, k, err)
			}
			out = append(out, x)
			return nil
		})
	})
	return out, err
}

// SetRole gives an operator a role (RoleNone takes it away) and returns the role it had. The
// last administrator keeps the admin role.
func (o *Operators) SetRole(id string, role Role, by string, now time.Time) (Operator, Role, error) {
	var out Operator
	var old Role
	err := o.db.Update(func(tx *bolt.Tx) error {
		op, err := getOperator(tx, id)
		if err != nil {
			return err
		}
		if op == nil {
			return ErrNoSuchOperator
		}
		old = op.Role
		if old == RoleAdmin && role != RoleAdmin {
			admins := 0
			err := tx.Bucket(bucketOps).ForEach(func(_, v []byte) error {
				var other Operator
				if err := json.Unmarshal(v, &other); err != nil {
					return err
				}
				if other.Role == RoleAdmin {
					admins++
				}
				return nil
			})
			if err != nil {
				return err
			}
			if admins <= 1 {
				return ErrLastAdmin
			}
		}
		op.Role, op.RoleBy, op.RoleAt = role, by, now.UTC()
		out = *op
		return putOperator(tx, op)
	})
	if err != nil {
		return Operator{}, "", fmt.Errorf("set role: %w", err)
	}
	return out, old, nil
}

// AddKey registers a security key for an operator.
func (o *Operators) AddKey(id string, key SecurityKey) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		op, err := getOperator(tx, id)
		if err != nil {
			return err
		}
		if op == nil {
			return ErrNoSuchOperator
		}
		// A credential ID is registered once across all operators.
		err = tx.Bucket(bucketOps).ForEach(func(_, v []byte) error {
			var other Operator
			if err := json.Unmarshal(v, &other); err != nil {
				return err
			}
			for _, k := range other.Keys {
				if bytes.Equal(k.Credential.ID, key.Credential.ID) {
					return ErrKeyRegistered
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		op.Keys = append(op.Keys, key)
		return putOperator(tx, op)
	})
	if err != nil {
		return fmt.Errorf("register security key: %w", err)
	}
	return nil
}

// KeyUsed stores what an assertion changed of a credential (its signature counter, flags) and
// when it was used.
func (o *Operators) KeyUsed(id string, cred webauthn.Credential, now time.Time) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		op, err := getOperator(tx, id)
		if err != nil {
			return err
		}
		if op == nil {
			return ErrNoSuchOperator
		}
		for i := range op.Keys {
			if bytes.Equal(op.Keys[i].Credential.ID, cred.ID) {
				op.Keys[i].Credential, op.Keys[i].LastUsed = cred, now.UTC()
				return putOperator(tx, op)
			}
		}
		return ErrNoSuchKey
	})
	if err != nil {
		return fmt.Errorf("update security key: %w", err)
	}
	return nil
}

// RemoveKey removes one security key (keyID as [SecurityKey.KeyID]), or every key of the
// operator when keyID is "". It returns the names of the keys removed.
func (o *Operators) RemoveKey(id, keyID string) ([]string, error) {
	var removed []string
	err := o.db.Update(func(tx *bolt.Tx) error {
		op, err := getOperator(tx, id)
		if err != nil {
			return err
		}
		if op == nil {
			return ErrNoSuchOperator
		}
		keep := op.Keys[:0]
		for _, k := range op.Keys {
			if keyID == "" || k.KeyID() == keyID {
				removed = append(removed, k.Name)
				continue
			}
			keep = append(keep, k)
		}
		if keyID != "" && len(removed) == 0 {
			return ErrNoSuchKey
		}
		op.Keys = keep
		return putOperator(tx, op)
	})
	if err != nil {
		return nil, fmt.Errorf("remove security key: %w", err)
	}
	return removed, nil
}

// SetRecoveryPending sets or clears an operator's pending recovery (see
// [Operator.RecoveryPending]).
func (o *Operators) SetRecoveryPending(id string, pending bool) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		op, err := getOperator(tx, id)
		if err != nil {
			return err
		}
		if op == nil {
			return ErrNoSuchOperator
		}
		op.RecoveryPending = pending
		return putOperator(tx, op)
	})
	if err != nil {
		return fmt.Errorf("set recovery: %w", err)
	}
	return nil
}

// RecoveryPending reports whether an operator waits for a security key after a recovery.
func (o *Operators) RecoveryPending() (bool, error) {
	pending := false
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOps).ForEach(func(_, v []byte) error {
			var op Operator
			if err := json.Unmarshal(v, &op); err != nil {
				return err
			}
			pending = pending || op.RecoveryPending
			return nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("read operator list: %w", err)
	}
	return pending, nil
}

// ReplaceCerts records cert as a certificate of the management CA issued by by and revokes every
// other unrevoked one recorded with the same subject: what an administrator recovery does when
// the first administrator's certificate was made anew. It returns the serials revoked.
func (o *Operators) ReplaceCerts(cert *x509.Certificate, by string, now time.Time) ([]string, error) {
	serial, subject := SerialHex(cert), cert.Subject.String()
	var revoked []string
	err := o.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketCerts).Get([]byte(serial)) == nil {
			if err := putCert(tx, &IssuedCert{Serial: serial, Subject: subject, Issued: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), By: by}); err != nil {
				return err
			}
		}
		var old []IssuedCert
		err := tx.Bucket(bucketCerts).ForEach(func(_, v []byte) error {
			var c IssuedCert
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if c.Subject == subject && c.Serial != serial && c.Revoked.IsZero() {
				old = append(old, c)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range old {
			c.Revoked, c.RevokedBy = now.UTC(), by
			if err := putCert(tx, &c); err != nil {
				return err
			}
			revoked = append(revoked, c.Serial)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replace certificates: %w", err)
	}
	o.mu.Lock()
	for _, s := range revoked {
		o.revoked[s] = true
	}
	o.mu.Unlock()
	return revoked, nil
}

// Bootstrap makes the first administrator's certificate an administrator while no operator has
// the admin role (the first start, or an operator list that was lost). It reports whether it
// gave the role.
func (o *Operators) Bootstrap(admin *x509.Certificate, ca *x509.Certificate, now time.Time) (Operator, bool, error) {
	id := IdentityOf(admin, ca)
	var out Operator
	made := false
	err := o.db.Update(func(tx *bolt.Tx) error {
		hasAdmin := false
		err := tx.Bucket(bucketOps).ForEach(func(_, v []byte) error {
			var other Operator
			if err := json.Unmarshal(v, &other); err != nil {
				return err
			}
			hasAdmin = hasAdmin || other.Role == RoleAdmin
			return nil
		})
		if err != nil || hasAdmin {
			return err
		}
		op, err := getOperator(tx, id.ID)
		if err != nil {
			return err
		}
		if op == nil && id.legacyID != "" {
			if op, err = bindLegacy(tx, id); err != nil {
				return err
			}
		}
		if op == nil {
			if op, err = newOperator(id, now); err != nil {
				return err
			}
		}
		op.Role, op.RoleBy, op.RoleAt = RoleAdmin, "keyquorum (first start)", now.UTC()
		if err := putOperator(tx, op); err != nil {
			return err
		}
		out, made = *op, true
		return putCert(tx, &IssuedCert{Serial: id.Serial, Subject: id.Subject, Issued: admin.NotBefore.UTC(),
			NotAfter: admin.NotAfter.UTC(), By: "keyquorum (first start)"})
	})
	if err != nil {
		return Operator{}, false, fmt.Errorf("bootstrap administrator: %w", err)
	}
	return out, made, nil
}

func putCert(tx *bolt.Tx, c *IssuedCert) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketCerts).Put([]byte(c.Serial), b)
}

// RecordIssued records a certificate issued from WebConf (and the operator it names, with its
// role, when that operator is new).
func (o *Operators) RecordIssued(c IssuedCert, id Identity, role Role, by string, now time.Time) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		if err := putCert(tx, &c); err != nil {
			return err
		}
		if c.Node {
			return nil // a node certificate is never an operator
		}
		op, err := getOperator(tx, id.ID)
		if err != nil {
			return err
		}
		if op == nil && id.legacyID != "" {
			if op, err = bindLegacy(tx, id); err != nil {
				return err
			}
		}
		if op == nil {
			if op, err = newOperator(id, now); err != nil {
				return err
			}
			op.FirstSeen = time.Time{}
		}
		if role != RoleNone && op.Role != role {
			op.Role, op.RoleBy, op.RoleAt = role, by, now.UTC()
		}
		return putOperator(tx, op)
	})
	if err != nil {
		return fmt.Errorf("record issued certificate: %w", err)
	}
	return nil
}

// Certs lists the management CA's certificates WebConf knows of, newest first.
func (o *Operators) Certs() ([]IssuedCert, error) {
	out, err := decodeAll[IssuedCert](o.db, bucketCerts, "certificate")
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	slices.SortFunc(out, func(a, b IssuedCert) int { return b.Issued.Compare(a.Issued) })
	return out, nil
}

// Revoke revokes a certificate of the management CA by serial (upper-case hex). A serial
// WebConf did not issue may be revoked too (a certificate made by hand with the CA key). It
// returns the record and whether it was revoked before.
func (o *Operators) Revoke(serial, by string, now time.Time) (IssuedCert, bool, error) {
	serial = strings.ToUpper(strings.TrimSpace(serial))
	if serial == "" || len(serial) > 40 || strings.Trim(serial, "0123456789ABCDEF") != "" {
		return IssuedCert{}, false, fmt.Errorf("revoke certificate: %w", ErrNoSuchCert)
	}
	var out IssuedCert
	was := false
	err := o.db.Update(func(tx *bolt.Tx) error {
		c := IssuedCert{Serial: serial}
		if v := tx.Bucket(bucketCerts).Get([]byte(serial)); v != nil {
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
		}
		if !c.Revoked.IsZero() {
			out, was = c, true
			return nil
		}
		c.Revoked, c.RevokedBy = now.UTC(), by
		out = c
		return putCert(tx, &c)
	})
	if err != nil {
		return IssuedCert{}, false, fmt.Errorf("revoke certificate: %w", err)
	}
	o.mu.Lock()
	o.revoked[serial] = true
	o.mu.Unlock()
	return out, was, nil
}

// LastCRL is the last CRL accepted of the CA with key hash caKey, if any ([CRLMemory]).
func (o *Operators) LastCRL(caKey string) (CRLSeen, bool, error) {
	var out CRLSeen
	found := false
	err := o.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCRLs).Get([]byte(caKey))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &out)
	})
	if err != nil {
		return CRLSeen{}, false, fmt.Errorf("read last crl: %w", err)
	}
	return out, found, nil
}

// SeenCRL remembers seen as the last CRL accepted of the CA with key hash caKey ([CRLMemory]).
func (o *Operators) SeenCRL(caKey string, seen CRLSeen) error {
	v, err := json.Marshal(seen)
	if err != nil {
		return err
	}
	if err := o.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCRLs).Put([]byte(caKey), v) }); err != nil {
		return fmt.Errorf("remember crl: %w", err)
	}
	return nil
}

// Revoked reports whether a serial is revoked in the operator list. It is checked for the
// certificates of every trusted CA, not only the management CA's: an administrator who revokes
// a bundle CA's certificate by its serial on the Operators page cuts it off.
func (o *Operators) Revoked(serial string) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.revoked[serial]
}
