package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

// Staying in step: a node pulls its peer's snapshot again ([Node.Sync]); a node whose shared
// state changed offers it to the nodes that pull from it ([Node.Offer]): it tells them its new
// version, and each pulls the snapshot over mutual TLS with its node certificate, exactly as a
// join does. Nothing is merged: a node takes a peer's state only when it is newer than its own
// (a [*StaleStateError] otherwise).

// Audit event keys of staying in step.
const (
	AuditClusterSync        = "cluster.sync"         // this node took a newer state from its peer
	AuditClusterSyncRefused = "cluster.sync.refused" // a sync that changed nothing (older, conflict, failure)
	AuditClusterOffer       = "cluster.offer"        // this node offered its changed state to a node
	AuditClusterOfferFailed = "cluster.offer.failed" // an offer that did not reach its node
)

// SummaryPath answers a node certificate with a proof of the MBK (as [StatePath]) with the
// node's [Summary]: what a status and a sync compare before anything is transferred.
const SummaryPath = "/api/v1/cluster/summary"

// OfferPath takes a peer's notice that its state changed (POST, JSON [Offer]); no client
// certificate is needed, since the notice carries nothing but a version: the node pulls from
// the peer it knows, over mutual TLS, only when the version is newer than its own.
const OfferPath = "/api/v1/cluster/offer"

// Headers a pulling node tells about itself with its state request: the address it is reached
// at and its management CA (base64 DER), so that the node it pulls from can offer its changes.
const (
	AddressHeader = "X-Keyquorum-Node-Address"
	CAHeader      = "X-Keyquorum-Node-CA"
)

// Summary is a node's shared state without the state: its name, key and version.
type Summary struct {
	Node    string    `json:"node"`
	NodeID  string    `json:"node_id"`
	KeyID   string    `json:"key_id"`
	Version Version   `json:"version"`
	Origin  string    `json:"origin,omitempty"`
	Digest  string    `json:"digest"`
	Changed time.Time `json:"changed,omitzero"`
}

// Offer is the body of POST [OfferPath].
type Offer struct {
	NodeID  string  `json:"node_id"`
	Version Version `json:"version"`
}

// ErrNoPeer is a sync on a node that joined no peer (or not the one named).
var ErrNoPeer = errors.New("this node knows no peer to sync from: join one first (keyquorum cluster join)")

// Registration is what a pulling node tells about itself: its node certificate's serial, the
// address it is reached at and its management CA ([AddressHeader], [CAHeader]).
type Registration struct {
	Serial  string
	Address string
	CA      *x509.Certificate
}

// ParseRegistration reads a pulling node's headers; what is missing or malformed is left out
// (the node is then not offered changes).
func ParseRegistration(leaf *x509.Certificate, address, ca string) Registration {
	reg := Registration{Serial: serialHex(leaf)}
	if u, err := parsePeerURL(address); err == nil {
		reg.Address = u.String()
	}
	if der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ca)); err == nil && len(der) < 8<<10 {
		if c, err := x509.ParseCertificate(der); err == nil && c.IsCA {
			reg.CA = c
		}
	}
	if reg.CA == nil {
		reg.Address = ""
	}
	return reg
}

func parsePeerURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return nil, errors.New("the peer must be a node's address like https://node-a.example:8443")
	}
	return &url.URL{Scheme: "https", Host: u.Host}, nil
}

// client is an HTTP client that trusts only the node file's CA and presents its certificate.
func (n *Node) client(node *NodeIdentity) (*http.Client, func()) {
	tr := &http.Transport{
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: node.roots, Certificates: []tls.Certificate{node.cert}},
		DialContext:           (&net.Dialer{Timeout: peerTimeout}).DialContext,
		TLSHandshakeTimeout:   peerTimeout,
		ResponseHeaderTimeout: peerTimeout,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}, tr.CloseIdleConnections
}

// getProven answers a challenge of the peer with this HSM's proof of the MBK and GETs path with
// it (and header).
func (n *Node) getProven(ctx context.Context, client *http.Client, peer *url.URL, node *NodeIdentity, path string, header map[string]string) (*http.Response, error) {
	resp, err := n.getPeer(ctx, client, peer, ChallengePath, nil)
	if err != nil {
		return nil, err
	}
	var ch Challenge
	err = json.NewDecoder(io.LimitReader(resp.Body, maxRefusal)).Decode(&ch)
	resp.Body.Close()
	if err != nil {
		return nil, peerProblem(fmt.Sprintf("the peer %s answered its challenge with something else: %v", peer.Host, err), "Check that the address is a keyquorum node of the same version.")
	}
	proof, err := Prove(ctx, n.HSM, ch, node.cert.Leaf)
	if err != nil {
		return nil, err
	}
	h := map[string]string{ChallengeHeader: ch.Challenge, ProofHeader: proof}
	for k, v := range header {
		h[k] = v
	}
	return n.getPeer(ctx, client, peer, path, h)
}

// registration is what this node tells the node it pulls from.
func (n *Node) registration() map[string]string {
	h := map[string]string{}
	if n.Address != "" && n.CA != nil {
		h[AddressHeader] = n.Address
		h[CAHeader] = base64.StdEncoding.EncodeToString(n.CA.Raw)
	}
	return h
}

// pull fetches the peer's snapshot and applies it (force: whatever its version). n.smu is held.
func (n *Node) pull(ctx context.Context, st *localState, peer *url.URL, node *NodeIdentity, force bool) (*Applied, *Manifest, error) {
	mine, err := n.HSM.BackupKeyID(ctx)
	if err != nil {
		return nil, nil, err // no MBK: load it from the cards first
	}
	client, done := n.client(node)
	defer done()
	resp, err := n.getProven(ctx, client, peer, node, StatePath, n.registration())
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if theirs, ok := parseKeyID(resp.Header.Get(KeyIDHeader)); !ok || theirs != mine {
		return nil, nil, &hsm.ForeignKeyError{Got: theirs, Want: mine}
	}
	res, m, err := n.applySnapshot(ctx, st, http.MaxBytesReader(nil, resp.Body, n.MaxUpload), peer.Host, force)
	if errors.Is(err, ErrTooLarge) {
		return nil, m, peerProblem(fmt.Sprintf("the peer's state is larger than %s", ByteSize(n.MaxUpload)), "Start this node with a larger --max-upload and join again.")
	}
	return res, m, err
}

// remember records the peer this node pulled from (keeping its node file for the next sync).
func (st *localState) remember(p Peer) {
	for i := range st.Peers {
		if st.Peers[i].NodeID == p.NodeID || st.Peers[i].Address == p.Address {
			st.Peers[i] = p
			return
		}
	}
	st.Peers = append(st.Peers, p)
}

// SendState writes this node's snapshot to w for a node that proved the MBK (mine is what
// CheckJoiner returned) and audits it; reg is what the node told about itself (it is offered
// this node's changes from now on). Objects that cannot leave refuse it before anything is
// written (an *hsm.IncompleteBackupError, which the pulling node is shown); an error in the
// middle of the stream can only cut it off: the pulling node detects the truncation.
func (n *Node) SendState(ctx context.Context, w io.Writer, node string, mine hsm.KeyID, reg Registration) error {
	m, err := n.writeSnapshot(ctx, w)
	if err != nil {
		n.log().Error("cluster state transfer failed", "node", node, "err", err)
		return err
	}
	n.log().Info("cluster state sent", "node", node, "key_id", mine.String(), "version", m.Version.String())
	n.Audit.Record(node, AuditClusterStateSent, fmt.Sprintf("shared state (object store, card sets, slot credential key) version %s sent to node %s, encrypted under the master backup key %s", m.Version, node, mine))
	n.smu.Lock()
	defer n.smu.Unlock()
	st, err := n.loadState()
	if err != nil {
		return nil // sent; the follower list is a convenience
	}
	f := Follower{Name: leafName(node), Serial: reg.Serial, Address: reg.Address, KeyID: m.KeyID, Version: m.Version, Digest: m.Digest, Took: time.Now().UTC()}
	if reg.CA != nil {
		f.CA = reg.CA.Raw
	}
	replaced := false
	for i := range st.Followers {
		if st.Followers[i].Serial == f.Serial || (f.Address != "" && st.Followers[i].Address == f.Address) {
			st.Followers[i], replaced = f, true
			break
		}
	}
	if !replaced {
		st.Followers = append(st.Followers, f)
	}
	if err := n.saveState(st); err != nil {
		n.log().Warn("cluster follower not recorded", "node", node, "err", err)
	}
	return nil
}

// leafName is the common name of a subject string "CN=node-b,O=…".
func leafName(subject string) string {
	for _, part := range strings.Split(subject, ",") {
		if v, ok := strings.CutPrefix(part, "CN="); ok {
			return v
		}
	}
	return subject
}

// Summary is this node's shared state as it stands (its version counted up first if it changed).
func (n *Node) Summary(ctx context.Context) (Summary, error) {
	n.smu.Lock()
	defer n.smu.Unlock()
	st, err := n.loadState()
	if err != nil {
		return Summary{}, err
	}
	cur, _, err := n.refresh(ctx, st)
	if err != nil {
		return Summary{}, err
	}
	return Summary{Node: n.name(st), NodeID: n.NodeID(), KeyID: cur.keyID.String(), Version: st.Version, Origin: st.Origin,
		Digest: cur.digest, Changed: st.Changed}, nil
}

// fetchSummary asks a peer for its summary.
func (n *Node) fetchSummary(ctx context.Context, peer *url.URL, node *NodeIdentity) (Summary, error) {
	client, done := n.client(node)
	defer done()
	resp, err := n.getProven(ctx, client, peer, node, SummaryPath, nil)
	if err != nil {
		return Summary{}, err
	}
	defer resp.Body.Close()
	var s Summary
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxRefusal)).Decode(&s); err != nil {
		return Summary{}, peerProblem(fmt.Sprintf("the peer %s answered with something else than its summary: %v", peer.Host, err), "Check that the address is a keyquorum node of the same version.")
	}
	return s, nil
}

// SyncResult answers a sync.
type SyncResult struct {
	Peer    string   `json:"peer"`
	Applied *Applied `json:"applied"`
}

// Sync pulls the state of the peer named name ("" when this node knows one peer) on behalf of
// operator op and takes it over when it is newer than this node's; logged and audited on both
// sides. It returns a *StaleStateError for an older or conflicting state, ErrNoPeer, or the
// errors of a join; then nothing changed.
func (n *Node) Sync(ctx context.Context, op, name string) (*SyncResult, error) {
	n.smu.Lock()
	defer n.smu.Unlock()
	st, err := n.loadState()
	if err != nil {
		return nil, err
	}
	i := -1
	for j, p := range st.Peers {
		if name == "" || p.Name == name || p.NodeID == name || p.Address == name {
			if i >= 0 && name == "" {
				return nil, fmt.Errorf("%w: this node knows %d peers, name one", ErrNoPeer, len(st.Peers))
			}
			i = j
		}
	}
	if i < 0 {
		return nil, ErrNoPeer
	}
	p := &st.Peers[i]
	res, m, err := n.syncPeer(ctx, st, p)
	p.LastTry = time.Now().UTC()
	if m != nil {
		p.Version, p.Digest, p.KeyID = m.Version, m.Digest, m.KeyID
	}
	if err != nil {
		p.LastError = err.Error()
		if serr := n.saveState(st); serr != nil {
			n.log().Error("the outcome of a refused sync is not kept", "peer", p.Name, "err", serr)
		}
		n.log().Info("cluster sync refused", "operator", op, "peer", p.Name, "err", err)
		n.Audit.Record(op, AuditClusterSyncRefused, fmt.Sprintf("sync from %s (%s) by %s refused, nothing changed: %v", p.Name, p.Address, op, err))
		return nil, err
	}
	p.LastError, p.LastSync = "", p.LastTry
	if err := n.saveState(st); err != nil {
		return nil, err
	}
	if res.InStep {
		n.log().Info("cluster in step", "operator", op, "peer", p.Name, "version", res.Version.String())
		if op == SystemOperator {
			// An offer of nothing new (anyone can post one): logged, not audited.
			return &SyncResult{Peer: p.Name, Applied: res}, nil
		}
		n.Audit.Record(op, AuditClusterSync, fmt.Sprintf("sync from %s (%s) by %s: in step at version %s, nothing to take", p.Name, p.Address, op, res.Version))
	} else {
		n.log().Info("cluster synced", "operator", op, "peer", p.Name, "version", res.Version.String())
		n.Audit.Record(op, AuditClusterSync, fmt.Sprintf("shared state version %s of %s (%s) taken over by %s: object store (%d keys), card sets %t, slot credential key %t, master backup key %s",
			res.Version, p.Name, p.Address, op, res.Keys, res.Sets, res.SlotKey, res.BackupKeyID)+warned(res.Warnings))
	}
	return &SyncResult{Peer: p.Name, Applied: res}, nil
}

// syncPeer compares versions first (a summary) and pulls the snapshot only when the peer's is
// newer. n.smu is held.
func (n *Node) syncPeer(ctx context.Context, st *localState, p *Peer) (*Applied, *Manifest, error) {
	u, node, err := n.peerIdentity(ctx, p)
	if err != nil {
		return nil, nil, fmt.Errorf("the node file kept for %s cannot be used (join it again): %w", p.Name, err)
	}
	s, err := n.fetchSummary(ctx, u, node)
	if err != nil {
		return nil, nil, err
	}
	m := &Manifest{KeyID: s.KeyID, Node: s.Node, NodeID: s.NodeID, Version: s.Version, Digest: s.Digest}
	cur, _, err := n.refresh(ctx, st)
	if err != nil {
		return nil, m, err
	}
	mine := cur.keyID.String()
	if s.KeyID != mine {
		theirs, _ := parseKeyID(s.KeyID)
		return nil, m, &hsm.ForeignKeyError{Got: theirs, Want: cur.keyID}
	}
	inStep, err := decide(p.Name, st.Version, s.Version, cur.digest, s.Digest)
	if err != nil {
		return nil, m, err
	}
	if inStep {
		return &Applied{Version: st.Version, Digest: cur.digest, InStep: true, Restored: Restored{BackupKeyID: mine, Keys: -1, Peer: p.Name}}, m, nil
	}
	res, full, err := n.pull(ctx, st, u, node, false)
	if full != nil {
		m = full
	}
	return res, m, err
}

// Offer tells every node that pulls from this one that this node's state changed, so that each
// pulls it; the outcome is recorded per node (shown by [Node.Status]) and audited. It never
// blocks a ceremony: it is called from a goroutine of its own.
func (n *Node) Offer(ctx context.Context) {
	n.smu.Lock()
	st, err := n.loadState()
	if err == nil {
		_, _, err = n.refresh(ctx, st)
	}
	if err != nil {
		n.smu.Unlock()
		n.offerProblem(err)
		return
	}
	n.offerProblem(nil)
	offer := Offer{NodeID: n.NodeID(), Version: cloneVersion(st.Version)}
	followers := append([]Follower(nil), st.Followers...)
	n.smu.Unlock()
	body, _ := json.Marshal(offer)
	outcome := map[string]string{} // by serial: "" offered, else why not
	for _, f := range followers {
		if f.Address == "" || f.CA == nil || offer.Version.Compare(f.Version) != Newer || offer.Version.Compare(f.Offered) != Newer {
			continue // it has this version, or was offered it
		}
		if f.OfferError != "" && time.Since(f.OfferTry) < offerRetry {
			continue
		}
		err := n.sendOffer(ctx, f, body)
		outcome[f.Serial] = ""
		if err != nil {
			outcome[f.Serial] = err.Error()
			n.log().Warn("cluster offer failed", "node", f.Name, "address", f.Address, "err", err)
			n.Audit.Record(SystemOperator, AuditClusterOfferFailed, fmt.Sprintf("offer of version %s to node %s (%s) failed: %v", offer.Version, f.Name, f.Address, err))
			continue
		}
		n.log().Info("cluster state offered", "node", f.Name, "version", offer.Version.String())
		n.Audit.Record(SystemOperator, AuditClusterOffer, fmt.Sprintf("version %s offered to node %s (%s)", offer.Version, f.Name, f.Address))
	}
	if len(outcome) == 0 {
		return
	}
	n.smu.Lock()
	defer n.smu.Unlock()
	if st, err = n.loadState(); err == nil {
		for i := range st.Followers {
			if e, ok := outcome[st.Followers[i].Serial]; ok {
				st.Followers[i].OfferError, st.Followers[i].OfferTry = e, time.Now().UTC()
				if e == "" {
					st.Followers[i].Offered = offer.Version
				}
			}
		}
		err = n.saveState(st)
	}
	if err != nil {
		n.log().Error("cluster offers made, their outcome not kept", "err", err)
	}
}

// offerProblem logs why this node cannot look at its shared state to offer it (its state file,
// its HSM), once per distinct reason rather than every interval, and that it can again.
func (n *Node) offerProblem(err error) {
	n.emu.Lock()
	defer n.emu.Unlock()
	switch {
	case err == nil && n.offerErr != "":
		n.log().Info("cluster offers work again")
		n.offerErr = ""
	case err != nil && err.Error() != n.offerErr:
		n.log().Error("cluster offers stopped: this node cannot read its shared state", "err", err)
		n.offerErr = err.Error()
	}
}

// offerPause is the least time between two syncs started by offers.
const offerPause = time.Second

// offerRetry is how long a failed offer waits before it is tried again.
const offerRetry = time.Minute

// OfferInterval is how often a serving node looks whether its shared state changed (a key made,
// a set re-issued or retired, a restore, a slot card written: whatever changed it) and offers
// it to the nodes that pull from it.
const OfferInterval = 5 * time.Second

// Watch offers this node's changes to its followers until ctx ends: every interval it counts a
// change of its shared state and offers it ([Node.Offer]). A node without followers only reads
// its state file.
func (n *Node) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.smu.Lock()
		st, err := n.loadState()
		n.smu.Unlock()
		if err != nil {
			n.offerProblem(err)
			continue
		}
		if len(st.Followers) == 0 {
			continue
		}
		if _, err := n.HSM.BackupKeyID(ctx); err != nil {
			continue // no key: nothing to share
		}
		n.Offer(ctx)
	}
}

// SystemOperator is the operator name of what a node does by itself (offers, syncs on offer).
const SystemOperator = "keyquorum"

// sendOffer posts the offer to a follower, authenticating it by the CA it registered with.
func (n *Node) sendOffer(ctx context.Context, f Follower, body []byte) error {
	ca, err := x509.ParseCertificate(f.CA)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots},
		DialContext: (&net.Dialer{Timeout: peerTimeout}).DialContext, TLSHandshakeTimeout: peerTimeout, ResponseHeaderTimeout: peerTimeout}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 2*peerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.Address+OfferPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var p peerRefusal
		json.NewDecoder(io.LimitReader(resp.Body, maxRefusal)).Decode(&p)
		return fmt.Errorf("%s answered %d %s: %s", f.Address, resp.StatusCode, p.Title, p.What)
	}
	return nil
}

// ErrOfferUnknown is an offer of a node this node does not pull from.
var ErrOfferUnknown = errors.New("this node does not pull from the node that offered its state")

// TakeOffer decides on a peer's offer: when it comes from a peer this node pulls from and its
// version is newer than this node's, a sync from that peer is started (in the background,
// under ctx) and true returned. An offer of a version this node has is false, nil.
func (n *Node) TakeOffer(ctx context.Context, o Offer) (bool, error) {
	if !validNodeID(o.NodeID) {
		return false, ErrOfferUnknown
	}
	// Read without n.smu, which a running sync holds: the file is replaced whole, never
	// written in place, so a read sees one version of it.
	st, err := n.loadState()
	if err != nil {
		return false, err
	}
	for _, p := range st.Peers {
		if p.NodeID != o.NodeID {
			continue
		}
		if o.Version.Compare(st.Version) != Newer {
			return false, nil // nothing new
		}
		n.omu.Lock()
		defer n.omu.Unlock()
		if n.syncing {
			n.again = true // the running sync on offer goes once more
			return true, nil
		}
		n.syncing = true
		go func() {
			for {
				n.Sync(ctx, SystemOperator, p.NodeID)
				// At most one sync on offer per offerPause: an offer needs no certificate.
				time.Sleep(offerPause)
				n.omu.Lock()
				if !n.again {
					n.syncing = false
					n.omu.Unlock()
					return
				}
				n.again = false
				n.omu.Unlock()
			}
		}()
		return true, nil
	}
	return false, ErrOfferUnknown
}

// statusTimeout bounds asking a peer for its summary while a status is shown (a peer that is
// down must not hold the Cluster page for long).
const statusTimeout = 5 * time.Second

// NodeStatus is one node as the cluster status shows it.
type NodeStatus struct {
	Name    string `json:"name"`
	NodeID  string `json:"node_id,omitempty"`
	Address string `json:"address,omitempty"`
	Role    string `json:"role"` // RoleSelf, RolePeer, RoleFollower
	KeyID   string `json:"key_id,omitempty"`
	// OtherKey is a node that holds another master backup key than this one (its key ID is
	// not told).
	OtherKey bool      `json:"other_key,omitempty"`
	Version  Version   `json:"version,omitempty"`
	Digest   string    `json:"digest,omitempty"`
	LastSync time.Time `json:"last_sync,omitzero"`
	InStep   bool      `json:"in_step"`
	// Problem says what is wrong: unreachable, a failed sync or offer.
	Problem string `json:"problem,omitempty"`
}

// Roles of the nodes a status lists.
const (
	RoleSelf     = "this node"
	RolePeer     = "peer"     // this node pulls from it (it joined it)
	RoleFollower = "follower" // it pulls from this node (it joined this one)
)

// ClusterStatus is the Cluster page's and `keyquorum cluster status`'s answer.
type ClusterStatus struct {
	Nodes []NodeStatus `json:"nodes"`
}

// Status lists this node and every node it knows: its peers asked live (a summary with the
// proof of the MBK; one that cannot be reached or holds another key is listed as such), the
// nodes that pull from it as they last took its state.
func (n *Node) Status(ctx context.Context) (ClusterStatus, error) {
	me, err := n.Summary(ctx)
	if err != nil {
		return ClusterStatus{}, err
	}
	n.smu.Lock()
	st, err := n.loadState()
	n.smu.Unlock()
	if err != nil {
		return ClusterStatus{}, err
	}
	out := ClusterStatus{Nodes: []NodeStatus{{Name: me.Node, NodeID: me.NodeID, Address: n.Address, Role: RoleSelf, KeyID: me.KeyID,
		Version: me.Version, Digest: me.Digest, InStep: true}}}
	for _, p := range st.Peers {
		ns := NodeStatus{Name: p.Name, NodeID: p.NodeID, Address: p.Address, Role: RolePeer, LastSync: p.LastSync}
		u, node, err := n.peerIdentity(ctx, &p)
		if err == nil {
			sctx, cancel := context.WithTimeout(ctx, statusTimeout)
			var s Summary
			s, err = n.fetchSummary(sctx, u, node)
			cancel()
			if err == nil {
				ns.Name, ns.KeyID, ns.Version, ns.Digest = s.Node, s.KeyID, s.Version, s.Digest
				ns.OtherKey = s.KeyID != me.KeyID
				ns.InStep = !ns.OtherKey && s.Version.Compare(me.Version) == Same && s.Digest == me.Digest
			}
		}
		var pe *PeerError
		switch {
		case errors.As(err, &pe) && pe.ForeignKey:
			ns.OtherKey = true
			ns.Problem = "holds another master backup key than this node"
		case errors.Is(err, ErrNodeFileSealed) && me.KeyID != "" && p.KeyID != "" && p.KeyID != me.KeyID:
			// The node file opens only under the MBK of the join: this node changed key since.
			ns.OtherKey = true
			ns.Problem = "this node holds another master backup key than when it joined " + p.Name + ": its node file for it opens only under that key. Join " + p.Name + " again (with a new node file) to take its state"
		case err != nil:
			ns.Problem = err.Error()
		case p.LastError != "":
			ns.Problem = "last sync: " + p.LastError
		}
		out.Nodes = append(out.Nodes, ns)
	}
	for _, f := range st.Followers {
		ns := NodeStatus{Name: f.Name, Address: f.Address, Role: RoleFollower, KeyID: f.KeyID, Version: f.Version, Digest: f.Digest, LastSync: f.Took}
		ns.OtherKey = f.KeyID != me.KeyID
		ns.InStep = !ns.OtherKey && f.Version.Compare(me.Version) == Same && f.Digest == me.Digest
		switch {
		case ns.OtherKey:
			ns.Problem = "took the state of another master backup key"
		case f.OfferError != "":
			ns.Problem = "last offer: " + f.OfferError
		case !ns.InStep && f.Address == "":
			ns.Problem = "it told no address: it gets this node's changes only when it syncs"
		}
		out.Nodes = append(out.Nodes, ns)
	}
	return out, nil
}
