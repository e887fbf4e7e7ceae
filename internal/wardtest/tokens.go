package wardtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ward-idp/ward/dpop"
)

// JWTClaims decodes a compact JWT's payload without verifying it (tests
// look at what Ward issued; verification is tested where it happens).
func JWTClaims(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return jwtPart(t, jwt, 1)
}

// JWTHeader decodes a compact JWT's JOSE header without verifying it.
func JWTHeader(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return jwtPart(t, jwt, 0)
}

// JWTClaim returns a string claim of a JWT ("" when absent or not a
// string), without verifying it.
func JWTClaim(t testing.TB, jwt, name string) string {
	t.Helper()
	s, _ := JWTClaims(t, jwt)[name].(string)
	return s
}

func jwtPart(t testing.TB, jwt string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWT (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("JWT part %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("JWT part %d: %v", i, err)
	}
	return m
}

// NewSigner returns a DPoP signer with a fresh P-256 key (a device or
// client key, or an attacker's).
func NewSigner(t testing.TB) *dpop.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ForgeSET signs claims as a Security Event Token (ES256, typ
// secevent+jwt) with a fresh key that is not Ward's: what an attacker who
// can write to a transport, but holds no signing key, would send.
func ForgeSET(t testing.TB, claims map[string]any) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "secevent+jwt", "kid": "attacker"})
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return []byte(in + "." + base64.RawURLEncoding.EncodeToString(sig))
}
