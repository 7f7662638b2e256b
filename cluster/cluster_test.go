package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/soft"
)

// testCA is a management CA of a node, standing in for webconf/operator's: it issues node
// certificates (Issuer) and the node's server certificate.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	issued []string // subjects of the certificates issued
	fail   error    // returned by IssueNode when set
}

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) issue(subject pkix.Name, usage x509.ExtKeyUsage, ip net.IP) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func (ca *testCA) IssueNode(subject pkix.Name, by string, now time.Time) (*x509.Certificate, []byte, string, error) {
	if ca.fail != nil {
		return nil, nil, "", ca.fail
	}
	cert, key, err := ca.issue(subject, x509.ExtKeyUsageClientAuth, nil)
	if err != nil {
		return nil, nil, "", err
	}
	p12, err := pkcs12.Modern2023.Encode(key, cert, []*x509.Certificate{ca.cert}, "node password")
	if err != nil {
		return nil, nil, "", err
	}
	ca.issued = append(ca.issued, cert.Subject.String())
	return cert, p12, "node password", nil
}

func (ca *testCA) Fingerprint() string {
	sum := sha256.Sum256(ca.cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// auditLog records audit entries, as the audit log would.
type auditLog struct {
	mu     sync.Mutex
	events []string
	fail   error
}

func (a *auditLog) Record(operator, event, message string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.events = append(a.events, event+": "+message)
	return nil
}

func (a *auditLog) has(event string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.events {
		if strings.HasPrefix(e, event+": ") {
			return true
		}
	}
	return false
}

// newHSM is a soft HSM holding mbk and keys application keys.
func newHSM(t testing.TB, mbk []byte, keys int) *soft.HSM {
	t.Helper()
	h, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.LoadBackupKey(context.Background(), bytes.Clone(mbk)); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if _, err := h.CreateKey(context.Background(), fmt.Sprintf("key-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func newMBK() []byte {
	mbk := make([]byte, hsm.KeySize)
	rand.Read(mbk)
	return mbk
}

// peer serves node n's state the way WebConf's API does, over TLS with client certificates
// of ca, and returns its address.
func peer(t testing.TB, n *Node, ca *testCA) *url.URL {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaf := r.TLS.VerifiedChains[0][0]
		if r.URL.Path == ChallengePath {
			ch, err := n.Challenge(leaf, time.Now())
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			json.NewEncoder(w).Encode(ch)
			return
		}
		if r.URL.Path != StatePath {
			http.NotFound(w, r)
			return
		}
		mine, err := n.CheckJoiner(r.Context(), leaf.Subject.String(), leaf, r.Header.Get(ChallengeHeader), r.Header.Get(ProofHeader))
		switch {
		case errors.Is(err, ErrKeyNotProven):
			w.WriteHeader(http.StatusUnprocessableEntity)
			json.NewEncoder(w).Encode(map[string]string{"code": ProblemForeignKey, "title": "The joining node did not prove this cluster's master backup key", "what": err.Error(), "todo": "load this cluster's key"})
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Header().Set(KeyIDHeader, mine.String())
		if err := n.SendState(r.Context(), w, leaf.Subject.String(), mine, ParseRegistration(leaf, r.Header.Get(AddressHeader), r.Header.Get(CAHeader))); err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	cert, key, err := ca.issue(pkix.Name{CommonName: "node-a"}, x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// nodeFile issues a node certificate on a and returns the joining node's identity from it.
func nodeFile(t testing.TB, a *Node) *NodeIdentity {
	t.Helper()
	nb, err := a.IssueNodeCert("admin of A", "node-b")
	if err != nil {
		t.Fatal(err)
	}
	_, node, err := ParseJoin(JoinRequest{Peer: "https://127.0.0.1:1", NodeP12: nb.P12, NodePassword: nb.Password})
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// TestJoin: a node with the cluster's MBK takes over the peer's key database over mutually
// authenticated TLS; both sides audit it.
func TestJoin(t *testing.T) {
	mbk := newMBK()
	caA := newTestCA(t, "A's management CA")
	auditA, auditB := &auditLog{}, &auditLog{}
	a := &Node{HSM: newHSM(t, mbk, 3), Issuer: caA, CA: caA.cert, Audit: auditA, MaxUpload: 1 << 20}
	b := &Node{HSM: newHSM(t, mbk, 0), Issuer: newTestCA(t, "B's management CA"), Audit: auditB, MaxUpload: 1 << 20}

	res, err := b.Join(context.Background(), "admin of B", peer(t, a, caA), nodeFile(t, a))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := a.HSM.BackupKeyID(context.Background())
	if res.BackupKeyID != want.String() || res.Keys != 3 || res.Peer == "" {
		t.Errorf("join result %+v, want key %s and 3 keys", res, want)
	}
	if !auditA.has(AuditNodeIssued) || !auditA.has(AuditClusterStateSent) || !auditB.has(AuditClusterJoin) {
		t.Errorf("audit: A %q, B %q", auditA.events, auditB.events)
	}
}

// TestJoinRefused: a joining node of another MBK, and a peer the node file's CA does not
// vouch for, change nothing and say why.
func TestJoinRefused(t *testing.T) {
	caA := newTestCA(t, "A's management CA")
	auditA, auditB := &auditLog{}, &auditLog{}
	a := &Node{HSM: newHSM(t, newMBK(), 2), Issuer: caA, CA: caA.cert, Audit: auditA, MaxUpload: 1 << 20}
	b := &Node{HSM: newHSM(t, newMBK(), 0), Audit: auditB, MaxUpload: 1 << 20}
	node := nodeFile(t, a)

	_, err := b.Join(context.Background(), "admin of B", peer(t, a, caA), node)
	var pe *PeerError
	if !errors.As(err, &pe) || !pe.ForeignKey || !strings.Contains(pe.What, "master backup key") {
		t.Errorf("join of a node with another key: %v", err)
	}
	if !auditA.has(AuditClusterStateRefused) || !auditB.has(AuditClusterJoinRefused) {
		t.Errorf("audit: A %q, B %q", auditA.events, auditB.events)
	}

	// A peer whose server certificate another CA issued is not authenticated.
	other := newTestCA(t, "another CA")
	_, err = b.TakeOver(context.Background(), peer(t, a, other), node)
	if !errors.As(err, &pe) || !strings.Contains(pe.What, "not authenticated") {
		t.Errorf("join of a peer of another CA: %v", err)
	}
	if keys, _ := b.HSM.(hsm.KeyStore).Keys(context.Background()); len(keys) != 0 {
		t.Errorf("a refused join left %d keys", len(keys))
	}
}

// TestCheckJoiner: only a node certificate of this CA that answers a current challenge of this
// node, handed to that certificate, with a proof made under this node's MBK gets the state; a
// challenge is used once.
func TestCheckJoiner(t *testing.T) {
	ca := newTestCA(t, "A's management CA")
	mbk := newMBK()
	n := &Node{HSM: newHSM(t, mbk, 0), Issuer: ca, CA: ca.cert, Audit: &auditLog{}}
	mine, _ := n.HSM.BackupKeyID(context.Background())
	ctx := context.Background()
	same := newHSM(t, mbk, 0)

	nodeCert, _, _ := ca.issue(pkix.Name{CommonName: "node-b", Organization: []string{NodeOrganization}}, x509.ExtKeyUsageClientAuth, nil)
	otherNode, _, _ := ca.issue(pkix.Name{CommonName: "node-c", Organization: []string{NodeOrganization}}, x509.ExtKeyUsageClientAuth, nil)
	operatorCert, _, _ := ca.issue(pkix.Name{CommonName: "Alice", Organization: []string{"Keyquorum operators"}}, x509.ExtKeyUsageClientAuth, nil)
	strangerCert, _, _ := newTestCA(t, "other").issue(pkix.Name{CommonName: "node-b", Organization: []string{NodeOrganization}}, x509.ExtKeyUsageClientAuth, nil)
	answer := func(h HSM, leaf *x509.Certificate) (string, string) {
		t.Helper()
		ch, err := n.Challenge(leaf, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		proof, err := Prove(ctx, h, ch, leaf)
		if err != nil {
			t.Fatal(err)
		}
		return ch.Challenge, proof
	}

	if _, err := n.Challenge(operatorCert, time.Now()); !errors.Is(err, ErrNotNode) {
		t.Errorf("a challenge for an operator certificate: %v", err)
	}
	ch, proof := answer(same, nodeCert)
	if _, err := n.CheckJoiner(ctx, "alice", operatorCert, ch, proof); !errors.Is(err, ErrNotNode) {
		t.Errorf("an operator certificate: %v", err)
	}
	if _, err := n.CheckJoiner(ctx, "node-b", strangerCert, ch, proof); !errors.Is(err, ErrNotNode) {
		t.Errorf("a node certificate of another CA: %v", err)
	}
	if _, err := n.CheckJoiner(ctx, "node-b", nodeCert, "", proof); !errors.Is(err, ErrNoProof) {
		t.Errorf("no challenge: %v", err)
	}
	if _, err := n.CheckJoiner(ctx, "node-b", nodeCert, ch, "not hex"); !errors.Is(err, ErrNoProof) {
		t.Errorf("no proof: %v", err)
	}
	if _, err := n.CheckJoiner(ctx, "node-b", nodeCert, ch, proof); !errors.Is(err, ErrNoProof) {
		t.Errorf("a used challenge: %v", err)
	}
	ch, proof = answer(same, nodeCert)
	if _, err := n.CheckJoiner(ctx, "node-c", otherNode, ch, proof); !errors.Is(err, ErrNoProof) {
		t.Errorf("another node certificate's challenge: %v", err)
	}
	ch, proof = answer(same, nodeCert)
	if got, err := n.CheckJoiner(ctx, "node-b", nodeCert, ch, strings.ToUpper(proof)); err != nil || got != mine {
		t.Errorf("the right node: %s, %v", got, err)
	}
}

// TestRestore: a backup of another MBK is refused from its header, one over the bound is
// ErrTooLarge, and neither changes the HSM.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	mbk := newMBK()
	src := newHSM(t, mbk, 2)
	var backup bytes.Buffer
	if err := src.Backup(ctx, &backup); err != nil {
		t.Fatal(err)
	}

	other := newHSM(t, newMBK(), 0)
	watched := &restoreCounter{HSM: other}
	var fe *hsm.ForeignKeyError
	if _, err := Restore(ctx, watched, bytes.NewReader(backup.Bytes())); !errors.As(err, &fe) || watched.restores != 0 {
		t.Errorf("backup of another key: %v, the HSM was asked %d times", err, watched.restores)
	}
	same := newHSM(t, mbk, 0)
	limited := http.MaxBytesReader(nil, readCloser{bytes.NewReader(backup.Bytes())}, int64(backup.Len()-1))
	if _, err := Restore(ctx, same, limited); !errors.Is(err, ErrTooLarge) {
		t.Errorf("backup over the bound: %v", err)
	}
	for _, h := range []*soft.HSM{other, same} {
		if keys, _ := h.Keys(ctx); len(keys) != 0 {
			t.Errorf("a refused restore left %d keys", len(keys))
		}
	}
	hdr, err := Restore(ctx, same, bytes.NewReader(backup.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if res := Result(ctx, same, hdr, ""); res.Keys != 2 || res.BackupKeyID != hdr.KeyID.String() {
		t.Errorf("restore result %+v", res)
	}
}

// restoreCounter counts the restores an HSM was asked for.
type restoreCounter struct {
	HSM
	restores int
}

func (c *restoreCounter) Restore(ctx context.Context, r io.Reader) error {
	c.restores++
	return c.HSM.Restore(ctx, r)
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// TestIssueNodeCert: a node name must be a plain common name; the certificate is issued,
// audited and handed out with the CA's fingerprint; an audit failure hands out nothing.
func TestIssueNodeCert(t *testing.T) {
	ca := newTestCA(t, "A's management CA")
	audit := &auditLog{}
	n := &Node{Issuer: ca, CA: ca.cert, Audit: audit}
	for _, bad := range []string{"", " ", "a,b", "cn=x", strings.Repeat("n", 65), "tab\there"} {
		if _, err := n.IssueNodeCert("admin", bad); !errors.Is(err, ErrNodeName) {
			t.Errorf("node name %q: %v", bad, err)
		}
	}
	nb, err := n.IssueNodeCert("admin", " node-b ")
	if err != nil {
		t.Fatal(err)
	}
	if nb.Subject != "CN=node-b,O="+NodeOrganization || nb.Serial == "" || nb.CAFingerprint != ca.Fingerprint() || len(nb.P12) == 0 || !audit.has(AuditNodeIssued) {
		t.Errorf("bundle %+v, audit %q", nb, audit.events)
	}
	audit.fail = errors.New("disk full")
	if nb, err := n.IssueNodeCert("admin", "node-c"); err == nil || nb.P12 != nil {
		t.Errorf("issued without its audit entry: %v", err)
	}
}

// TestParseJoin: what a join request must be before anything connects.
func TestParseJoin(t *testing.T) {
	ca := newTestCA(t, "A's management CA")
	n := &Node{Issuer: ca, CA: ca.cert, Audit: &auditLog{}}
	nb, err := n.IssueNodeCert("admin", "node-b")
	if err != nil {
		t.Fatal(err)
	}
	opCert, opKey, _ := ca.issue(pkix.Name{CommonName: "Olga"}, x509.ExtKeyUsageClientAuth, nil)
	opP12, _ := pkcs12.Modern2023.Encode(opKey, opCert, []*x509.Certificate{ca.cert}, "pw")
	noCA, _ := pkcs12.Modern2023.Encode(opKey, opCert, nil, "pw")
	for _, c := range []struct {
		name string
		req  JoinRequest
		says string
	}{
		{"http peer", JoinRequest{Peer: "http://x:1", NodeP12: nb.P12, NodePassword: nb.Password}, "the peer must be"},
		{"peer with path", JoinRequest{Peer: "https://x:1/hsm", NodeP12: nb.P12, NodePassword: nb.Password}, "the peer must be"},
		{"peer with user", JoinRequest{Peer: "https://u@x:1", NodeP12: nb.P12, NodePassword: nb.Password}, "the peer must be"},
		{"no node file", JoinRequest{Peer: "https://x:1"}, "no node file"},
		{"wrong password", JoinRequest{Peer: "https://x:1", NodeP12: nb.P12, NodePassword: "nope"}, "password is wrong"},
		{"no CA", JoinRequest{Peer: "https://x:1", NodeP12: noCA, NodePassword: "pw"}, "no CA certificate"},
		{"operator p12", JoinRequest{Peer: "https://x:1", NodeP12: opP12, NodePassword: "pw"}, "not a node certificate"},
	} {
		if _, _, err := ParseJoin(c.req); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %q", c.name, err, c.says)
		}
	}
	peer, node, err := ParseJoin(JoinRequest{Peer: " https://node-a.example:8443/ ", NodeP12: nb.P12, NodePassword: nb.Password})
	if err != nil || peer.Host != "node-a.example:8443" || node.TLSCertificate().Leaf.Subject.CommonName != "node-b" {
		t.Errorf("a good request: %v %v", peer, err)
	}
}

// TestNodeFileSealed: the node file a join keeps opens only under the MBK it was sealed under
// and for the peer it was kept for.
func TestNodeFileSealed(t *testing.T) {
	ctx := context.Background()
	a := &Node{HSM: newHSM(t, newMBK(), 0)}
	sealed, err := a.sealNodeFile(ctx, "https://a.example:8443", []byte("p12 bytes"), "one-time password")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("p12 bytes")) || bytes.Contains(sealed, []byte("one-time password")) {
		t.Fatal("sealed node file holds the file in the clear")
	}
	p12, pw, err := a.openNodeFile(ctx, "https://a.example:8443", sealed)
	if err != nil || string(p12) != "p12 bytes" || pw != "one-time password" {
		t.Fatalf("open: %q %q %v", p12, pw, err)
	}
	if _, _, err := a.openNodeFile(ctx, "https://b.example:8443", sealed); !errors.Is(err, ErrNodeFileSealed) {
		t.Fatalf("opened for another peer: %v", err)
	}
	other := &Node{HSM: newHSM(t, newMBK(), 0)}
	if _, _, err := other.openNodeFile(ctx, "https://a.example:8443", sealed); !errors.Is(err, ErrNodeFileSealed) {
		t.Fatalf("opened under another MBK: %v", err)
	}
	empty, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if _, _, err := (&Node{HSM: empty}).openNodeFile(ctx, "https://a.example:8443", sealed); !errors.Is(err, ErrNodeFileSealed) {
		t.Fatalf("opened without an MBK: %v", err)
	}
}

// TestRefreshBackToPeerState: a node whose state became exactly what its peer holds at the
// same version (it deleted a key the peer deleted: a sync adds and replaces, never removes)
// counts no change of its own — else the peer's next change would be a conflict; any other
// change is counted.
func TestRefreshBackToPeerState(t *testing.T) {
	ctx := context.Background()
	n := &Node{HSM: newHSM(t, newMBK(), 2), Name: "b"}
	cur, err := n.current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	peerVersion := Version{"00112233aabbccdd": 3}
	st := &localState{Version: cloneVersion(peerVersion), Digest: "the digest with the key the peer deleted",
		Peers: []Peer{{Name: "a", NodeID: "00112233aabbccdd", Version: peerVersion, Digest: cur.digest}}}
	if _, moved, err := n.refresh(ctx, st); err != nil || moved || st.Version.Compare(peerVersion) != Same || st.Digest != cur.digest {
		t.Fatalf("back to the peer's state: moved %t, version %s, %v", moved, st.Version, err)
	}
	st.Digest = "another digest"
	st.Peers[0].Digest = "the peer's digest, not this one"
	if _, moved, err := n.refresh(ctx, st); err != nil || !moved || st.Version.Compare(peerVersion) == Same {
		t.Fatalf("a change of its own: moved %t, version %s, %v", moved, st.Version, err)
	}
}

// TestOfferProblemSaid: a node that cannot read its shared state (here a damaged state file)
// says so in its log once, not at every offer interval, and says when offers work again.
func TestOfferProblemSaid(t *testing.T) {
	var logged bytes.Buffer
	dir := t.TempDir()
	n := &Node{HSM: newHSM(t, newMBK(), 1), Dir: dir, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Offer(t.Context())
	n.Offer(t.Context())
	if c := strings.Count(logged.String(), "cluster offers stopped"); c != 1 {
		t.Fatalf("the damaged state file was logged %d times:\n%s", c, logged.String())
	}
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}
	n.Offer(t.Context())
	if !strings.Contains(logged.String(), "cluster offers work again") {
		t.Fatalf("no word that offers work again:\n%s", logged.String())
	}
}
