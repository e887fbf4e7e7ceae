package rs

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

// benchState is a CAE state under realistic load: a million revoked
// sessions, plus revoked users and devices and a few requirements, none
// of which match the benchmark's token.
func benchState(tb testing.TB, now func() time.Time) *RevocationState {
	st := NewRevocationState(StateConfig{Now: now})
	at := now().Add(-time.Minute)
	for i := range 1_000_000 {
		st.RevokeSession("sess-"+strconv.Itoa(i)+"-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", at)
	}
	for i := range 10_000 {
		st.RevokeUser("https://idp", "user-"+strconv.Itoa(i), at)
		st.RevokeDevice("dev-"+strconv.Itoa(i), at)
		st.RevokeUserDevice("https://idp", "user-"+strconv.Itoa(i), "dev-"+strconv.Itoa(i), at)
		st.RevokeToken("https://idp", "jti-"+strconv.Itoa(i), at)
	}
	for i := range 100 {
		st.Require("https://idp", "stepup-"+strconv.Itoa(i), Requirement{ACR: "urn:ward:acr:mfa"})
	}
	return st
}

var benchStateCache *RevocationState

// BenchmarkMiddleware measures one request through the middleware with a
// DPoP-bound token: token signature and claims, proof signature, ath,
// jkt, jti recorded in the replay cache, scope check, and (cae=on) the
// CAE lookups against benchState. Each iteration has its own fresh proof,
// signed before the timer starts. Compare cae=on with cae=off from the
// same run, and both with ECDSAP256Verify (the raw cost of one of the two
// signature checks).
func BenchmarkMiddleware(b *testing.B) {
	clk := newClock(t0)
	idp := &testIdP{t: b, key: newKey(b), issuer: "https://idp"}
	idp.kid = thumbprint(b, idp.key)
	ks, err := NewStaticKeySet(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &idp.key.PublicKey, KeyID: idp.kid, Algorithm: "ES256"}}})
	if err != nil {
		b.Fatal(err)
	}
	c := newClient(b)
	claims := idp.tokenClaims(t0, c.jkt)
	claims["sid"] = "sess-live-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	tok := idp.sign("at+jwt", claims)
	if benchStateCache == nil {
		benchStateCache = benchState(b, clk.Now)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, mode := range []string{"off", "on"} {
		b.Run("cae="+mode, func(b *testing.B) {
			cfg := Config{Issuer: "https://idp", Audience: "https://api.example", Scopes: []string{"docs.read"}, Keys: ks, Now: clk.Now}
			if mode == "on" {
				cfg.State = benchStateCache
			}
			v, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			h := v.Middleware(ok)
			reqs := make([]*http.Request, b.N)
			for i := range reqs {
				reqs[i] = request("GET", resURL, "DPoP "+tok, c.proof("GET", resURL, tok, "", t0))
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				h.ServeHTTP(w, reqs[i])
			}
			b.StopTimer()
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

// BenchmarkMiddlewareInterleaved alternates a request without and one
// with CAE in every iteration and reports both averages and their ratio,
// so that drift in machine load hits both sides alike.
func BenchmarkMiddlewareInterleaved(b *testing.B) {
	clk := newClock(t0)
	idp := &testIdP{t: b, key: newKey(b), issuer: "https://idp"}
	idp.kid = thumbprint(b, idp.key)
	ks, err := NewStaticKeySet(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &idp.key.PublicKey, KeyID: idp.kid, Algorithm: "ES256"}}})
	if err != nil {
		b.Fatal(err)
	}
	c := newClient(b)
	tok := idp.sign("at+jwt", idp.tokenClaims(t0, c.jkt))
	if benchStateCache == nil {
		benchStateCache = benchState(b, clk.Now)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	var hs [2]http.Handler
	for i := range hs {
		cfg := Config{Issuer: "https://idp", Audience: "https://api.example", Scopes: []string{"docs.read"}, Keys: ks, Now: clk.Now}
		if i == 1 {
			cfg.State = benchStateCache
		}
		v, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		hs[i] = v.Middleware(ok)
	}
	reqs := make([][2]*http.Request, b.N)
	for i := range reqs {
		for j := range 2 {
			reqs[i][j] = request("GET", resURL, "DPoP "+tok, c.proof("GET", resURL, tok, "", t0))
		}
	}
	var spent [2]time.Duration
	w := httptest.NewRecorder()
	b.ResetTimer()
	for i := range b.N {
		for j := range 2 {
			k := (i + j) % 2 // alternate which side goes first
			start := time.Now()
			hs[k].ServeHTTP(w, reqs[i][k])
			spent[k] += time.Since(start)
		}
	}
	b.StopTimer()
	if w.Code != http.StatusOK {
		b.Fatalf("status %d", w.Code)
	}
	off := float64(spent[0].Nanoseconds()) / float64(b.N)
	on := float64(spent[1].Nanoseconds()) / float64(b.N)
	b.ReportMetric(off, "off-ns/req")
	b.ReportMetric(on, "on-ns/req")
	b.ReportMetric(on/off, "on/off")
}

// BenchmarkECDSAP256Verify is SHA-256 over an access token's signing
// input plus one P-256 verification: the floor for one signature check.
func BenchmarkECDSAP256Verify(b *testing.B) {
	key := newKey(b)
	idp := &testIdP{t: b, key: key, issuer: "https://idp", kid: "k"}
	tok := idp.sign("at+jwt", idp.tokenClaims(t0, "jkt"))
	i := strings.LastIndexByte(tok, '.')
	b.ResetTimer()
	for range b.N {
		if !jws.VerifyES256(&key.PublicKey, tok[:i], tok[i+1:]) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkStateCheck is the CAE lookup alone (five keyed hashes and map
// reads, plus the requirement map) against a million revoked sessions.
func BenchmarkStateCheck(b *testing.B) {
	clk := newClock(t0)
	if benchStateCache == nil {
		benchStateCache = benchState(b, clk.Now)
	}
	tok := tokenAt(t0)
	tok.SessionID = "sess-live"
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if benchStateCache.Check(tok) != nil {
			b.Fatal("rejected")
		}
	}
}
