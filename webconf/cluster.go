package webconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// Cluster node onboarding.
//
// Every node of a cluster holds the same master backup key (MBK), loaded from the cards of one
// set. A new node B takes over the state of a node A in three steps:
//
//  1. An administrator of A issues a node certificate for B (POST /api/v1/cluster/nodes,
//     `keyquorum cluster add-node`): a client certificate of A's management CA with the
//     organisation NodeOrganization, in a PKCS#12 file with A's CA certificate, under a
//     one-time password. It is recorded in A's operator list like any certificate A issues,
//     so it can be revoked on A's Operators page. The file and its password travel to B's
//     administrator (e.g. on a USB stick, the password apart).
//  2. B loads the MBK from k cards of the set (a key load ceremony).
//  3. An administrator of B joins (POST /api/v1/cluster/join, `keyquorum cluster join`) with
//     A's address and the node file: B connects to A over mutually authenticated TLS, trusting
//     only the CA in the node file and presenting the node certificate; A sends its key
//     database as a backup (the hsm/backup format: encrypted under the MBK) only to a node
//     certificate of its own CA whose node names the same MBK key ID; B checks the backup's
//     key ID against its own before restoring. Both then report the same key ID and keys.
//
// A peer whose server certificate is not from the node file's CA fails the TLS handshake; a
// client without a node certificate of A's CA gets nothing from A; a node that holds another
// MBK is refused by A, and a backup of another MBK by B, before anything changes. The node
// file's key is used in memory for the join and never written to B's disk.

// NodeOrganization is the subject organisation of a node certificate: what A's cluster state
// endpoint requires (besides A's management CA as the issuer).
const NodeOrganization = "Keyquorum cluster nodes"

// Audit event keys of cluster onboarding.
const (
	AuditNodeIssued          = "cluster.node.issued"   // a node certificate issued
	AuditClusterStateSent    = "cluster.state.sent"    // this node sent its state to a joining node
	AuditClusterStateRefused = "cluster.state.refused" // a joining node refused (another key)
	AuditClusterJoin         = "cluster.join"          // this node took over a peer's state
	AuditClusterJoinRefused  = "cluster.join.refused"  // a join that changed nothing
)

// NodeRequest is the body of POST /api/v1/cluster/nodes.
type NodeRequest struct {
	Name string `json:"name"`
}

// NodeBundleJSON answers POST /api/v1/cluster/nodes: the node's PKCS#12 file (key, node
// certificate, this node's CA certificate) and its one-time password. Neither is kept here.
type NodeBundleJSON struct {
	Subject       string    `json:"subject"`
	Serial        string    `json:"serial"`
	NotAfter      time.Time `json:"not_after"`
	P12           []byte    `json:"p12"`
	Password      string    `json:"password"`
	CAFingerprint string    `json:"ca_fingerprint"`
}

func validNodeName(n string) bool {
	return n != "" && operator.Printable(n, 64) && !strings.ContainsAny(n, `,+"\<>;=`)
}

// errNodeName is a node name that cannot be a certificate's common name.
var errNodeName = errors.New(`the node name must be 1 to 64 printable characters without , + " \ < > ; =`)

// issueNodeCert issues, records and audits a node certificate for name; the caller clears the
// bundle's P12 once it is handed out.
func (a *apiHandlers) issueNodeCert(op, name string) (NodeBundleJSON, error) {
	name = strings.TrimSpace(name)
	if !validNodeName(name) {
		return NodeBundleJSON{}, errNodeName
	}
	now := time.Now()
	cert, p12, password, err := operator.IssuePKCS12(a.s.auth.PKI(), pkix.Name{CommonName: name, Organization: []string{NodeOrganization}}, "", now)
	if err != nil {
		return NodeBundleJSON{}, err
	}
	id := operator.IdentityOf(cert, a.s.auth.PKI().CA)
	rec := operator.IssuedCert{Serial: id.Serial, Subject: id.Subject, Issued: now.UTC(), NotAfter: cert.NotAfter.UTC(), By: op}
	if err := a.s.auth.Operators().RecordIssued(rec, id, operator.RoleNone, op, now); err != nil {
		clear(p12)
		return NodeBundleJSON{}, err
	}
	if err := a.s.auth.Record(op, AuditNodeIssued, fmt.Sprintf("node certificate %s (serial %s) issued by %s for a node to join this cluster", id.Subject, id.Serial, op)); err != nil {
		clear(p12)
		return NodeBundleJSON{}, err
	}
	a.log.Info("node certificate issued", "node", id.Subject, "serial", id.Serial, "by", op)
	return NodeBundleJSON{Subject: id.Subject, Serial: id.Serial, NotAfter: cert.NotAfter.UTC(), P12: p12,
		Password: password, CAFingerprint: a.s.auth.PKI().Fingerprint()}, nil
}

// issueNode is POST /api/v1/cluster/nodes (an administrator, with an approval for managing
// operators: a node certificate is a credential of this CA).
func (a *apiHandlers) issueNode(w http.ResponseWriter, r *http.Request) {
	var req NodeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	nb, err := a.issueNodeCert(operator.NameOf(r), req.Name)
	switch {
	case errors.Is(err, errNodeName):
		a.badRequest(w, r, err.Error())
		return
	case err != nil:
		a.rd.problem(w, r, problemForAuth(err, ""))
		return
	}
	writeJSON(w, nb)
	clear(nb.P12)
}

// isNodeCert reports whether a verified client certificate is a node certificate of this
// appliance's management CA.
func isNodeCert(leaf *x509.Certificate, ca *x509.Certificate) bool {
	return operator.IdentityOf(leaf, ca).Management && slices.Equal(leaf.Subject.Organization, []string{NodeOrganization})
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

// clusterState is GET /api/v1/cluster/state: this node's key database as a backup under the
// MBK, for a joining node. Only a node certificate of this management CA gets it, and only
// when the node names (KeyIDHeader) the MBK this node holds.
func (a *apiHandlers) clusterState(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	leaf := r.TLS.VerifiedChains[0][0]
	if !isNodeCert(leaf, a.s.auth.PKI().CA) {
		a.log.Warn("cluster state refused to a certificate that is not a node certificate", "operator", op.Name)
		a.rd.problem(w, r, problem{Status: http.StatusForbidden, Code: CodeNotNode, Title: "Not a node certificate",
			What: "This node sends its state only to a node certificate issued by its own management CA.",
			Todo: "On this node, issue a node certificate (keyquorum cluster add-node) and join with it from the new node (keyquorum cluster join)."})
		return
	}
	mine, err := a.cfg.HSM.BackupKeyID(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	theirs, ok := parseKeyID(r.Header.Get(KeyIDHeader))
	if !ok {
		a.badRequest(w, r, "the joining node must name its master backup key ID in "+KeyIDHeader)
		return
	}
	if theirs != mine {
		a.record(op.Name, AuditClusterStateRefused, fmt.Sprintf("state refused to node %s: it holds master backup key %s, this node %s", op.Name, theirs, mine))
		a.rd.problem(w, r, problem{Status: http.StatusUnprocessableEntity, Code: CodeForeignKey, Title: "The joining node holds another master backup key",
			What: fmt.Sprintf("This node holds the master backup key %s; the joining node holds %s. Nodes of one cluster share one key.", mine, theirs),
			Todo: "On the joining node: factory reset, then load the key from the cards of this cluster's set, then join again."})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(KeyIDHeader, mine.String())
	if err := a.cfg.HSM.Backup(r.Context(), w); err != nil {
		a.log.Error("cluster state transfer failed", "node", op.Name, "err", err)
		panic(http.ErrAbortHandler)
	}
	a.log.Info("cluster state sent", "node", op.Name, "key_id", mine.String())
	a.record(op.Name, AuditClusterStateSent, fmt.Sprintf("key database sent to node %s, encrypted under the master backup key %s", op.Name, mine))
}

// JoinRequest is the body of POST /api/v1/cluster/join.
type JoinRequest struct {
	// Peer is the address of a node of the cluster: https://host:port.
	Peer string `json:"peer"`
	// NodeP12 and NodePassword are the node file issued by the peer, and its password.
	NodeP12      []byte `json:"node_p12"`
	NodePassword string `json:"node_password"`
}

// nodeIdentity is what a join needs from a node file.
type nodeIdentity struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

var errNodeFile = errors.New("read node file")

// parseJoin checks a join request: the peer's address and the node file. The node file is a
// PKCS#12 file with a node certificate, its key and the CA that issued it.
func parseJoin(req JoinRequest) (*url.URL, *nodeIdentity, error) {
	u, err := url.Parse(strings.TrimSpace(req.Peer))
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, nil, errors.New("the peer must be a node's address like https://node-a.example:8443")
	}
	if len(req.NodeP12) == 0 {
		return nil, nil, fmt.Errorf("%w: no node file (node_p12)", errNodeFile)
	}
	key, cert, cas, err := pkcs12.DecodeChain(req.NodeP12, req.NodePassword)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: it is not a PKCS#12 file, or the password is wrong", errNodeFile)
	}
	if len(cas) == 0 {
		return nil, nil, fmt.Errorf("%w: it holds no CA certificate of the peer", errNodeFile)
	}
	if !slices.Equal(cert.Subject.Organization, []string{NodeOrganization}) {
		return nil, nil, fmt.Errorf("%w: it holds %s, which is not a node certificate (issue one with keyquorum cluster add-node on the peer)", errNodeFile, cert.Subject)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("%w: its node certificate does not chain to its CA: %v", errNodeFile, err)
	}
	return u, &nodeIdentity{cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, roots: roots}, nil
}

// joinError is a join that failed at the peer or on the way: problem says what to show.
type joinError struct{ p problem }

func (e *joinError) Error() string { return e.p.Title + ": " + e.p.What }

func peerProblem(what, todo string) *joinError {
	return &joinError{problem{Status: http.StatusBadGateway, Code: CodePeer, Title: "Cluster peer not usable", What: what, Todo: todo}}
}

// clusterJoin is POST /api/v1/cluster/join (an administrator with an approval for a cluster
// join): take over the peer's key database. Nothing changes here unless the peer is
// authenticated by the node file's CA, holds this node's MBK, and its whole backup
// authenticates under that key.
func (a *apiHandlers) clusterJoin(w http.ResponseWriter, r *http.Request) {
	op := operator.NameOf(r)
	var req JoinRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	peer, node, err := parseJoin(req)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	res, err := a.joinAudited(r.Context(), op, peer, node)
	if err != nil {
		a.rd.problem(w, r, joinProblem(err, ""))
		return
	}
	writeJSON(w, res)
}

// joinAudited is a join with its outcome logged and audited, for the API and the page.
func (a *apiHandlers) joinAudited(ctx context.Context, op string, peer *url.URL, node *nodeIdentity) (*RestoredJSON, error) {
	res, err := a.join(ctx, peer, node)
	if err != nil {
		a.log.Info("cluster join refused", "operator", op, "peer", peer.Host, "err", err)
		a.record(op, AuditClusterJoinRefused, fmt.Sprintf("cluster join of peer %s by %s refused, nothing changed: %v", peer.Host, op, err))
		return nil, err
	}
	a.log.Info("cluster joined", "operator", op, "peer", peer.Host, "key_id", res.BackupKeyID)
	a.record(op, AuditClusterJoin, fmt.Sprintf("key database of peer %s (%s) taken over by %s, master backup key %s", peer.Host, res.Source, op, res.BackupKeyID))
	return res, nil
}

// joinProblem explains a failed join.
func joinProblem(err error, back string) problem {
	var je *joinError
	if errors.As(err, &je) {
		p := je.p
		p.Back = back
		return p
	}
	return problemFor(err, back)
}

// peerTimeout bounds connecting to the peer and its first answer; the transfer itself is
// bounded by the request's context and MaxUpload.
const peerTimeout = 15 * time.Second

func (a *apiHandlers) join(ctx context.Context, peer *url.URL, node *nodeIdentity) (*RestoredJSON, error) {
	mine, err := a.cfg.HSM.BackupKeyID(ctx)
	if err != nil {
		return nil, err // no MBK: load it from the cards first
	}
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: node.roots, Certificates: []tls.Certificate{node.cert}},
		DialContext:           (&net.Dialer{Timeout: peerTimeout}).DialContext,
		TLSHandshakeTimeout:   peerTimeout,
		ResponseHeaderTimeout: peerTimeout,
		ForceAttemptHTTP2:     true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peer.Scheme+"://"+peer.Host+APIPrefix+"v1/cluster/state", nil)
	if err != nil {
		return nil, peerProblem(err.Error(), "Check the peer's address.")
	}
	req.Header.Set(KeyIDHeader, mine.String())
	resp, err := (&http.Client{Transport: tr}).Do(req)
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
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var p APIProblem
		json.NewDecoder(io.LimitReader(resp.Body, maxForm)).Decode(&p)
		out := problem{Status: http.StatusBadGateway, Code: CodePeer, Title: "The peer refused the join",
			What: fmt.Sprintf("%s answered %d %s: %s", peer.Host, resp.StatusCode, p.Title, p.What), Todo: p.Todo}
		if p.Code == CodeForeignKey {
			out.Status, out.Code = http.StatusUnprocessableEntity, CodeForeignKey
		}
		return nil, &joinError{out}
	}
	if theirs, ok := parseKeyID(resp.Header.Get(KeyIDHeader)); !ok || theirs != mine {
		return nil, &hsm.ForeignKeyError{Got: theirs, Want: mine}
	}
	body := &limitFlag{r: http.MaxBytesReader(nil, resp.Body, a.cfg.MaxUpload)}
	hdr, err := a.restoreFrom(ctx, body)
	if body.hit {
		return nil, peerProblem(fmt.Sprintf("the peer's state is larger than %s", byteSize(a.cfg.MaxUpload)), "Start this node with a larger --max-upload and join again.")
	}
	if err != nil {
		return nil, err
	}
	res := a.restored(ctx, hdr, peer.Host)
	return &res, nil
}
