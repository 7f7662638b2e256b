package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// restart stops the node's service and starts it again on the same data directory (a new
// port), keeping the administrator's security key: what carrying a virtual card to a running
// appliance needs, since the simulator reads its card files at start.
func (n *node) restart(t *testing.T) {
	t.Helper()
	n.stop()
	m, err := startNode(n.name, n.dir, n.args...)
	if err != nil {
		t.Fatal(err)
	}
	m.key = n.key
	*n = *m
}

// clusterPair is node A with a 2-of-3 set (old) and node B that loaded the key from two of
// its cards (old[2], old[0]) and joined A.
type clusterPair struct {
	a, b       *node
	dirA, dirB string
	old        []string
	keyID      string
}

func newClusterPair(t *testing.T, ctx context.Context, argsA, argsB []string) *clusterPair {
	t.Helper()
	root := t.TempDir()
	p := &clusterPair{dirA: filepath.Join(root, "a"), dirB: filepath.Join(root, "b")}
	if err := createKeys(p.dirA, "payments"); err != nil {
		t.Fatal(err)
	}
	p.a = nodeT(t, "a", p.dirA, argsA...)
	var err error
	if p.old, err = p.a.newCards(3); err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, p.a, []string{p.old[0], p.old[1], p.old[2], p.old[0], p.old[1]}, "generate", "-k", "2", "-n", "3", "-label", "dc-1")
	p.keyID = mustStatus(t, p.a).BackupKeyID
	nodeFile := filepath.Join(root, "node-b.p12")
	if out, errOut, code := p.a.cliApproved(ctx, string(operator.ActionOperatorsManage), "cluster", "add-node", "node-b", "-o", nodeFile); code != 0 {
		t.Fatalf("add-node: %d %s %s", code, out, errOut)
	}
	if err := copyCards(p.dirA, p.dirB, p.old[2], p.old[0]); err != nil {
		t.Fatal(err)
	}
	p.b = nodeT(t, "b", p.dirB, argsB...)
	mustCeremony(t, ctx, p.b, []string{p.old[2], p.old[0]}, "load")
	out, errOut, code := p.b.cliApproved(ctx, string(operator.ActionClusterJoin), "cluster", "join", p.a.url(""), "--node", nodeFile)
	if code != 0 || !strings.Contains(out, p.keyID) || !strings.Contains(out, "card sets: taken over") {
		t.Fatalf("join: exit %d %s %s", code, out, errOut)
	}
	// B keeps the node file to pull again, sealed under the MBK: not the file, not its key.
	kept, err := os.ReadFile(filepath.Join(p.b.webconfDir(), cluster.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	p12, err := os.ReadFile(nodeFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kept, []byte(base64.StdEncoding.EncodeToString(p12)[:64])) || bytes.Contains(kept, []byte("node_p12")) ||
		bytes.Contains(kept, []byte("PRIVATE KEY")) || !bytes.Contains(kept, []byte(`"node_file"`)) {
		t.Fatalf("B keeps the node file in the clear:\n%s", kept)
	}
	return p
}

// sync runs `keyquorum cluster sync` on n with an approval.
func (n *node) sync(t *testing.T, ctx context.Context, extra ...string) (string, string, int) {
	t.Helper()
	return n.cliApproved(ctx, string(operator.ActionClusterJoin), append([]string{"cluster", "sync"}, extra...)...)
}

func mustSync(t *testing.T, ctx context.Context, n *node) string {
	t.Helper()
	out, errOut, code := n.sync(t, ctx)
	if code != 0 || !(strings.Contains(out, "synced from") || strings.Contains(out, "in step with")) {
		t.Fatalf("sync on %s: exit %d %s %s", n.name, code, out, errOut)
	}
	return out
}

func clusterStatus(t *testing.T, ctx context.Context, n *node) cluster.ClusterStatus {
	t.Helper()
	out, errOut, code := cli(ctx, n.env(), "cluster", "status", "--json")
	if code != 0 {
		t.Fatalf("cluster status of %s: exit %d %s", n.name, code, errOut)
	}
	var st cluster.ClusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster status --json: %v\n%s", err, out)
	}
	return st
}

func nodeByRole(st cluster.ClusterStatus, role string) *cluster.NodeStatus {
	for i := range st.Nodes {
		if st.Nodes[i].Role == role {
			return &st.Nodes[i]
		}
	}
	return nil
}

// TestClusterCarriesCardSets: B joined A; A re-issues its set (the old one retired); B syncs
// and then refuses the retired cards for a key load and checks a card of the new set as intact,
// with the authenticators A made when it wrote it.
func TestClusterCarriesCardSets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	p := newClusterPair(t, ctx, []string{"--cluster-offer-interval", "0"}, nil)
	a, b := p.a, p.b
	before := mustStatus(t, b)

	fresh, err := a.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	if out, code, err := a.ceremony(ctx, append([]string{p.old[0], p.old[1]}, fresh...), "reissue", "-k", "2", "-n", "3"); err != nil || code != 0 {
		t.Fatalf("reissue on A: exit %d %v\n%s", code, err, out)
	}
	newSet := mustStatus(t, a).KeySet
	// B still knows the old set as current until it syncs.
	if st := mustStatus(t, b); st.KeySet == nil || st.KeySet.SetID != before.KeySet.SetID {
		t.Fatalf("B before the sync: %+v", st.KeySet)
	}
	// Two cards of the new set are carried to B (the simulator's cards are files).
	if err := copyCards(p.dirA, p.dirB, fresh[0], fresh[1]); err != nil {
		t.Fatal(err)
	}
	b.restart(t)
	out := mustSync(t, ctx, b)
	if !strings.Contains(out, "synced from") || !strings.Contains(out, "card sets: taken over") {
		t.Fatalf("sync after the re-issue:\n%s", out)
	}
	if st := mustStatus(t, b); st.KeySet == nil || st.KeySet.SetID != newSet.SetID || st.KeySet.K != 2 || st.KeySet.N != 3 {
		t.Fatalf("B's key set after the sync: %+v, want set %s", st.KeySet, newSet.SetID)
	}
	// A card of the new set, written on A, is intact on B; a card of the old set is retired.
	stdout, stderr, code, err := b.cardCheck(ctx, fresh[0])
	if err != nil || code != 0 || !strings.Contains(stdout, "verdict: intact") {
		t.Fatalf("check of a new card on B: exit %d %v\n%s%s", code, err, stdout, stderr)
	}
	stdout, stderr, code, err = b.cardCheck(ctx, p.old[0])
	if err != nil || code != 1 || !strings.Contains(stdout, "retired") {
		t.Fatalf("check of a retired card on B: exit %d %v\n%s%s", code, err, stdout, stderr)
	}
	// A key load on B (after a factory reset) refuses the retired card and takes the new ones.
	mustCeremony(t, ctx, b, nil, "factory-reset", "-confirm", web.ResetPhrase)
	out, code, err = b.ceremony(ctx, []string{p.old[2], fresh[0], fresh[1]}, "load")
	if err != nil || code != 0 || !strings.Contains(out, "retired") {
		t.Fatalf("load on B with a retired card first: exit %d %v\n%s", code, err, out)
	}
	st := mustStatus(t, b)
	if st.BackupKeyID != p.keyID || st.KeySet == nil || st.KeySet.SetID != newSet.SetID {
		t.Fatalf("B after the load: key %s set %+v", st.BackupKeyID, st.KeySet)
	}
	for _, c := range st.KeySet.Cards {
		if c.Serial == p.old[2] {
			t.Fatalf("the retired card %s counted for the load: %+v", p.old[2], st.KeySet.Cards)
		}
	}
}

// TestClusterSlotCards: a slot user card written on A (after B joined) activates its slot on B
// once B synced: the slot credential key travelled, wrapped under the MBK.
func TestClusterSlotCards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := newClusterPair(t, ctx, []string{"--cluster-offer-interval", "0"}, nil)
	a, b := p.a, p.b
	blank, err := a.newCards(1)
	if err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, a, []string{blank[0]}, "slot-user-card", "-pkcs11-slot", "7")
	if err := copyCards(p.dirA, p.dirB, blank[0]); err != nil {
		t.Fatal(err)
	}
	b.restart(t)
	// Before the sync, B has no slot credential key of A's: the card is refused (the ceremony
	// then waits for another card, and is cancelled).
	actx, acancel := context.WithTimeout(ctx, 15*time.Second)
	out, code, _ := b.ceremony(actx, []string{blank[0]}, "activate-slot", "-pkcs11-slot", "7")
	acancel()
	if code == 0 || !strings.Contains(b.log.String(), "slot credential is not valid") {
		t.Fatalf("activation on B before the sync: exit %d\n%s", code, out)
	}
	if _, errOut, code := cli(ctx, b.env(), "ceremony", "cancel"); code != 0 {
		t.Fatalf("cancel: %d %s", code, errOut)
	}
	for deadline := time.Now().Add(20 * time.Second); mustStatus(t, b).Running != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled activation did not end")
		}
	}
	out = mustSync(t, ctx, b)
	if !strings.Contains(out, "slot credential key: taken over") {
		t.Fatalf("sync after the slot card:\n%s", out)
	}
	mustCeremony(t, ctx, b, []string{blank[0]}, "activate-slot", "-pkcs11-slot", "7")
	audit, _, code := cli(ctx, b.env(), "audit", "export")
	if code != 0 || !strings.Contains(audit, `"`+cluster.AuditClusterSync+`"`) {
		t.Fatalf("B's audit log lacks the sync: %d", code)
	}
	for _, secret := range []string{"node_password", "node_p12"} {
		if strings.Contains(audit, secret) {
			t.Fatalf("the audit log mentions %s", secret)
		}
	}
}

// TestClusterSync: a key created on A after the join reaches B without anyone syncing (A
// offers its change, B pulls it), and again with `keyquorum cluster sync`; a state older than
// B's (B made a key of its own) is refused and says so, and a conflict too; nothing changes.
func TestClusterSync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := newClusterPair(t, ctx, []string{"--cluster-offer-interval", "500ms"}, nil)
	a, b := p.a, p.b
	createKey := func(n *node, label string) {
		t.Helper()
		if out, errOut, code := n.cliApproved(ctx, string(operator.ActionHSMObjects), "hsm", "create", "AES-256", "--label", label); code != 0 {
			t.Fatalf("hsm create on %s: %d %s %s", n.name, code, out, errOut)
		}
	}
	hasKey := func(n *node, label string) bool {
		for _, k := range mustStatus(t, n).Keys {
			if k.Label == label {
				return true
			}
		}
		return false
	}
	// Offered: A's change reaches B by itself.
	createKey(a, "made-after-join")
	deadline := time.Now().Add(60 * time.Second)
	for !hasKey(b, "made-after-join") {
		if time.Now().After(deadline) {
			t.Fatalf("the key made on A did not reach B in 60 s; B's keys %v", keyIDs(mustStatus(t, b)))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Pulled: `cluster sync` takes A's next key (unless A's offer was quicker: then in step).
	createKey(a, "second")
	mustSync(t, ctx, b)
	if !hasKey(b, "second") {
		t.Fatalf("B after the sync: %v", keyIDs(mustStatus(t, b)))
	}
	if !slices.Equal(keyIDs(mustStatus(t, a)), keyIDs(mustStatus(t, b))) {
		t.Fatalf("A %v, B %v", keyIDs(mustStatus(t, a)), keyIDs(mustStatus(t, b)))
	}

	// B makes a key of its own: A's state is now older than B's, and is refused.
	createKey(b, "only-on-b")
	out, errOut, code := b.sync(t, ctx)
	if code != exitConflict || !strings.Contains(errOut, "older than this node's") || !strings.Contains(errOut, "version") {
		t.Fatalf("sync of an older state: exit %d %s %s", code, out, errOut)
	}
	if !hasKey(b, "only-on-b") {
		t.Fatal("the refused sync removed B's own key")
	}
	// A changes too: each holds a change the other lacks, which is not merged.
	createKey(a, "third")
	out, errOut, code = b.sync(t, ctx)
	if code != exitConflict || !strings.Contains(errOut, "each hold a change the other lacks") {
		t.Fatalf("sync of a conflicting state: exit %d %s %s", code, out, errOut)
	}
	if hasKey(b, "third") || !hasKey(b, "only-on-b") {
		t.Fatalf("B after the refused conflict: %v", keyIDs(mustStatus(t, b)))
	}
	// Both audit logs record the transfers.
	for n, want := range map[*node]string{a: cluster.AuditClusterStateSent, b: cluster.AuditClusterSyncRefused} {
		out, _, code := cli(ctx, n.env(), "audit", "export")
		if code != 0 || !strings.Contains(out, `"`+want+`"`) {
			t.Fatalf("audit of %s lacks %s: %d", n.name, want, code)
		}
	}
}

// TestClusterStatus: both nodes list each other with name, address, key ID, digest, last sync
// and whether they are in step; a change on A shows B out of step until it syncs; a node that
// moved to another key is shown as a node of another key.
func TestClusterStatus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := newClusterPair(t, ctx, []string{"--cluster-offer-interval", "0", "--node-name", "node-a"}, nil)
	a, b := p.a, p.b

	stB := clusterStatus(t, ctx, b)
	self, peer := nodeByRole(stB, cluster.RoleSelf), nodeByRole(stB, cluster.RolePeer)
	if self == nil || peer == nil || self.Name != "node-b" || peer.Name != "node-a" || peer.Address != a.url("") ||
		peer.KeyID != p.keyID || self.KeyID != p.keyID || !peer.InStep || peer.Digest == "" || peer.Digest != self.Digest || peer.LastSync.IsZero() {
		t.Fatalf("B's status after the join: %+v", stB)
	}
	stA := clusterStatus(t, ctx, a)
	follower := nodeByRole(stA, cluster.RoleFollower)
	if follower == nil || follower.Name != "node-b" || follower.Address != b.url("") || !follower.InStep || follower.KeyID != p.keyID {
		t.Fatalf("A's status after the join: %+v", stA)
	}
	// The same in words.
	out, _, code := cli(ctx, b.env(), "cluster", "status")
	if code != 0 || !strings.Contains(out, "node-a") || !strings.Contains(out, "IN STEP") || !strings.Contains(out, p.keyID) {
		t.Fatalf("cluster status: %d\n%s", code, out)
	}

	// A changes: B is out of step (seen live from B, and by A) until it syncs.
	if _, errOut, code := a.cliApproved(ctx, string(operator.ActionHSMObjects), "hsm", "create", "AES-256", "--label", "new"); code != 0 {
		t.Fatalf("hsm create: %s", errOut)
	}
	if peer := nodeByRole(clusterStatus(t, ctx, b), cluster.RolePeer); peer == nil || peer.InStep {
		t.Fatalf("B sees A in step after A changed: %+v", peer)
	}
	if f := nodeByRole(clusterStatus(t, ctx, a), cluster.RoleFollower); f == nil || f.InStep {
		t.Fatalf("A sees B in step after A changed: %+v", f)
	}
	mustSync(t, ctx, b)
	if peer := nodeByRole(clusterStatus(t, ctx, b), cluster.RolePeer); peer == nil || !peer.InStep {
		t.Fatalf("B after the sync: %+v", peer)
	}
	if f := nodeByRole(clusterStatus(t, ctx, a), cluster.RoleFollower); f == nil || !f.InStep {
		t.Fatalf("A after B's sync: %+v", f)
	}
	// The Cluster page lists the nodes.
	body, status, err := b.do("GET", "/cluster", "", nil, nil)
	if err != nil || status != 200 || !strings.Contains(string(body), "node-a") || strings.Count(string(body), `data-testid="cluster-node"`) != 2 ||
		!strings.Contains(string(body), `data-testid="sync-submit"`) {
		t.Fatalf("cluster page: %d %v\n%s", status, err, body)
	}

	// A moves to another key (factory reset, a new set): B lists A as a node of another key,
	// without its key ID (A refuses B's proof).
	mustCeremony(t, ctx, a, nil, "factory-reset", "-confirm", web.ResetPhrase)
	cards, err := a.newCards(2)
	if err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, a, []string{cards[0], cards[1], cards[0], cards[1]}, "generate", "-k", "2", "-n", "2")
	stB = clusterStatus(t, ctx, b)
	peer = nodeByRole(stB, cluster.RolePeer)
	if peer == nil || !peer.OtherKey || peer.InStep || peer.KeyID != "" || !strings.Contains(peer.Problem, "another master backup key") {
		t.Fatalf("B's status with A of another key: %+v", stB)
	}
	body, _, _ = b.do("GET", "/cluster", "", nil, nil)
	if !strings.Contains(string(body), "another key") {
		t.Fatalf("the cluster page does not show the node of another key:\n%s", body)
	}
	// A peer that is down is listed with why, not left out.
	a.stop()
	peer = nodeByRole(clusterStatus(t, ctx, b), cluster.RolePeer)
	if peer == nil || peer.InStep || !strings.Contains(peer.Problem, "could not be reached") {
		t.Fatalf("B's status with its peer down: %+v", peer)
	}
	// B moves to another key: the node file it kept opens only under the key of the join, and
	// the status says to join again.
	mustCeremony(t, ctx, b, nil, "factory-reset", "-confirm", web.ResetPhrase)
	if cards, err = b.newCards(2); err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, b, []string{cards[0], cards[1], cards[0], cards[1]}, "generate", "-k", "2", "-n", "2")
	peer = nodeByRole(clusterStatus(t, ctx, b), cluster.RolePeer)
	if peer == nil || !peer.OtherKey || peer.InStep || !strings.Contains(peer.Problem, "Join node-a again") {
		t.Fatalf("B's status after B changed key: %+v", peer)
	}
}
