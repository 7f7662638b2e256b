package web

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

func multipartRequest(body, boundary string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "/hsm/restore", strings.NewReader(body))
	r.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	return r
}

// TestReadLeading: the leading token fields are read, the file after them is left for the
// handler, whole.
func TestReadLeading(t *testing.T) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("webauthn", "tok")
	mw.WriteField("csrf", "c")
	mw.WriteField("make_equal", "1")
	fw, _ := mw.CreateFormFile("backup", "b.kqb")
	fw.Write(bytes.Repeat([]byte{7}, 100000))
	mw.WriteField("after", "x")
	mw.Close()
	r := multipartRequest(b.String(), mw.Boundary())
	m, err := ReadLeading(r)
	if err != nil || m.Fields["csrf"] != "c" || m.Fields["webauthn"] != "tok" || m.Fields["make_equal"] != "1" || len(m.Fields) != 3 {
		t.Fatalf("leading fields: %v %v", m, err)
	}
	r = r.WithContext(WithMultipart(r.Context(), m))
	mr, err := MultipartReader(r)
	if err != nil {
		t.Fatal(err)
	}
	p, err := mr.NextPart()
	if err != nil || p.FormName() != "backup" {
		t.Fatalf("first part after the tokens: %v %v", p, err)
	}
	if n, _ := io.Copy(io.Discard, p); n != 100000 {
		t.Errorf("file: %d bytes", n)
	}
	// A field after the file would act unbound by an approval (which binds the leading
	// fields): refused.
	if p, err := mr.NextPart(); !errors.Is(err, ErrFieldOutOfPlace) {
		t.Errorf("a field after the file: %v %v", p, err)
	}
	// So is a field sent twice (the leading fields end there) and what follows it.
	twice := "--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nc\r\n--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nc\r\n" +
		"--x\r\nContent-Disposition: form-data; name=\"make_equal\"\r\n\r\n1\r\n--x--\r\n"
	m, err = ReadLeading(multipartRequest(twice, "x"))
	if err != nil || len(m.Fields) != 1 {
		t.Fatalf("leading fields of a form with a field twice: %v %v", m, err)
	}
	if p, err := m.NextPart(); !errors.Is(err, ErrFieldOutOfPlace) {
		t.Errorf("a field sent twice: %v %v", p, err)
	}
	// A file input left empty (filename="") is a file, not a leading field.
	empty := "--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nc\r\n--x\r\nContent-Disposition: form-data; name=\"backup\"; filename=\"\"\r\n\r\n\r\n--x--\r\n"
	m, err = ReadLeading(multipartRequest(empty, "x"))
	if err != nil || len(m.Fields) != 1 {
		t.Fatalf("leading fields before an empty file input: %v %v", m, err)
	}
	if p, err := m.NextPart(); err != nil || p.FormName() != "backup" {
		t.Errorf("the empty file input: %v %v", p, err)
	}
	if _, err := m.NextPart(); err != io.EOF {
		t.Errorf("end: %v", err)
	}
	// A token field that is too long, or a file named like a token, is not a token.
	long := "--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + strings.Repeat("a", 2000) + "\r\n--x--\r\n"
	if _, err := ReadLeading(multipartRequest(long, "x")); err == nil {
		t.Error("a 2,000-byte token accepted")
	}
	file := "--x\r\nContent-Disposition: form-data; name=\"csrf\"; filename=\"f\"\r\n\r\nc\r\n--x--\r\n"
	if m, err := ReadLeading(multipartRequest(file, "x")); err != nil || m.Fields["csrf"] != "" {
		t.Errorf("a file named csrf: %v %v", m.Fields, err)
	}
	// A password is left to the handler (read as bytes and cleared), and what follows it too.
	pw := "--x\r\nContent-Disposition: form-data; name=\"peer\"\r\n\r\nhttps://a\r\n--x\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nsecret\r\n--x--\r\n"
	m, err = ReadLeading(multipartRequest(pw, "x"))
	if err != nil || m.Fields["peer"] != "https://a" || len(m.Fields) != 1 {
		t.Fatalf("leading fields before a password: %v %v", m.Fields, err)
	}
	if p, err := m.NextPart(); err != nil || p.FormName() != "password" {
		t.Errorf("the password part: %v %v", p, err)
	}
}

// FuzzReadLeading feeds the leading-field reader with any body: it ends with fields of at most
// 1 KiB, or an error, and never panics.
func FuzzReadLeading(f *testing.F) {
	for _, s := range []string{
		"--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nc\r\n--x\r\nContent-Disposition: form-data; name=\"backup\"; filename=\"b\"\r\n\r\ndata\r\n--x--\r\n",
		"--x--\r\n",
		"garbage",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		m, err := ReadLeading(multipartRequest(body, "x"))
		if err != nil {
			return
		}
		if len(m.Fields) > maxLeadingFields {
			t.Fatalf("%d fields", len(m.Fields))
		}
		for k, v := range m.Fields {
			if len(v) > maxLeadingField || strings.Contains(strings.ToLower(k), "password") {
				t.Fatalf("field %q of %d bytes", k, len(v))
			}
		}
		for {
			p, err := m.NextPart()
			if err != nil {
				return
			}
			if !isFile(p) && !strings.Contains(strings.ToLower(p.FormName()), "password") {
				t.Fatalf("field %q after the leading fields handed on", p.FormName())
			}
			io.Copy(io.Discard, io.LimitReader(p, 1<<20))
		}
	})
}
