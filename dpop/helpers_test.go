package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

// vectorsDir holds the RFC 9449 and RFC 7638 example vectors the tests
// use (testdata/README.md says where each comes from).
const vectorsDir = "testdata"

func loadJWTs(t testing.TB) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, "rfc9449", "jwts.json"))
	if err != nil {
		t.Fatalf("read jwts.json: %v", err)
	}
	var m map[string][]string
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("parse jwts.json: %v", err)
	}
	return m
}

type testKeys struct {
	p256, p384, p521 *ecdsa.PrivateKey
	ed               ed25519.PrivateKey
	rsa2048, rsa1024 *rsa.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
	keysErr  error
)

func getKeys(t testing.TB) *testKeys {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		var errs []error
		keys.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		errs = append(errs, err)
		keys.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		errs = append(errs, err)
		keys.p521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		errs = append(errs, err)
		_, keys.ed, err = ed25519.GenerateKey(rand.Reader)
		errs = append(errs, err)
		keys.rsa2048, err = rsa.GenerateKey(rand.Reader, 2048)
		errs = append(errs, err)
		keys.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024)
		errs = append(errs, err)
		keysErr = errors.Join(errs...)
	})
	if keysErr != nil {
		t.Fatalf("generate keys: %v", keysErr)
	}
	return &keys
}

// t0 is the fixed "now" of most tests.
var t0 = time.Unix(1_800_000_000, 0)

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

// clock is a settable fake clock. dpop is a public package meant to stand
// alone, so its tests keep their own instead of importing an internal one.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newVerifier(now time.Time) *Verifier {
	return &Verifier{Now: fixed(now), Replay: NewMemoryReplayCache(fixed(now))}
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signRaw signs a JWS signing input the way alg prescribes, with no checks,
// so tests can build proofs that are well signed but otherwise wrong.
func signRaw(t testing.TB, key crypto.Signer, alg, input string) []byte {
	t.Helper()
	out, err := jws.AppendSign([]byte(input), jws.Algorithm(alg), key, rand.Reader)
	if err != nil {
		t.Fatalf("signRaw: %v", err)
	}
	sig, err := jws.DecodeSegment(string(out[len(input)+1:])) // input "." signature
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// craft builds a compact JWS from raw header and claims JSON, signed by key
// with alg.
func craft(t testing.TB, key crypto.Signer, alg string, header, claims []byte) string {
	t.Helper()
	input := enc(header) + "." + enc(claims)
	return input + "." + enc(signRaw(t, key, alg, input))
}

// jwkJSON returns the public JWK of key as raw JSON.
func jwkJSON(t testing.TB, key crypto.Signer) json.RawMessage {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key.Public()}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordingCache records calls and can fail.
type recordingCache struct {
	keys []string
	exps []time.Time
	err  error
}

func (c *recordingCache) Record(_ context.Context, key string, exp time.Time) error {
	if c.err != nil {
		return c.err
	}
	c.keys = append(c.keys, key)
	c.exps = append(c.exps, exp)
	return nil
}

// randReader is crypto/rand as a value type.
type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }
