package jws

import (
	"bytes"
	"crypto"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jsonobj"
)

// fuzzSeeds are compact JWSs of every shape Ward reads: access tokens and
// ID tokens (kid, media-type typ), SETs, DPoP proofs (embedded jwk of
// every key type), DBSC proofs and posture reports, and malformed ones.
func fuzzSeeds(tb testing.TB) []string {
	k := getKeys(tb)
	var out []string
	claims := []byte(`{"iss":"https://ward.example","sub":"u1","aud":"api","exp":1900000000,"iat":1800000000,"jti":"j1","client_id":"c1","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}`)
	for _, alg := range Algorithms() {
		key := k.signer(alg)
		jwk := canonJWK(tb, key)
		out = append(out,
			sign(tb, alg, key, []byte(`{"typ":"dpop+jwt","alg":"`+string(alg)+`","jwk":`+jwk+`}`),
				[]byte(`{"jti":"a","htm":"POST","htu":"https://ward.example/token","iat":1800000000}`)),
			sign(tb, alg, key, []byte(`{"alg":"`+string(alg)+`","kid":"k1","typ":"at+jwt"}`), claims))
	}
	out = append(out,
		sign(tb, ES256, k.p256, []byte(`{"alg":"ES256","kid":"k1","typ":"secevent+jwt"}`), []byte(`{"iss":"https://ward.example","jti":"s1","iat":1800000000,"aud":"r","events":{"https://schemas.openid.net/secevent/caep/event-type/session-revoked":{}}}`)),
		sign(tb, ES256, k.p256, []byte(`{"alg":"ES256","typ":"dbsc+jwt","jwk":`+canonJWK(tb, k.p256)+`}`), []byte(`{"jti":"challenge","aud":"https://ward.example/dbsc/register"}`)),
		sign(tb, ES256, k.p256, []byte(`{"typ":"ward-posture+jwt","alg":"ES256","jwk":`+canonJWK(tb, k.p256)+`}`), []byte(`{"iss":"ward-agent","sub":"d","posture":{"platform":"linux"}}`)),
		sign(tb, ES256, k.p256, []byte(`{"alg":"ES256","typ":"JWT","kid":"k1","nonce":"n","x-ext":[1,{"a":null}]}`), []byte(``)),
		"", ".", "..", "a.b.c", "e30.e30.", "eyJhbGciOiJub25lIn0.e30.",
		loadCookbook(tb, "4_1.rsa_v15_signature").Output.Compact,
		loadCookbook(tb, "4_2.rsa-pss_signature").Output.Compact,
		loadCookbook(tb, "4_3.ecdsa_signature").Output.Compact,
		loadCookbook(tb, "4_4.hmac-sha2_integrity_protection").Output.Compact,
		`{"protected":"eyJhbGciOiJFUzI1NiJ9","payload":"e30","signature":"AA"}`,
	)
	return append(out, rfc9449Proofs(tb)...)
}

// FuzzCompact is the differential target of this package against go-jose
// v4. Whatever Split, ParseHeader, Rules.Check (every algorithm, no typ
// rule), DecodeSegment and, for an embedded key, ParseJWK accept, go-jose
// must accept too, with the same alg, kid, typ, key, payload and
// signature bytes; and Verify must agree with go-jose's verification for
// every test key and the embedded one. Nothing may panic.
//
// The target takes a token as is, and a header and payload that it signs
// with the test key of the header's algorithm, so that the fuzzer reaches
// headers and embedded keys behind valid signatures.
func FuzzCompact(f *testing.F) {
	k := getKeys(f)
	for _, s := range fuzzSeeds(f) {
		c, err := Split(s)
		hdr, pay := []byte(`{"alg":"ES256"}`), []byte(`{}`)
		if err == nil {
			if h, err := DecodeSegment(c.Header()); err == nil {
				hdr = h
			}
			if p, err := DecodeSegment(c.Payload()); err == nil {
				pay = p
			}
		}
		f.Add(s, hdr, pay)
	}
	f.Fuzz(func(t *testing.T, token string, header, payload []byte) {
		differential(t, k, token)
		var h struct {
			Alg string `json:"alg"`
		}
		if json.Unmarshal(header, &h) != nil || !Algorithm(h.Alg).Supported() {
			return
		}
		alg := Algorithm(h.Alg)
		key := k.signer(alg)
		tok := sign(t, alg, key, header, payload)
		if differential(t, k, tok) {
			c, _ := Split(tok)
			sig, _ := DecodeSegment(c.Signature())
			if !Verify(alg, key.Public(), c.SigningInput(), sig) {
				t.Fatalf("%q: our own %s signature does not verify", tok, alg)
			}
		}
	})
}

// differential checks token against go-jose and reports whether this
// package accepted it.
func differential(t *testing.T, k *testKeys, token string) bool {
	t.Helper()
	c, err := Split(token)
	if err != nil {
		return false
	}
	h, err := ParseHeader(c.Header(), nil)
	if err != nil {
		return false
	}
	r := Rules{Algs: Algorithms()}
	alg, err := r.Check(&h)
	if err != nil || h.KeyReference() != "" {
		// A key reference is refused by every Ward caller that takes
		// keys from the header and ignored by the others.
		return false
	}
	payload, err := DecodeSegment(c.Payload())
	if err != nil {
		return false
	}
	sig, err := DecodeSegment(c.Signature())
	if err != nil {
		return false
	}
	var embedded *JWK
	if h.Has(ParamJWK) {
		jk, err := ParseJWK(h.JWK, alg)
		if err != nil {
			return false
		}
		embedded = &jk
	}

	// Accepted: go-jose must read the same.
	obj, err := jose.ParseSignedCompact(token, joseAlgs())
	if err != nil {
		if goJoseStricter(&h) {
			return true
		}
		t.Fatalf("accepted %q, go-jose refuses: %v", token, err)
	}
	gh := obj.Signatures[0].Protected
	if gh.Algorithm != string(alg) || gh.KeyID != h.Kid {
		t.Fatalf("%q: alg %q kid %q, go-jose %q %q", token, alg, h.Kid, gh.Algorithm, gh.KeyID)
	}
	if typ, ok := gh.ExtraHeaders["typ"]; ok != h.Has(ParamTyp) || (ok && typ != h.Typ) {
		t.Fatalf("%q: typ %q, go-jose %v", token, h.Typ, typ)
	}
	if !bytes.Equal(obj.UnsafePayloadWithoutVerification(), payload) || !bytes.Equal(obj.Signatures[0].Signature, sig) {
		t.Fatalf("%q: payload or signature differ from go-jose's", token)
	}
	if (gh.JSONWebKey != nil) != (embedded != nil) {
		t.Fatalf("%q: embedded jwk %v, go-jose %v", token, embedded != nil, gh.JSONWebKey != nil)
	}
	keys := k.publics()
	if embedded != nil {
		tp, err := gh.JSONWebKey.Thumbprint(crypto.SHA256)
		if err != nil || EncodeSegment(tp) != embedded.Thumbprint {
			t.Fatalf("%q: thumbprint %s, go-jose %x %v", token, embedded.Thumbprint, tp, err)
		}
		keys = append(keys, embedded.Key)
	}
	for _, key := range keys {
		ours := Verify(alg, key, c.SigningInput(), sig)
		_, gerr := obj.Verify(key)
		if ours != (gerr == nil) {
			t.Fatalf("%q with %T: Verify %v, go-jose %v", token, key, ours, gerr)
		}
		if alg == ES256 {
			if ec, ok := key.(interface{ Equal(crypto.PublicKey) bool }); ok && ec.Equal(&k.p256.PublicKey) {
				if VerifyES256(&k.p256.PublicKey, c.SigningInput(), c.Signature()) != ours {
					t.Fatalf("%q: VerifyES256 and Verify disagree", token)
				}
			}
		}
	}
	return true
}

// goJoseStricter reports whether go-jose refused an input this package
// accepts because go-jose type-checks a member that Ward never reads: the
// RFC 8555 "nonce" header (a string for go-jose), or the AKP "pub" member
// of an embedded key of another type. Everything else go-jose refuses,
// this package must refuse too.
func goJoseStricter(h *Header) bool {
	for _, m := range h.members {
		if m.Name == "nonce" {
			if _, ok := jsonobj.Unquote(m.Raw); !ok {
				return true
			}
		}
	}
	if h.JWK != nil {
		ms, _ := jsonobj.Parse(h.JWK, nil)
		if raw := ms.Get("pub"); raw != nil {
			s, ok := jsonobj.Unquote(raw)
			if !ok || strings.ContainsAny(s, "=+/\r\n") {
				return true
			}
			if _, err := DecodeSegment(s); err != nil {
				return true
			}
		}
	}
	return false
}

// The seeds reach the accepting path, so the comparison is exercised.
func TestFuzzSeedsAccepted(t *testing.T) {
	k := getKeys(t)
	n := 0
	for _, s := range fuzzSeeds(t) {
		if differential(t, k, s) {
			n++
		}
	}
	if n < 2*len(Algorithms())+4 {
		t.Fatalf("only %d seeds accepted", n)
	}
}
