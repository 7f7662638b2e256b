package operator

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// An approval (a page's confirmation or a command-line approval) binds an action and its
// details: the parameters of the request, by name. "Generate 2 of 3" and "generate 3 of 5" are
// the same action and different details, so an approval of the one does not start the other.

// Details are the parameters of a dangerous request beyond its action: its form fields, its JSON
// body's fields (flattened, "a.b" for nested ones) or its query parameters ("?name"), by name.
// Empty values, false and null count as absent, so a field left out and a field sent empty are
// the same request.
type Details struct {
	Action Action
	Fields [][2]string // sorted by name, then value
}

// maxDetailFields bounds what one request's details may hold.
const maxDetailFields = 64

// NewDetails are the details of a request for action a with the given fields.
func NewDetails(a Action, fields map[string][]string) Details {
	d := Details{Action: a}
	for k, vs := range fields {
		for _, v := range vs {
			if v != "" {
				d.Fields = append(d.Fields, [2]string{k, v})
			}
		}
	}
	d.sort()
	return d
}

// sort puts the fields in order and keeps of a secret field (a node file, its password) only
// its SHA-256: the digest still binds it, and no pending request or token holds it.
func (d *Details) sort() {
	for i, f := range d.Fields {
		if secretField(f[0]) && !strings.HasPrefix(f[1], secretPrefix) {
			sum := sha256.Sum256([]byte(f[1]))
			d.Fields[i][1] = secretPrefix + hex.EncodeToString(sum[:])
		}
	}
	slices.SortFunc(d.Fields, func(x, y [2]string) int {
		if c := strings.Compare(x[0], y[0]); c != 0 {
			return c
		}
		return strings.Compare(x[1], y[1])
	})
}

// secretPrefix marks a secret field's value kept as its SHA-256.
const secretPrefix = "sha256:"

// ErrDetailsJSON is a JSON body whose details cannot be taken: not an object, too deep or too
// many fields.
var ErrDetailsJSON = errors.New("the request's JSON body is not an object of at most 64 fields")

// DetailsOfJSON are the details of a request for action a whose body is the JSON object body,
// together with the query parameters query (named "?name").
func DetailsOfJSON(a Action, body []byte, query map[string][]string) (Details, error) {
	d := NewDetails(a, nil)
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return d, ErrDetailsJSON
		}
		if _, ok := v.(map[string]any); !ok {
			return d, ErrDetailsJSON
		}
		if err := flatten(&d, "", v, 0); err != nil {
			return d, err
		}
	}
	for k, vs := range query {
		for _, v := range vs {
			if v != "" {
				d.Fields = append(d.Fields, [2]string{"?" + k, v})
			}
		}
	}
	if len(d.Fields) > maxDetailFields {
		return d, ErrDetailsJSON
	}
	d.sort()
	return d, nil
}

func flatten(d *Details, prefix string, v any, depth int) error {
	if depth > 8 || len(d.Fields) > maxDetailFields {
		return ErrDetailsJSON
	}
	name := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if err := flatten(d, name(k), e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := flatten(d, name(strconv.Itoa(i)), e, depth+1); err != nil {
				return err
			}
		}
	case string:
		if x != "" {
			d.Fields = append(d.Fields, [2]string{prefix, x})
		}
	case json.Number:
		d.Fields = append(d.Fields, [2]string{prefix, x.String()})
	case bool:
		if x {
			d.Fields = append(d.Fields, [2]string{prefix, "true"})
		}
	}
	return nil
}

// Digest is a SHA-256 of the action and its fields, each length-prefixed (hexadecimal).
func (d Details) Digest() string {
	h := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("keyquorum approval details v1")
	put(string(d.Action))
	for _, f := range d.Fields {
		put(f[0])
		put(f[1])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Summary says in words what the request does: `start a key generation: 3 of 5, label
// "Vault"`. Values are quoted; a long one is cut (the digest still covers all of it).
func (d Details) Summary() string {
	var parts []string
	get := func(name string) string {
		for _, f := range d.Fields {
			if f[0] == name {
				return f[1]
			}
		}
		return ""
	}
	k, n := get("k"), get("n")
	quorum := k != "" && n != "" && (get("quorum") == "" || get("quorum") == "custom")
	if quorum {
		parts = append(parts, k+" of "+n)
	}
	for _, f := range d.Fields {
		switch {
		case f[0] == "kind" && Action("ceremony."+f[1]) == d.Action:
			continue // the action says it
		case quorum && (f[0] == "k" || f[0] == "n" || f[0] == "quorum"):
			continue
		}
		name := strings.ReplaceAll(strings.TrimPrefix(f[0], "?"), "_", " ")
		if secretField(f[0]) {
			parts = append(parts, name+" (given)")
			continue
		}
		v := f[1]
		if len(v) > 80 {
			v = v[:77] + "..."
		}
		parts = append(parts, name+" "+strconv.Quote(v))
	}
	s := ruleOf(d.Action).What
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	}
	return s
}

// secretField reports whether a field's value must not be shown (a node file and its
// password, a code): the digest covers it, the summary only says it was given.
func secretField(name string) bool {
	name = strings.ToLower(name)
	for _, s := range []string{"password", "p12", "pin", "secret", "token", "code", "key_data"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// DetailsError is an approval used for a request with other details than the one approved.
type DetailsError struct {
	Approved  string // the approved request, in words
	Requested string // this request, in words
}

func (e *DetailsError) Error() string {
	return fmt.Sprintf("the confirmation was made for another request (it approved %s; this request would %s)", e.Approved, e.Requested)
}

// RequestTTL is how long a command-line request waits for its approval.
const RequestTTL = 10 * time.Minute

// PendingRequest is a dangerous command-line request refused for want of an approval, kept so
// that its operator can approve exactly it on the account page.
type PendingRequest struct {
	ID      string // short, to be read and typed: "KQ7D-M2XA"
	Op      string
	Details Details
	Expires time.Time
}

// Summary is the request in words.
func (p PendingRequest) Summary() string { return p.Details.Summary() }

func requestID() (string, error) {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	s := base32.StdEncoding.EncodeToString(b) // 8 characters
	return s[:4] + "-" + s[4:], nil
}

// Hold keeps a command-line request of operator op that needs an approval and returns it. The
// same request again (the same operator and details) is the same pending request.
func (s *StepUps) Hold(op string, d Details, now time.Time) (PendingRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	digest := d.Digest()
	oldest, mine := "", 0
	for k, p := range s.requests {
		if p.Op != op {
			continue
		}
		if p.Details.Digest() == digest {
			p.Expires = now.Add(RequestTTL)
			return *p, nil
		}
		mine++
		if oldest == "" || p.Expires.Before(s.requests[oldest].Expires) {
			oldest = k
		}
	}
	if mine >= maxPendingPerOp {
		delete(s.requests, oldest)
	} else if len(s.requests) >= maxPending {
		return PendingRequest{}, errTooMany
	}
	id, err := requestID()
	if err != nil {
		return PendingRequest{}, err
	}
	p := &PendingRequest{ID: id, Op: op, Details: d, Expires: now.Add(RequestTTL)}
	s.requests[id] = p
	return *p, nil
}

// Requests are operator op's pending command-line requests, the newest first.
func (s *StepUps) Requests(op string, now time.Time) []PendingRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	var out []PendingRequest
	for _, p := range s.requests {
		if p.Op == op {
			out = append(out, *p)
		}
	}
	slices.SortFunc(out, func(a, b PendingRequest) int { return b.Expires.Compare(a.Expires) })
	return out
}

// errNoRequest is an approval asked for a request that is not pending (any more).
var errNoRequest = errors.New("the command-line request is unknown or expired: run the command again to get a new one")

// Request is operator op's pending request id (spaces and case do not matter).
func (s *StepUps) Request(id, op string, now time.Time) (PendingRequest, error) {
	id = strings.ToUpper(strings.Join(strings.Fields(id), ""))
	if len(id) == 8 {
		id = id[:4] + "-" + id[4:]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(now)
	p, ok := s.requests[id]
	if !ok || p.Op != op {
		return PendingRequest{}, errNoRequest
	}
	return *p, nil
}
