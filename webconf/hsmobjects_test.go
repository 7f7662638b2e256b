package webconf

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// postBackupForm posts a backup to path (a multipart form: fields first, then the file).
func (b *browser) postBackupForm(path string, fields map[string]string, content []byte) (*http.Response, string) {
	b.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField(csrfField, b.csrf) // the token leads, in the body, as the page sends it
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("backup", "backup.kqb")
	fw.Write(content)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, b.s.url(path), &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return b.do(req)
}

// TestHSMPageObjects: the HSM page lists every object with carried yes/no-because; a backup of
// an HSM holding an object that cannot leave is a problem page naming it, not a download; the
// explicit skip makes the backup, whose header names it; a preview shows the plan and changes
// nothing.
func TestHSMPageObjects(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	ctx := t.Context()
	if err := s.hsm.LoadBackupKey(ctx, bytes.Repeat([]byte{5}, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.hsm.CreateObject(ctx, hsm.ObjectSpec{Kind: "AES-128", Label: "stays inside", NotExtractable: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.hsm.CreateObject(ctx, hsm.ObjectSpec{Kind: "EC-P256", Label: "signing pair"}); err != nil {
		t.Fatal(err)
	}
	admin := s.browser("Alice Admin")
	page := admin.get("/hsm", http.StatusOK)
	for _, want := range []string{`data-testid="hsm-objects"`, "stays inside", "it is not extractable", "signing pair", "EC-256 private key",
		"2 carried, 1 not", `data-testid="backup-skip"`, `data-testid="restore-preview"`, `data-testid="create-form"`} {
		if !strings.Contains(page, want) {
			t.Errorf("HSM page lacks %q", want)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, s.url("/hsm/backup"), nil)
	resp, body := admin.do(req)
	if resp.StatusCode != http.StatusUnprocessableEntity || resp.Header.Get("Content-Disposition") != "" ||
		!strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "Backup refused") || !strings.Contains(body, "stays inside") {
		t.Fatalf("refused backup: %d %q %q %s", resp.StatusCode, resp.Header.Get("Content-Disposition"), resp.Header.Get("Content-Type"), excerpt(body))
	}
	b := admin.get("/hsm/backup?skip=1", http.StatusOK)
	hdr, err := backup.ReadHeader(strings.NewReader(b))
	if err != nil || hdr.SkippedTotal != 1 || hdr.Skipped[0].Label != "stays inside" {
		t.Fatalf("header of the backup that skipped: %+v %v", hdr, err)
	}

	resp, body = admin.postBackupForm("/hsm/restore/preview", map[string]string{"make_equal": "1"}, []byte(b))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Restore preview") || !strings.Contains(body, "Nothing was changed") ||
		!strings.Contains(body, `data-testid="plan-skipped"`) {
		t.Fatalf("preview: %d %s", resp.StatusCode, excerpt(body))
	}
	if !strings.Contains(body, "remove") || !strings.Contains(body, "stays inside") {
		t.Errorf("made-equal preview does not show the removal: %s", excerpt(body))
	}
	objs, _ := s.hsm.Objects(ctx)
	if !strings.Contains(func() string {
		var l []string
		for _, o := range objs {
			l = append(l, o.Label)
		}
		return strings.Join(l, ",")
	}(), "stays inside") {
		t.Fatal("a preview changed the HSM")
	}
	// A restore answers with its plan; the object made before it stays.
	resp, body = admin.upload(strings.NewReader(b), -1)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Backup restored") || !strings.Contains(body, "kept") {
		t.Fatalf("restore: %d %s", resp.StatusCode, excerpt(body))
	}
	_ = io.Discard
}

// TestHSMPageCreate: the HSM page's form makes a key with a security key confirmation; label
// rules and identity clashes are problem pages that store nothing.
func TestHSMPageCreate(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	admin := s.browser("Alice Admin")
	resp, _ := admin.post("/hsm/objects", url.Values{"kind": {"Ed25519"}, "label": {"release signing"}, "id": {"e1"}}, http.StatusSeeOther)
	if resp.Header.Get("Location") != "/hsm?created=1" {
		t.Fatalf("create: redirected to %q", resp.Header.Get("Location"))
	}
	page := admin.get("/hsm?created=1", http.StatusOK)
	if !strings.Contains(page, `data-testid="created"`) || !strings.Contains(page, "EdDSA-255 private key") || !strings.Contains(page, "release signing") {
		t.Fatalf("HSM page after create: %s", excerpt(page))
	}
	_, body := admin.post("/hsm/objects", url.Values{"kind": {"Ed25519"}, "label": {"release signing"}, "id": {"e1"}}, http.StatusConflict)
	if !strings.Contains(body, "An object of that identity exists") {
		t.Errorf("second create: %s", excerpt(body))
	}
	_, body = admin.post("/hsm/objects", url.Values{"kind": {"AES-256"}, "label": {""}}, http.StatusBadRequest)
	if !strings.Contains(body, "Object not accepted") {
		t.Errorf("empty label: %s", excerpt(body))
	}
	auditor := s.browserAs("Ada Auditor", "auditor", true)
	auditor.post("/hsm/objects", url.Values{"kind": {"AES-256"}, "label": {"x"}}, http.StatusForbidden)
	objs, _ := s.hsm.Objects(t.Context())
	if len(objs) != 2 {
		t.Fatalf("objects after refusals: %v", objs)
	}
}

// TestUploadOptionsBound: a security key's approval of an upload form binds the options the
// form sends (issue 20): an approval of a plain restore does not make the HSM equal to the
// backup — whether make_equal follows a repeated field (where the leading fields end), or the
// CSRF token comes in its header so that the leading fields are not read at all.
func TestUploadOptionsBound(t *testing.T) {
	s := startService(t, t.TempDir(), serviceOptions{})
	ctx := t.Context()
	if err := s.hsm.LoadBackupKey(ctx, bytes.Repeat([]byte{5}, 32)); err != nil {
		t.Fatal(err)
	}
	admin := s.browser("Alice Admin")
	b := admin.get("/hsm/backup", http.StatusOK)
	if _, err := s.hsm.CreateObject(ctx, hsm.ObjectSpec{Kind: "AES-128", Label: "made after the backup"}); err != nil {
		t.Fatal(err)
	}
	send := func(header bool, fields [][2]string) (*http.Response, string) {
		t.Helper()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for _, f := range fields {
			if name, ok := strings.CutPrefix(f[0], "file:"); ok { // an option sent as a file part
				fw, _ := mw.CreateFormFile(name, "option")
				fw.Write([]byte(f[1]))
				continue
			}
			mw.WriteField(f[0], f[1])
		}
		fw, _ := mw.CreateFormFile("backup", "backup.kqb")
		fw.Write([]byte(b))
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, s.url("/hsm/restore"), &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		if header {
			req.Header.Set(csrfHeader, admin.csrf)
		}
		return admin.do(req)
	}
	for _, c := range []struct {
		name   string
		header bool
		fields func(tok string) [][2]string
		ignore bool // the stray part is ignored: the restore as approved goes through
	}{
		{"after a repeated field", false, func(tok string) [][2]string {
			return [][2]string{{csrfField, admin.csrf}, {stepUpField, tok}, {csrfField, admin.csrf}, {"make_equal", "1"}}
		}, false},
		{"CSRF token in the header", true, func(tok string) [][2]string {
			return [][2]string{{stepUpField, tok}, {"make_equal", "1"}}
		}, false},
		{"option as a file part", false, func(tok string) [][2]string {
			return [][2]string{{csrfField, admin.csrf}, {stepUpField, tok}, {"file:make_equal", "1"}}
		}, true},
		{"token after the option", true, func(tok string) [][2]string {
			return [][2]string{{"make_equal", "1"}, {stepUpField, tok}}
		}, false},
	} {
		tok := admin.stepUp("/hsm/restore", nil) // approved: a restore that keeps what the backup lacks
		resp, body := send(c.header, c.fields(tok))
		objs, _ := s.hsm.Objects(ctx)
		kept := false
		for _, o := range objs {
			kept = kept || o.Label == "made after the backup"
		}
		if !kept {
			t.Fatalf("%s: an approval of a plain restore made the HSM equal to the backup (%d %s)", c.name, resp.StatusCode, excerpt(body))
		}
		if resp.StatusCode == http.StatusOK && !c.ignore {
			t.Errorf("%s: the restore went through with options its approval did not bind: %s", c.name, excerpt(body))
		}
	}
}
