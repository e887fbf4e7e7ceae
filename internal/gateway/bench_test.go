package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkGatewayProxy measures one GET end to end over loopback:
//
//   - direct: client -> upstream (the baseline);
//   - gateway: client -> gateway -> upstream with a DPoP-bound Ward token,
//     each request with its own proof (signed before the timer starts):
//     token and proof verification, replay cache, CAE lookup, scope,
//     Ward-Identity signing, header rewriting and the second hop;
//   - crypto: the raw cryptography the gateway must do per request, two
//     P-256 verifications (token, proof) and one ES256 signature
//     (Ward-Identity), for reference.
//
// All three run in the same process against the same upstream.
func BenchmarkGatewayProxy(b *testing.B) {
	in := startWard(b)
	up := newUpstream(b, "docs")
	up.mu.Lock()
	up.record = false
	up.mu.Unlock()
	g := startGateway(b, routesConfig, map[string]any{"Issuer": in.URL, "Docs": up.URL, "Admin": up.URL, "Extra": ""}, gwOptions{})
	s := newSigner(b)
	tok := serviceToken(b, in, s, "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	send := func(b *testing.B, req *http.Request) {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}

	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodGet, up.URL+"/x", nil)
			send(b, req)
		}
	})
	b.Run("gateway", func(b *testing.B) {
		b.ReportAllocs()
		proofs := make([]string, b.N)
		for i := range proofs {
			p, err := s.Proof(http.MethodGet, g.URL+"/docs/x", tok, "")
			if err != nil {
				b.Fatal(err)
			}
			proofs[i] = p
		}
		b.ResetTimer()
		for i := range b.N {
			req, _ := http.NewRequest(http.MethodGet, g.URL+"/docs/x", nil)
			req.Header.Set("Authorization", "DPoP "+tok)
			req.Header.Set("DPoP", proofs[i])
			send(b, req)
		}
	})
	b.Run("crypto", func(b *testing.B) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		digest := sha256.Sum256([]byte(tok))
		sig, _ := ecdsa.SignASN1(rand.Reader, k, digest[:])
		signer, err := newIdentitySigner(k)
		if err != nil {
			b.Fatal(err)
		}
		claims := &IdentityClaims{Issuer: g.URL, Audience: up.URL, Subject: "service", ClientID: "service",
			Scope: "docs.read docs.write", IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Unix() + 60, JTI: newJTI()}
		b.ReportAllocs()
		for b.Loop() {
			for range 2 {
				d := sha256.Sum256([]byte(tok))
				if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
					b.Fatal("verify")
				}
			}
			if _, err := signer.sign(claims); err != nil {
				b.Fatal(err)
			}
		}
	})
}
