package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
)

// An upload form (multipart/form-data) carries its CSRF token and its security key's token as
// its first fields, in the body — never in the URL, where they would end up in logs and
// history; the form's options follow them, before its file, so that a security key's approval
// can bind them. The CSRF check reads those leading small fields and nothing more (the file
// that follows stays unread until the handler wants it); the handler takes them from
// [Multipart].Fields and continues the same multipart stream with [MultipartReader]. After the
// leading fields come files and password fields only: any other field there (behind the file,
// or behind a field sent twice) would act unbound by the approval, and [Multipart.NextPart]
// refuses it ([ErrFieldOutOfPlace]).

// Multipart is an upload's multipart stream after its leading fields were read.
type Multipart struct {
	r      *multipart.Reader
	next   *multipart.Part // the first part not read yet; nil when the stream ended
	ended  bool
	Fields map[string]string // the leading fields read (csrf, webauthn, the form's options)
}

type multipartKey struct{}

// maxLeadingField bounds a leading field; maxLeadingFields their number.
const (
	maxLeadingField  = 1 << 10
	maxLeadingFields = 16
)

// ReadLeading opens r's multipart body and reads its leading fields (each at most 1 KiB, at
// most 16): the CSRF and approval tokens, and the form's options the page puts before its file,
// which an approval binds. It stops at the first file, at a field whose name says it is a
// password (a secret goes to its handler as bytes, never into a string here), or at a name
// repeated. The result goes into the request's context ([WithMultipart]) for the handler.
func ReadLeading(r *http.Request) (*Multipart, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, err
	}
	m := &Multipart{r: mr, Fields: map[string]string{}}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			m.ended = true
			return m, nil
		}
		if err != nil {
			return nil, err
		}
		name := part.FormName()
		_, seen := m.Fields[name]
		if isFile(part) || seen || name == "" || strings.Contains(strings.ToLower(name), "password") || len(m.Fields) >= maxLeadingFields {
			m.next = part
			return m, nil
		}
		v, err := io.ReadAll(io.LimitReader(part, maxLeadingField+1))
		part.Close()
		if err != nil {
			return nil, err
		}
		if len(v) > maxLeadingField {
			return nil, errors.New("a form field is too long")
		}
		m.Fields[name] = string(v)
	}
}

// WithMultipart keeps an upload's stream in ctx for its handler.
func WithMultipart(ctx context.Context, m *Multipart) context.Context {
	return context.WithValue(ctx, multipartKey{}, m)
}

// MultipartOf is the upload stream the CSRF check read the leading fields of, if any.
func MultipartOf(r *http.Request) *Multipart {
	m, _ := r.Context().Value(multipartKey{}).(*Multipart)
	return m
}

// MultipartReader continues the upload stream after its leading fields, or opens r's
// multipart body when nothing was read of it yet.
func MultipartReader(r *http.Request) (*Multipart, error) {
	if m := MultipartOf(r); m != nil {
		return m, nil
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, err
	}
	return &Multipart{r: mr, Fields: map[string]string{}}, nil
}

// ErrFieldOutOfPlace is an upload's form field that came after its leading fields (behind a
// file, or behind a field sent twice): an approval binds the leading fields only, so an option
// sent later would act unbound.
var ErrFieldOutOfPlace = errors.New("the form's fields must come before its file, each once")

// NextPart is the next part of the upload (the one the leading fields stopped at, first): a
// file, or a password field (a secret, never a leading field). Any other field after the
// leading ones is refused with [ErrFieldOutOfPlace].
func (m *Multipart) NextPart() (*multipart.Part, error) {
	var p *multipart.Part
	if m.next != nil {
		p = m.next
		m.next = nil
	} else if m.ended {
		return nil, io.EOF
	} else {
		var err error
		if p, err = m.r.NextPart(); err != nil {
			return nil, err
		}
	}
	if !isFile(p) && !strings.Contains(strings.ToLower(p.FormName()), "password") {
		p.Close()
		return nil, fmt.Errorf("%w (%q)", ErrFieldOutOfPlace, p.FormName())
	}
	return p, nil
}

// isFile reports whether a part is a file input's: its Content-Disposition has a filename,
// empty when no file was chosen.
func isFile(p *multipart.Part) bool {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return p.FileName() != ""
	}
	_, ok := params["filename"]
	return ok
}
