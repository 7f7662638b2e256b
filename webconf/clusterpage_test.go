package webconf

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/cluster"
)

// joinForm sends the cluster page's join form as the page does: multipart, the CSRF token and
// the security key's token its leading fields.
func joinForm(t *testing.T, b *browser, peer string, p12 []byte, password string) (int, string) {
	t.Helper()
	tok := b.stepUp("/cluster/join", url.Values{"peer": {peer}})
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField(csrfField, b.csrf) // the tokens lead, in the body
	mw.WriteField(stepUpField, tok)
	mw.WriteField("peer", peer)
	mw.WriteField("password", password)
	fw, _ := mw.CreateFormFile("node", "node.p12")
	fw.Write(p12)
	mw.Close()
	req, _ := http.NewRequest("POST", b.s.url("/cluster/join"), &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, page := b.do(req)
	return resp.StatusCode, page
}

// TestClusterPage: the browser's cluster onboarding. A's administrator issues a node file on
// the cluster page (password shown once, file downloadable once); B, holding the same key,
// joins A with it through the join form and ends with A's keys; a wrong password and a node
// without the key are refused with pages that say so.
func TestClusterPage(t *testing.T) {
	ctx := context.Background()
	a := startService(t, t.TempDir(), serviceOptions{})
	b := startService(t, t.TempDir(), serviceOptions{})
	if _, err := a.hsm.CreateKey(ctx, "payments"); err != nil {
		t.Fatal(err)
	}
	adminA, adminB := a.browser("Alice Admin"), b.browser("Bob Admin")

	// B has no key yet: the page says to load it first.
	if page := adminB.get("/cluster", http.StatusOK); !strings.Contains(page, `data-testid="join-no-key"`) {
		t.Fatalf("cluster page without a key: %s", excerpt(page))
	}
	mbk := make([]byte, 32)
	rand.Read(mbk)
	for _, s := range []*service{a, b} {
		if err := s.hsm.LoadBackupKey(ctx, mbk); err != nil {
			t.Fatal(err)
		}
	}
	clear(mbk)
	if page := adminA.get("/hsm", http.StatusOK); !strings.Contains(page, `href="/cluster"`) {
		t.Error("the HSM page does not lead to the cluster page")
	}

	_, page := adminA.post("/cluster/nodes", url.Values{"name": {"node-b"}}, http.StatusOK)
	password := mustFind(t, `data-testid="node-password">([^<]+)<`, page)
	download := mustFind(t, `href="(/operators/issued/[^"]+)" data-testid="node-download"`, page)
	p12 := []byte(adminA.get(download, http.StatusOK))
	adminA.get(download, http.StatusGone) // once only
	if es := auditEvents(t, a, cluster.AuditNodeIssued); len(es) != 1 {
		t.Errorf("node issuance audit: %+v", es)
	}

	status, page := joinForm(t, adminB, a.url(""), p12, "wrong")
	if status != http.StatusBadRequest || !strings.Contains(page, "password is wrong") {
		t.Fatalf("join with a wrong password: %d %s", status, excerpt(page))
	}
	status, page = joinForm(t, adminB, a.url(""), p12, password)
	if status != http.StatusOK || !strings.Contains(page, `data-testid="joined"`) {
		t.Fatalf("join: %d %s", status, excerpt(page))
	}
	keysA, _ := a.hsm.Keys(ctx)
	keysB, _ := b.hsm.Keys(ctx)
	if len(keysB) != 1 || keysB[0] != keysA[0] {
		t.Fatalf("B's keys %+v, A's %+v", keysB, keysA)
	}
	// Both pages list the two nodes; B syncs with the button: in step, then, after a key made
	// on A, synced.
	if page := adminB.get("/cluster", http.StatusOK); strings.Count(page, `data-testid="cluster-node"`) != 2 || !strings.Contains(page, `data-testid="sync-submit"`) {
		t.Fatalf("B's cluster page after the join: %s", excerpt(page))
	}
	if page := adminA.get("/cluster", http.StatusOK); !strings.Contains(page, "node-b") || strings.Contains(page, `data-testid="sync-submit"`) {
		t.Fatalf("A's cluster page after the join: %s", excerpt(page))
	}
	if _, page := adminB.post("/cluster/sync", url.Values{}, http.StatusOK); !strings.Contains(page, "In step with") {
		t.Fatalf("sync in step: %s", excerpt(page))
	}
	if _, err := a.hsm.CreateKey(ctx, "signing"); err != nil {
		t.Fatal(err)
	}
	if _, page := adminB.post("/cluster/sync", url.Values{}, http.StatusOK); !strings.Contains(page, "Synced from") {
		t.Fatalf("sync after a change on A: %s", excerpt(page))
	}
	if keysB, _ = b.hsm.Keys(ctx); len(keysB) != 2 {
		t.Fatalf("B's keys after the sync: %+v", keysB)
	}
	if es := auditEvents(t, b, cluster.AuditClusterSync); len(es) != 2 {
		t.Errorf("sync audit: %+v", es)
	}
	// An offer needs no certificate but starts nothing for a node B does not pull from, nor
	// for a body over its bound; the other cluster endpoints stay closed without one.
	noCert := b.client(nil)
	resp, err := noCert.Post(b.url(cluster.OfferPath), "application/json", strings.NewReader(`{"node_id":"0011223344556677","version":{"0011223344556677":9}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "does not pull from") {
		t.Errorf("offer of an unknown node: %d %s", resp.StatusCode, body)
	}
	resp, err = noCert.Post(b.url(cluster.OfferPath), "application/json", strings.NewReader(`{"node_id":"`+strings.Repeat("a", 20<<10)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("an offer over its bound: %d", resp.StatusCode)
	}
	for _, path := range []string{"/api/v1/cluster/status", cluster.SummaryPath, "/api/v1/cluster/sync"} {
		resp, err := noCert.Post(b.url(path), "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s without a certificate: %d", path, resp.StatusCode)
		}
	}
	// A join without the security key's confirmation is refused.
	req, _ := http.NewRequest("POST", b.url("/cluster/join"), strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n"+adminB.csrf+"\r\n--x--\r\n"))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	if resp, page := adminB.do(req); resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "Security key confirmation required") {
		t.Errorf("join without an assertion: %d %s", resp.StatusCode, excerpt(page))
	}
}
