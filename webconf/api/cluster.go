package api

import (
	"errors"
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
	mine, err := a.cfg.Cluster.CheckJoiner(r.Context(), op.Name, leaf, r.Header.Get(cluster.ChallengeHeader), r.Header.Get(cluster.ProofHeader))
	switch {
	case errors.Is(err, cluster.ErrNotNode):
		a.problem(w, r, notNode())
		return
	case errors.Is(err, cluster.ErrNoProof):
		a.badRequest(w, r, err.Error())
		return
	case errors.Is(err, cluster.ErrKeyNotProven):
		a.problem(w, r, web.Problem{Status: http.StatusUnprocessableEntity, Code: web.CodeForeignKey, Title: "The joining node did not prove this cluster's master backup key",
			What: "Nodes of one cluster share one master backup key; the joining node's proof does not verify under this node's key.",
			Todo: "On the joining node: factory reset, then load the key from the cards of this cluster's set, then join again."})
		return
	case err != nil:
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(cluster.KeyIDHeader, mine.String())
	cw := &countingWriter{w: w}
	web.ExtendForWork(w, web.SlowWork)
	if err := a.cfg.Cluster.SendState(r.Context(), cw, op.Name, mine); err != nil {
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
