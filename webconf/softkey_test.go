package webconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// softKey is a FIDO2 authenticator in software for the handler tests: it answers WebAuthn
// registrations ("none" attestation) and assertions as a browser with a security key would,
// byte for byte what the WebAuthn specification lays down. The browser test uses Chromium's
// virtual authenticator instead.
type softKey struct {
	key     *ecdsa.PrivateKey
	id      []byte
	counter uint32
	noUV    bool // the key does not verify the user (no PIN, no fingerprint)
	// The attestation of a registration: "" sends format none (as a browser asked for none
	// does); "self" a packed self attestation (signed with the credential's key); "basic" a
	// packed basic attestation signed with attKey, with the certificate chain x5c.
	attest string
	aaguid []byte // the model; zeros when nil
	attKey *ecdsa.PrivateKey
	x5c    [][]byte
	badSig bool // the attestation signature does not verify
}

func newSoftKey(t testing.TB) *softKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 32)
	rand.Read(id)
	return &softKey{key: key, id: id}
}

var b64u = base64.RawURLEncoding

// options is what a begin endpoint answers.
type options struct {
	Needed    bool   `json:"needed"`
	Session   string `json:"session"`
	PublicKey struct {
		Challenge string `json:"challenge"`
		RPID      string `json:"rpId"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
	} `json:"publicKey"`
}

func (k *softKey) authData(rpID string, attested bool) []byte {
	rp := sha256.Sum256([]byte(rpID))
	flags := byte(0x01) // user present
	if !k.noUV {
		flags |= 0x04 // user verified
	}
	if attested {
		flags |= 0x40
	}
	k.counter++
	out := append(rp[:], flags)
	out = binary.BigEndian.AppendUint32(out, k.counter)
	if attested {
		aaguid := k.aaguid
		if aaguid == nil {
			aaguid = make([]byte, 16) // AAGUID: none
		}
		out = append(out, aaguid...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(k.id)))
		out = append(out, k.id...)
		enc, _ := cbor.CTAP2EncOptions().EncMode()
		x := k.key.PublicKey.X.FillBytes(make([]byte, 32))
		y := k.key.PublicKey.Y.FillBytes(make([]byte, 32))
		cose, err := enc.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
		if err != nil {
			panic(err)
		}
		out = append(out, cose...)
	}
	return out
}

func clientData(typ, challenge, origin string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false})
	return b
}

// create answers a registration.
func (k *softKey) create(o options, origin string) []byte {
	cd := clientData("webauthn.create", o.PublicKey.Challenge, origin)
	enc, _ := cbor.CTAP2EncOptions().EncMode()
	ad := k.authData(o.PublicKey.RP.ID, true)
	format, stmt := "none", map[string]any{}
	if k.attest != "" {
		h := sha256.Sum256(cd)
		digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
		signer := k.key
		if k.attest == "basic" {
			signer = k.attKey
		}
		sig, err := ecdsa.SignASN1(rand.Reader, signer, digest[:])
		if err != nil {
			panic(err)
		}
		if k.badSig {
			sig[len(sig)-1] ^= 1
		}
		format, stmt = "packed", map[string]any{"alg": -7, "sig": sig}
		if k.attest == "basic" {
			stmt["x5c"] = k.x5c
		}
	}
	att, err := enc.Marshal(map[string]any{"fmt": format, "attStmt": stmt, "authData": ad})
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(map[string]any{
		"id": b64u.EncodeToString(k.id), "rawId": b64u.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64u.EncodeToString(cd), "attestationObject": b64u.EncodeToString(att), "transports": []string{"usb"}},
	})
	return b
}

// get answers an assertion.
func (k *softKey) get(o options, origin string) []byte {
	cd := clientData("webauthn.get", o.PublicKey.Challenge, origin)
	ad := k.authData(o.PublicKey.RPID, false)
	h := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, digest[:])
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(map[string]any{
		"id": b64u.EncodeToString(k.id), "rawId": b64u.EncodeToString(k.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64u.EncodeToString(cd), "authenticatorData": b64u.EncodeToString(ad), "signature": b64u.EncodeToString(sig)},
	})
	return b
}

// origin is where the service's pages are, as a browser would report it.
func (s *service) origin() string { return strings.TrimSuffix(s.url(""), "/") }

// script sends a request as the page script does (CSRF header, the fetch marker).
func (b *browser) script(path, contentType string, body string, header map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.s.url(path), strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set(csrfHeader, b.csrf)
	req.Header.Set(web.FetchHeader, "1")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return b.do(req)
}

// registerKey registers k for the browser's operator through the account page's endpoints.
func (b *browser) registerKey(k *softKey, name string) {
	b.t.Helper()
	var header map[string]string
	if tok := b.stepUp("/webauthn/register/begin", url.Values{}); tok != "" {
		header = map[string]string{operator.ApprovalHeader: tok}
	}
	resp, body := b.script("/webauthn/register/begin", "application/x-www-form-urlencoded", url.Values{"name": {name}}.Encode(), header)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("register begin: %d %s", resp.StatusCode, body)
	}
	var o options
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		b.t.Fatal(err)
	}
	resp, body = b.script("/webauthn/register/finish?session="+url.QueryEscape(o.Session), "application/json", string(k.create(o, b.s.origin())), nil)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("register finish: %d %s", resp.StatusCode, body)
	}
	if b.key == nil {
		b.key = k
	}
}

// stepUp asks, as the page script does before sending a form, whether the form needs a fresh
// assertion, makes it with the browser's key and returns the token ("" when none is needed).
func (b *browser) stepUp(path string, form url.Values) string {
	b.t.Helper()
	tok, err := b.tryStepUp(path, form, "")
	if err != "" {
		b.t.Fatalf("step up for %s: %s", path, err)
	}
	return tok
}

// approveRequest approves a pending command-line request by its ID, as its Approve button on
// the account page does, and returns the token or the refusal.
func (b *browser) approveRequest(id string) (string, string) {
	b.t.Helper()
	return b.tryStepUp("", url.Values{"_request": {id}}, "")
}

// tryStepUp is stepUp that reports a refusal instead of failing; cliAction set asks for a
// command-line approval of that action instead.
func (b *browser) tryStepUp(path string, form url.Values, cliAction operator.Action) (string, string) {
	b.t.Helper()
	params := url.Values{}
	for k, v := range form {
		if k != csrfField && k != stepUpField && len(strings.Join(v, "")) <= 1024 {
			params[k] = v // the fields that say what the form does, not bulk
		}
	}
	if cliAction != "" {
		params.Set("_purpose", "cli")
		params.Set("_action", string(cliAction))
	} else if params.Get("_request") != "" {
		params.Set("_purpose", "cli")
	} else {
		params.Set("_path", path)
	}
	resp, body := b.script("/webauthn/assert/begin", "application/x-www-form-urlencoded", params.Encode(), nil)
	if resp.StatusCode != http.StatusOK {
		return "", body
	}
	var o options
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		b.t.Fatal(err)
	}
	if !o.Needed && cliAction == "" && params.Get("_purpose") != "cli" {
		return "", ""
	}
	if b.key == nil {
		return "", "no security key in this test browser"
	}
	resp, body = b.script("/webauthn/assert/finish?session="+url.QueryEscape(o.Session), "application/json", string(b.key.get(o, b.s.origin())), nil)
	if resp.StatusCode != http.StatusOK {
		return "", body
	}
	var f struct{ Token string }
	if err := json.Unmarshal([]byte(body), &f); err != nil || f.Token == "" {
		b.t.Fatalf("assert finish: %v %s", err, body)
	}
	return f.Token, ""
}
