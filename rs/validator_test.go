package rs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
)

const resURL = "https://api.example/docs/1"

type fixture struct {
	idp *testIdP
	clk *fakeClock
	v   *Validator
	c   *client
	cfg Config
}

func newFixture(t *testing.T, mods ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{idp: newTestIdP(t), clk: newClock(t0), c: newClient(t)}
	f.cfg = Config{
		Issuer: f.idp.issuer, Audience: "https://api.example", Scopes: []string{"docs.read"},
		Now: f.clk.Now, HTTPClient: f.idp.srv.Client(),
	}
	for _, m := range mods {
		m(&f.cfg)
	}
	v, err := New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

// token returns a bound token for f.c, with mods applied to the claims.
func (f *fixture) token(mods ...func(map[string]any)) string {
	c := f.idp.tokenClaims(f.clk.Now(), f.c.jkt)
	for _, m := range mods {
		m(c)
	}
	return f.idp.sign("at+jwt", c)
}

// dpopRequest is a GET of resURL with token and a fresh proof by f.c.
func (f *fixture) dpopRequest(tok string) *http.Request {
	return request("GET", resURL, "DPoP "+tok, f.c.proof("GET", resURL, tok, "", f.clk.Now()))
}

func (f *fixture) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := FromContext(r.Context())
		if !ok {
			http.Error(w, "no token info", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(info)
	})).ServeHTTP(w, r)
	return w
}

func challenge(t *testing.T, w *httptest.ResponseRecorder) []Challenge {
	t.Helper()
	cs, err := ParseChallenges(w.Header())
	if err != nil {
		t.Fatalf("WWW-Authenticate %q: %v", w.Header().Values("WWW-Authenticate"), err)
	}
	return cs
}

func TestValidDPoPToken(t *testing.T) {
	f := newFixture(t)
	tok := f.token()
	w := f.serve(f.dpopRequest(tok))
	if w.Code != http.StatusOK {
		t.Fatalf("status = %d, body %s, challenge %q", w.Code, w.Body, w.Header().Get("WWW-Authenticate"))
	}
	var got TokenInfo
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := TokenInfo{
		Issuer: f.idp.issuer, Subject: "user-1", ClientID: "app", SessionID: "sess-1", DeviceID: "dev-1",
		JKT: f.c.jkt, ACR: "urn:ward:acr:password", Scheme: "DPoP",
	}
	if got.Issuer != want.Issuer || got.Subject != want.Subject || got.ClientID != want.ClientID ||
		got.SessionID != want.SessionID || got.DeviceID != want.DeviceID || got.JKT != want.JKT ||
		got.ACR != want.ACR || got.Scheme != want.Scheme {
		t.Errorf("info = %+v, want %+v", got, want)
	}
	if !got.IssuedAt.Equal(t0) || !got.ExpiresAt.Equal(t0.Add(10*time.Minute)) || !got.AuthTime.Equal(t0.Add(-time.Minute)) {
		t.Errorf("times iat=%v exp=%v auth_time=%v", got.IssuedAt, got.ExpiresAt, got.AuthTime)
	}
	if strings.Join(got.Scopes, " ") != "docs.read openid" || strings.Join(got.AMR, " ") != "pwd" || got.JTI == "" {
		t.Errorf("scopes=%v amr=%v jti=%q", got.Scopes, got.AMR, got.JTI)
	}
}

func TestNoCredentials(t *testing.T) {
	for _, bearer := range []bool{false, true} {
		f := newFixture(t, func(c *Config) { c.AllowBearer = bearer; c.Realm = "docs" })
		w := f.serve(request("GET", resURL, "", ""))
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("status = %d", w.Code)
		}
		cs := challenge(t, w)
		wantN := 1
		if bearer {
			wantN = 2
		}
		if len(cs) != wantN {
			t.Fatalf("bearer=%v: challenges %q", bearer, w.Header().Values("WWW-Authenticate"))
		}
		if cs[0].Scheme != "DPoP" || strings.Join(cs[0].Algs, " ") != "ES256 ES384 ES512 PS256 PS384 PS512 RS256 EdDSA" || cs[0].Params["realm"] != "docs" {
			t.Errorf("DPoP challenge = %+v", cs[0])
		}
		for _, c := range cs {
			// RFC 6750 §3.1: no error code when no credentials were sent.
			if c.Error != "" {
				t.Errorf("challenge %s has error %q", c.Scheme, c.Error)
			}
		}
		if bearer && cs[1].Scheme != "Bearer" {
			t.Errorf("second challenge %q", cs[1].Scheme)
		}
	}
}

func TestMalformedAuthorization(t *testing.T) {
	f := newFixture(t)
	tok := f.token()
	for name, hs := range map[string][]string{
		"scheme only":     {"DPoP"},
		"empty token":     {"DPoP "},
		"two parts":       {"DPoP " + tok + " extra"},
		"bad chars":       {"DPoP " + tok + "!"},
		"two headers":     {"DPoP " + tok, "DPoP " + tok},
		"empty header":    {""},
		"comma separated": {"DPoP a, Bearer b"},
	} {
		r := request("GET", resURL, "", f.c.proof("GET", resURL, tok, "", t0))
		for _, h := range hs {
			r.Header.Add("Authorization", h)
		}
		w := f.serve(r)
		if w.Code != http.StatusBadRequest {
			t.Errorf("%s: status = %d", name, w.Code)
			continue
		}
		if cs := challenge(t, w); cs[0].Error != CodeInvalidRequest {
			t.Errorf("%s: challenge %+v", name, cs[0])
		}
	}
	// Another scheme is no credentials for us: 401 without error.
	w := f.serve(request("GET", resURL, "Basic dXNlcjpwYXNz", ""))
	if cs := challenge(t, w); w.Code != http.StatusUnauthorized || cs[0].Error != "" {
		t.Errorf("Basic: status %d, challenge %+v", w.Code, cs)
	}
}

// hs256Token forges an alg-confusion token: HS256 keyed with the public
// key's encoding.
func hs256Token(t *testing.T, f *fixture) string {
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"at+jwt","kid":"` + f.idp.kid + `"}`))
	payload, _ := json.Marshal(f.idp.tokenClaims(t0, f.c.jkt))
	in := hdr + "." + base64.RawURLEncoding.EncodeToString(payload)
	pub, _ := json.Marshal(jose.JSONWebKey{Key: &f.idp.key.PublicKey})
	m := hmac.New(sha256.New, pub)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestTokenAttacks(t *testing.T) {
	f := newFixture(t)
	other := newKey(t)
	tamper := func(tok string) string {
		p := strings.Split(tok, ".")
		var c map[string]any
		raw, _ := base64.RawURLEncoding.DecodeString(p[1])
		_ = json.Unmarshal(raw, &c)
		c["sub"] = "admin"
		raw, _ = json.Marshal(c)
		return p[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + p[2]
	}
	none := func() string {
		hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`))
		payload, _ := json.Marshal(f.idp.tokenClaims(t0, f.c.jkt))
		return hdr + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
	}
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	del := func(k string) func(map[string]any) { return func(c map[string]any) { delete(c, k) } }
	cases := []struct {
		name   string
		tok    string
		reason string
	}{
		{"typ JWT (an ID token)", f.idp.sign("JWT", f.idp.tokenClaims(t0, f.c.jkt)), "bad_typ"},
		{"typ dpop+jwt", f.idp.sign("dpop+jwt", f.idp.tokenClaims(t0, f.c.jkt)), "bad_typ"},
		{"alg none", none(), "malformed"},
		{"alg HS256 keyed with the public key", hs256Token(t, f), "bad_alg"},
		{"signed by another key, same kid", signJWS(t, other, f.idp.kid, "at+jwt", f.idp.tokenClaims(t0, f.c.jkt)), "bad_signature"},
		{"unknown kid", signJWS(t, other, "attacker", "at+jwt", f.idp.tokenClaims(t0, f.c.jkt)), "unknown_key"},
		{"payload tampered", tamper(f.token()), "bad_signature"},
		{"wrong issuer", f.token(set("iss", "https://evil.example")), "wrong_issuer"},
		{"wrong audience", f.token(set("aud", "https://other.example")), "wrong_audience"},
		{"audience array without us", f.token(set("aud", []string{"a", "b"})), "wrong_audience"},
		{"expired beyond skew", f.token(set("exp", t0.Add(-31*time.Second).Unix())), "expired"},
		{"not yet valid", f.token(set("nbf", t0.Add(time.Minute).Unix())), "not_yet_valid"},
		{"issued in the future", f.token(set("iat", t0.Add(time.Minute).Unix())), "iat_in_future"},
		{"lifetime too long", f.token(set("exp", t0.Add(25*time.Hour).Unix())), "lifetime_too_long"},
		{"no jti", f.token(del("jti")), "missing_claim"},
		{"no client_id", f.token(del("client_id")), "missing_claim"},
		{"no exp", f.token(del("exp")), "missing_claim"},
		{"negative iat", f.token(set("iat", -5)), "bad_claim"},
		{"aud is a number", f.token(set("aud", 7)), "malformed"},
		{"not a JWS", "abc.def", "malformed"},
		{"JWE-shaped", "a.b.c.d.e", "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.v.Authenticate(f.dpopRequest(tc.tok), "docs.read")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Status != http.StatusUnauthorized || e.Code != CodeInvalidToken || e.Reason != tc.reason {
				t.Errorf("got %d %s %s, want 401 invalid_token %s", e.Status, e.Code, e.Reason, tc.reason)
			}
			if strings.Contains(e.Error(), tc.tok) || strings.Contains(e.Description, tc.tok) {
				t.Error("the token appears in the error")
			}
		})
	}
}

func TestTokenAccepted(t *testing.T) {
	f := newFixture(t)
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	for name, tok := range map[string]string{
		"aud array":              f.token(set("aud", []string{"https://other.example", "https://api.example"})),
		"typ application/at+jwt": f.idp.sign("application/at+jwt", f.idp.tokenClaims(t0, f.c.jkt)),
		"expired within skew":    f.token(set("exp", t0.Add(-29*time.Second).Unix())),
		"fractional times":       f.token(set("iat", float64(t0.Unix())+0.5)),
		"24h lifetime":           f.token(set("exp", t0.Add(24*time.Hour).Unix())),
	} {
		if _, err := f.v.Authenticate(f.dpopRequest(tok), "docs.read"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestBindingAndProof(t *testing.T) {
	f := newFixture(t)
	tok := f.token()
	thief := newClient(t)
	type tc struct {
		name   string
		req    func() *http.Request
		code   string
		reason string
		scheme string // challenge scheme
	}
	cases := []tc{
		{"bound token as bearer", func() *http.Request { return request("GET", resURL, "Bearer "+tok, "") },
			CodeInvalidToken, "bearer_not_allowed", "DPoP"},
		{"no proof", func() *http.Request { return request("GET", resURL, "DPoP "+tok, "") },
			CodeInvalidDPoPProof, "dpop_missing", "DPoP"},
		{"proof by the thief's key", func() *http.Request {
			return request("GET", resURL, "DPoP "+tok, thief.proof("GET", resURL, tok, "", t0))
		}, CodeInvalidDPoPProof, "dpop_jkt_mismatch", "DPoP"},
		{"proof for another method", func() *http.Request {
			return request("GET", resURL, "DPoP "+tok, f.c.proof("POST", resURL, tok, "", t0))
		}, CodeInvalidDPoPProof, "dpop_htm_mismatch", "DPoP"},
		{"proof for another URL", func() *http.Request {
			return request("GET", resURL, "DPoP "+tok, f.c.proof("GET", "https://api.example/docs/2", tok, "", t0))
		}, CodeInvalidDPoPProof, "dpop_htu_mismatch", "DPoP"},
		{"proof for another token", func() *http.Request {
			return request("GET", resURL, "DPoP "+tok, f.c.proof("GET", resURL, f.token(), "", t0))
		}, CodeInvalidDPoPProof, "dpop_ath_mismatch", "DPoP"},
		{"stale proof", func() *http.Request {
			return request("GET", resURL, "DPoP "+tok, f.c.proof("GET", resURL, tok, "", t0.Add(-10*time.Minute)))
		}, CodeInvalidDPoPProof, "dpop_iat_too_old", "DPoP"},
		{"two DPoP headers", func() *http.Request {
			r := f.dpopRequest(tok)
			r.Header.Add("DPoP", f.c.proof("GET", resURL, tok, "", t0))
			return r
		}, CodeInvalidDPoPProof, "dpop_multiple", "DPoP"},
		{"unbound token with DPoP scheme", func() *http.Request {
			ub := f.idp.sign("at+jwt", f.idp.tokenClaims(t0, ""))
			return request("GET", resURL, "DPoP "+ub, f.c.proof("GET", resURL, ub, "", t0))
		}, CodeInvalidToken, "unbound_token_as_dpop", "DPoP"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.serve(c.req())
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status = %d", w.Code)
			}
			cs := challenge(t, w)
			if len(cs) != 1 || cs[0].Scheme != c.scheme || cs[0].Error != c.code {
				t.Fatalf("challenges = %q", w.Header().Values("WWW-Authenticate"))
			}
			_, err := f.v.Authenticate(c.req())
			var e *Error
			if !errors.As(err, &e) || e.Reason != c.reason {
				t.Errorf("reason = %v, want %s", err, c.reason)
			}
		})
	}

	t.Run("request without Host", func(t *testing.T) {
		r := f.dpopRequest(tok)
		r.Host = ""
		r.RequestURI = "/docs/1"
		_, err := f.v.Authenticate(r)
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Code != CodeInvalidDPoPProof {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("replayed proof", func(t *testing.T) {
		r1 := f.dpopRequest(tok)
		proof := r1.Header.Get("DPoP")
		if w := f.serve(r1); w.Code != http.StatusOK {
			t.Fatalf("first use: %d", w.Code)
		}
		w := f.serve(request("GET", resURL, "DPoP "+tok, proof))
		if cs := challenge(t, w); w.Code != http.StatusUnauthorized || cs[0].Error != CodeInvalidDPoPProof {
			t.Fatalf("replay: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
		}
	})
}

func TestBearerAllowed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowBearer = true })
	ub := f.idp.sign("at+jwt", f.idp.tokenClaims(t0, ""))
	w := f.serve(request("GET", resURL, "Bearer "+ub, ""))
	if w.Code != http.StatusOK {
		t.Fatalf("unbound bearer: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	// A bound token stays bound (RFC 9449 §7.2), answered with the DPoP
	// challenge the client needs.
	w = f.serve(request("GET", resURL, "Bearer "+f.token(), ""))
	cs := challenge(t, w)
	if w.Code != http.StatusUnauthorized || cs[0].Scheme != "DPoP" || cs[0].Error != CodeInvalidToken {
		t.Fatalf("bound as bearer: %d %q", w.Code, w.Header().Values("WWW-Authenticate"))
	}
	// An invalid bearer token gets a Bearer challenge.
	w = f.serve(request("GET", resURL, "Bearer "+ub+"x", ""))
	if cs := challenge(t, w); w.Code != http.StatusUnauthorized || cs[0].Scheme != "Bearer" || cs[0].Error != CodeInvalidToken {
		t.Fatalf("bad bearer: %d %q", w.Code, w.Header().Values("WWW-Authenticate"))
	}
}

func TestScopes(t *testing.T) {
	f := newFixture(t)
	tok := f.token()
	h := f.v.Require("docs.read", "docs.write")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, f.dpopRequest(tok))
	if w.Code != http.StatusForbidden {
		t.Fatalf("status = %d", w.Code)
	}
	cs := challenge(t, w)
	if cs[0].Error != CodeInsufficientScope || cs[0].Scope != "docs.read docs.write" {
		t.Errorf("challenge = %q", w.Header().Get("WWW-Authenticate"))
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body["error"] != CodeInsufficientScope {
		t.Errorf("body = %s", w.Body)
	}
}

func TestNonce(t *testing.T) {
	var clk *fakeClock
	nonces := dpop.NewHMACNonces(bytes.Repeat([]byte{7}, 32), 0, func() time.Time { return clk.Now() })
	f := newFixture(t, func(c *Config) { c.Nonces = nonces })
	clk = f.clk
	tok := f.token()
	w := f.serve(f.dpopRequest(tok))
	cs := challenge(t, w)
	nonce := w.Header().Get("DPoP-Nonce")
	if w.Code != http.StatusUnauthorized || cs[0].Error != CodeUseDPoPNonce || nonce == "" {
		t.Fatalf("no nonce: %d %q nonce %q", w.Code, w.Header().Get("WWW-Authenticate"), nonce)
	}
	r := request("GET", resURL, "DPoP "+tok, f.c.proof("GET", resURL, tok, nonce, f.clk.Now()))
	if w := f.serve(r); w.Code != http.StatusOK {
		t.Fatalf("with nonce: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	r = request("GET", resURL, "DPoP "+tok, f.c.proof("GET", resURL, tok, "forged", f.clk.Now()))
	if w := f.serve(r); w.Code != http.StatusUnauthorized || w.Header().Get("DPoP-Nonce") == "" {
		t.Fatalf("forged nonce: %d", w.Code)
	}
}

func TestExternalURLAndPrefix(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ExternalURL = "https://public.example/api/" })
	tok := f.token()
	// The app sits behind a proxy that maps https://public.example/api/x
	// to http://10.0.0.5:8080/x, and strips /v1 itself.
	inner := "http://10.0.0.5:8080/v1/docs/1"
	h := http.StripPrefix("/v1", f.v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	r := request("GET", inner, "DPoP "+tok, f.c.proof("GET", "https://public.example/api/v1/docs/1", tok, "", t0))
	r.RequestURI = "/v1/docs/1?q=1"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("external URL: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	// A proof for the internal address does not pass.
	r = request("GET", inner, "DPoP "+tok, f.c.proof("GET", inner, tok, "", t0))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("internal URL accepted: %d", w.Code)
	}
	// Forwarded headers are not trusted for htu.
	r = request("GET", inner, "DPoP "+tok, f.c.proof("GET", "https://evil.example/api/v1/docs/1", tok, "", t0))
	r.Header.Set("X-Forwarded-Host", "evil.example")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("forwarded host trusted: %d", w.Code)
	}
}

func TestJWKSRefetchLimits(t *testing.T) {
	f := newFixture(t)
	if w := f.serve(f.dpopRequest(f.token())); w.Code != http.StatusOK {
		t.Fatalf("warm-up: %d", w.Code)
	}
	if n := f.idp.fetches.Load(); n != 1 {
		t.Fatalf("fetches after first request = %d", n)
	}
	// An attacker sends tokens with random kids, concurrently.
	other := newKey(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := signJWS(t, other, "kid-"+string(rune('a'+i%26))+time.Now().String(), "at+jwt", f.idp.tokenClaims(t0, f.c.jkt))
			_, _ = f.v.Authenticate(f.dpopRequest(tok))
		}()
	}
	wg.Wait()
	if n := f.idp.fetches.Load(); n != 1 {
		t.Fatalf("random kids within the minimum interval caused %d fetches, want none beyond the first", n-1)
	}
	f.clk.Advance(DefaultMinRefreshInterval)
	for range 20 {
		_, _ = f.v.Authenticate(f.dpopRequest(signJWS(t, other, "x", "at+jwt", f.idp.tokenClaims(t0, f.c.jkt))))
	}
	if n := f.idp.fetches.Load(); n != 2 {
		t.Fatalf("after the interval: %d fetches, want exactly one more", n)
	}

	// Key rotation: a new kid is fetched once the interval has passed.
	f.idp.rotate()
	f.clk.Advance(DefaultMinRefreshInterval)
	if w := f.serve(f.dpopRequest(f.token())); w.Code != http.StatusOK {
		t.Fatalf("rotated key: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}

func TestJWKSUnavailable(t *testing.T) {
	f := newFixture(t)
	f.idp.jwksDown.Store(true)
	w := f.serve(f.dpopRequest(f.token()))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("WWW-Authenticate") != "" {
		t.Fatalf("status = %d, challenge %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	// It recovers once the IdP is back and the interval has passed.
	f.idp.jwksDown.Store(false)
	f.clk.Advance(DefaultMinRefreshInterval)
	if w := f.serve(f.dpopRequest(f.token())); w.Code != http.StatusOK {
		t.Fatalf("after recovery: %d", w.Code)
	}
}

func TestKeySetFiltersKeys(t *testing.T) {
	good := newKey(t)
	priv := newKey(t)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: priv, KeyID: "private", Algorithm: "ES256"},                    // a published private key: never used
		{Key: &good.PublicKey, KeyID: "enc", Algorithm: "ES256", Use: "enc"}, // not for signatures
		{Key: &good.PublicKey, KeyID: "rs", Algorithm: "RS256"},              // wrong alg
		{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac"},     // symmetric
		{Key: &good.PublicKey, KeyID: "good", Algorithm: "ES256", Use: "sig"},
	}}
	ks, err := NewStaticKeySet(set)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, kid := range []string{"private", "enc", "rs", "hmac"} {
		if _, err := ks.Key(ctx, kid, true); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("kid %s: err = %v", kid, err)
		}
	}
	if _, err := ks.Key(ctx, "good", true); err != nil {
		t.Errorf("good key: %v", err)
	}
	// One usable key: a JWS without kid may use it.
	if _, err := ks.Key(ctx, "", false); err != nil {
		t.Errorf("no kid: %v", err)
	}
	if _, err := NewStaticKeySet(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv, KeyID: "p"}}}); err == nil {
		t.Error("a set of only private keys was accepted")
	}
}

// TestNoSecretsInOutput checks that neither the token nor the proof
// reaches a response or a log line, for accepted and rejected requests.
func TestNoSecretsInOutput(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, func(c *Config) { c.Logger = logger; c.State = NewRevocationState(StateConfig{Now: c.Now}) })
	f.v.cfg.State.RevokeSession("sess-1", t0)
	var outputs []string
	var secrets []string
	for _, tok := range []string{f.token(), f.token(func(c map[string]any) { c["aud"] = "x" }), f.token() + "x"} {
		r := f.dpopRequest(tok)
		secrets = append(secrets, tok, r.Header.Get("DPoP"))
		w := f.serve(r)
		outputs = append(outputs, w.Body.String(), strings.Join(w.Header().Values("WWW-Authenticate"), "\n"))
	}
	outputs = append(outputs, logs.String())
	if !strings.Contains(logs.String(), "cae_revoked_session") {
		t.Errorf("expected a debug line with the reason, got %s", logs.String())
	}
	for _, out := range outputs {
		for _, s := range secrets {
			for _, part := range strings.Split(s, ".") {
				if len(part) > 20 && strings.Contains(out, part) {
					t.Fatalf("a token or proof segment leaked into output %q", out)
				}
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	st := NewRevocationState(StateConfig{MaxTokenLifetime: time.Hour})
	for name, cfg := range map[string]Config{
		"no issuer":            {Audience: "a"},
		"no audience":          {Issuer: "https://i"},
		"bad external URL":     {Issuer: "https://i", Audience: "a", ExternalURL: "/relative"},
		"lifetime above state": {Issuer: "https://i", Audience: "a", State: st, MaxTokenLifetime: 2 * time.Hour},
		"skew above state":     {Issuer: "https://i", Audience: "a", State: st, ClockSkew: time.Minute},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestClientIP(t *testing.T) {
	v, err := New(Config{Issuer: "https://i", Audience: "a", TrustedProxies: mustPrefixes("10.0.0.0/8")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ remote, xff, want string }{
		{"203.0.113.9:1234", "", "203.0.113.9"},
		{"203.0.113.9:1234", "198.51.100.1", "203.0.113.9"}, // untrusted peer: header ignored
		{"10.1.2.3:1234", "198.51.100.1", "198.51.100.1"},
		{"10.1.2.3:1234", "1.2.3.4, 198.51.100.1, 10.9.9.9", "198.51.100.1"}, // nearest untrusted
		{"10.1.2.3:1234", "garbage", "10.1.2.3"},
		{"[::ffff:203.0.113.9]:1", "", "203.0.113.9"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := v.clientIP(r); got != tc.want {
			t.Errorf("%s / %q: got %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestJWKSBackgroundRefresh(t *testing.T) {
	f := newFixture(t)
	tok := f.token()
	if w := f.serve(f.dpopRequest(tok)); w.Code != http.StatusOK {
		t.Fatalf("warm-up: %d", w.Code)
	}
	// The IdP retires its key (a compromise, say): the JWKS no longer
	// holds it. Cached keys keep serving until they are stale ...
	oldKey, oldKID := f.idp.key, f.idp.kid
	f.idp.mu.Lock()
	f.idp.jwks = nil
	f.idp.mu.Unlock()
	f.idp.rotate()
	if w := f.serve(f.dpopRequest(tok)); w.Code != http.StatusOK {
		t.Fatalf("cached key: %d", w.Code)
	}
	// ... then a request triggers a refresh in the background and is
	// still answered from the cache, without waiting.
	f.clk.Advance(DefaultRefreshInterval + time.Second)
	tok = signJWS(t, oldKey, oldKID, "at+jwt", f.idp.tokenClaims(f.clk.Now(), f.c.jkt))
	if w := f.serve(f.dpopRequest(tok)); w.Code != http.StatusOK {
		t.Fatalf("stale key: %d", w.Code)
	}
	waitFor(t, "the background refresh", func() bool {
		_, err := f.v.Keys().Key(context.Background(), f.idp.jwks[0].KeyID, true)
		return err == nil && f.idp.fetches.Load() == 2
	})
	w := f.serve(f.dpopRequest(tok))
	if cs := challenge(t, w); w.Code != http.StatusUnauthorized || cs[0].Error != CodeInvalidToken {
		t.Fatalf("retired key still accepted: %d", w.Code)
	}
}
