package server_test

// Benchmarks of the token hot paths, reported against the raw crypto they
// contain (docs/benchmarks.md). Run them together so that the
// reference and the measured path share the same (possibly noisy) machine:
//
//	go test -run '^$' -bench 'ECDSAP256Verify|VerifyBoundAccessTokenAndProof' -count 10 ./internal/server/
//	go test -run '^$' -bench 'TokenEndpoint' -cpuprofile /tmp/cpu.out ./internal/server/
//
// docs/benchmarks.md has the numbers and how they were obtained.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/tokens"
	"github.com/ward-idp/ward/internal/wardtest"
)

// benchAccessToken mints a DPoP-bound access token like the token endpoint
// does (same claims, same key manager) for the signer s.
func benchAccessToken(b *testing.B, in *wardtest.Instance, s *dpop.Signer) string {
	b.Helper()
	now := in.Clock.Now()
	at, err := in.App.Keys.MintAccessToken(&tokens.AccessClaims{
		Issuer: in.URL, Subject: "user-1", Audience: tokens.Audience{in.URL}, IssuedAt: now.Unix(),
		ExpiresAt: now.Add(5 * time.Minute).Unix(), JTI: "jti-bench-0123456789", ClientID: "spa",
		Scope: "openid profile docs.read", SID: "sid-0123456789", AuthTime: now.Unix(), ACR: "urn:ward:acr:mfa",
		AMR: []string{"pwd", "otp"}, Cnf: &tokens.Confirmation{JKT: s.Thumbprint()},
	})
	if err != nil {
		b.Fatal(err)
	}
	return at
}

// BenchmarkECDSAP256Verify is the reference: SHA-256 over a signing input
// of the size of a real access token plus one raw ECDSA P-256
// verification. A bound-token check performs two of these.
func BenchmarkECDSAP256Verify(b *testing.B) {
	in := wardtest.Start(b, wardtest.Options{})
	at := benchAccessToken(b, in, newSigner(b))
	input := at[:strings.LastIndexByte(at, '.')]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte(input))
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		d := sha256.Sum256([]byte(input))
		if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkVerifyBoundAccessTokenAndProof is what a resource server (and
// Ward's userinfo) does per request: verify the access token, then verify
// its DPoP proof with ath and the token's cnf.jkt, recording the jti in
// the in-memory replay cache. Every iteration uses a fresh proof (distinct
// jti), generated before the timer starts. Compare with 2 ×
// BenchmarkECDSAP256Verify.
func BenchmarkVerifyBoundAccessTokenAndProof(b *testing.B) {
	in := wardtest.Start(b, wardtest.Options{})
	s := newSigner(b)
	at := benchAccessToken(b, in, s)
	u := in.URL + "/userinfo"
	now := in.Clock.Now()
	// b.N is known up front with the classic loop; proofs are signed
	// before ResetTimer.
	proofs := make([]string, b.N)
	for i := range proofs {
		p, err := s.ProofAt(http.MethodGet, u, at, "", now)
		if err != nil {
			b.Fatal(err)
		}
		proofs[i] = p
	}
	clock := func() time.Time { return now }
	v := &dpop.Verifier{Now: clock, Replay: dpop.NewMemoryReplayCache(clock)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c, err := in.App.Keys.ParseAccessToken(at, in.URL, now)
		if err != nil {
			b.Fatal(err)
		}
		if c.Cnf == nil {
			b.Fatal("token not bound")
		}
		if _, err := v.Verify(ctx, proofs[i], dpop.Check{Method: http.MethodGet, URL: u, AccessToken: at, JKT: c.Cnf.JKT}); err != nil {
			b.Fatal(err)
		}
	}
}

// processCPU is the CPU time (user + system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerOp reports the process CPU time per operation (cpu-µs/op) from
// now until the returned function is called. On a shared machine it is
// steadier than wall time, which also counts other processes' turns on
// the core; it includes every goroutine of the process (the client side
// of the benchmark, the SQLite writer, the garbage collector).
func cpuPerOp(b *testing.B) func() {
	start := processCPU()
	return func() {
		b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

// tokenCall sends one request to the token endpoint in-process (no
// network) and returns the status and decoded body. It follows one
// use_dpop_nonce challenge, as a client would.
type tokenCaller struct {
	in    *wardtest.Instance
	s     *dpop.Signer
	nonce string
}

func (tc *tokenCaller) call(b *testing.B, form url.Values, user, pass string) (int, map[string]any) {
	for attempt := 0; ; attempt++ {
		req := httptest.NewRequest(http.MethodPost, tc.in.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
		}
		if tc.s != nil {
			p, err := tc.s.ProofAt(http.MethodPost, tc.in.URL+"/token", "", tc.nonce, tc.in.Clock.Now())
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("DPoP", p)
		}
		w := httptest.NewRecorder()
		tc.in.Server.ServeHTTP(w, req)
		if n := w.Header().Get("DPoP-Nonce"); n != "" {
			tc.nonce = n
		}
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code == http.StatusBadRequest && body["error"] == "use_dpop_nonce" && attempt == 0 {
			continue
		}
		return w.Code, body
	}
}

// BenchmarkTokenEndpointClientCredentialsDPoP is one client_credentials
// grant with a fresh DPoP proof, through the full HTTP handler (client
// authentication, proof check, ES256 access token, audit event in
// SQLite). The client's proof signing is inside the loop (it is not
// server work, but the benchmark needs fresh proofs); subtract
// BenchmarkSignProof to isolate the server.
func BenchmarkTokenEndpointClientCredentialsDPoP(b *testing.B) {
	benchClientCredentials(b, sqliteBench)
}

// BenchmarkTokenEndpointClientCredentialsDPoPParallel is the same with
// concurrent requests, which is what lets writes share a commit.
func BenchmarkTokenEndpointClientCredentialsDPoPParallel(b *testing.B) {
	benchClientCredentialsParallel(b, sqliteBench)
}

// BenchmarkSignProof is the client-side cost inside the endpoint
// benchmarks (one ES256 proof).
func BenchmarkSignProof(b *testing.B) {
	s := newSigner(b)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if _, err := s.ProofAt(http.MethodPost, "http://127.0.0.1:1/token", "", "nonce-0123456789", time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRefreshToken signs bob in with the "web" client (client_secret_basic,
// no TOTP) and returns a DPoP-bound-free refresh token for scope.
func benchRefreshToken(b *testing.B, in *wardtest.Instance, tc *tokenCaller, scope string) string {
	b.Helper()
	verifier, challenge := wardtest.PKCE()
	loc := in.Login(b, in.Browser(), in.AuthorizeURL("web", challenge, url.Values{"scope": {scope}}), "bob", wardtest.BobPassword, "")
	code := loc.Query().Get("code")
	if code == "" {
		b.Fatalf("no code: %s", loc)
	}
	st, body := tc.call(b, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}}, "web", wardtest.WebSecret)
	if st != http.StatusOK {
		b.Fatalf("code exchange: %d %v", st, body)
	}
	return body["refresh_token"].(string)
}

// BenchmarkTokenEndpointRefreshDPoP is one refresh grant with rotation
// (the new refresh token is used next time) and a fresh DPoP proof, for a
// confidential client and scope "offline_access docs.read" (no ID token).
func BenchmarkTokenEndpointRefreshDPoP(b *testing.B) {
	benchRefresh(b, sqliteBench)
}

// BenchmarkTokenEndpointRefreshDPoPParallel runs independent refresh
// chains concurrently (one per goroutine, signed in before the timer).
func BenchmarkTokenEndpointRefreshDPoPParallel(b *testing.B) {
	benchRefreshParallel(b, sqliteBench)
}

// tokenBackend is what differs between the runs of the token endpoint
// benchmarks on SQLite and on PostgreSQL; the benchmark bodies below
// serve both.
type tokenBackend struct {
	start func(*testing.B) *wardtest.Instance
	par   int  // b.SetParallelism of the parallel benchmarks
	warm  bool // one request before the serial client_credentials loop (nonce, prepared statements)
	trips bool // also report trips/op (PostgreSQL)
}

var sqliteBench = tokenBackend{
	start: func(b *testing.B) *wardtest.Instance { return wardtest.Start(b, wardtest.Options{}) },
	par:   8,
}

// measure starts the reported metrics (cpu-µs/op, and trips/op where the
// backend counts them); the returned function stops and reports them.
func (tb tokenBackend) measure(b *testing.B, in *wardtest.Instance) func() {
	stopCPU := cpuPerOp(b)
	stopTrips := func() {}
	if tb.trips {
		stopTrips = tripsPerOp(b, in)
	}
	return func() {
		stopTrips()
		stopCPU()
	}
}

func benchClientCredentials(b *testing.B, tb tokenBackend) {
	in := tb.start(b)
	tc := &tokenCaller{in: in, s: newSigner(b)}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}
	if tb.warm {
		tc.call(b, form, "service", wardtest.ServiceSecret)
	}
	b.ReportAllocs()
	defer tb.measure(b, in)()
	for b.Loop() {
		if st, body := tc.call(b, form, "service", wardtest.ServiceSecret); st != http.StatusOK {
			b.Fatalf("token: %d %v", st, body)
		}
	}
}

func benchClientCredentialsParallel(b *testing.B, tb tokenBackend) {
	in := tb.start(b)
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}
	b.SetParallelism(tb.par)
	b.ReportAllocs()
	defer tb.measure(b, in)()
	b.RunParallel(func(pb *testing.PB) {
		tc := &tokenCaller{in: in, s: newSigner(b)}
		for pb.Next() {
			if st, body := tc.call(b, form, "service", wardtest.ServiceSecret); st != http.StatusOK {
				b.Errorf("token: %d %v", st, body)
				return
			}
		}
	})
}

func benchRefresh(b *testing.B, tb tokenBackend) {
	in := tb.start(b)
	tc := &tokenCaller{in: in, s: newSigner(b)}
	rt := benchRefreshToken(b, in, tc, "offline_access docs.read")
	b.ReportAllocs()
	defer tb.measure(b, in)()
	for b.Loop() {
		st, body := tc.call(b, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "web", wardtest.WebSecret)
		if st != http.StatusOK {
			b.Fatalf("refresh: %d %v", st, body)
		}
		rt = body["refresh_token"].(string)
	}
}

func benchRefreshParallel(b *testing.B, tb tokenBackend) {
	in := tb.start(b)
	type chain struct {
		tc *tokenCaller
		rt string
	}
	chains := make(chan *chain, tb.par*runtime.GOMAXPROCS(0))
	for range cap(chains) {
		tc := &tokenCaller{in: in, s: newSigner(b)}
		chains <- &chain{tc: tc, rt: benchRefreshToken(b, in, tc, "offline_access docs.read")}
	}
	b.SetParallelism(tb.par)
	b.ReportAllocs()
	b.ResetTimer()
	defer tb.measure(b, in)()
	b.RunParallel(func(pb *testing.PB) {
		c := <-chains
		for pb.Next() {
			st, body := c.tc.call(b, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.rt}}, "web", wardtest.WebSecret)
			if st != http.StatusOK {
				b.Errorf("refresh: %d %v", st, body)
				return
			}
			c.rt = body["refresh_token"].(string)
		}
	})
}
