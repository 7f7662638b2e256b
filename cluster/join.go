package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// JoinRequest is the body of POST /api/v1/cluster/join.
type JoinRequest struct {
	// Peer is the address of a node of the cluster: https://host:port.
	Peer string `json:"peer"`
	// NodeP12 and NodePassword are the node file issued by the peer, and its password.
	NodeP12      []byte `json:"node_p12"`
	NodePassword string `json:"node_password"`
}

// NodeIdentity is what a join needs from a node file: the node certificate with its key, and
// the peer's CA, the only one the peer's server certificate may chain to.
type NodeIdentity struct {
	cert  tls.Certificate
	roots *x509.CertPool
	// The node file itself, kept by a join to pull from the peer again.
	p12      []byte
	password string
}

// TLSCertificate is the node certificate with its key, as a TLS client presents it.
func (n *NodeIdentity) TLSCertificate() tls.Certificate { return n.cert }

// ErrNodeFile is a node file that cannot be used; the error wrapping it says why.
var ErrNodeFile = errors.New("read node file")

// ParseJoin checks a join request: the peer's address and the node file. The node file is a
// PKCS#12 file with a node certificate, its key and the CA that issued it.
func ParseJoin(req JoinRequest) (*url.URL, *NodeIdentity, error) {
	u, err := parsePeerURL(req.Peer)
	if err != nil {
		return nil, nil, err
	}
	if len(req.NodeP12) == 0 {
		return nil, nil, fmt.Errorf("%w: no node file (node_p12)", ErrNodeFile)
	}
	key, cert, cas, err := pkcs12.DecodeChain(req.NodeP12, req.NodePassword)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: it is not a PKCS#12 file, or the password is wrong", ErrNodeFile)
	}
	if len(cas) == 0 {
		return nil, nil, fmt.Errorf("%w: it holds no CA certificate of the peer", ErrNodeFile)
	}
	if !slices.Equal(cert.Subject.Organization, []string{NodeOrganization}) {
		return nil, nil, fmt.Errorf("%w: it holds %s, which is not a node certificate (issue one with keyquorum cluster add-node on the peer)", ErrNodeFile, cert.Subject)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("%w: its node certificate does not chain to its CA: %v", ErrNodeFile, err)
	}
	return u, &NodeIdentity{cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, roots: roots,
		p12: bytes.Clone(req.NodeP12), password: req.NodePassword}, nil
}

// PeerError is a join that failed at the peer or on the way there: nothing changed here.
type PeerError struct {
	Title string // "Cluster peer not usable", "The peer refused the join"
	What  string
	Todo  string
	// ForeignKey is true when the peer refused this node for holding another master backup key.
	ForeignKey bool
}

func (e *PeerError) Error() string { return e.Title + ": " + e.What }

func peerProblem(what, todo string) *PeerError {
	return &PeerError{Title: "Cluster peer not usable", What: what, Todo: todo}
}

// ProblemForeignKey is the code of the problem a node answers a joining node of another master
// backup key with (the JSON API's problem code "foreign_key").
const ProblemForeignKey = "foreign_key"

// peerRefusal is the problem a peer answers a refused state request with (the JSON API's form).
type peerRefusal struct {
	Code  string `json:"code"`
	Title string `json:"title"`
	What  string `json:"what"`
	Todo  string `json:"todo"`
}

// maxRefusal bounds the problem read from a refusing peer.
const maxRefusal = 64 << 10

// peerTimeout bounds connecting to the peer and its first answer; the transfer itself is
// bounded by the context and MaxUpload.
const peerTimeout = 15 * time.Second

// Join takes over the peer's key database on behalf of operator op, with its outcome logged and
// audited. Nothing changes here unless the peer is authenticated by the node file's CA, holds
// this node's MBK, and its whole backup authenticates under that key. A failure is a
// *PeerError, an error of the HSM (e.g. no MBK loaded), an *hsm.ForeignKeyError, or an error
// of the backup format.
func (n *Node) Join(ctx context.Context, op string, peer *url.URL, node *NodeIdentity) (*Applied, error) {
	res, err := n.TakeOver(ctx, peer, node)
	if err != nil {
		n.log().Info("cluster join refused", "operator", op, "peer", peer.Host, "err", err)
		n.Audit.Record(op, AuditClusterJoinRefused, fmt.Sprintf("cluster join of peer %s by %s refused, nothing changed: %v", peer.Host, op, err))
		return nil, err
	}
	n.log().Info("cluster joined", "operator", op, "peer", peer.Host, "key_id", res.BackupKeyID)
	n.Audit.Record(op, AuditClusterJoin, fmt.Sprintf("shared state version %s of peer %s (%s) taken over by %s: object store (%d keys), card sets %t, slot credential key %t, master backup key %s",
		res.Version, peer.Host, res.Source, op, res.Keys, res.Sets, res.SlotKey, res.BackupKeyID)+warned(res.Warnings))
	return res, nil
}

// getPeer sends a GET to the peer with the node certificate; anything but 200 is a *PeerError
// with the peer's words.
func (n *Node) getPeer(ctx context.Context, client *http.Client, peer *url.URL, path string, header map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peer.Scheme+"://"+peer.Host+path, nil)
	if err != nil {
		return nil, peerProblem(err.Error(), "Check the peer's address.")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		var hne x509.HostnameError
		if errors.As(err, &hne) {
			return nil, peerProblem(fmt.Sprintf("the peer's server certificate does not cover the name %s", hne.Host),
				"Give the peer's address by a name or IP address its server certificate covers: the ones its keyquorum serve was started with (--host, --listen), localhost or 127.0.0.1 on the same machine.")
		}
		var cve *tls.CertificateVerificationError
		if errors.As(err, &cve) {
			return nil, peerProblem(fmt.Sprintf("the peer %s is not authenticated: its server certificate is not from the CA in the node file (%v)", peer.Host, cve.Err),
				"Check that the address is the node that issued the node file; do not join a node you cannot authenticate.")
		}
		return nil, peerProblem(fmt.Sprintf("the peer %s could not be reached or refused the node certificate: %v", peer.Host, err),
			"Check the address, that the peer runs, and that the node certificate was not revoked on it.")
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var p peerRefusal
		json.NewDecoder(io.LimitReader(resp.Body, maxRefusal)).Decode(&p)
		return nil, &PeerError{Title: "The peer refused the join",
			What: fmt.Sprintf("%s answered %d %s: %s", peer.Host, resp.StatusCode, p.Title, p.What), Todo: p.Todo,
			ForeignKey: p.Code == ProblemForeignKey}
	}
	return resp, nil
}

// TakeOver is the transfer of a join without its log and audit entries: fetch the peer's
// shared state over mutually authenticated TLS and take it over whatever its version (the
// operator chose this peer), then keep the node file to pull from the peer again.
func (n *Node) TakeOver(ctx context.Context, peer *url.URL, node *NodeIdentity) (*Applied, error) {
	n.smu.Lock()
	defer n.smu.Unlock()
	st, err := n.loadState()
	if err != nil {
		return nil, err
	}
	var nodeFile []byte
	res, m, err := n.pull(ctx, st, peer, node, true)
	if m != nil && (err == nil || errors.Is(err, ErrPartial)) {
		// The state is here (the MBK is the peer's): keep the node file sealed under it.
		sealed, serr := n.sealNodeFile(ctx, peer.String(), node.p12, node.password)
		if serr != nil {
			return nil, fmt.Errorf("the state of %s is taken over, but the node file could not be kept to sync again (join again): %w", m.Node, serr)
		}
		nodeFile = sealed
	}
	if errors.Is(err, ErrPartial) && m != nil {
		// Part of the state is here: keep the peer, so that a sync completes it.
		st.remember(Peer{Name: m.Node, NodeID: m.NodeID, Address: peer.String(), NodeFile: nodeFile,
			KeyID: m.KeyID, LastError: err.Error(), LastTry: time.Now().UTC()})
		st.Name = node.cert.Leaf.Subject.CommonName
		if serr := n.saveState(st); serr != nil {
			err = fmt.Errorf("%w; the peer could not be kept to sync again (join again): %v", err, serr)
		}
	}
	if err != nil {
		return nil, err
	}
	st.remember(Peer{Name: m.Node, NodeID: m.NodeID, Address: peer.String(), NodeFile: nodeFile,
		KeyID: m.KeyID, Version: m.Version, Digest: m.Digest, LastSync: time.Now().UTC()})
	st.Name = node.cert.Leaf.Subject.CommonName
	if err := n.saveState(st); err != nil {
		return nil, err
	}
	return res, nil
}

// warned appends a transfer's warnings to its audit message.
func warned(warnings []string) string {
	if len(warnings) == 0 {
		return ""
	}
	return "; " + strings.Join(warnings, "; ")
}
