package rs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
)

// fakeClock is a settable clock shared by everything under test. rs is a
// public package meant to stand alone, so its tests keep their own instead
// of importing an internal one.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// t0 is the start time of most tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testIdP is an issuer with a signing key, serving discovery and JWKS. It
// signs with go-jose, an implementation independent of the verifier under
// test.
type testIdP struct {
	t        testing.TB
	srv      *httptest.Server
	issuer   string
	key      *ecdsa.PrivateKey
	kid      string
	mu       sync.Mutex
	jwks     []jose.JSONWebKey
	fetches  atomic.Int32
	jwksDown atomic.Bool
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func thumbprint(t testing.TB, k *ecdsa.PrivateKey) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: &k.PublicKey}
	tp, err := dpop.Thumbprint(&jwk)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func newTestIdP(t testing.TB) *testIdP {
	t.Helper()
	idp := &testIdP{t: t, key: newKey(t)}
	idp.kid = thumbprint(t, idp.key)
	idp.jwks = []jose.JSONWebKey{{Key: &idp.key.PublicKey, KeyID: idp.kid, Algorithm: "ES256", Use: "sig"}}
	mux := http.NewServeMux()
	meta := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": idp.issuer, "jwks_uri": idp.issuer + "/jwks"})
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", meta)
	mux.HandleFunc("GET /.well-known/ssf-configuration", meta)
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		idp.fetches.Add(1)
		if idp.jwksDown.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		idp.mu.Lock()
		set := jose.JSONWebKeySet{Keys: idp.jwks}
		idp.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	idp.srv = httptest.NewServer(mux)
	t.Cleanup(idp.srv.Close)
	idp.issuer = idp.srv.URL
	return idp
}

// rotate publishes a new key next to the old one and signs with it.
func (idp *testIdP) rotate() {
	k := newKey(idp.t)
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.key, idp.kid = k, thumbprint(idp.t, k)
	idp.jwks = append(idp.jwks, jose.JSONWebKey{Key: &k.PublicKey, KeyID: idp.kid, Algorithm: "ES256", Use: "sig"})
}

// sign signs claims as a compact JWS with the given header values.
func signJWS(t testing.TB, key *ecdsa.PrivateKey, kid, typ string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (idp *testIdP) sign(typ string, claims any) string {
	idp.mu.Lock()
	key, kid := idp.key, idp.kid
	idp.mu.Unlock()
	return signJWS(idp.t, key, kid, typ, claims)
}

// tokenClaims are the claims of a valid DPoP-bound access token for
// audience "https://api.example" issued at now.
func (idp *testIdP) tokenClaims(now time.Time, jkt string) map[string]any {
	c := map[string]any{
		"iss": idp.issuer, "sub": "user-1", "aud": "https://api.example",
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "at-" + rand.Text(),
		"client_id": "app", "scope": "docs.read openid", "sid": "sess-1",
		"auth_time": now.Add(-time.Minute).Unix(), "acr": "urn:ward:acr:password", "amr": []string{"pwd"},
		"did": "dev-1",
	}
	if jkt != "" {
		c["cnf"] = map[string]any{"jkt": jkt}
	}
	return c
}

// client is a DPoP client with its own key.
type client struct {
	t      testing.TB
	signer *dpop.Signer
	jkt    string
}

func newClient(t testing.TB) *client {
	t.Helper()
	s, err := dpop.NewSigner(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, signer: s, jkt: s.Thumbprint()}
}

func (c *client) proof(method, url, token, nonce string, iat time.Time) string {
	c.t.Helper()
	p, err := c.signer.ProofAt(method, url, token, nonce, iat)
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// request builds a request as a server would see it (RequestURI set).
func request(method, target, authz, proof string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	if proof != "" {
		r.Header.Set("DPoP", proof)
	}
	return r
}

// vectorsDir holds the RFC 9449, CAEP 1.0 and SSF 1.0 examples the tests
// use (testdata/README.md says where each comes from).
const vectorsDir = "testdata"

// readVector returns one example file of vectorsDir/sub.
func readVector(t testing.TB, sub, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, sub, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// vectorFile is one example of the index.tsv of a vector folder.
type vectorFile struct {
	name, title string
	data        []byte
}

// loadVectors returns the valid-JSON examples listed in dir/index.tsv.
func loadVectors(t testing.TB, sub string) []vectorFile {
	t.Helper()
	dir := filepath.Join(vectorsDir, sub)
	idx, err := os.ReadFile(filepath.Join(dir, "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	var out []vectorFile
	for _, line := range strings.Split(strings.TrimSpace(string(idx)), "\n")[1:] {
		f := strings.Split(line, "\t")
		if len(f) < 4 || f[2] != "valid-json" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, f[0]))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, vectorFile{name: f[0], title: f[3], data: data})
	}
	if len(out) == 0 {
		t.Fatalf("no vectors in %s", dir)
	}
	return out
}
