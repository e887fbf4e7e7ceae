package wardtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
