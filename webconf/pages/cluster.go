package pages

import (
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// The cluster page: the browser's way through cluster onboarding (package cluster), the same steps
// as `keyquorum cluster add-node` and `keyquorum cluster join`.

// clusterView is the cluster page.
type clusterView struct {
	KeyID  string
	Joined *cluster.Applied
	Synced *cluster.SyncResult
	// Status lists this node and the nodes it knows; StatusError says why it could not be
	// made (e.g. no key loaded).
	Status      cluster.ClusterStatus
	StatusError string
	// Peers can be synced from (this node joined one).
	Peers bool
}

// nodeIssuedView is the page after a node certificate was issued.
type nodeIssuedView struct {
	cluster.NodeBundle
	Download string
}

// clusterPageHandlers serve the cluster page.
type clusterPageHandlers struct {
	records web.CeremonyRecords
	node    *cluster.Node
	auth    *operator.Auth
	rd      *Renderer
	log     *slog.Logger
}

func (a *clusterPageHandlers) clusterPageView(w http.ResponseWriter, r *http.Request) {
	a.renderCluster(w, r, clusterView{})
}

func (a *clusterPageHandlers) renderCluster(w http.ResponseWriter, r *http.Request, v clusterView) {
	ov, err := a.records.Overview(r.Context())
	if err != nil {
		a.rd.Problem(w, r, web.For(err, "/"))
		return
	}
	v.KeyID = ov.BackupKeyID
	if v.KeyID != "" {
		v.Status, err = a.node.Status(r.Context())
		if err != nil {
			v.StatusError = err.Error()
		}
		for _, n := range v.Status.Nodes {
			v.Peers = v.Peers || n.Role == cluster.RolePeer
		}
	}
	a.rd.HTML(w, r, http.StatusOK, clusterPage(a.rd.Page(r, "Cluster", "hsm"), v))
}

// clusterPageSync pulls the state of the peer this node joined again (the button of the
// node list), as `keyquorum cluster sync` does.
func (a *clusterPageHandlers) clusterPageSync(w http.ResponseWriter, r *http.Request) {
	web.ExtendForWork(w, web.JoinWork)
	res, err := a.node.Sync(r.Context(), operator.NameOf(r), r.PostFormValue("peer"))
	if err != nil {
		a.rd.Problem(w, r, web.ForJoin(err, "/cluster"))
		return
	}
	a.renderCluster(w, r, clusterView{Synced: res})
}

// clusterPageIssue issues a node certificate; its file waits in memory for one download by
// this administrator (as an operator certificate from the Operators page does).
func (a *clusterPageHandlers) clusterPageIssue(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	nb, err := a.node.IssueNodeCert(op.Name, r.PostFormValue("name"))
	switch {
	case errors.Is(err, cluster.ErrNodeName):
		a.rd.Problem(w, r, web.Problem{Status: http.StatusBadRequest, Code: web.CodeBadRequest, Title: "Node name not accepted", What: err.Error(),
			Todo: "Go back and give the new node a plain name, e.g. node-b.", Back: "/cluster"})
		return
	case err != nil:
		a.rd.Problem(w, r, web.ForAuth(err, "/cluster"))
		return
	}
	dl, err := a.auth.Issued().Put(op.ID, "node-"+nb.Subject, nb.P12, time.Now())
	if err != nil {
		clear(nb.P12)
		a.rd.Problem(w, r, web.ForAuth(err, "/cluster"))
		return
	}
	nb.P12 = nil // kept by the one-time download now
	a.rd.HTML(w, r, http.StatusOK, nodeIssuedPage(a.rd.Page(r, "Node certificate issued", "hsm"), nodeIssuedView{NodeBundle: nb, Download: dl}))
}

// Bounds of the join form's parts.
const (
	maxNodeFile  = 64 << 10
	maxJoinField = 1 << 10
)

// clusterPageJoin is the join form: the peer's address, the node file and its password, as a
// multipart upload (the CSRF and security key tokens and the peer its leading fields, as the
// restore form; the password after the file, read here as bytes).
func (a *clusterPageHandlers) clusterPageJoin(w http.ResponseWriter, r *http.Request) {
	bad := func(what string) {
		a.rd.Problem(w, r, web.Problem{Status: http.StatusBadRequest, Code: web.CodeBadRequest, Title: "Join not started", What: what,
			Todo: "Go back, give the node's address, choose the node file and type its password, then send the form again.", Back: "/cluster"})
	}
	mr, err := web.MultipartReader(r)
	if err != nil {
		bad("The join form must be sent as a file upload (multipart/form-data).")
		return
	}
	var req cluster.JoinRequest
	// A closure: req.NodeP12 is set below, and a deferred clear(req.NodeP12) would clear the
	// nil it held here.
	defer func() { clear(req.NodeP12) }()
	req.Peer = strings.TrimSpace(mr.Fields["peer"]) // a leading field (the CSRF check read it)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, web.ErrFieldOutOfPlace) {
			bad(outOfPlace(err))
			return
		}
		if err != nil {
			bad("The form could not be read: " + err.Error())
			return
		}
		v, err := readPart(part)
		part.Close()
		if err != nil {
			bad(err.Error())
			return
		}
		switch part.FormName() { // the peer is a leading field only: the approval binds it
		case "password":
			req.NodePassword = string(v)
			clear(v)
		case "node":
			clear(req.NodeP12) // a second node part: the first is wiped too
			req.NodeP12 = v
		}
	}
	peer, node, err := cluster.ParseJoin(req)
	if err != nil {
		bad(err.Error())
		return
	}
	web.ExtendForWork(w, web.JoinWork)
	res, err := a.node.Join(r.Context(), operator.NameOf(r), peer, node)
	if err != nil {
		a.rd.Problem(w, r, web.ForJoin(err, "/cluster"))
		return
	}
	a.renderCluster(w, r, clusterView{Joined: res})
}

// readPart reads one part of the join form within its bound.
func readPart(p *multipart.Part) ([]byte, error) {
	limit := int64(maxJoinField)
	if p.FormName() == "node" {
		limit = maxNodeFile
	}
	b, err := io.ReadAll(io.LimitReader(p, limit+1))
	if err != nil {
		return nil, errors.New("the form could not be read: " + err.Error())
	}
	if int64(len(b)) > limit {
		clear(b)
		return nil, errors.New("the " + p.FormName() + " field is too large: a node file is a few KiB")
	}
	return b, nil
}
