package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	testURL    = "https://rs.example.com/api/items"
	testMethod = "GET"
	testToken  = "at-3f1c9e.opaque.token"
)

// proofSpec describes a crafted proof: header and claims are maps so that
// a test can remove, add or retype any member.
type proofSpec struct {
	key    crypto.Signer
	alg    string
	header map[string]any
	claims map[string]any
}

func baseSpec(t testing.TB) proofSpec {
	k := getKeys(t)
	return proofSpec{
		key: k.p256,
		alg: "ES256",
		header: map[string]any{
			"typ": "dpop+jwt",
			"alg": "ES256",
			"jwk": jwkJSON(t, k.p256),
		},
		claims: map[string]any{
			"jti": "jti-" + fmt.Sprint(time.Now().UnixNano()),
			"htm": testMethod,
			"htu": testURL,
			"iat": t0.Unix(),
			"ath": AccessTokenHash(testToken),
		},
	}
}

func (s proofSpec) build(t testing.TB) string {
	return craft(t, s.key, s.alg, mustJSON(t, s.header), mustJSON(t, s.claims))
}

func TestVerifyRejects(t *testing.T) {
	k := getKeys(t)
	p256JKT := mustSigner(t, k.p256).Thumbprint()
	otherJKT := mustSigner(t, k.p384).Thumbprint()
	nonceKey := []byte("0123456789abcdef0123456789abcdef")
	nonces := NewHMACNonces(nonceKey, 5*time.Minute, fixed(t0))
	oldNonce := NewHMACNonces(nonceKey, 5*time.Minute, fixed(t0.Add(-6*time.Minute))).Nonce()
	foreignNonce := NewHMACNonces([]byte("another key, another server....."), 5*time.Minute, fixed(t0)).Nonce()
	baseCheck := Check{Method: testMethod, URL: testURL, AccessToken: testToken}

	tests := []struct {
		name   string
		spec   func(*proofSpec)    // edits the crafted proof
		proof  func(string) string // edits the finished proof
		check  func(*Check)
		ver    func(*Verifier)
		code   string
		reason Reason // "" = must verify
	}{
		{name: "valid"},
		{name: "valid with JKT", check: func(c *Check) { c.JKT = p256JKT }},
		{name: "other URL", check: func(c *Check) { c.URL = "https://rs.example.com/api/admin" }, reason: ReasonURL},
		{name: "other host", check: func(c *Check) { c.URL = "https://evil.example.com/api/items" }, reason: ReasonURL},
		{name: "other scheme", check: func(c *Check) { c.URL = "http://rs.example.com/api/items" }, reason: ReasonURL},
		{name: "path is case-sensitive", check: func(c *Check) { c.URL = "https://rs.example.com/API/items" }, reason: ReasonURL},
		{name: "other method", check: func(c *Check) { c.Method = "POST" }, reason: ReasonMethod},
		{name: "method is case-sensitive", spec: func(s *proofSpec) { s.claims["htm"] = "get" }, reason: ReasonMethod},
		{name: "query in request URL ignored", check: func(c *Check) { c.URL = testURL + "?page=2#top" }},
		{name: "query in htu ignored", spec: func(s *proofSpec) { s.claims["htu"] = testURL + "?page=1" }, check: func(c *Check) { c.URL = testURL + "?page=2" }},
		{name: "htu normalised", spec: func(s *proofSpec) { s.claims["htu"] = "HTTPS://RS.Example.COM:443/api/./x/../%69tems" }},
		{name: "htu not a URL", spec: func(s *proofSpec) { s.claims["htu"] = "/api/items" }, reason: ReasonURL},
		{name: "htu with userinfo", spec: func(s *proofSpec) { s.claims["htu"] = "https://user@rs.example.com/api/items" }, reason: ReasonURL},
		{name: "key differs from JKT", check: func(c *Check) { c.JKT = otherJKT }, reason: ReasonKeyMismatch},
		{name: "iat at MaxAge", spec: func(s *proofSpec) { s.claims["iat"] = t0.Add(-DefaultMaxAge).Unix() }},
		{name: "stale iat", spec: func(s *proofSpec) { s.claims["iat"] = t0.Add(-DefaultMaxAge - time.Second).Unix() }, reason: ReasonTooOld},
		{name: "stale iat custom MaxAge", spec: func(s *proofSpec) { s.claims["iat"] = t0.Add(-61 * time.Second).Unix() }, ver: func(v *Verifier) { v.MaxAge = time.Minute }, reason: ReasonTooOld},
		{name: "iat at Leeway", spec: func(s *proofSpec) { s.claims["iat"] = t0.Add(DefaultLeeway).Unix() }},
		{name: "future iat", spec: func(s *proofSpec) { s.claims["iat"] = t0.Add(DefaultLeeway + time.Second).Unix() }, reason: ReasonFuture},
		{name: "fractional iat", spec: func(s *proofSpec) { s.claims["iat"] = float64(t0.Unix()) + 0.25 }},
		{name: "nonce missing", ver: func(v *Verifier) { v.Nonces = nonces }, check: func(c *Check) { c.RequireNonce = true }, code: CodeUseNonce, reason: ReasonNonceMissing},
		{name: "nonce valid", spec: func(s *proofSpec) { s.claims["nonce"] = nonces.Nonce() }, ver: func(v *Verifier) { v.Nonces = nonces }, check: func(c *Check) { c.RequireNonce = true }},
		{name: "nonce wrong", spec: func(s *proofSpec) { s.claims["nonce"] = "eyJ7S_zG.eyJH0-Z.HX4w-7v" }, ver: func(v *Verifier) { v.Nonces = nonces }, check: func(c *Check) { c.RequireNonce = true }, code: CodeUseNonce, reason: ReasonNonceInvalid},
		{name: "nonce expired", spec: func(s *proofSpec) { s.claims["nonce"] = oldNonce }, ver: func(v *Verifier) { v.Nonces = nonces }, check: func(c *Check) { c.RequireNonce = true }, code: CodeUseNonce, reason: ReasonNonceInvalid},
		{name: "nonce from another server", spec: func(s *proofSpec) { s.claims["nonce"] = foreignNonce }, ver: func(v *Verifier) { v.Nonces = nonces }, check: func(c *Check) { c.RequireNonce = true }, code: CodeUseNonce, reason: ReasonNonceInvalid},
		{name: "nonce not required but invalid", spec: func(s *proofSpec) { s.claims["nonce"] = oldNonce }, ver: func(v *Verifier) { v.Nonces = nonces }, code: CodeUseNonce, reason: ReasonNonceInvalid},
		{name: "nonce not a string", spec: func(s *proofSpec) { s.claims["nonce"] = 42 }, ver: func(v *Verifier) { v.Nonces = nonces }, reason: ReasonMissingClaim},
		{name: "alg none, empty signature", proof: func(p string) string {
			h := enc([]byte(`{"typ":"dpop+jwt","alg":"none","jwk":` + string(jwkJSON(t, k.p256)) + `}`))
			return h + "." + strings.Split(p, ".")[1] + "."
		}, reason: ReasonMalformed},
		{name: "alg none", proof: func(p string) string {
			h := enc([]byte(`{"typ":"dpop+jwt","alg":"none","jwk":` + string(jwkJSON(t, k.p256)) + `}`))
			return h + "." + strings.Split(p, ".")[1] + ".AAAA"
		}, reason: ReasonAlg},
		{name: "HS256 keyed with the public key", proof: func(p string) string {
			jwk := jwkJSON(t, k.p256)
			input := enc([]byte(`{"typ":"dpop+jwt","alg":"HS256","jwk":`+string(jwk)+`}`)) + "." + strings.Split(p, ".")[1]
			pt, _ := k.p256.PublicKey.Bytes()
			m := hmac.New(sha256.New, pt)
			m.Write([]byte(input))
			return input + "." + enc(m.Sum(nil))
		}, reason: ReasonAlg},
		{name: "HS256 even if configured", ver: func(v *Verifier) { v.Algs = append(v.Algs, "HS256", "none") }, proof: func(p string) string {
			jwk := jwkJSON(t, k.p256)
			input := enc([]byte(`{"typ":"dpop+jwt","alg":"HS256","jwk":`+string(jwk)+`}`)) + "." + strings.Split(p, ".")[1]
			m := hmac.New(sha256.New, jwk)
			m.Write([]byte(input))
			return input + "." + enc(m.Sum(nil))
		}, reason: ReasonAlg},
		{name: "alg not in configured list", ver: func(v *Verifier) { v.Algs = DefaultAlgs[3:] }, reason: ReasonAlg},
		{name: "alg missing", spec: func(s *proofSpec) { delete(s.header, "alg") }, reason: ReasonAlg},
		{name: "alg ES384 with P-256 key", spec: func(s *proofSpec) { s.header["alg"] = "ES384"; s.alg = "ES384" }, reason: ReasonKey},
		{name: "alg EdDSA with EC key", spec: func(s *proofSpec) { s.header["alg"] = "EdDSA" }, reason: ReasonKey},
		{name: "private key d in jwk", spec: func(s *proofSpec) {
			var m map[string]any
			json.Unmarshal(jwkJSON(t, k.p256), &m)
			m["d"] = enc(k.p256.D.FillBytes(make([]byte, 32)))
			s.header["jwk"] = m
		}, reason: ReasonKey},
		{name: "symmetric jwk", spec: func(s *proofSpec) { s.header["jwk"] = map[string]any{"kty": "oct", "k": "c2VjcmV0"} }, reason: ReasonKey},
		{name: "RSA-1024 key", spec: func(s *proofSpec) {
			s.key, s.alg = k.rsa1024, "PS256"
			s.header["alg"] = "PS256"
			s.header["jwk"] = map[string]any{"kty": "RSA", "n": enc(k.rsa1024.N.Bytes()), "e": "AQAB"}
		}, reason: ReasonKey},
		{name: "RSA-2048 key PS256", spec: func(s *proofSpec) {
			s.key, s.alg = k.rsa2048, "PS256"
			s.header["alg"] = "PS256"
			s.header["jwk"] = jwkJSON(t, k.rsa2048)
		}},
		{name: "RSA-2048 key RS256", spec: func(s *proofSpec) {
			s.key, s.alg = k.rsa2048, "RS256"
			s.header["alg"] = "RS256"
			s.header["jwk"] = jwkJSON(t, k.rsa2048)
		}},
		{name: "RS256 header, PS256 signature", spec: func(s *proofSpec) {
			s.key, s.alg = k.rsa2048, "PS256"
			s.header["alg"] = "RS256"
			s.header["jwk"] = jwkJSON(t, k.rsa2048)
		}, reason: ReasonSignature},
		{name: "jwk missing (kid only)", spec: func(s *proofSpec) { delete(s.header, "jwk"); s.header["kid"] = "key-1" }, reason: ReasonKey},
		{name: "jwk not an object", spec: func(s *proofSpec) { s.header["jwk"] = "eyJrdHkiOiJFQyJ9" }, reason: ReasonKey},
		{name: "jwk with kid is fine", spec: func(s *proofSpec) { s.header["kid"] = "key-1" }},
		{name: "jku", spec: func(s *proofSpec) { s.header["jku"] = "https://evil.example/jwks" }, reason: ReasonHeader},
		{name: "x5c", spec: func(s *proofSpec) { s.header["x5c"] = []string{"MIIB"} }, reason: ReasonHeader},
		{name: "x5u", spec: func(s *proofSpec) { s.header["x5u"] = "https://evil.example/cert" }, reason: ReasonHeader},
		{name: "crit", spec: func(s *proofSpec) { s.header["crit"] = []string{"exp"}; s.header["exp"] = 1 }, reason: ReasonHeader},
		{name: "b64 false", spec: func(s *proofSpec) { s.header["b64"] = false }, reason: ReasonHeader},
		{name: "unknown non-critical header ignored", spec: func(s *proofSpec) { s.header["x-ext"] = map[string]any{"a": []int{1}} }},
		{name: "jwk alg mismatch", spec: func(s *proofSpec) {
			var m map[string]any
			json.Unmarshal(jwkJSON(t, k.p256), &m)
			m["alg"] = "RS256"
			s.header["jwk"] = m
		}, reason: ReasonKey},
		{name: "jwk point not on curve", spec: func(s *proofSpec) {
			var m map[string]any
			json.Unmarshal(jwkJSON(t, k.p256), &m)
			m["y"] = m["x"]
			s.header["jwk"] = m
		}, reason: ReasonKey},
		{name: "jwk coordinate too short", spec: func(s *proofSpec) {
			var m map[string]any
			json.Unmarshal(jwkJSON(t, k.p256), &m)
			m["x"] = m["x"].(string)[1:]
			s.header["jwk"] = m
		}, reason: ReasonKey},
		{name: "typ missing", spec: func(s *proofSpec) { delete(s.header, "typ") }, reason: ReasonType},
		{name: "typ JWT", spec: func(s *proofSpec) { s.header["typ"] = "JWT" }, reason: ReasonType},
		{name: "typ at+jwt", spec: func(s *proofSpec) { s.header["typ"] = "at+jwt" }, reason: ReasonType},
		{name: "typ wrong case", spec: func(s *proofSpec) { s.header["typ"] = "DPoP+JWT" }, reason: ReasonType},
		{name: "typ not a string", spec: func(s *proofSpec) { s.header["typ"] = []string{"dpop+jwt"} }, reason: ReasonType},
		{name: "jti missing", spec: func(s *proofSpec) { delete(s.claims, "jti") }, reason: ReasonMissingClaim},
		{name: "jti empty", spec: func(s *proofSpec) { s.claims["jti"] = "" }, reason: ReasonMissingClaim},
		{name: "jti not a string", spec: func(s *proofSpec) { s.claims["jti"] = 12345 }, reason: ReasonMissingClaim},
		{name: "jti too long", spec: func(s *proofSpec) { s.claims["jti"] = strings.Repeat("j", 257) }, reason: ReasonMalformed},
		{name: "htm missing", spec: func(s *proofSpec) { delete(s.claims, "htm") }, reason: ReasonMissingClaim},
		{name: "htu missing", spec: func(s *proofSpec) { delete(s.claims, "htu") }, reason: ReasonMissingClaim},
		{name: "iat missing", spec: func(s *proofSpec) { delete(s.claims, "iat") }, reason: ReasonMissingClaim},
		{name: "iat a string", spec: func(s *proofSpec) { s.claims["iat"] = fmt.Sprint(t0.Unix()) }, reason: ReasonMissingClaim},
		{name: "iat negative", spec: func(s *proofSpec) { s.claims["iat"] = -1 }, reason: ReasonMissingClaim},
		{name: "claim name case matters", spec: func(s *proofSpec) { s.claims["HTU"] = s.claims["htu"]; delete(s.claims, "htu") }, reason: ReasonMissingClaim},
		{name: "ath mismatch", check: func(c *Check) { c.AccessToken = "another-token" }, reason: ReasonATHMismatch},
		{name: "ath missing", spec: func(s *proofSpec) { delete(s.claims, "ath") }, reason: ReasonATHMissing},
		{name: "ath ignored without token", spec: func(s *proofSpec) { s.claims["ath"] = "x" }, check: func(c *Check) { c.AccessToken = "" }},
		{name: "tampered payload", proof: func(p string) string {
			parts := strings.Split(p, ".")
			claims, _ := b64.DecodeString(parts[1])
			claims = []byte(strings.Replace(string(claims), "/api/items", "/api/admin", 1))
			return parts[0] + "." + enc(claims) + "." + parts[2]
		}, check: func(c *Check) { c.URL = "https://rs.example.com/api/admin" }, reason: ReasonSignature},
		{name: "tampered header (key swapped)", proof: func(p string) string {
			parts := strings.Split(p, ".")
			h := `{"typ":"dpop+jwt","alg":"ES256","jwk":` + string(jwkJSON(t, mustP256(t))) + `}`
			return enc([]byte(h)) + "." + parts[1] + "." + parts[2]
		}, reason: ReasonSignature},
		{name: "signature zero", proof: func(p string) string {
			return p[:strings.LastIndexByte(p, '.')+1] + enc(make([]byte, 64))
		}, reason: ReasonSignature},
		{name: "signature truncated", proof: func(p string) string {
			i := strings.LastIndexByte(p, '.')
			sig, _ := b64.DecodeString(p[i+1:])
			return p[:i+1] + enc(sig[:63])
		}, reason: ReasonSignature},
		{name: "signature not base64url", proof: func(p string) string { return p + "*" }, reason: ReasonMalformed},
		{name: "padding", proof: func(p string) string { return p + "==" }, reason: ReasonMalformed},
		{name: "leading whitespace", proof: func(p string) string { return " " + p }, reason: ReasonMalformed},
		{name: "JWS JSON serialization", proof: func(p string) string {
			parts := strings.Split(p, ".")
			return string(mustJSON(t, map[string]string{"protected": parts[0], "payload": parts[1], "signature": parts[2]}))
		}, reason: ReasonMalformed},
		{name: "JWS JSON general serialization", proof: func(p string) string {
			parts := strings.Split(p, ".")
			return string(mustJSON(t, map[string]any{"payload": parts[1], "signatures": []map[string]string{{"protected": parts[0], "signature": parts[2]}}}))
		}, reason: ReasonMalformed},
		{name: "two signatures appended", proof: func(p string) string { return p + "." + p[strings.LastIndexByte(p, '.')+1:] }, reason: ReasonMalformed},
		{name: "empty", proof: func(string) string { return "" }, reason: ReasonMissing},
		{name: "garbage", proof: func(string) string { return "not a jwt" }, reason: ReasonMalformed},
		{name: "two parts", proof: func(string) string { return "eyJhbGciOiJFUzI1NiJ9.eyJ9" }, reason: ReasonMalformed},
		{name: "dots only", proof: func(string) string { return ".." }, reason: ReasonMalformed},
		{name: "header not JSON", proof: func(p string) string { return enc([]byte("dpop+jwt")) + p[strings.IndexByte(p, '.'):] }, reason: ReasonMalformed},
		{name: "header JSON array", proof: func(p string) string { return enc([]byte(`["typ"]`)) + p[strings.IndexByte(p, '.'):] }, reason: ReasonMalformed},
		{name: "header trailing data", proof: func(p string) string {
			return enc([]byte(`{"typ":"dpop+jwt"}{}`)) + p[strings.IndexByte(p, '.'):]
		}, reason: ReasonMalformed},
		{name: "JWE (5 parts)", proof: func(string) string { return "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d" }, reason: ReasonMalformed},
		{name: "too large", spec: func(s *proofSpec) { s.claims["pad"] = strings.Repeat("p", MaxProofSize) }, reason: ReasonTooLarge},
		{name: "claims not an object", proof: func(p string) string {
			parts := strings.Split(p, ".")
			return parts[0] + "." + enc([]byte(`"jti"`)) + "." + parts[2]
		}, reason: ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec(t)
			if tt.spec != nil {
				tt.spec(&s)
			}
			proof := s.build(t)
			if tt.proof != nil {
				proof = tt.proof(proof)
			}
			c := baseCheck
			if tt.check != nil {
				tt.check(&c)
			}
			v := newVerifier(t0)
			if tt.ver != nil {
				tt.ver(v)
			}
			p, err := v.Verify(context.Background(), proof, c)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if p.JTI != s.claims["jti"] {
					t.Errorf("jti = %q", p.JTI)
				}
				return
			}
			code := tt.code
			if code == "" {
				code = CodeInvalidProof
			}
			wantReason(t, err, code, tt.reason)
			if code == CodeUseNonce && !errors.Is(err, ErrUseNonce) || code == CodeInvalidProof && !errors.Is(err, ErrInvalidProof) {
				t.Errorf("errors.Is(%v, sentinel for %s) = false", err, code)
			}
			if p != nil {
				t.Errorf("rejected proof returned %+v", p)
			}
			if msg := err.Error(); len(proof) > 8 && strings.Contains(msg, proof) || strings.Contains(msg, testToken) {
				t.Errorf("error text leaks the proof or token: %q", msg)
			}
		})
	}
}

func mustSigner(t testing.TB, key crypto.Signer) *Signer {
	t.Helper()
	s, err := NewSigner(key)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}

func mustP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(getKeys(t).p256.Curve, randReader{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifyReplay(t *testing.T) {
	s := mustSigner(t, getKeys(t).p256)
	clk := &clock{t: t0}
	v := &Verifier{Now: clk.Now, Replay: NewMemoryReplayCache(clk.Now)}
	proof, err := s.ProofAt(testMethod, testURL, testToken, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	c := Check{Method: testMethod, URL: testURL, AccessToken: testToken}
	if _, err := v.Verify(context.Background(), proof, c); err != nil {
		t.Fatalf("first use: %v", err)
	}
	for _, d := range []time.Duration{0, time.Second, DefaultMaxAge - time.Second} {
		clk.Add(d)
		_, err := v.Verify(context.Background(), proof, c)
		wantReason(t, err, CodeInvalidProof, ReasonReplay)
		if !errors.Is(err, ErrReplay) {
			t.Errorf("errors.Is(err, ErrReplay) = false")
		}
	}
	clk.Add(time.Second) // past MaxAge: too old, whatever the cache says
	_, err = v.Verify(context.Background(), proof, c)
	wantReason(t, err, CodeInvalidProof, ReasonTooOld)
}

// A forged proof that reuses a victim's jti must neither be accepted nor
// burn the jti: the cache is written only after the signature verified.
func TestVerifyForgeryDoesNotPoisonCache(t *testing.T) {
	victim := baseSpec(t)
	victim.claims["jti"] = "victim-jti"
	genuine := victim.build(t)

	parts := strings.Split(genuine, ".")
	forged := parts[0] + "." + parts[1] + "." + enc(signRaw(t, mustP256(t), "ES256", "something else"))
	attacker := victim
	attacker.key = mustP256(t)
	attacker.header = map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": jwkJSON(t, attacker.key)}
	attackerProof := attacker.build(t)

	cache := &recordingCache{}
	v := &Verifier{Now: fixed(t0), Replay: cache}
	c := Check{Method: testMethod, URL: testURL, AccessToken: testToken}
	_, err := v.Verify(context.Background(), forged, c)
	wantReason(t, err, CodeInvalidProof, ReasonSignature)
	if len(cache.keys) != 0 {
		t.Fatalf("forged proof recorded %v", cache.keys)
	}
	// An attacker's own key with the victim's jti gets its own cache slot.
	if _, err := v.Verify(context.Background(), attackerProof, c); err != nil {
		t.Fatalf("attacker proof (valid by itself): %v", err)
	}
	p, err := v.Verify(context.Background(), genuine, c)
	if err != nil {
		t.Fatalf("genuine proof after forgery: %v", err)
	}
	want := "dpop:" + p.JKT + ":victim-jti"
	if len(cache.keys) != 2 || cache.keys[1] != want {
		t.Errorf("cache keys = %q, want second %q", cache.keys, want)
	}
	if wantExp := t0.Add(DefaultMaxAge + DefaultLeeway); !cache.exps[1].Equal(wantExp) {
		t.Errorf("exp = %v, want iat+MaxAge+Leeway = %v", cache.exps[1], wantExp)
	}
}

func TestVerifyReplayCacheFailureFailsClosed(t *testing.T) {
	down := errors.New("redis: connection refused")
	v := &Verifier{Now: fixed(t0), Replay: &recordingCache{err: down}}
	proof := baseSpec(t).build(t)
	_, err := v.Verify(context.Background(), proof, Check{Method: testMethod, URL: testURL, AccessToken: testToken})
	var e *Error
	if err == nil || errors.As(err, &e) || !errors.Is(err, down) {
		t.Fatalf("err = %v, want internal error wrapping the cache failure", err)
	}
}

func TestVerifyMisconfigured(t *testing.T) {
	proof := baseSpec(t).build(t)
	var e *Error
	if _, err := (&Verifier{Now: fixed(t0)}).Verify(context.Background(), proof, Check{Method: testMethod, URL: testURL}); err == nil || errors.As(err, &e) {
		t.Errorf("nil Replay: err = %v, want internal error", err)
	}
	if _, err := newVerifier(t0).Verify(context.Background(), proof, Check{Method: testMethod, URL: "/api/items"}); err == nil || errors.As(err, &e) {
		t.Errorf("relative Check.URL: err = %v, want internal error", err)
	}
}

func TestVerifyDuplicateMembers(t *testing.T) {
	k := getKeys(t)
	jwk := string(jwkJSON(t, k.p256))
	iat := fmt.Sprint(t0.Unix())
	goodHeader := `{"typ":"dpop+jwt","alg":"ES256","jwk":` + jwk + `}`
	goodClaims := `{"jti":"a","htm":"GET","htu":"` + testURL + `","iat":` + iat + `}`
	tests := []struct {
		name, header, claims string
		reason               Reason
	}{
		{"baseline", goodHeader, goodClaims, ""},
		{"escaped names and values", `{"t\u0079p":"dpop\u002bjwt","alg":"ES256","jwk":` + jwk + `}`, `{"jti":"a\"b","htm":"GET","htu":"https:\/\/rs.example.com\/api\/items","iat":` + iat + `}`, ""},
		{"duplicate alg", `{"typ":"dpop+jwt","alg":"none","alg":"ES256","jwk":` + jwk + `}`, goodClaims, ReasonMalformed},
		{"duplicate typ via escape", `{"typ":"dpop+jwt","t\u0079p":"JWT","alg":"ES256","jwk":` + jwk + `}`, goodClaims, ReasonMalformed},
		{"duplicate htu", goodHeader, `{"jti":"a","htm":"GET","htu":"https://evil.example/","htu":"` + testURL + `","iat":` + iat + `}`, ReasonMalformed},
		{"duplicate jwk member", `{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","kty":"oct"}}`, goodClaims, ReasonKey},
		{"invalid UTF-8", goodHeader, "{\"jti\":\"\xff\",\"htm\":\"GET\",\"htu\":\"" + testURL + "\",\"iat\":" + iat + "}", ReasonMalformed},
		{"too many members", goodHeader, `{"jti":"a","htm":"GET","htu":"` + testURL + `","iat":` + iat + strings.Repeat(`,"x`+"\"", 0) + manyMembers(70) + `}`, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proof := craft(t, k.p256, "ES256", []byte(tt.header), []byte(tt.claims))
			_, err := newVerifier(t0).Verify(context.Background(), proof, Check{Method: "GET", URL: testURL})
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			wantReason(t, err, CodeInvalidProof, tt.reason)
		})
	}
}

func manyMembers(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `,"m%d":%d`, i, i)
	}
	return b.String()
}

func TestErrorIs(t *testing.T) {
	e := useNonce(ReasonNonceMissing, "x")
	if !errors.Is(e, ErrUseNonce) || errors.Is(e, ErrInvalidProof) || !IsUseNonce(e) {
		t.Errorf("use_dpop_nonce error matching is wrong")
	}
	wrapped := fmt.Errorf("token endpoint: %w", invalid(ReasonReplay, "y"))
	if !errors.Is(wrapped, ErrInvalidProof) || errors.Is(wrapped, ErrUseNonce) || IsUseNonce(wrapped) {
		t.Errorf("invalid_dpop_proof error matching is wrong")
	}
	if got := e.Error(); got != "use_dpop_nonce: x" {
		t.Errorf("Error() = %q", got)
	}
}
