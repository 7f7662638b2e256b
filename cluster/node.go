package cluster

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyquorum/keyquorum/hsm"
)

// NodeOrganization is the subject organisation of a node certificate: what a node's state
// transfer requires (besides its own management CA as the issuer).
const NodeOrganization = "Keyquorum cluster nodes"

// Audit event keys of cluster onboarding. They are stable: auditors filter on them.
const (
	AuditNodeIssued          = "cluster.node.issued"   // a node certificate issued
	AuditClusterStateSent    = "cluster.state.sent"    // this node sent its state to a joining node
	AuditClusterStateRefused = "cluster.state.refused" // a joining node refused (another key)
	AuditClusterJoin         = "cluster.join"          // this node took over a peer's state
	AuditClusterJoinRefused  = "cluster.join.refused"  // a join that changed nothing
)

// Audit event keys of the state leaving and entering the appliance as a backup file (WebConf's
// HSM page and the command line's backup and restore).
const (
	AuditBackup         = "hsm.backup"          // a backup downloaded
	AuditRestore        = "hsm.restore"         // a backup restored into the HSM
	AuditRestoreRefused = "hsm.restore.refused" // a restore refused (nothing changed)
	AuditBackupRefused  = "hsm.backup.refused"  // a backup refused: objects cannot be carried
	AuditObjectCreated  = "hsm.object.created"  // an object created or imported into the HSM
)

// HSM is what a node's state transfer and a checked restore need of the HSM; every hsm.HSM
// implements it.
type HSM interface {
	BackupKeyID(ctx context.Context) (hsm.KeyID, error)
	Backup(ctx context.Context, w io.Writer) error
	Restore(ctx context.Context, r io.Reader) error
}

// Issuer issues node certificates of the management CA; *operator.Auth (webconf/operator)
// implements it.
type Issuer interface {
	// IssueNode makes a client certificate of the management CA for subject with a new key,
	// records it as issued by by (so that it is listed and can be revoked), and returns it with
	// its PKCS#12 file (key, certificate, CA certificate) under a new one-time password.
	IssueNode(subject pkix.Name, by string, now time.Time) (cert *x509.Certificate, p12 []byte, password string, err error)
	// Fingerprint is the SHA-256 of the management CA certificate, as operators compare it.
	Fingerprint() string
}

// Recorder writes audit entries; a failure is logged by it and returned. *operator.Auth
// implements it.
type Recorder interface {
	Record(operator, event, message string) error
}

// Node is this appliance's side of cluster onboarding: it issues node certificates, sends its
// state to a joining node, and joins a peer.
type Node struct {
	HSM    HSM
	Issuer Issuer
	// CA is the management CA: only its node certificates get this node's state.
	CA    *x509.Certificate
	Audit Recorder
	// MaxUpload bounds the state taken over from a peer, in bytes.
	MaxUpload int64
	// Log receives operational logs (never secrets); nil discards.
	Log *slog.Logger
	// Registry is the card set registry, shared with the other nodes; nil shares none.
	Registry Registry
	// Dir is where this node keeps [StateFile]; "" keeps nothing (no sync, no status).
	Dir string
	// Name is this node's name until a join names it (its node certificate's); "" is the
	// host name. Address is how its peers reach it (https://host:port), told to the node it
	// pulls from so that it can offer its changes.
	Name, Address string

	smu            sync.Mutex // the shared state's version, StateFile, and one sync at a time
	emu            sync.Mutex // offerErr
	offerErr       string     // why offers stopped, as last logged ("" while they work)
	omu            sync.Mutex
	syncing, again bool // a sync started by an offer runs; an offer came meanwhile

	mu         sync.Mutex
	challenges map[string]challenge // handed to joining nodes, by hex
}

func (n *Node) log() *slog.Logger {
	if n.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Log
}

// NodeRequest is the body of POST /api/v1/cluster/nodes.
type NodeRequest struct {
	Name string `json:"name"`
}

// NodeBundle answers POST /api/v1/cluster/nodes: the node's PKCS#12 file (key, node
// certificate, this node's CA certificate) and its one-time password. Neither is kept here.
type NodeBundle struct {
	Subject       string    `json:"subject"`
	Serial        string    `json:"serial"`
	NotAfter      time.Time `json:"not_after"`
	P12           []byte    `json:"p12"`
	Password      string    `json:"password"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

func validNodeName(n string) bool {
	return n != "" && printable(n, 64) && !strings.ContainsAny(n, `,+"\<>;=`)
}

// printable: valid UTF-8, 1 to max bytes, no control characters (as an operator's name).
func printable(s string, max int) bool {
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

// ErrNodeName is a node name that cannot be a certificate's common name.
var ErrNodeName = errors.New(`the node name must be 1 to 64 printable characters without , + " \ < > ; =`)

// IssueNodeCert issues, records and audits a node certificate for name on behalf of operator
// op; the caller clears the bundle's P12 once it is handed out.
func (n *Node) IssueNodeCert(op, name string) (NodeBundle, error) {
	name = strings.TrimSpace(name)
	if !validNodeName(name) {
		return NodeBundle{}, ErrNodeName
	}
	now := time.Now()
	cert, p12, password, err := n.Issuer.IssueNode(pkix.Name{CommonName: name, Organization: []string{NodeOrganization}}, op, now)
	if err != nil {
		return NodeBundle{}, err
	}
	subject, serial := cert.Subject.String(), serialHex(cert)
	if err := n.Audit.Record(op, AuditNodeIssued, fmt.Sprintf("node certificate %s (serial %s) issued by %s for a node to join this cluster", subject, serial, op)); err != nil {
		clear(p12)
		return NodeBundle{}, err
	}
	n.log().Info("node certificate issued", "node", subject, "serial", serial, "by", op)
	return NodeBundle{Subject: subject, Serial: serial, NotAfter: cert.NotAfter.UTC(), P12: p12,
		Password: password, CAFingerprint: n.Issuer.Fingerprint()}, nil
}

func serialHex(cert *x509.Certificate) string { return strings.ToUpper(cert.SerialNumber.Text(16)) }
