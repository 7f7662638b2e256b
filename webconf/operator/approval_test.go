package operator

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestDetails: the digest tells requests apart by every parameter, not by how they were sent;
// the summary says the request in words and never shows a secret.
func TestDetails(t *testing.T) {
	gen := ActionForKind("generate")
	two, err := DetailsOfJSON(gen, []byte(`{"kind":"generate","k":2,"n":3,"label":"vault"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := two.Summary(); got != `start a key generation: 2 of 3, label "vault"` {
		t.Errorf("summary %q", got)
	}
	same, _ := DetailsOfJSON(gen, []byte(`{"label":"vault","n":3,"k":2,"kind":"generate","overwrite":false,"slot":""}`), nil)
	form := NewDetails(gen, url.Values{"kind": {"generate"}, "k": {"2"}, "n": {"3"}, "label": {"vault"}})
	if same.Digest() != two.Digest() || form.Digest() != two.Digest() {
		t.Error("the same request has another digest (field order, absent and empty values, JSON or form)")
	}
	for _, other := range []string{
		`{"kind":"generate","k":3,"n":5,"label":"vault"}`,
		`{"kind":"generate","k":2,"n":3,"label":"vault2"}`,
		`{"kind":"generate","k":2,"n":3}`,
		`{"kind":"generate","k":2,"n":3,"label":"vault","overwrite":true}`,
	} {
		d, err := DetailsOfJSON(gen, []byte(other), nil)
		if err != nil || d.Digest() == two.Digest() {
			t.Errorf("%s: %v, same digest as 2 of 3", other, err)
		}
	}
	if d, _ := DetailsOfJSON(ActionForKind("load"), []byte(`{"kind":"generate","k":2,"n":3,"label":"vault"}`), nil); d.Digest() == two.Digest() {
		t.Error("another action, the same digest")
	}
	// Field boundaries are part of the digest: {"a":"bc"} is not {"ab":"c"}.
	x := NewDetails(gen, url.Values{"a": {"bc"}})
	y := NewDetails(gen, url.Values{"ab": {"c"}})
	if x.Digest() == y.Digest() {
		t.Error("field boundaries not in the digest")
	}
	join, _ := DetailsOfJSON(ActionClusterJoin, []byte(`{"peer":"https://a:8443","node_p12":"c2VjcmV0","node_password":"hunter2"}`), nil)
	if s := join.Summary(); strings.Contains(s, "hunter2") || strings.Contains(s, "c2VjcmV0") || !strings.Contains(s, "https://a:8443") {
		t.Errorf("join summary %q", s)
	}
	for _, f := range join.Fields {
		if strings.Contains(f[1], "hunter2") || strings.Contains(f[1], "c2VjcmV0") {
			t.Errorf("a secret kept in the details: %q", f)
		}
	}
	other, _ := DetailsOfJSON(ActionClusterJoin, []byte(`{"peer":"https://a:8443","node_p12":"c2VjcmV0","node_password":"hunter3"}`), nil)
	if other.Digest() == join.Digest() {
		t.Error("another password, the same digest")
	}
	restore, _ := DetailsOfJSON(ActionRestore, nil, url.Values{"make_equal": {"true"}})
	if s := restore.Summary(); s != `restore a backup: make equal "true"` {
		t.Errorf("restore summary %q", s)
	}
	for _, bad := range []string{`[1,2]`, `"x"`, `{`, `{"a":` + strings.Repeat(`{"a":`, 20) + `1` + strings.Repeat(`}`, 21)} {
		if _, err := DetailsOfJSON(gen, []byte(bad), nil); !errors.Is(err, ErrDetailsJSON) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// TestApprovalBinding: a token consumed for other details is refused with both requests in
// words, and burnt; a pending request is the same for the same details and leaves the list
// once approved.
func TestApprovalBinding(t *testing.T) {
	s := newStepUps()
	now := time.Now()
	gen := ActionForKind("generate")
	two := NewDetails(gen, url.Values{"k": {"2"}, "n": {"3"}})
	five := NewDetails(gen, url.Values{"k": {"3"}, "n": {"5"}})
	p1, err := s.Hold("op", two, now)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := s.Hold("op", two, now)
	if p1.ID != p2.ID || len(s.Requests("op", now)) != 1 || len(s.Requests("other", now)) != 0 {
		t.Fatalf("pending requests: %v %v", p1, p2)
	}
	if _, err := s.Request(strings.ToLower(strings.ReplaceAll(p1.ID, "-", "")), "op", now); err != nil {
		t.Errorf("the request typed without its dash, in lower case: %v", err)
	}
	if _, err := s.Request(p1.ID, "other", now); err == nil {
		t.Error("another operator's request")
	}
	tok, _ := s.Grant("op", two, CLIGrantTTL, now)
	if len(s.Requests("op", now)) != 0 {
		t.Error("an approved request is still pending")
	}
	var de *DetailsError
	if err := s.Consume(tok, "op", gen, &five, now); !errors.As(err, &de) || !strings.Contains(de.Approved, "2 of 3") || !strings.Contains(de.Requested, "3 of 5") {
		t.Fatalf("2-of-3 token for 3 of 5: %v", err)
	}
	if err := s.Consume(tok, "op", gen, &two, now); err == nil {
		t.Error("a token refused once was used again")
	}
	tok, _ = s.Grant("op", two, CLIGrantTTL, now)
	if err := s.Consume(tok, "op", gen, &two, now); err != nil {
		t.Errorf("the approved request: %v", err)
	}
	if _, err := s.Request(p1.ID, "op", now.Add(RequestTTL+time.Second)); err == nil {
		t.Error("an expired request")
	}
}

// FuzzDetailsOfJSON: any body gives details or ErrDetailsJSON, never a panic; the digest is
// stable and the field count bounded.
func FuzzDetailsOfJSON(f *testing.F) {
	f.Add([]byte(`{"kind":"generate","k":2,"n":3,"label":"vault"}`), "make_equal=true")
	f.Add([]byte(`{"peer":"https://a:8443","node_p12":"c2VjcmV0","node_password":"x"}`), "")
	f.Add([]byte(`{"a":{"b":[1,{"c":true}]},"d":null}`), "x=1&x=2")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		q, _ := url.ParseQuery(query)
		d, err := DetailsOfJSON(ActionRestore, body, q)
		if err != nil {
			if !errors.Is(err, ErrDetailsJSON) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(d.Fields) > maxDetailFields {
			t.Fatalf("%d fields", len(d.Fields))
		}
		again, _ := DetailsOfJSON(ActionRestore, body, q)
		if again.Digest() != d.Digest() {
			t.Fatal("digest not stable")
		}
		_ = d.Summary()
	})
}
