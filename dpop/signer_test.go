package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestSignerRoundTrip(t *testing.T) {
	k := getKeys(t)
	tests := []struct {
		name string
		key  crypto.Signer
		alg  jose.SignatureAlgorithm
	}{
		{"P-256", k.p256, jose.ES256},
		{"P-384", k.p384, jose.ES384},
		{"P-521", k.p521, jose.ES512},
		{"Ed25519", k.ed, jose.EdDSA},
		{"RSA-2048", k.rsa2048, jose.PS256},
	}
	nonces := NewHMACNonces([]byte("0123456789abcdef0123456789abcdef"), 0, fixed(t0))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSigner(t, tt.key)
			if s.Algorithm() != tt.alg {
				t.Fatalf("Algorithm = %s, want %s", s.Algorithm(), tt.alg)
			}
			jwk := s.PublicJWK()
			if !jwk.IsPublic() {
				t.Fatalf("PublicJWK is not public")
			}
			goJose, err := jwk.Thumbprint(crypto.SHA256)
			if err != nil || enc(goJose) != s.Thumbprint() {
				t.Fatalf("Thumbprint = %s, go-jose %s (%v)", s.Thumbprint(), enc(goJose), err)
			}
			nonce := nonces.Nonce()
			proof, err := s.ProofAt("POST", "https://as.example.com/token?x=1#frag", testToken, nonce, t0)
			if err != nil {
				t.Fatalf("ProofAt: %v", err)
			}
			v := &Verifier{Now: fixed(t0), Replay: NewMemoryReplayCache(fixed(t0)), Nonces: nonces}
			p, err := v.Verify(context.Background(), proof, Check{
				Method: "POST", URL: "https://as.example.com/token", AccessToken: testToken,
				JKT: s.Thumbprint(), RequireNonce: true,
			})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if p.HTU != "https://as.example.com/token" || p.HTM != "POST" || p.Nonce != nonce ||
				p.ATH != AccessTokenHash(testToken) || !p.IssuedAt.Equal(t0) || p.Alg != string(tt.alg) || p.JKT != s.Thumbprint() {
				t.Errorf("proof = %+v", p)
			}
			if len(p.JTI) < 16 {
				t.Errorf("jti %q is too short for 96 bits", p.JTI)
			}
			if jkt, _ := Thumbprint(&p.JWK); jkt != s.Thumbprint() {
				t.Errorf("Thumbprint(p.JWK) = %s", jkt)
			}

			// Differential check: go-jose parses and verifies the same proof
			// with the allowed-algorithm list, and sees the same header.
			jws, err := jose.ParseSignedCompact(proof, DefaultAlgs)
			if err != nil {
				t.Fatalf("go-jose parse: %v", err)
			}
			payload, err := jws.Verify(&jwk)
			if err != nil {
				t.Fatalf("go-jose verify: %v", err)
			}
			h := jws.Signatures[0].Protected
			if h.Algorithm != string(tt.alg) || h.ExtraHeaders["typ"] != "dpop+jwt" || h.JSONWebKey == nil {
				t.Errorf("go-jose header = %+v", h)
			}
			var claims map[string]any
			if err := json.Unmarshal(payload, &claims); err != nil || claims["jti"] != p.JTI {
				t.Errorf("go-jose payload = %s", payload)
			}

			// A second proof has a new jti and verifies too.
			proof2, err := s.ProofAt("POST", "https://as.example.com/token", testToken, nonce, t0)
			if err != nil {
				t.Fatal(err)
			}
			p2, err := v.Verify(context.Background(), proof2, Check{Method: "POST", URL: "https://as.example.com/token", AccessToken: testToken})
			if err != nil || p2.JTI == p.JTI {
				t.Errorf("second proof: %v, jti %q vs %q", err, p2.JTI, p.JTI)
			}
		})
	}
}

func TestSignerProofUsesNow(t *testing.T) {
	s := mustSigner(t, getKeys(t).ed)
	proof, err := s.Proof("GET", testURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Replay: NewMemoryReplayCache(nil)}
	p, err := v.Verify(context.Background(), proof, Check{Method: "GET", URL: testURL})
	if err != nil {
		t.Fatalf("Verify with real clock: %v", err)
	}
	if d := time.Since(p.IssuedAt); d < -time.Second || d > time.Minute {
		t.Errorf("iat %v is not now", p.IssuedAt)
	}
	if p.ATH != "" || p.Nonce != "" {
		t.Errorf("unexpected ath/nonce: %+v", p)
	}
	_, claims := decodeParts(t, proof)
	if strings.Contains(claims, `"ath"`) || strings.Contains(claims, `"nonce"`) {
		t.Errorf("empty ath/nonce serialised: %s", claims)
	}
}

func TestNewSignerRejects(t *testing.T) {
	k := getKeys(t)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{
		"nil":      nil,
		"RSA-1024": k.rsa1024,
		"P-224":    p224,
	} {
		if _, err := NewSigner(key); err == nil {
			t.Errorf("NewSigner(%s) succeeded", name)
		}
	}
	s := mustSigner(t, k.p256)
	for _, u := range []string{"", "/token", "ftp://as.example.com/x", "https://u:p@as.example.com/"} {
		if _, err := s.Proof("POST", u, "", ""); err == nil {
			t.Errorf("Proof(%q) succeeded", u)
		}
	}
	if _, err := s.Proof("", testURL, "", ""); err == nil {
		t.Errorf("Proof with empty method succeeded")
	}
}

// The header a Signer writes is minimal: typ, alg and the bare public key.
func TestSignerHeader(t *testing.T) {
	s := mustSigner(t, getKeys(t).p256)
	proof, err := s.ProofAt("GET", testURL, "", "", t0)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := decodeParts(t, proof)
	var h map[string]json.RawMessage
	if err := json.Unmarshal([]byte(hdr), &h); err != nil {
		t.Fatal(err)
	}
	var jwk map[string]string
	if err := json.Unmarshal(h["jwk"], &jwk); err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || string(h["typ"]) != `"dpop+jwt"` || string(h["alg"]) != `"ES256"` {
		t.Errorf("header = %s", hdr)
	}
	if len(jwk) != 4 || jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk["d"] != "" {
		t.Errorf("jwk = %v", jwk)
	}
}

func decodeParts(t testing.TB, proof string) (header, claims string) {
	t.Helper()
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		t.Fatalf("proof has %d parts", len(parts))
	}
	h, err1 := b64.DecodeString(parts[0])
	c, err2 := b64.DecodeString(parts[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("decode: %v %v", err1, err2)
	}
	return string(h), string(c)
}
