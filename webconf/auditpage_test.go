package webconf

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm"
)

// TestAuditPagePaging: the audit log page shows the newest entries, pages back through older
// ones without gaps, filters by event, operator, ceremony and time, refuses a filter it cannot
// read with a page that says which, and verifies the chain incrementally unless asked for all.
func TestAuditPagePaging(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Ivan")
	for i := range 450 {
		op := "CN=Ann"
		if i%3 == 0 {
			op = "CN=Bob"
		}
		if err := s.mgr.RecordAudit(op, "operator.role", fmt.Sprintf("change %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	seqs := regexp.MustCompile(`<tr><td>(\d+)</td>`)
	page := func(query string) (string, []string) {
		t.Helper()
		body := b.get("/audit"+query, http.StatusOK)
		var out []string
		for _, m := range seqs.FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		return body, out
	}
	body, first := page("")
	if len(first) != 200 || !strings.Contains(body, `data-testid="audit-older"`) || strings.Contains(body, `data-testid="audit-newest"`) {
		t.Fatalf("first page: %d entries\n%s", len(first), excerpt(body))
	}
	if !strings.Contains(body, `data-testid="audit-verify-full"`) {
		t.Error("no way to verify every entry")
	}
	// Follow "Older entries" to the end: every entry once, newest first.
	seen := map[string]bool{}
	total := 0
	for next := ""; ; {
		body, got := page(next)
		for _, q := range got {
			if seen[q] {
				t.Fatalf("entry %s on two pages", q)
			}
			seen[q] = true
		}
		total += len(got)
		m := regexp.MustCompile(`href="(/audit\?[^"]*)" data-testid="audit-older"`).FindStringSubmatch(body)
		if m == nil {
			break
		}
		next = strings.TrimPrefix(strings.ReplaceAll(m[1], "&amp;", "&"), "/audit")
	}
	all, _ := s.mgr.AuditPage(ceremonyQueryAll())
	if total != int(all.Total) {
		t.Errorf("paged through %d entries of %d", total, all.Total)
	}

	// Filters.
	body, bob := page("?operator=" + url.QueryEscape("CN=Bob"))
	if len(bob) != 150 || strings.Contains(body, "CN=Ann") || !strings.Contains(body, `value="CN=Bob"`) {
		t.Errorf("operator filter: %d entries", len(bob))
	}
	_, none := page("?event=ceremony.done")
	if len(none) != 0 {
		t.Errorf("event filter: %d entries", len(none))
	}
	_, today := page("?since=2000-01-01&until=2999-12-31")
	if len(today) != 200 {
		t.Errorf("time range: %d entries", len(today))
	}
	for q, says := range map[string]string{
		"?since=yesterday":                   "is not a date",
		"?ceremony=abc":                      "is not a ceremony number",
		"?before=x":                          "is not an entry number",
		"?since=2026-02-01&until=2026-01-01": "ends before it begins",
	} {
		req, _ := http.NewRequest("GET", s.url("/audit"+q), nil)
		resp, body := b.do(req)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, says) || !strings.Contains(body, "What to do") {
			t.Errorf("%s: %d, want 400 saying %q", q, resp.StatusCode, says)
		}
	}
	// Verification: incremental by default, the whole chain on request.
	body, _ = page("")
	if !strings.Contains(body, "Checked now: the entries after #") {
		t.Errorf("a second view did not verify incrementally:\n%s", excerpt(body))
	}
	body, _ = page("?verify=full")
	if strings.Contains(body, "Checked now") || !strings.Contains(body, `data-testid="audit-ok"`) {
		t.Errorf("full verification:\n%s", excerpt(body))
	}
}

func ceremonyQueryAll() ceremony.AuditQuery { return ceremony.AuditQuery{Limit: 1} }

// TestAuditPageAuthenticated: with a master backup key in the HSM, the audit page's full
// verification says up to which entry the log is authenticated and how each run of entries is
// (the first ones, appended before the key, carry no MAC); without a key, it says it checked no
// MAC. (The checkpoint API is exercised by cmd/keyquorum's script audit_auth.)
func TestAuditPageAuthenticated(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Ivan")
	s.mgr.RecordAudit("CN=Ann", "operator.role", "before the key")
	mbk := make([]byte, hsm.KeySize)
	rand.Read(mbk)
	if err := s.hsm.LoadBackupKey(context.Background(), mbk); err != nil {
		t.Fatal(err)
	}
	s.mgr.RecordAudit("CN=Ann", "operator.role", "under the key")
	body := b.get("/audit?verify=full", http.StatusOK)
	if !strings.Contains(body, `data-testid="audit-authenticated"`) || !strings.Contains(body, "MACs checked under key") || !strings.Contains(body, "appended without a key") {
		t.Fatalf("full verification:\n%s", excerpt(body))
	}
	s.hsm.Reset(context.Background())
	body = b.get("/audit?verify=full", http.StatusOK)
	if !strings.Contains(body, `data-testid="audit-not-authenticated"`) || !strings.Contains(body, "holds no master backup key") {
		t.Fatalf("without a key:\n%s", excerpt(body))
	}
}

// TestAuditPageCheckpoint: the Audit log page downloads an auditor's checkpoint — the file
// `keyquorum audit verify --checkpoint FILE` reads — which the log extends, and a log rewritten
// before it does not.
func TestAuditPageCheckpoint(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	b := s.browser("Ivan")
	mbk := make([]byte, hsm.KeySize)
	rand.Read(mbk)
	if err := s.hsm.LoadBackupKey(context.Background(), mbk); err != nil {
		t.Fatal(err)
	}
	s.mgr.RecordAudit("CN=Ann", "operator.role", "under the key")
	if page := b.get("/audit", http.StatusOK); !strings.Contains(page, `href="/audit/checkpoint"`) {
		t.Fatalf("the audit page offers no checkpoint:\n%s", excerpt(page))
	}
	req, _ := http.NewRequest(http.MethodGet, s.url("/audit/checkpoint"), nil)
	resp, body := b.do(req)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment;") {
		t.Fatalf("checkpoint: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Disposition"), excerpt(body))
	}
	cp, err := ceremony.DecodeCheckpoint([]byte(body))
	if err != nil {
		t.Fatalf("the downloaded checkpoint does not decode: %v\n%s", err, body)
	}
	if cp.MAC == "" || cp.KeyID == "" {
		t.Fatalf("a checkpoint taken under a key carries no MAC: %+v", cp)
	}
	s.mgr.RecordAudit("CN=Ann", "operator.role", "after the checkpoint")
	if _, err := s.mgr.VerifyAuditCheckpoint(cp); err != nil {
		t.Fatalf("the log does not extend its own checkpoint: %v", err)
	}
	forged := cp
	forged.Hash = strings.Repeat("0", len(cp.Hash))
	forged.MAC, forged.KeyID = "", ""
	if _, err := s.mgr.VerifyAuditCheckpoint(forged); err == nil {
		t.Fatal("a checkpoint of another history verifies")
	}
}
