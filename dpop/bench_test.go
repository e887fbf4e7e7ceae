package dpop

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkECDSAP256Verify is the floor: one raw P-256 signature check on
// a precomputed digest, the unavoidable cost inside every proof check.
func BenchmarkECDSAP256Verify(b *testing.B) {
	key := getKeys(b).p256
	digest := sha256.Sum256([]byte("eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJqdGkiOiJ4In0"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkVerifyProof is a full server-side check of fresh ES256 proofs
// (distinct jti, with ath and JKT) including the memory replay cache.
func BenchmarkVerifyProof(b *testing.B) {
	s := mustSigner(b, getKeys(b).p256)
	now := time.Now()
	proofs := make([]string, b.N)
	for i := range proofs {
		p, err := s.ProofAt("GET", testURL, testToken, "", now)
		if err != nil {
			b.Fatal(err)
		}
		proofs[i] = p
	}
	v := &Verifier{Now: fixed(now), Replay: NewMemoryReplayCache(fixed(now))}
	c := Check{Method: "GET", URL: testURL, AccessToken: testToken, JKT: s.Thumbprint()}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Verify(ctx, proofs[i], c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignerProof is the client cost of one ES256 proof.
func BenchmarkSignerProof(b *testing.B) {
	s := mustSigner(b, getKeys(b).p256)
	b.ReportAllocs()
	for range b.N {
		if _, err := s.Proof("GET", testURL, testToken, ""); err != nil {
			b.Fatal(err)
		}
	}
}
