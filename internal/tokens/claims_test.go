package tokens

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

const testIssuer = "https://idp.example.com"

func validClaims(now time.Time) *AccessClaims {
	return &AccessClaims{
		Issuer:    testIssuer,
		Subject:   "user-1",
		Audience:  Audience{"https://api.example.com"},
		ExpiresAt: now.Add(4 * time.Hour).Unix(),
		IssuedAt:  now.Unix(),
		JTI:       "jti-" + b64.EncodeToString([]byte(now.String())),
		ClientID:  "client-1",
		Scope:     "openid api.read",
		SID:       "sid-1",
		AuthTime:  now.Add(-time.Minute).Unix(),
		ACR:       "urn:ward:acr:mfa",
		AMR:       []string{"pwd", "otp"},
		Cnf:       &Confirmation{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
		DeviceID:  "dev-1",
	}
}

func TestAccessTokenRoundTrip(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	want := validClaims(now)
	tok, err := f.m.MintAccessToken(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.m.ParseAccessToken(tok, testIssuer, now)
	if err != nil {
		t.Fatalf("ParseAccessToken: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims round trip:\n got %+v\nwant %+v", got, want)
	}
	if got.Cnf == nil || got.Cnf.JKT != want.Cnf.JKT {
		t.Errorf("cnf.jkt = %+v, want %q", got.Cnf, want.Cnf.JKT)
	}

	// Header is exactly {alg, kid, typ}.
	hdr := decodeSegment(t, tok, 0)
	wantHdr := map[string]any{"alg": "ES256", "kid": f.m.ActiveKID(), "typ": "at+jwt"}
	if !reflect.DeepEqual(hdr, wantHdr) {
		t.Errorf("header = %v, want %v", hdr, wantHdr)
	}
	// Wire names (RFC 9068, RFC 9449 §6.1).
	p := decodeSegment(t, tok, 1)
	if p["aud"] != "https://api.example.com" {
		t.Errorf("aud on the wire = %#v, want a single string", p["aud"])
	}
	if cnf, _ := p["cnf"].(map[string]any); cnf["jkt"] != want.Cnf.JKT {
		t.Errorf("cnf on the wire = %#v", p["cnf"])
	}
	for _, k := range []string{"iss", "sub", "exp", "iat", "jti", "client_id", "scope", "sid", "auth_time", "acr", "amr", "did"} {
		if _, ok := p[k]; !ok {
			t.Errorf("claim %q missing on the wire", k)
		}
	}
	if _, ok := p["nbf"]; ok {
		t.Error("nbf present though zero")
	}

	// Interop: go-jose verifies our token against our JWKS.
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	set := f.m.JWKS()
	if _, err := jws.Verify(set.Key(f.m.ActiveKID())[0]); err != nil {
		t.Errorf("go-jose cannot verify our token: %v", err)
	}
}

func TestVerifyAcceptsForeignEncoderAndTypVariants(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	priv := f.m.state.Load().signer.priv
	kid := f.m.ActiveKID()
	payload, _ := json.Marshal(validClaims(now))
	for _, typ := range []string{"at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"} {
		tok := goJoseSign(t, priv, map[jose.HeaderKey]any{"kid": kid, "typ": typ}, payload)
		if _, err := f.m.ParseAccessToken(tok, testIssuer, now); err != nil {
			t.Errorf("typ %q: %v", typ, err)
		}
	}
	// And the typ argument may use either form.
	tok, _ := f.m.MintAccessToken(validClaims(now))
	if err := f.m.Verify(tok, "application/AT+JWT", nil); err != nil {
		t.Errorf("Verify with typ application/AT+JWT: %v", err)
	}
}

func TestAccessTokenAttacks(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	priv := f.m.state.Load().signer.priv
	kid := f.m.ActiveKID()
	good, err := f.m.MintAccessToken(validClaims(now))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	claimsJSON := func(mod func(*AccessClaims)) []byte {
		c := validClaims(now)
		if mod != nil {
			mod(c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mint := func(mod func(*AccessClaims)) string {
		c := validClaims(now)
		mod(c)
		tok, err := f.m.MintAccessToken(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	stdHeader := func(extra string) string {
		return b64.EncodeToString([]byte(`{"alg":"ES256","kid":"` + kid + `","typ":"at+jwt"` + extra + `}`))
	}
	pubJWK := f.st.get(kid).PublicJWK
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	idTok, err := f.m.MintIDToken(&IDClaims{Issuer: testIssuer, Subject: "user-1", Audience: Audience{"client-1"}, ExpiresAt: now.Add(time.Hour).Unix(), IssuedAt: now.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	accessClaimsAsJWT, err := f.m.Sign(TypeIDToken, validClaims(now))
	if err != nil {
		t.Fatal(err)
	}
	flipped := flipSignatureBit(t, parts[2])

	tests := []struct {
		name  string
		token string
		want  error // a more specific error than ErrInvalidToken, when useful
	}{
		{"tampered payload", parts[0] + "." + b64.EncodeToString(claimsJSON(func(c *AccessClaims) { c.Subject = "admin" })) + "." + parts[2], errSignature},
		{"tampered cnf removed", parts[0] + "." + b64.EncodeToString(claimsJSON(func(c *AccessClaims) { c.Cnf = nil })) + "." + parts[2], errSignature},
		{"tampered signature", parts[0] + "." + parts[1] + "." + flipped, errSignature},
		{"truncated signature", parts[0] + "." + parts[1] + "." + parts[2][:80], errSignature},
		{"empty signature", parts[0] + "." + parts[1] + ".", errSignature},
		{"non-canonical signature base64", parts[0] + "." + parts[1] + "." + nonCanonical(parts[2]), errSignature},
		{"signature as DER", parts[0] + "." + parts[1] + "." + derSignature(t, priv, parts[0]+"."+parts[1]), errSignature},
		{"alg none", b64.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`","typ":"at+jwt"}`)) + "." + parts[1] + ".", errAlg},
		{"alg none, signature kept", b64.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`","typ":"at+jwt"}`)) + "." + parts[1] + "." + parts[2], errAlg},
		{"alg NONE", b64.EncodeToString([]byte(`{"alg":"NONE","kid":"`+kid+`","typ":"at+jwt"}`)) + "." + parts[1] + ".", errAlg},
		{"alg es256 lower-case", resign(t, priv, `{"alg":"es256","kid":"`+kid+`","typ":"at+jwt"}`, parts[1]), errAlg},
		{"HS256 with public JWK as secret", hmacToken(`{"alg":"HS256","kid":"`+kid+`","typ":"at+jwt"}`, parts[1], pubJWK), errAlg},
		{"HS256 with public PEM as secret", hmacToken(`{"alg":"HS256","kid":"`+kid+`","typ":"at+jwt"}`, parts[1], pubPEM), errAlg},
		{"ES384 header", resign(t, priv, `{"alg":"ES384","kid":"`+kid+`","typ":"at+jwt"}`, parts[1]), errAlg},
		{"ID token as access token", idTok, errTyp},
		{"access claims with typ JWT", accessClaimsAsJWT, errTyp},
		{"no typ", resign(t, priv, `{"alg":"ES256","kid":"`+kid+`"}`, parts[1]), errTyp},
		{"typ application/jwt", resign(t, priv, `{"alg":"ES256","kid":"`+kid+`","typ":"application/jwt"}`, parts[1]), errTyp},
		{"typ at+jwt/x", resign(t, priv, `{"alg":"ES256","kid":"`+kid+`","typ":"application/at+jwt/x"}`, parts[1]), errTyp},
		{"crit header", resign(t, priv, `{"alg":"ES256","kid":"`+kid+`","typ":"at+jwt","crit":["exp"],"exp":1}`, parts[1]), errCrit},
		{"unknown kid", resign(t, priv, `{"alg":"ES256","kid":"someone-else","typ":"at+jwt"}`, parts[1]), errUnknownKID},
		{"no kid", resign(t, priv, `{"alg":"ES256","typ":"at+jwt"}`, parts[1]), errUnknownKID},
		{"unrelated key, copied kid", goJoseSign(t, unrelatedKey(t), map[jose.HeaderKey]any{"kid": kid, "typ": "at+jwt"}, []byte(b64decode(t, parts[1]))), errSignature},
		{"unrelated key embedded as jwk", goJoseSignEmbedded(t, unrelatedKey(t), []byte(b64decode(t, parts[1]))), errUnknownKID},
		{"expired", mint(func(c *AccessClaims) { c.ExpiresAt = now.Add(-31 * time.Second).Unix() }), ErrInvalidToken},
		{"expired long ago", mint(func(c *AccessClaims) {
			c.IssuedAt = now.Add(-2 * time.Hour).Unix()
			c.ExpiresAt = now.Add(-time.Hour).Unix()
		}), ErrInvalidToken},
		{"issued in the future", mint(func(c *AccessClaims) { c.IssuedAt = now.Add(time.Minute).Unix() }), ErrInvalidToken},
		{"not yet valid", mint(func(c *AccessClaims) { c.NotBefore = now.Add(time.Minute).Unix() }), ErrInvalidToken},
		{"wrong issuer", mint(func(c *AccessClaims) { c.Issuer = "https://evil.example.com" }), ErrInvalidToken},
		{"issuer with trailing slash", mint(func(c *AccessClaims) { c.Issuer = testIssuer + "/" }), ErrInvalidToken},
		{"missing jti", mint(func(c *AccessClaims) { c.JTI = "" }), errClaimMissing},
		{"missing sub", mint(func(c *AccessClaims) { c.Subject = "" }), errClaimMissing},
		{"missing aud", mint(func(c *AccessClaims) { c.Audience = nil }), errClaimMissing},
		{"empty aud value", mint(func(c *AccessClaims) { c.Audience = Audience{""} }), ErrInvalidToken},
		{"missing exp", mint(func(c *AccessClaims) { c.ExpiresAt = 0 }), errClaimMissing},
		{"missing iat", mint(func(c *AccessClaims) { c.IssuedAt = 0 }), errClaimMissing},
		{"missing client_id", mint(func(c *AccessClaims) { c.ClientID = "" }), errClaimMissing},
		{"payload not JSON", resignRaw(t, priv, stdHeader(""), b64.EncodeToString([]byte("not json"))), errPayload},
		{"aud wrong type", resignRaw(t, priv, stdHeader(""), b64.EncodeToString([]byte(`{"aud":42}`))), errPayload},
		{"two segments", parts[0] + "." + parts[1], errMalformed},
		{"four segments", good + ".x", errMalformed},
		{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, errMalformed},
		{"header not base64", "!!." + parts[1] + "." + parts[2], errHeader},
		{"header not JSON", b64.EncodeToString([]byte("xx")) + "." + parts[1] + "." + parts[2], errHeader},
		{"oversized", parts[0] + "." + strings.Repeat("A", maxTokenSize) + "." + parts[2], errTooLarge},
		{"empty", "", errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := f.m.ParseAccessToken(tt.token, testIssuer, now)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("err = %v, want it to wrap ErrInvalidToken", err)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if c != nil {
				t.Error("claims returned with an error")
			}
			for _, seg := range strings.Split(tt.token, ".") {
				if len(seg) > 8 && strings.Contains(err.Error(), seg) {
					t.Errorf("error message contains the token: %v", err)
				}
			}
		})
	}
}

func TestAccessTokenClockSkew(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	tests := []struct {
		name string
		mod  func(*AccessClaims)
		ok   bool
	}{
		{"expired 29s ago (within skew)", func(c *AccessClaims) { c.ExpiresAt = now.Add(-29 * time.Second).Unix() }, true},
		{"expired 30s ago", func(c *AccessClaims) { c.ExpiresAt = now.Add(-30 * time.Second).Unix() }, false},
		{"iat 30s ahead", func(c *AccessClaims) { c.IssuedAt = now.Add(30 * time.Second).Unix() }, true},
		{"iat 31s ahead", func(c *AccessClaims) { c.IssuedAt = now.Add(31 * time.Second).Unix() }, false},
		{"nbf 30s ahead", func(c *AccessClaims) { c.NotBefore = now.Add(30 * time.Second).Unix() }, true},
		{"nbf 31s ahead", func(c *AccessClaims) { c.NotBefore = now.Add(31 * time.Second).Unix() }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validClaims(now)
			tt.mod(c)
			tok, err := f.m.MintAccessToken(c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.m.ParseAccessToken(tok, testIssuer, now)
			if got := err == nil; got != tt.ok {
				t.Errorf("accepted = %v, want %v (err %v)", got, tt.ok, err)
			}
		})
	}
}

func TestIDToken(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	at, err := f.m.MintAccessToken(validClaims(now))
	if err != nil {
		t.Fatal(err)
	}
	for _, aud := range []Audience{{"client-1"}, {"client-1", "client-2"}} {
		want := &IDClaims{
			Issuer: testIssuer, Subject: "user-1", Audience: aud,
			ExpiresAt: now.Add(time.Hour).Unix(), IssuedAt: now.Unix(), AuthTime: now.Add(-time.Minute).Unix(),
			Nonce: "n-0S6_WzA2Mj", ACR: "urn:ward:acr:mfa", AMR: []string{"pwd"}, AZP: "client-1", SID: "sid-1",
			AtHash: AtHash(at), Name: "Ada", PreferredUsername: "ada", Email: "ada@example.com",
		}
		tok, err := f.m.MintIDToken(want)
		if err != nil {
			t.Fatal(err)
		}
		if h := decodeSegment(t, tok, 0); h["typ"] != "JWT" {
			t.Errorf("typ = %v, want JWT", h["typ"])
		}
		p := decodeSegment(t, tok, 1)
		if p["at_hash"] != AtHash(at) || p["nonce"] != "n-0S6_WzA2Mj" || p["sid"] != "sid-1" {
			t.Errorf("payload at_hash/nonce/sid = %v/%v/%v", p["at_hash"], p["nonce"], p["sid"])
		}
		for _, k := range []string{"preferred_username", "azp", "auth_time", "email", "name", "acr", "amr"} {
			if _, ok := p[k]; !ok {
				t.Errorf("claim %q missing", k)
			}
		}
		if len(aud) == 1 {
			if p["aud"] != aud[0] {
				t.Errorf("single aud on the wire = %#v, want string", p["aud"])
			}
		} else if _, ok := p["aud"].([]any); !ok {
			t.Errorf("multiple aud on the wire = %#v, want array", p["aud"])
		}
		var got IDClaims
		if err := f.m.Verify(tok, TypeIDToken, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, *want)
		}
		if err := f.m.Verify(tok, TypeAccessToken, nil); !errors.Is(err, errTyp) {
			t.Errorf("ID token verified as at+jwt: %v", err)
		}
	}
	// Optional claims are omitted when empty.
	tok, _ := f.m.MintIDToken(&IDClaims{Issuer: testIssuer, Subject: "u", Audience: Audience{"c"}, ExpiresAt: 2, IssuedAt: 1})
	p := decodeSegment(t, tok, 1)
	for _, k := range []string{"nonce", "at_hash", "sid", "azp", "auth_time", "acr", "amr", "name", "preferred_username", "email"} {
		if _, ok := p[k]; ok {
			t.Errorf("empty %q present", k)
		}
	}
}

func TestAtHash(t *testing.T) {
	// OpenID Connect Core 1.0 Appendix A.3/A.4 (SHA-256 based at_hash).
	if got, want := AtHash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ"; got != want {
		t.Errorf("AtHash = %q, want %q", got, want)
	}
}

func TestAudienceJSON(t *testing.T) {
	marshal := []struct {
		in   Audience
		want string
	}{
		{Audience{"a"}, `"a"`},
		{Audience{"a", "b"}, `["a","b"]`},
		{Audience{}, `[]`},
		{nil, `[]`},
	}
	for _, tt := range marshal {
		b, err := json.Marshal(tt.in)
		if err != nil || string(b) != tt.want {
			t.Errorf("Marshal(%#v) = %s, %v; want %s", tt.in, b, err, tt.want)
		}
	}
	unmarshal := []struct {
		in   string
		want Audience
		err  bool
	}{
		{`"a"`, Audience{"a"}, false},
		{`["a"]`, Audience{"a"}, false},
		{`["a","b"]`, Audience{"a", "b"}, false},
		{`[]`, Audience{}, false},
		{`42`, nil, true},
		{`[1]`, nil, true},
		{`{"a":1}`, nil, true},
	}
	for _, tt := range unmarshal {
		var a Audience
		err := json.Unmarshal([]byte(tt.in), &a)
		if (err != nil) != tt.err || (!tt.err && !reflect.DeepEqual(a, tt.want)) {
			t.Errorf("Unmarshal(%s) = %#v, %v; want %#v err=%v", tt.in, a, err, tt.want, tt.err)
		}
	}
	// Round trip inside a struct.
	for _, aud := range []Audience{{"x"}, {"x", "y"}} {
		b, _ := json.Marshal(AccessClaims{Audience: aud})
		var c AccessClaims
		if err := json.Unmarshal(b, &c); err != nil || !reflect.DeepEqual(c.Audience, aud) {
			t.Errorf("round trip %v: got %v, %v", aud, c.Audience, err)
		}
	}
	if !(Audience{"a", "b"}).Contains("b") || (Audience{"a"}).Contains("b") {
		t.Error("Contains")
	}
}

// --- attacker helpers ---

// b64 is strict unpadded base64url, as tokens are encoded.
var b64 = base64.RawURLEncoding.Strict()

func decodeSegment(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(b64decode(t, strings.Split(tok, ".")[i])), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func b64decode(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func flipSignatureBit(t *testing.T, sig string) string {
	b := []byte(b64decode(t, sig))
	b[10] ^= 1
	return b64.EncodeToString(b)
}

// nonCanonical sets the unused low bits of the last base64 character.
func nonCanonical(sig string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	return sig[:len(sig)-1] + string(alphabet[last|1])
}

// resign signs header JSON and an already encoded payload with priv.
func resign(t *testing.T, priv *ecdsa.PrivateKey, headerJSON, payloadB64 string) string {
	return resignRaw(t, priv, b64.EncodeToString([]byte(headerJSON)), payloadB64)
}

func resignRaw(t *testing.T, priv *ecdsa.PrivateKey, headerB64, payloadB64 string) string {
	t.Helper()
	out, err := jws.AppendSign([]byte(headerB64+"."+payloadB64), jws.ES256, priv, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func derSignature(t *testing.T, priv *ecdsa.PrivateKey, in string) string {
	t.Helper()
	d := sha256.Sum256([]byte(in))
	der, err := ecdsa.SignASN1(rand.Reader, priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(der)
}

func hmacToken(headerJSON, payloadB64 string, key []byte) string {
	in := b64.EncodeToString([]byte(headerJSON)) + "." + payloadB64
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(in))
	return in + "." + b64.EncodeToString(mac.Sum(nil))
}

func goJoseSign(t *testing.T, priv *ecdsa.PrivateKey, headers map[jose.HeaderKey]any, payload []byte) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	for k, v := range headers {
		opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// goJoseSignEmbedded signs with priv and embeds its public key as a jwk
// header (CVE-2018-0114 style): the verifier must ignore it.
func goJoseSignEmbedded(t *testing.T, priv *ecdsa.PrivateKey, payload []byte) string {
	t.Helper()
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType("at+jwt")
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
