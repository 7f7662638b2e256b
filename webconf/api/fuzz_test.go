package api

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/sharing"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// FuzzAPIStartRequest feeds the body of POST /api/v1/ceremony/start to the strict JSON decoder
// and the request check: nothing panics, and what is accepted is a request the manager can
// take (a known kind, a possible quorum, a confirmed factory reset).
func FuzzAPIStartRequest(f *testing.F) {
	f.Add([]byte(`{"kind":"generate","k":2,"n":3,"label":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var sr StartRequest
		if err := decodeJSON(bytes.NewReader(body), &sr); err != nil {
			return
		}
		req, err := ceremonyRequest(sr)
		if err != nil {
			return
		}
		if !slices.Contains(ceremony.Kinds, req.Kind) {
			t.Fatalf("accepted kind %q", req.Kind)
		}
		switch req.Kind {
		case ceremony.KindGenerate:
			if sharing.ValidateQuorum(req.K, req.N) != nil || web.ValidLabel(req.Label) != nil {
				t.Fatalf("accepted generate %d of %d label %q", req.K, req.N, req.Label)
			}
		case ceremony.KindFactoryReset:
			if strings.TrimSpace(sr.Confirm) != web.ResetPhrase {
				t.Fatalf("accepted an unconfirmed factory reset: %q", sr.Confirm)
			}
		}
	})
}

// FuzzAPIAnswerRequest feeds the body of POST /api/v1/ceremony/answer to the decoder and its
// check: nothing panics, and what is accepted names a question in the shape the ceremony gives
// them and says OK or Cancel.
func FuzzAPIAnswerRequest(f *testing.F) {
	f.Add([]byte(`{"question":"c3-q1","ok":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseAnswer(bytes.NewReader(body))
		if err != nil {
			return
		}
		if req.OK == nil || !questionID.MatchString(req.Question) || len(req.Question) > 34 {
			t.Fatalf("accepted %+v from %q", req, body)
		}
	})
}

// FuzzJoinRequest feeds the body of POST /api/v1/cluster/join (JSON with a PKCS#12 node file)
// to the decoder and the check of the peer and the node file: nothing panics, and what is
// accepted names an https peer and a node certificate that chains to the file's CA.
func FuzzJoinRequest(f *testing.F) {
	f.Add([]byte(`{"peer":"https://127.0.0.1:8443","node_p12":"AAAA","node_password":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req cluster.JoinRequest
		if err := decodeJSON(bytes.NewReader(body), &req); err != nil {
			return
		}
		peer, node, err := cluster.ParseJoin(req)
		if err != nil {
			return
		}
		if peer.Scheme != "https" || peer.Host == "" {
			t.Fatalf("accepted peer %q", req.Peer)
		}
		if leaf := node.TLSCertificate().Leaf; !slices.Equal(leaf.Subject.Organization, []string{cluster.NodeOrganization}) {
			t.Fatalf("accepted a node file of %s", leaf.Subject)
		}
	})
}
