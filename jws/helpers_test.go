package jws

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// testKeys holds one private key per key family. The EC and Ed25519 keys
// are fixed, so that fuzz inputs signed in the target reproduce; the RSA
// key is generated once per process.
type testKeys struct {
	p256, p384, p521 *ecdsa.PrivateKey
	rsa              *rsa.PrivateKey
	ed               ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
)

func fixedEC(tb testing.TB, c elliptic.Curve, size int, b byte) *ecdsa.PrivateKey {
	d := bytes.Repeat([]byte{b}, size)
	d[0] = 1 // below the order of every curve
	k, err := ecdsa.ParseRawPrivateKey(c, d)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func getKeys(tb testing.TB) *testKeys {
	keysOnce.Do(func() {
		keys.p256 = fixedEC(tb, elliptic.P256(), 32, 0x42)
		keys.p384 = fixedEC(tb, elliptic.P384(), 48, 0x43)
		keys.p521 = fixedEC(tb, elliptic.P521(), 66, 0x44)
		keys.ed = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x45}, 32))
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			tb.Fatal(err)
		}
		keys.rsa = k
	})
	return &keys
}

// signer returns the test key for alg.
func (k *testKeys) signer(alg Algorithm) crypto.Signer {
	switch alg {
	case ES256:
		return k.p256
	case ES384:
		return k.p384
	case ES512:
		return k.p521
	case EdDSA:
		return k.ed
	}
	return k.rsa
}

// publics are the public test keys, each with its go-jose form.
func (k *testKeys) publics() []crypto.PublicKey {
	return []crypto.PublicKey{&k.p256.PublicKey, &k.p384.PublicKey, &k.p521.PublicKey, &k.rsa.PublicKey, k.ed.Public()}
}

// sign makes a compact JWS of the raw header and payload bytes.
func sign(tb testing.TB, alg Algorithm, key crypto.Signer, header, payload []byte) string {
	tb.Helper()
	in := append(AppendSegment(nil, header), '.')
	in = AppendSegment(in, payload)
	out, err := AppendSign(in, alg, key, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

// canonJWK is the canonical JWK JSON of key's public half.
func canonJWK(tb testing.TB, key crypto.Signer) string {
	tb.Helper()
	c, err := CanonicalJWK(key.Public())
	if err != nil {
		tb.Fatal(err)
	}
	return string(c)
}

// joseAlgs is every algorithm, for go-jose.
func joseAlgs() []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	for _, a := range Algorithms() {
		out = append(out, jose.SignatureAlgorithm(a))
	}
	return out
}
