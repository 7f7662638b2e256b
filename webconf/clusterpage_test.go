package webconf

import (
	"bytes"
	"context"
	"crypto/rand"
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
	// A join without the security key's confirmation is refused.
	req, _ := http.NewRequest("POST", b.url("/cluster/join"), strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n"+adminB.csrf+"\r\n--x--\r\n"))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	if resp, page := adminB.do(req); resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "Security key confirmation required") {
		t.Errorf("join without an assertion: %d %s", resp.StatusCode, excerpt(page))
	}
}
