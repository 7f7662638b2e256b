package webconf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
	"github.com/keyquorum/keyquorum/hsm/soft"
	"github.com/keyquorum/keyquorum/webconf/api"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// apiClient calls the JSON API as the command line does: a certificate, JSON or a backup as
// the body, no CSRF token, no cookies.
type apiClient struct {
	t *testing.T
	s *service
	c *http.Client
}

func (s *service) api(t *testing.T, cert tls.Certificate) *apiClient {
	return &apiClient{t: t, s: s, c: s.client(&cert)}
}

func (a *apiClient) call(method, path, ctype string, body io.Reader, header map[string]string) (int, []byte, http.Header) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.s.url(path), body)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func (a *apiClient) json(method, path string, body any, header map[string]string) (int, []byte) {
	a.t.Helper()
	var rd io.Reader
	ctype := ""
	if body != nil {
		j, _ := json.Marshal(body)
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	code, b, _ := a.call(method, path, ctype, rd, header)
	return code, b
}

// problemCode is the code of an API problem body.
func problemCode(t *testing.T, body []byte) string {
	t.Helper()
	var p web.APIProblem
	if err := json.Unmarshal(body, &p); err != nil || p.Title == "" || p.What == "" {
		t.Fatalf("not an API problem: %v %s", err, body)
	}
	return p.Code
}

// approval makes a command-line approval of action a with the request's details stated as
// fields (the JSON body's fields by name, query parameters as "?name"), as a script may.
func approval(t *testing.T, b *browser, a operator.Action, details url.Values) map[string]string {
	t.Helper()
	tok, refusal := b.tryStepUp("", details, a)
	if refusal != "" {
		t.Fatal(refusal)
	}
	return map[string]string{operator.ApprovalHeader: tok}
}

// uploadApproval is the headers of an API upload of body that needs an approval for a: the
// body's SHA-256 (as the command line sends it) and an approval stated for it and query.
func uploadApproval(t *testing.T, b *browser, a operator.Action, body []byte, query url.Values) map[string]string {
	t.Helper()
	sum := sha256.Sum256(body)
	details := url.Values{"content_sha256": {hex.EncodeToString(sum[:])}}
	for k, v := range query {
		details["?"+k] = v
	}
	h := approval(t, b, a, details)
	h[operator.ContentDigestHeader] = hex.EncodeToString(sum[:])
	return h
}

// TestAPIRequestHygiene: the API's CSRF rule (JSON or a backup only, origin checks first),
// its bounded upload, and a stable code on every refusal, including the middleware's.
func TestAPIRequestHygiene(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{maxUpload: 4 << 10})
	admin := s.browser("Alice Admin")
	cli := s.api(t, admin.cert)
	anon := &apiClient{t: t, s: s, c: s.client(nil)}

	cases := []struct {
		name   string
		client *apiClient
		method string
		path   string
		ctype  string
		body   string
		header map[string]string
		status int
		code   string
	}{
		{"no certificate", anon, "GET", "/api/v1/status", "", "", nil, 401, web.CodeNoCertificate},
		{"form post", cli, "POST", "/api/v1/ceremony/cancel", "application/x-www-form-urlencoded", "csrf=x", nil, 403, web.CodeCSRF},
		{"text post", cli, "POST", "/api/v1/ceremony/cancel", "text/plain", "{}", nil, 403, web.CodeCSRF},
		{"no content type", cli, "POST", "/api/v1/ceremony/cancel", "", "", nil, 403, web.CodeCSRF},
		{"cross-site JSON", cli, "POST", "/api/v1/ceremony/cancel", "application/json", "{}", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, web.CodeCSRF},
		{"JSON with a cookie", cli, "POST", "/api/v1/ceremony/cancel", "application/json", "{}", map[string]string{"Cookie": "session=1"}, 403, web.CodeCSRF},
		{"JSON", cli, "POST", "/api/v1/ceremony/cancel", "application/json", "{}", nil, 409, web.CodeNotRunning},
		{"unknown field", cli, "POST", "/api/v1/ceremony/start", "application/json", `{"kind":"load","pin":"123456"}`, nil, 400, web.CodeBadRequest},
		{"trailing data", cli, "POST", "/api/v1/ceremony/retry", "application/json", `{} {}`, nil, 400, web.CodeBadRequest},
		{"no approval", cli, "POST", "/api/v1/ceremony/start", "application/json", `{"kind":"load"}`, nil, 403, web.CodeApprovalRequired},
		{"reset unconfirmed", cli, "POST", "/api/v1/ceremony/start", "application/json", `{"kind":"factory-reset"}`, nil, 400, web.CodeBadRequest},
		{"no such route", cli, "GET", "/api/v1/nothing", "", "", nil, 404, web.CodeNotFound},
		{"backup without key", cli, "GET", "/api/v1/backup", "", "", nil, 409, web.CodeNoBackupKey},
		{"restore too large", cli, "POST", "/api/v1/restore", "application/octet-stream", strings.Repeat("x", 5<<10), nil, 413, web.CodeTooLarge},
	}
	for _, c := range cases {
		code, body, header := c.client.call(c.method, c.path, c.ctype, strings.NewReader(c.body), c.header)
		if code != c.status || problemCode(t, body) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, code, body, c.status, c.code)
		}
		if ct := header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: content type %q", c.name, ct)
		}
	}
	// An auditor reads, but steers nothing.
	auditor := s.browserAs("Ann Auditor", operator.RoleAuditor, false)
	acli := s.api(t, auditor.cert)
	if code, body := acli.json("POST", "/api/v1/ceremony/cancel", struct{}{}, nil); code != 403 || problemCode(t, body) != web.CodeNotAllowed {
		t.Errorf("auditor cancels: %d %s", code, body)
	}
	if code, body := acli.json("GET", "/api/v1/audit/verify", nil, nil); code != 200 || !strings.Contains(string(body), `"entries"`) {
		t.Errorf("auditor verifies the audit log: %d %s", code, body)
	}
	// A certificate without a role gets the code that says so.
	nobody := s.browserAs("Neil Newcomer", operator.RoleNone, false)
	if code, body := s.api(t, nobody.cert).json("GET", "/api/v1/status", nil, nil); code != 403 || problemCode(t, body) != web.CodeNoRole {
		t.Errorf("no role: %d %s", code, body)
	}
}

// TestAPICeremonyAndBackup: a generation started and followed through the API (event stream
// until the outcome), status and card info, a backup, a refused foreign backup that changes
// nothing, and a restore.
func TestAPICeremonyAndBackup(t *testing.T) {
	dir := t.TempDir()
	s := startService(t, dir, serviceOptions{})
	if _, err := s.hsm.CreateKey(context.Background(), "payments"); err != nil {
		t.Fatal(err)
	}
	admin := s.browser("Alice Admin")
	cli := s.api(t, admin.cert)
	cards := newCards(t, s.pad, 3)

	code, body := cli.json("POST", "/api/v1/ceremony/start", api.StartRequest{Kind: ceremony.KindGenerate, K: 2, N: 3, Label: "api"}, approval(t, admin, operator.ActionForKind(ceremony.KindGenerate), url.Values{"kind": {"generate"}, "k": {"2"}, "n": {"3"}, "label": {"api"}}))
	var started api.StartedJSON
	if code != http.StatusAccepted || json.Unmarshal(body, &started) != nil || started.Kind != ceremony.KindGenerate {
		t.Fatalf("start: %d %s", code, body)
	}
	// Follow the events while the pad is driven.
	req, _ := http.NewRequest("GET", s.url("/api/v1/ceremony/events?until=outcome"), nil)
	resp, err := cli.c.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("events: %v %v", err, resp)
	}
	events := make(chan []ceremony.Event, 1)
	go func() {
		defer resp.Body.Close()
		var got []ceremony.Event
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var ev ceremony.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("event line %q: %v", sc.Text(), err)
			}
			got = append(got, ev)
		}
		events <- got
	}()
	j := driveCeremony(t, context.Background(), s, httpActor{admin}, []string{cards[0], cards[1], cards[2], cards[2], cards[0]}, nil)
	if j.Status != ceremony.StatusDone {
		t.Fatalf("generate: %+v", j)
	}
	var got []ceremony.Event
	select {
	case got = <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream did not end after the outcome")
	}
	if len(got) < 5 || got[len(got)-1].Type != ceremony.EventOutcome || got[len(got)-1].Status != ceremony.StatusDone {
		t.Fatalf("events: %d, last %+v", len(got), got[len(got)-1])
	}
	for _, ev := range got {
		b, _ := json.Marshal(ev)
		if bytes.Contains(b, []byte("123456")) {
			t.Fatalf("an event carries the PIN: %s", b)
		}
	}

	var st api.StatusJSON
	code, body = cli.json("GET", "/api/v1/status", nil, nil)
	if code != 200 || json.Unmarshal(body, &st) != nil || st.BackupKeyID != j.KeyID || st.KeySet == nil || len(st.Keys) != 1 || st.Keys[0].Label != "payments" || !st.Simulator {
		t.Fatalf("status: %d %s", code, body)
	}
	// Card info: the card in the pad, and that it belongs to the loaded set.
	s.pad.Remove() // the last card read may still be in the slot
	if err := s.pad.Insert(cards[1]); err != nil {
		t.Fatal(err)
	}
	var ci api.CardJSON
	code, body = cli.json("GET", "/api/v1/card", nil, nil)
	if code != 200 || json.Unmarshal(body, &ci) != nil || ci.Inserted == nil || ci.Inserted.Serial != cards[1] || !ci.InKeySet || len(ci.Cards) != 3 {
		t.Fatalf("card info: %d %s", code, body)
	}
	s.pad.Remove()

	code, backupBytes, header := cli.call("GET", "/api/v1/backup", "", nil, nil)
	if code != 200 || header.Get(cluster.KeyIDHeader) != j.KeyID || len(backupBytes) < 100 {
		t.Fatalf("backup: %d %s", code, header)
	}

	// A backup of another key: refused from its header, nothing changed, audited.
	other, err := soft.Open(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	mbk := make([]byte, 32)
	rand.Read(mbk)
	other.LoadBackupKey(context.Background(), mbk)
	clear(mbk)
	other.CreateKey(context.Background(), "intruder")
	var foreign bytes.Buffer
	if err := other.Backup(context.Background(), &foreign); err != nil {
		t.Fatal(err)
	}
	other.Close()
	foreignBytes := foreign.Bytes()
	code, body, _ = cli.call("POST", "/api/v1/restore", "application/octet-stream", bytes.NewReader(foreignBytes), uploadApproval(t, admin, operator.ActionRestore, foreignBytes, nil))
	if code != http.StatusUnprocessableEntity || problemCode(t, body) != web.CodeForeignKey {
		t.Fatalf("foreign restore: %d %s", code, body)
	}
	if keys, _ := s.hsm.Keys(context.Background()); len(keys) != 1 || keys[0].Label != "payments" {
		t.Fatalf("keys after the refused restore: %+v", keys)
	}
	if es := auditEvents(t, s, cluster.AuditRestoreRefused); len(es) != 1 || !strings.Contains(es[0].Message, "nothing changed") {
		t.Errorf("refused restore audit: %+v", es)
	}
	// An approval binds the file: the real backup's approval does not restore another file,
	// neither named as itself (refused before reading) nor passed off under the approved
	// file's digest (refused at the end of the upload, before anything changes).
	code, body, _ = cli.call("POST", "/api/v1/restore", "application/octet-stream", bytes.NewReader(backupBytes),
		map[string]string{operator.ContentDigestHeader: fmt.Sprintf("%x", sha256.Sum256(backupBytes))})
	if code != http.StatusForbidden || problemCode(t, body) != web.CodeApprovalRequired || !strings.Contains(string(body), "content sha256") {
		t.Fatalf("restore without an approval: %d %s", code, body)
	}
	h := uploadApproval(t, admin, operator.ActionRestore, backupBytes, nil)
	h[operator.ContentDigestHeader] = fmt.Sprintf("%x", sha256.Sum256(foreignBytes))
	code, body, _ = cli.call("POST", "/api/v1/restore", "application/octet-stream", bytes.NewReader(foreignBytes), h)
	if code != http.StatusForbidden || !strings.Contains(string(body), "another request") {
		t.Errorf("another file under its own digest: %d %s", code, body)
	}
	// Another backup of this very HSM (same key, other bytes) passed off as the approved one.
	code, backup2, _ := cli.call("GET", "/api/v1/backup", "", nil, nil)
	if code != 200 || bytes.Equal(backup2, backupBytes) {
		t.Fatalf("second backup: %d", code)
	}
	code, body, _ = cli.call("POST", "/api/v1/restore", "application/octet-stream", bytes.NewReader(backup2), uploadApproval(t, admin, operator.ActionRestore, backupBytes, nil))
	if code != http.StatusUnprocessableEntity || problemCode(t, body) != web.CodeContentMismatch {
		t.Errorf("another file under the approved file's digest: %d %s", code, body)
	}
	if keys, _ := s.hsm.Keys(context.Background()); len(keys) != 1 || keys[0].Label != "payments" {
		t.Fatalf("keys after the refused restores: %+v", keys)
	}
	// The real backup restores.
	code, body, _ = cli.call("POST", "/api/v1/restore", "application/octet-stream", bytes.NewReader(backupBytes), uploadApproval(t, admin, operator.ActionRestore, backupBytes, nil))
	var res api.RestoredJSON
	if code != 200 || json.Unmarshal(body, &res) != nil || res.BackupKeyID != j.KeyID || res.Keys != 1 {
		t.Fatalf("restore: %d %s", code, body)
	}
	// The audit export is JSON lines that verify.
	code, export, _ := cli.call("GET", "/api/v1/audit/export", "", nil, nil)
	if sum, err := ceremony.VerifyAuditExport(bytes.NewReader(export)); code != 200 || err != nil || sum.Entries == 0 {
		t.Fatalf("audit export: %d %v", code, err)
	}
}

// TestAPIClusterState: the cluster state goes only to a node certificate of this CA whose
// node names this node's key; a join checks its request before connecting anywhere.
func TestAPIClusterState(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	cli := s.api(t, admin.cert)

	code, body := cli.json("POST", "/api/v1/cluster/nodes", cluster.NodeRequest{Name: "node-b"}, nil)
	if code != 403 || problemCode(t, body) != web.CodeApprovalRequired {
		t.Fatalf("issue node without approval: %d %s", code, body)
	}
	code, body = cli.json("POST", "/api/v1/cluster/nodes", cluster.NodeRequest{Name: "node-b"}, approval(t, admin, operator.ActionOperatorsManage, url.Values{"name": {"node-b"}}))
	var nb cluster.NodeBundle
	if code != 200 || json.Unmarshal(body, &nb) != nil || nb.Password == "" || len(nb.P12) == 0 || nb.CAFingerprint != s.pki.Fingerprint() {
		t.Fatalf("issue node: %d %s", code, body)
	}
	if es := auditEvents(t, s, cluster.AuditNodeIssued); len(es) != 1 {
		t.Errorf("node issuance audit: %+v", es)
	}
	_, node, err := cluster.ParseJoin(cluster.JoinRequest{Peer: s.url(""), NodeP12: nb.P12, NodePassword: nb.Password})
	if err != nil {
		t.Fatal(err)
	}
	ncli := s.api(t, node.TLSCertificate())

	// No key here yet: nothing to send.
	if code, body := ncli.json("GET", "/api/v1/cluster/state", nil, nil); code != 409 || problemCode(t, body) != web.CodeNoBackupKey {
		t.Fatalf("state without a key: %d %s", code, body)
	}
	mbk := make([]byte, 32)
	rand.Read(mbk)
	if err := s.hsm.LoadBackupKey(context.Background(), mbk); err != nil {
		t.Fatal(err)
	}
	clear(mbk)
	id, _ := s.hsm.BackupKeyID(context.Background())
	challenge := func() cluster.Challenge {
		t.Helper()
		code, body := ncli.json("GET", cluster.ChallengePath, nil, nil)
		var ch cluster.Challenge
		if code != 200 || json.Unmarshal(body, &ch) != nil {
			t.Fatalf("challenge: %d %s", code, body)
		}
		return ch
	}
	if code, body := cli.json("GET", cluster.ChallengePath, nil, nil); code != 403 || problemCode(t, body) != web.CodeNotNode {
		t.Errorf("challenge for an operator certificate: %d %s", code, body)
	}
	wrong := make([]byte, 32)
	rand.Read(wrong)
	for _, c := range []struct {
		name   string
		client *apiClient
		header map[string]string
		status int
		code   string
	}{
		{"operator certificate", cli, nil, 403, web.CodeNotNode},
		{"no proof", ncli, map[string]string{cluster.KeyIDHeader: id.String()}, 400, web.CodeBadRequest},
		{"the key ID as proof", ncli, map[string]string{cluster.ChallengeHeader: challenge().Challenge, cluster.ProofHeader: id.String()}, 400, web.CodeBadRequest},
		{"a proof under another key", ncli, map[string]string{cluster.ChallengeHeader: challenge().Challenge, cluster.ProofHeader: hex.EncodeToString(wrong)}, 422, web.CodeForeignKey},
	} {
		code, body := c.client.json("GET", "/api/v1/cluster/state", nil, c.header)
		if code != c.status || problemCode(t, body) != c.code {
			t.Errorf("%s: %d %s", c.name, code, body)
		}
		if strings.Contains(strings.ToLower(string(body)), id.String()) {
			t.Errorf("%s: the refusal names the key ID: %s", c.name, body)
		}
	}
	// A node certificate of another CA fails the handshake.
	otherCA := newTestCA(t)
	stranger := &apiClient{t: t, s: s, c: s.client(&otherCA)}
	req, _ := http.NewRequest("GET", s.url("/api/v1/cluster/state"), nil)
	if _, err := stranger.c.Do(req); err == nil {
		t.Error("a certificate of another CA got an answer")
	}
	ch := challenge()
	proof, err := cluster.Prove(context.Background(), s.hsm, ch, node.TLSCertificate().Leaf)
	if err != nil {
		t.Fatal(err)
	}
	code, data, header := ncli.call("GET", "/api/v1/cluster/state", "", nil, map[string]string{cluster.ChallengeHeader: ch.Challenge, cluster.ProofHeader: proof})
	if code != 200 || header.Get(cluster.KeyIDHeader) != id.String() || len(data) < 100 {
		t.Fatalf("state to the node: %d %s", code, header)
	}
	if es := auditEvents(t, s, cluster.AuditClusterStateSent); len(es) != 1 || !strings.Contains(es[0].Message, "CN=node-b,O=Keyquorum cluster nodes") {
		t.Errorf("state sent audit: %+v", es)
	}

	// Join requests are checked before anything is contacted.
	opP12, opPW := operatorP12(t, s)
	for _, c := range []struct {
		name string
		req  cluster.JoinRequest
		says string
	}{
		{"http peer", cluster.JoinRequest{Peer: "http://x:1", NodeP12: nb.P12, NodePassword: nb.Password}, "the peer must be"},
		{"peer with path", cluster.JoinRequest{Peer: "https://x:1/hsm", NodeP12: nb.P12, NodePassword: nb.Password}, "the peer must be"},
		{"no node file", cluster.JoinRequest{Peer: "https://x:1"}, "no node file"},
		{"wrong password", cluster.JoinRequest{Peer: "https://x:1", NodeP12: nb.P12, NodePassword: "nope"}, "password is wrong"},
		{"operator p12", cluster.JoinRequest{Peer: "https://x:1", NodeP12: opP12, NodePassword: opPW}, "not a node certificate"},
	} {
		if _, _, err := cluster.ParseJoin(c.req); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// newTestCA is a client certificate of a CA that WebConf does not know.
func newTestCA(t *testing.T) tls.Certificate {
	t.Helper()
	p, err := operator.LoadPKI(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := p.IssueClient(pkix.Name{CommonName: "node-x", Organization: []string{cluster.NodeOrganization}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tlsCert(cert, key)
}

// operatorP12 is an operator's (not a node's) PKCS#12 file of the service's CA and its password.
func operatorP12(t *testing.T, s *service) ([]byte, string) {
	t.Helper()
	_, p12, pw, err := operator.IssuePKCS12(s.pki, pkix.Name{CommonName: "Olga Operator", Organization: []string{"Keyquorum operators"}}, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p12, pw
}
