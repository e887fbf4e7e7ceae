package tokens

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// The raw benchmarks measure the floor: SHA-256 over a signing input of
// the size of a real access token plus one ECDSA P-256 operation. Mint and
// Parse are reported against them (docs/benchmarks.md).

func benchSigningInput(b *testing.B, f *fixture) (string, *ecdsa.PrivateKey) {
	b.Helper()
	tok, err := f.m.MintAccessToken(validClaims(f.clock.Now()))
	if err != nil {
		b.Fatal(err)
	}
	return tok[:strings.LastIndexByte(tok, '.')], f.m.state.Load().signer.priv
}

func BenchmarkECDSAP256Sign(b *testing.B) {
	in, priv := benchSigningInput(b, newFixture(b))
	b.ReportAllocs()
	for b.Loop() {
		d := sha256.Sum256([]byte(in))
		if _, err := ecdsa.SignASN1(rand.Reader, priv, d[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkECDSAP256Verify(b *testing.B) {
	in, priv := benchSigningInput(b, newFixture(b))
	d := sha256.Sum256([]byte(in))
	sig, err := ecdsa.SignASN1(rand.Reader, priv, d[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		d := sha256.Sum256([]byte(in))
		if !ecdsa.VerifyASN1(&priv.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

func BenchmarkMintAccessToken(b *testing.B) {
	f := newFixture(b)
	c := validClaims(f.clock.Now())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.m.MintAccessToken(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAccessToken(b *testing.B) {
	f := newFixture(b)
	now := f.clock.Now()
	tok, err := f.m.MintAccessToken(validClaims(now))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.m.ParseAccessToken(tok, testIssuer, now); err != nil {
			b.Fatal(err)
		}
	}
}

// The go-jose benchmarks do the same work through go-jose (cached signer;
// ParseSigned with the algorithm list, Verify, json.Unmarshal) to show
// what the lean codec saves.

func BenchmarkGoJoseMintAccessToken(b *testing.B) {
	f := newFixture(b)
	s := f.m.state.Load().signer
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.priv},
		(&jose.SignerOptions{}).WithType(TypeAccessToken).WithHeader("kid", s.kid))
	if err != nil {
		b.Fatal(err)
	}
	c := validClaims(f.clock.Now())
	b.ReportAllocs()
	for b.Loop() {
		payload, err := json.Marshal(c)
		if err != nil {
			b.Fatal(err)
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := jws.CompactSerialize(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoJoseParseAccessToken(b *testing.B) {
	f := newFixture(b)
	now := f.clock.Now()
	tok, err := f.m.MintAccessToken(validClaims(now))
	if err != nil {
		b.Fatal(err)
	}
	pub := &f.m.state.Load().signer.priv.PublicKey
	algs := []jose.SignatureAlgorithm{jose.ES256}
	b.ReportAllocs()
	for b.Loop() {
		jws, err := jose.ParseSignedCompact(tok, algs)
		if err != nil {
			b.Fatal(err)
		}
		payload, err := jws.Verify(pub)
		if err != nil {
			b.Fatal(err)
		}
		var c AccessClaims
		if err := json.Unmarshal(payload, &c); err != nil {
			b.Fatal(err)
		}
		if err := c.validate(testIssuer, now); err != nil {
			b.Fatal(err)
		}
	}
}
