package cluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/keyquorum/keyquorum/hsm"
)

// KeyIDHeader carries a master backup key ID (hex) beside a backup or a cluster request.
const KeyIDHeader = "X-Keyquorum-Key-ID"

// StatePath is where a node serves its state to a joining node (GET, over mutually
// authenticated TLS with a node certificate, the joining node's key ID in KeyIDHeader).
const StatePath = "/api/v1/cluster/state"

// ErrNotNode is a request for the state with a certificate that is not a node certificate of
// this node's management CA.
var ErrNotNode = errors.New("this node sends its state only to a node certificate issued by its own management CA")

// ErrNoKeyID is a request for the state that does not name the joining node's key ID.
var ErrNoKeyID = errors.New("the joining node must name its master backup key ID in " + KeyIDHeader)

// ForeignNodeError is a joining node that holds another master backup key than this one.
type ForeignNodeError struct {
	Mine, Theirs hsm.KeyID
}

func (e *ForeignNodeError) Error() string {
	return fmt.Sprintf("the joining node holds the master backup key %s, this node %s", e.Theirs, e.Mine)
}

// IsNodeCert reports whether a verified client certificate is a node certificate of the
// management CA ca.
func IsNodeCert(leaf *x509.Certificate, ca *x509.Certificate) bool {
	issued := bytes.Equal(leaf.RawIssuer, ca.RawSubject) && leaf.CheckSignatureFrom(ca) == nil
	return issued && slices.Equal(leaf.Subject.Organization, []string{NodeOrganization})
}

func parseKeyID(s string) (hsm.KeyID, bool) {
	var id hsm.KeyID
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// CheckJoiner decides whether a joining node gets this node's state: node is the name of its
// certificate leaf (for the log and the audit log), keyID the key ID it names. It returns the
// key ID of this node's MBK, or ErrNotNode, an error of the HSM (no MBK loaded), ErrNoKeyID,
// or a *ForeignNodeError (audited).
func (n *Node) CheckJoiner(ctx context.Context, node string, leaf *x509.Certificate, keyID string) (hsm.KeyID, error) {
	if !IsNodeCert(leaf, n.CA) {
		n.log().Warn("cluster state refused to a certificate that is not a node certificate", "operator", node)
		return hsm.KeyID{}, ErrNotNode
	}
	mine, err := n.HSM.BackupKeyID(ctx)
	if err != nil {
		return hsm.KeyID{}, err
	}
	theirs, ok := parseKeyID(keyID)
	if !ok {
		return hsm.KeyID{}, ErrNoKeyID
	}
	if theirs != mine {
		n.Audit.Record(node, AuditClusterStateRefused, fmt.Sprintf("state refused to node %s: it holds master backup key %s, this node %s", node, theirs, mine))
		return hsm.KeyID{}, &ForeignNodeError{Mine: mine, Theirs: theirs}
	}
	return mine, nil
}

// SendState writes this node's key database to w as a backup under the MBK mine (what
// CheckJoiner returned) and audits it. An error in the middle of the stream can only cut it
// off: the joining node's restore detects the truncation.
func (n *Node) SendState(ctx context.Context, w io.Writer, node string, mine hsm.KeyID) error {
	if err := SpoolBackup(ctx, n.HSM, w); err != nil {
		n.log().Error("cluster state transfer failed", "node", node, "err", err)
		return err
	}
	n.log().Info("cluster state sent", "node", node, "key_id", mine.String())
	n.Audit.Record(node, AuditClusterStateSent, fmt.Sprintf("key database sent to node %s, encrypted under the master backup key %s", node, mine))
	return nil
}
