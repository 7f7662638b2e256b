package api

import (
	"errors"
	"github.com/keyquorum/keyquorum/hsm"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// The API's side of cluster onboarding (package cluster): issuing a node certificate, this
// node's state for a joining node, and joining a peer.

// issueNode is POST /api/v1/cluster/nodes (an administrator, with an approval for managing
// operators: a node certificate is a credential of this CA).
func (a *Handlers) issueNode(w http.ResponseWriter, r *http.Request) {
	var req cluster.NodeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	nb, err := a.cfg.Cluster.IssueNodeCert(operator.NameOf(r), req.Name)
	switch {
	case errors.Is(err, cluster.ErrNodeName):
		a.badRequest(w, r, err.Error())
		return
	case err != nil:
		a.problem(w, r, web.ForAuth(err, ""))
		return
	}
	web.WriteJSON(w, nb)
	clear(nb.P12)
}

// notNode is the refusal of the cluster endpoints to a certificate that is not a node's.
func notNode() web.Problem {
	return web.Problem{Status: http.StatusForbidden, Code: web.CodeNotNode, Title: "Not a node certificate",
		What: "This node sends its state only to a node certificate issued by its own management CA.",
		Todo: "On this node, issue a node certificate (keyquorum cluster add-node) and join with it from the new node (keyquorum cluster join)."}
}

// clusterChallenge is GET /api/v1/cluster/challenge: a one-time challenge for a node
// certificate of this management CA, to be answered with the joining node's proof of the MBK.
func (a *Handlers) clusterChallenge(w http.ResponseWriter, r *http.Request) {
	ch, err := a.cfg.Cluster.Challenge(r.TLS.VerifiedChains[0][0], time.Now())
	switch {
	case errors.Is(err, cluster.ErrNotNode):
		a.problem(w, r, notNode())
		return
	case err != nil:
		a.problem(w, r, web.Problem{Status: http.StatusServiceUnavailable, Code: web.CodeUnavailable, Title: "Try again shortly", What: err.Error(), Todo: "Wait two minutes, then join again."})
		return
	}
	web.WriteJSON(w, ch)
}

// clusterState is GET /api/v1/cluster/state: this node's key database as a backup under the
// MBK, for a joining node. Only a node certificate of this management CA gets it, and only when
// it answers a challenge of this node with a proof made with the MBK (cluster.ChallengeHeader,
// cluster.ProofHeader). A refusal names no key ID.
func (a *Handlers) clusterState(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	leaf := r.TLS.VerifiedChains[0][0]
	mine, ok := a.checkNode(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(cluster.KeyIDHeader, mine.String())
	cw := &countingWriter{w: w}
	web.ExtendForWork(w, web.SlowWork)
	reg := cluster.ParseRegistration(leaf, r.Header.Get(cluster.AddressHeader), r.Header.Get(cluster.CAHeader))
	if err := a.cfg.Cluster.SendState(r.Context(), cw, op.Name, mine, reg); err != nil {
		if cw.n == 0 {
			// Refused before a byte (objects that cannot leave): the joining node shows why.
			w.Header().Del(cluster.KeyIDHeader)
			a.fail(w, r, err)
			return
		}
		panic(http.ErrAbortHandler)
	}
}

// clusterJoin is POST /api/v1/cluster/join (an administrator with an approval for a cluster
// join): take over the peer's key database.
func (a *Handlers) clusterJoin(w http.ResponseWriter, r *http.Request) {
	op := operator.NameOf(r)
	var req cluster.JoinRequest
	defer func() { clear(req.NodeP12) }() // the node file holds the node certificate's key
	if err := decodeJSON(r.Body, &req); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	peer, node, err := cluster.ParseJoin(req)
	if err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	web.ExtendForWork(w, web.JoinWork)
	res, err := a.cfg.Cluster.Join(r.Context(), op, peer, node)
	if err != nil {
		a.problem(w, r, web.ForJoin(err, ""))
		return
	}
	web.WriteJSON(w, res)
}

// checkNode checks a node's request for the state or the summary: a node certificate of this
// management CA with a proof of the MBK. It returns this node's key ID, or answers the request
// itself (a refusal names no key ID).
func (a *Handlers) checkNode(w http.ResponseWriter, r *http.Request) (hsm.KeyID, bool) {
	op, _ := operator.FromContext(r.Context())
	leaf := r.TLS.VerifiedChains[0][0]
	mine, err := a.cfg.Cluster.CheckJoiner(r.Context(), op.Name, leaf, r.Header.Get(cluster.ChallengeHeader), r.Header.Get(cluster.ProofHeader))
	switch {
	case errors.Is(err, cluster.ErrNotNode):
		a.problem(w, r, notNode())
		return hsm.KeyID{}, false
	case errors.Is(err, cluster.ErrNoProof):
		a.badRequest(w, r, err.Error())
		return hsm.KeyID{}, false
	case errors.Is(err, cluster.ErrKeyNotProven):
		a.problem(w, r, web.Problem{Status: http.StatusUnprocessableEntity, Code: web.CodeForeignKey, Title: "The joining node did not prove this cluster's master backup key",
			What: "Nodes of one cluster share one master backup key; the joining node's proof does not verify under this node's key.",
			Todo: "On the joining node: factory reset, then load the key from the cards of this cluster's set, then join again."})
		return hsm.KeyID{}, false
	case err != nil:
		a.fail(w, r, err)
		return hsm.KeyID{}, false
	}
	return mine, true
}

// clusterSummary is GET /api/v1/cluster/summary: this node's name, key ID, version and
// digest of its shared state, for a node that proved the MBK as for the state.
func (a *Handlers) clusterSummary(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.checkNode(w, r); !ok {
		return
	}
	s, err := a.cfg.Cluster.Summary(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	web.WriteJSON(w, s)
}

// SyncRequest is the body of POST /api/v1/cluster/sync: the peer to pull from (its name, node
// ID or address), empty when this node knows one.
type SyncRequest struct {
	Peer string `json:"peer"`
}

// clusterSync is POST /api/v1/cluster/sync (an administrator with an approval for a cluster
// join: it changes the key database as a join does): pull the peer's state again and take it
// over when it is newer.
func (a *Handlers) clusterSync(w http.ResponseWriter, r *http.Request) {
	var req SyncRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	web.ExtendForWork(w, web.JoinWork)
	res, err := a.cfg.Cluster.Sync(r.Context(), operator.NameOf(r), req.Peer)
	if err != nil {
		a.problem(w, r, web.ForJoin(err, ""))
		return
	}
	web.WriteJSON(w, res)
}

// clusterStatus is GET /api/v1/cluster/status: this node and the nodes it knows.
func (a *Handlers) clusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.cfg.Cluster.Status(r.Context())
	if err != nil {
		a.problem(w, r, web.ForJoin(err, ""))
		return
	}
	web.WriteJSON(w, st)
}

// clusterOffer is POST /api/v1/cluster/offer: a peer's notice that its state changed. It
// needs no client certificate and takes nothing but a version: this node pulls from the peer
// it knows, over mutual TLS, when the version is newer than its own.
func (a *Handlers) clusterOffer(w http.ResponseWriter, r *http.Request) {
	var o cluster.Offer
	if err := decodeJSON(r.Body, &o); err != nil {
		a.badRequest(w, r, err.Error())
		return
	}
	ctx, err := a.cfg.CeremonyContext()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	started, err := a.cfg.Cluster.TakeOffer(ctx, o)
	if err != nil {
		a.problem(w, r, web.Problem{Status: http.StatusForbidden, Code: web.CodeNoPeer, Title: "Offer not taken", What: err.Error(),
			Todo: "Only the node this node joined offers it its changes."})
		return
	}
	web.WriteJSON(w, map[string]bool{"sync_started": started})
}
