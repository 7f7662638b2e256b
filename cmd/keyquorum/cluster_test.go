package main

import (
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

func keyIDs(st api.StatusJSON) []string {
	var ids []string
	for _, k := range st.Keys {
		ids = append(ids, k.ID+" "+k.Label)
	}
	slices.Sort(ids)
	return ids
}

func mustStatus(t *testing.T, n *node) api.StatusJSON {
	t.Helper()
	st, err := n.status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustCeremony(t *testing.T, ctx context.Context, n *node, cards []string, kind string, args ...string) {
	t.Helper()
	out, code, err := n.ceremony(ctx, cards, kind, args...)
	if err != nil || code != 0 {
		t.Fatalf("%s on %s: exit %d, %v\n%s", kind, n.name, code, err, out)
	}
	if !strings.Contains(out, "ceremony #") || !strings.Contains(out, " done: ") {
		t.Fatalf("%s on %s: the CLI did not report the end:\n%s", kind, n.name, out)
	}
}

// TestClusterJoin: node A generates the master backup key on three cards and makes a backup;
// node B, fresh, loads the key from two of A's cards (the simulator's card files carried over),
// joins A over mutually authenticated TLS with a node certificate A issued, and ends with A's
// key ID and A's keys. A node holding another key is refused by A before anything moves, an
// unauthenticated peer by B, and A sends nothing to a certificate that is not a node's.
func TestClusterJoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root := t.TempDir()
	dirA, dirB, dirC := filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "c")
	if err := createKeys(dirA, "payments", "signing"); err != nil {
		t.Fatal(err)
	}
	a := nodeT(t, "a", dirA)
	cards, err := a.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	// Write three cards, read two of them back.
	mustCeremony(t, ctx, a, []string{cards[0], cards[1], cards[2], cards[0], cards[1]}, "generate", "-k", "2", "-n", "3", "-label", "cluster-1")
	stA := mustStatus(t, a)
	if stA.BackupKeyID == "" || len(stA.Keys) != 2 || stA.KeySet == nil || stA.KeySet.K != 2 || stA.KeySet.N != 3 {
		t.Fatalf("A after generate: %+v", stA)
	}
	backupFile := filepath.Join(root, "a.kqb")
	if out, errOut, code := cli(ctx, a.env(), "backup", "-o", backupFile); code != 0 || !strings.Contains(out, stA.BackupKeyID) {
		t.Fatalf("backup: %d %s %s", code, out, errOut)
	}

	// A's administrator issues B's node certificate.
	nodeFile := filepath.Join(root, "node-b.p12")
	if out, errOut, code := a.cliApproved(ctx, string(operator.ActionOperatorsManage), "cluster", "add-node", "node-b", "-o", nodeFile); code != 0 {
		t.Fatalf("add-node: %d %s %s", code, out, errOut)
	}
	for _, f := range []string{nodeFile, nodeFile + ".password"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}

	// B holds two of A's cards (cards 3 and 1), loads the key from them, then joins A.
	if err := copyCards(dirA, dirB, cards[2], cards[0]); err != nil {
		t.Fatal(err)
	}
	b := nodeT(t, "b", dirB)
	// Before the key is loaded, a join is refused: nothing to check the peer's state against.
	_, errOut, code := b.cliApproved(ctx, string(operator.ActionClusterJoin), "cluster", "join", a.url(""), "--node", nodeFile)
	if code != exitConflict || !strings.Contains(errOut, "No master backup key is loaded") {
		t.Fatalf("join before load: exit %d %s", code, errOut)
	}
	mustCeremony(t, ctx, b, []string{cards[2], cards[0]}, "load")
	stB := mustStatus(t, b)
	if stB.BackupKeyID != stA.BackupKeyID || len(stB.Keys) != 0 {
		t.Fatalf("B after load: key %s (A %s), %d keys", stB.BackupKeyID, stA.BackupKeyID, len(stB.Keys))
	}
	// A join without an approval is refused for who it is.
	_, errOut, code = cli(ctx, b.env(), "cluster", "join", a.url(""), "--node", nodeFile)
	if code != exitDenied || !strings.Contains(errOut, "Approval required: request") {
		t.Fatalf("join without approval: exit %d %s", code, errOut)
	}
	out, errOut, code := b.cliApproved(ctx, string(operator.ActionClusterJoin), "cluster", "join", a.url(""), "--node", nodeFile)
	if code != 0 || !strings.Contains(out, stA.BackupKeyID) {
		t.Fatalf("join: exit %d %s %s", code, out, errOut)
	}
	stB = mustStatus(t, b)
	if stB.BackupKeyID != stA.BackupKeyID || !slices.Equal(keyIDs(stB), keyIDs(stA)) {
		t.Fatalf("B after join: key %s keys %v; A: key %s keys %v", stB.BackupKeyID, keyIDs(stB), stA.BackupKeyID, keyIDs(stA))
	}
	// Both report the same key ID through the CLI too.
	for _, n := range []*node{a, b} {
		if out, _, code := cli(ctx, n.env(), "status"); code != 0 || !strings.Contains(out, "master backup key:  "+stA.BackupKeyID) {
			t.Fatalf("status of %s: %d %s", n.name, code, out)
		}
	}

	// Node C holds another key: A refuses to send it anything, and nothing changes on C.
	c := nodeT(t, "c", dirC)
	cCards, err := c.newCards(2)
	if err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, c, []string{cCards[0], cCards[1], cCards[0], cCards[1]}, "generate", "-k", "2", "-n", "2")
	stC := mustStatus(t, c)
	if stC.BackupKeyID == "" || stC.BackupKeyID == stA.BackupKeyID {
		t.Fatalf("C's key %q", stC.BackupKeyID)
	}
	nodeFileC := filepath.Join(root, "node-c.p12")
	// A script may state the request instead of running it first: an approval of add-node
	// "node-d" stated field by field does not issue "node-c"; one of "node-c" does.
	tok, err := a.approve(string(operator.ActionOperatorsManage), "name=node-d")
	if err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(ctx, append(a.env(), "KEYQUORUM_APPROVAL="+tok), "cluster", "add-node", "node-c", "-o", nodeFileC); code != exitDenied || !strings.Contains(errOut, "another request") {
		t.Fatalf("add-node c with an approval of node-d: %d %s", code, errOut)
	}
	tok, err = a.approve(string(operator.ActionOperatorsManage), "name=node-c")
	if err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(ctx, append(a.env(), "KEYQUORUM_APPROVAL="+tok), "cluster", "add-node", "node-c", "-o", nodeFileC); code != 0 {
		t.Fatalf("add-node c: %d %s", code, errOut)
	}
	_, errOut, code = c.cliApproved(ctx, string(operator.ActionClusterJoin), "cluster", "join", a.url(""), "--node", nodeFileC)
	if code != exitFailed || !strings.Contains(errOut, "did not prove this cluster's master backup key") {
		t.Fatalf("join of C: exit %d %s", code, errOut)
	}
	if st := mustStatus(t, c); st.BackupKeyID != stC.BackupKeyID || len(st.Keys) != 0 {
		t.Fatalf("C changed after a refused join: %+v", st)
	}
	// A's backup is refused by C too, from its header, before anything changes.
	_, errOut, code = c.cliApproved(ctx, string(operator.ActionRestore), "restore", backupFile)
	if code != exitFailed || !strings.Contains(errOut, "Backup of another key") {
		t.Fatalf("restore of A's backup on C: exit %d %s", code, errOut)
	}

	// An unauthenticated peer: B given C's address with A's node file. C's server certificate
	// is not from A's CA, so the TLS handshake fails and B changes nothing.
	_, errOut, code = b.cliApproved(ctx, string(operator.ActionClusterJoin), "cluster", "join", c.url(""), "--node", nodeFile)
	if code != exitFailed || !strings.Contains(errOut, "is not authenticated") {
		t.Fatalf("join of an unauthenticated peer: exit %d %s", code, errOut)
	}
	if st := mustStatus(t, b); st.BackupKeyID != stA.BackupKeyID || !slices.Equal(keyIDs(st), keyIDs(stA)) {
		t.Fatalf("B changed after a refused join: %+v", st)
	}
	// A sends its state to node certificates only: not to its administrator's certificate.
	body, status, err := a.do(http.MethodGet, "/api/v1/cluster/state", "", nil, nil)
	if err != nil || status != http.StatusForbidden || !strings.Contains(string(body), `"code":"not_node"`) {
		t.Fatalf("cluster state to an operator: %d %v %s", status, err, body)
	}
	// The audit logs record the transfer on both sides.
	for n, want := range map[*node]string{a: cluster.AuditClusterStateSent, b: cluster.AuditClusterJoin} {
		out, _, code := cli(ctx, n.env(), "audit", "export")
		if code != 0 || !strings.Contains(out, `"`+want+`"`) {
			t.Fatalf("audit of %s lacks %s: %d", n.name, want, code)
		}
	}
}

// TestDisasterRecovery: an appliance with keys makes a backup, is factory reset (keys and
// master backup key gone), loads the key from two of its cards and restores the backup; a
// fresh appliance does the same with the same cards; a backup of another key is refused
// before anything changes.
func TestDisasterRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root := t.TempDir()
	dirD := filepath.Join(root, "d")
	if err := createKeys(dirD, "tls", "db", "archive"); err != nil {
		t.Fatal(err)
	}
	d := nodeT(t, "d", dirD)
	cards, err := d.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	mustCeremony(t, ctx, d, []string{cards[0], cards[1], cards[2], cards[1], cards[2]}, "generate")
	before := mustStatus(t, d)
	backupFile := filepath.Join(root, "d.kqb")
	if _, errOut, code := cli(ctx, d.env(), "backup", "-o", backupFile); code != 0 {
		t.Fatalf("backup: %d %s", code, errOut)
	}

	// A backup made under another master backup key.
	foreign := filepath.Join(root, "foreign.kqb")
	if err := foreignBackup(filepath.Join(root, "other-hsm"), foreign); err != nil {
		t.Fatal(err)
	}

	// Factory reset: the HSM's keys and its master backup key are gone.
	mustCeremony(t, ctx, d, nil, "factory-reset", "-confirm", web.ResetPhrase)
	if st := mustStatus(t, d); st.BackupKeyID != "" || len(st.Keys) != 0 {
		t.Fatalf("after reset: %+v", st)
	}
	// Without the key nothing can be restored.
	_, errOut, code := d.cliApproved(ctx, string(operator.ActionRestore), "restore", backupFile)
	if code != exitConflict || !strings.Contains(errOut, "No master backup key is loaded") {
		t.Fatalf("restore before load: exit %d %s", code, errOut)
	}
	mustCeremony(t, ctx, d, []string{cards[2], cards[0]}, "load")
	// The foreign backup is refused; the HSM is as it was (key loaded, no keys).
	_, errOut, code = d.cliApproved(ctx, string(operator.ActionRestore), "restore", foreign)
	if code != exitFailed || !strings.Contains(errOut, "Backup of another key") {
		t.Fatalf("foreign restore: exit %d %s", code, errOut)
	}
	if st := mustStatus(t, d); st.BackupKeyID != before.BackupKeyID || len(st.Keys) != 0 {
		t.Fatalf("after the refused restore: %+v", st)
	}
	out, errOut, code := d.cliApproved(ctx, string(operator.ActionRestore), "restore", backupFile)
	if code != 0 || !strings.Contains(out, "3 application keys") {
		t.Fatalf("restore: exit %d %s %s", code, out, errOut)
	}
	if st := mustStatus(t, d); st.BackupKeyID != before.BackupKeyID || !slices.Equal(keyIDs(st), keyIDs(before)) {
		t.Fatalf("after restore: %v, want %v", keyIDs(st), keyIDs(before))
	}

	// A fresh appliance with two of the cards restores the same backup.
	dirF := filepath.Join(root, "f")
	if err := copyCards(dirD, dirF, cards[0], cards[1]); err != nil {
		t.Fatal(err)
	}
	f := nodeT(t, "f", dirF)
	mustCeremony(t, ctx, f, []string{cards[1], cards[0]}, "load")
	if out, errOut, code := f.cliApproved(ctx, string(operator.ActionRestore), "restore", backupFile); code != 0 {
		t.Fatalf("restore on the fresh appliance: exit %d %s %s", code, out, errOut)
	}
	if st := mustStatus(t, f); st.BackupKeyID != before.BackupKeyID || !slices.Equal(keyIDs(st), keyIDs(before)) {
		t.Fatalf("fresh appliance after restore: %v, want %v", keyIDs(st), keyIDs(before))
	}
}

// foreignBackup writes a backup of a soft HSM holding another, random master backup key.
func foreignBackup(dir, path string) error {
	h, err := soft.Open(dir)
	if err != nil {
		return err
	}
	defer h.Close()
	mbk := make([]byte, 32)
	rand.Read(mbk)
	defer clear(mbk)
	ctx := context.Background()
	if err := h.LoadBackupKey(ctx, mbk); err != nil {
		return err
	}
	if _, err := h.CreateKey(ctx, "other"); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return h.Backup(ctx, f)
}
