package dpop

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fuzzNow accepts every RFC 9449 example proof (iat 1562262616 to
// 1562265296) with the generous window below.
var fuzzNow = time.Unix(1562265296, 0)

func fuzzSeeds(tb testing.TB) []string {
	var seeds []string
	for name, vs := range loadJWTs(tb) {
		if name != "block" {
			seeds = append(seeds, vs...)
		}
	}
	return seeds
}

// claimedRequest reads htm/htu leniently so that an intact proof reaches
// the accepting path.
func claimedRequest(proof string) Check {
	c := Check{Method: "GET", URL: "https://resource.example.org/protectedresource"}
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return c
	}
	raw, err := b64Enc.DecodeString(parts[1])
	if err != nil {
		return c
	}
	var cl struct{ HTM, HTU string }
	if json.Unmarshal(raw, &cl) == nil && cl.HTM != "" {
		c.Method = cl.HTM
		if _, err := NormalizeHTU(cl.HTU); err == nil {
			c.URL = cl.HTU
		}
	}
	return c
}

// crossCheck: whatever Verify accepts, go-jose also accepts (with the
// allowed-algorithm list) with the same key and payload. Arbitrary
// compact strings are fuzzed once, against go-jose, in package jws
// (FuzzCompact); here the proofs are well signed.
func crossCheck(t *testing.T, proof string, p *Proof) {
	t.Helper()
	jws, err := jose.ParseSignedCompact(proof, DefaultAlgs)
	if err != nil {
		t.Fatalf("accepted, but go-jose cannot parse: %v", err)
	}
	payload, err := jws.Verify(&p.JWK)
	if err != nil {
		t.Fatalf("accepted, but go-jose does not verify: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("accepted payload: %v", err)
	}
	if claims["jti"] != p.JTI || claims["htm"] != p.HTM || claims["htu"] != p.HTU {
		t.Fatalf("claims differ: encoding/json %v, verifier %+v", claims, p)
	}
	if jws.Signatures[0].Protected.ExtraHeaders["typ"] != "dpop+jwt" {
		t.Fatalf("go-jose sees typ %v", jws.Signatures[0].Protected.ExtraHeaders["typ"])
	}
	if jkt, err := Thumbprint(&p.JWK); err != nil || jkt != p.JKT {
		t.Fatalf("jkt %q, go-jose %q %v", p.JKT, jkt, err)
	}
}

// fuzzKey is a fixed P-256 key so that FuzzVerifySigned inputs reproduce.
func fuzzKey() *ecdsa.PrivateKey {
	d := new(big.Int).SetBytes(bytes.Repeat([]byte{0x42}, 32))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d.FillBytes(make([]byte, 32)))
	if err != nil {
		panic(err)
	}
	return k
}

// FuzzVerifySigned signs arbitrary header and claims JSON with a real key,
// so that the fuzzer explores the JOSE header, jwk and claims checks
// behind a valid signature. Whatever is accepted must look the same to
// encoding/json and go-jose.
func FuzzVerifySigned(f *testing.F) {
	key := fuzzKey()
	jwk := string(jwkJSON(f, key))
	f.Add(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+jwk+`}`, `{"jti":"a","htm":"GET","htu":"https://resource.example.org/protectedresource","iat":1562265296}`)
	f.Add(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+jwk+`,"kid":"x"}`, `{"jti":"a","htm":"POST","htu":"HTTPS://Resource.example.org:443/a/../protectedresource?q","iat":1562265296.5,"nonce":"n","ath":"x"}`)
	f.Add(`{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"","y":"","d":""}}`, `{}`)
	f.Add(`{"typ":"dpop+jwt","typ":"dpop+jwt","alg":"ES256"}`, `{"jti":"a","jti":"b"}`)
	f.Fuzz(func(t *testing.T, header, claims string) {
		input := enc([]byte(header)) + "." + enc([]byte(claims))
		proof := input + "." + enc(signRaw(t, key, "ES256", input))
		v := &Verifier{Now: fixed(fuzzNow), MaxAge: 2 * time.Hour, Replay: NewMemoryReplayCache(fixed(fuzzNow))}
		p, err := v.Verify(context.Background(), proof, claimedRequest(proof))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("non-protocol error %v", err)
			}
			return
		}
		var h map[string]any
		if err := json.Unmarshal([]byte(header), &h); err != nil {
			t.Fatalf("accepted header encoding/json rejects: %v", err)
		}
		if h["typ"] != "dpop+jwt" || h["alg"] != "ES256" || h["crit"] != nil || h["jku"] != nil || h["x5c"] != nil {
			t.Fatalf("accepted header %v", h)
		}
		jk, _ := h["jwk"].(map[string]any)
		// Members that carry private or symmetric key material (RFC 7518
		// §6.2.2, §6.3.2, §6.4; RFC 9964 "priv").
		for _, m := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"} {
			if _, ok := jk[m]; ok {
				t.Fatalf("accepted private jwk member %q", m)
			}
		}
		crossCheck(t, proof, p)
	})
}

// FuzzNormalizeHTU checks the invariants of the htu normaliser: no panic,
// idempotence, the query and fragment never matter, and the result is a
// plain absolute http(s) URL.
func FuzzNormalizeHTU(f *testing.F) {
	for _, s := range []string{
		"https://server.example.com/token", "HTTPS://A.B:443/%7e/./x/../y?q#f", "http://[::1]:80",
		"https://a/%zz", "https://u@a/", "https://a:/", "https://a/é b", "https://a/%2F..%2f",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizeHTU(in)
		out2, err2 := NormalizeHTU(in + "?query=1#frag")
		if (err == nil) != (err2 == nil) || out != out2 {
			t.Fatalf("query changes the result: %q -> %q,%v vs %q,%v", in, out, err, out2, err2)
		}
		if err != nil {
			return
		}
		checkNormalized(t, in, out)
	})
}

// The fuzz seeds reach the accepting path, so crossCheck is exercised.
func TestFuzzSeedsAccepted(t *testing.T) {
	for _, proof := range fuzzSeeds(t) {
		if strings.Contains(proof, "eyJhbGciOiJFUzI1NiIsImtpZCI6IkJlQUxrYiJ9") {
			continue // the cnf access token, not a proof
		}
		v := &Verifier{Now: fixed(fuzzNow), MaxAge: 2 * time.Hour, Replay: NewMemoryReplayCache(fixed(fuzzNow))}
		p, err := v.Verify(context.Background(), proof, claimedRequest(proof))
		if err != nil {
			t.Fatalf("seed rejected: %v", err)
		}
		crossCheck(t, proof, p)
	}
}
