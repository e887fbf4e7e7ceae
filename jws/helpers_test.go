package jws

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
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

// vectorsDir is the folder of specification examples (see
// testdata/README.md for their sources). Missing vectors are a broken
// checkout, not a reason to skip.
func vectorsDir(tb testing.TB) string {
	tb.Helper()
	dir := "testdata"
	if _, err := os.Stat(filepath.Join(dir, "rfc7520")); err != nil {
		tb.Fatalf("RFC test vectors not found at %s: %v", dir, err)
	}
	return dir
}

// cookbookJWS is one RFC 7520 §4 example.
type cookbookJWS struct {
	Input struct {
		Alg string         `json:"alg"`
		Key map[string]any `json:"key"`
	} `json:"input"`
	Output struct {
		Compact string `json:"compact"`
	} `json:"output"`
}

func loadCookbook(tb testing.TB, name string) cookbookJWS {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir(tb), "rfc7520", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	var c cookbookJWS
	if err := json.Unmarshal(data, &c); err != nil {
		tb.Fatal(err)
	}
	return c
}

// rfc9449Proofs are the example DPoP proofs of RFC 9449.
func rfc9449Proofs(tb testing.TB) []string {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir(tb), "rfc9449", "jwts.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string][]string
	if err := json.Unmarshal(data, &m); err != nil {
		tb.Fatal(err)
	}
	var out []string
	for name, vs := range m {
		if name != "block" { // nonce values, not JWTs
			out = append(out, vs...)
		}
	}
	return out
}
