package oauth2x_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/ward-idp/ward/agent/oauth2x"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// Clients of the tests: all CAE-capable, so Ward honours the capability
// the package declares with long-lived tokens.
const (
	dpopApp   = "cae-dpop" // public, DPoP-bound tokens
	basicApp  = "cae-web"  // client_secret_basic, Bearer tokens
	postApp   = "cae-post" // client_secret_post, Bearer tokens
	appSecret = "cae-app-secret-0123456789-abcdefghijklmnop"
	bobTOTP   = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	acrMFA    = "urn:ward:acr:mfa"
)

func startWard(t *testing.T, requireNonce bool) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		grants, scopes := []string{"authorization_code", "refresh_token"}, []string{"openid", "profile", "offline_access"}
		c.StaticClients = append(c.StaticClients,
			config.StaticClient{ID: dpopApp, Name: "DPoP app", AuthMethod: "none", RedirectURIs: []string{wardtest.RedirectURI},
				GrantTypes: grants, Scopes: scopes, DPoPBoundAccessTokens: true, CAECapable: true},
			config.StaticClient{ID: basicApp, Name: "Web app", AuthMethod: "client_secret_basic", Secret: secret.String(appSecret),
				RedirectURIs: []string{wardtest.RedirectURI}, GrantTypes: grants, Scopes: scopes, CAECapable: true},
			config.StaticClient{ID: postApp, Name: "Post app", AuthMethod: "client_secret_post", Secret: secret.String(appSecret),
				RedirectURIs: []string{wardtest.RedirectURI}, GrantTypes: grants, Scopes: scopes, CAECapable: true})
		c.DPoP.RequireNonce = requireNonce
	}})
}

func oauthConfig(in *wardtest.Instance, clientID, clientSecret string) *oauth2.Config {
	return &oauth2.Config{ClientID: clientID, ClientSecret: clientSecret, RedirectURL: wardtest.RedirectURI,
		Scopes:   []string{"openid", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/authorize", TokenURL: in.URL + "/token"}}
}

// newSigner returns a DPoP signer with a fresh P-256 key.
func newSigner(t *testing.T) *dpop.Signer {
	t.Helper()
	return wardtest.NewSigner(t)
}

// app is an x/oauth2 application with an oauth2x.Client.
type app struct {
	t      *testing.T
	in     *wardtest.Instance
	cfg    *oauth2.Config
	signer *dpop.Signer
	c      *oauth2x.Client

	mu    sync.Mutex
	saved []*oauth2.Token // what OnToken got
}

func newApp(t *testing.T, in *wardtest.Instance, cfg *oauth2.Config, s *dpop.Signer) *app {
	t.Helper()
	a := &app{t: t, in: in, cfg: cfg, signer: s}
	c, err := oauth2x.New(cfg, nil, oauth2x.Options{Signer: s, Now: in.Clock.Now, OnToken: func(tok *oauth2.Token) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.saved = append(a.saved, tok)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	a.c = c
	return a
}

func (a *app) tokens() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.saved)
}

// signIn sends user through AuthCodeURL (with claims) and exchanges the
// code, as a web application does.
func (a *app) signIn(user, password, totpSecret, claims string) *oauth2.Token {
	a.t.Helper()
	verifier := oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "n-1"), oauth2x.ClaimsOption(claims)}
	if a.signer != nil {
		opts = append(opts, oauth2x.DPoPOption(a.signer))
	}
	otp := ""
	if totpSecret != "" {
		a.in.Clock.Advance(31 * time.Second) // a fresh TOTP step
		otp, _ = totp.GenerateCode(totpSecret, a.in.Clock.Now())
	}
	loc := a.in.Login(a.t, a.in.Browser(), a.cfg.AuthCodeURL("st-"+user, opts...), user, password, otp)
	code := loc.Query().Get("code")
	if code == "" {
		a.t.Fatalf("sign-in: %s", loc)
	}
	tok, err := a.c.Exchange(context.Background(), code, oauth2.VerifierOption(verifier), oauth2x.ClaimsOption(claims))
	if err != nil {
		a.t.Fatalf("exchange: %v", err)
	}
	return tok
}

// resource is an rs-protected handler whose CAE state the test changes,
// as Ward's SSF stream would.
func resource(t *testing.T, in *wardtest.Instance) (*httptest.Server, *rs.RevocationState) {
	t.Helper()
	state := rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: 48 * time.Hour, Now: in.Clock.Now})
	srv := httptest.NewServer(nil)
	t.Cleanup(srv.Close)
	v, err := rs.New(rs.Config{Issuer: in.URL, Audience: in.URL, Now: in.Clock.Now, State: state, ExternalURL: srv.URL, AllowBearer: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := rs.FromContext(r.Context())
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello %s %s%s", tok.Subject, tok.ACR, body)
	}))
	return srv, state
}

func get(hc *http.Client, u string) (int, string, error) {
	resp, err := hc.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// claim reads a string claim of a JWT without verifying it.
func claim(t *testing.T, jwt, name string) string {
	t.Helper()
	return wardtest.JWTClaim(t, jwt, name)
}

// A DPoP client (Ward requiring DPoP nonces, so the token endpoint's
// use_dpop_nonce is answered too) reads through an rs-protected handler.
// When the resource hears of a change that revokes the user's tokens, the
// next request gets the claims challenge and the transport refreshes with
// the claims and retries: the request succeeds. When the administrator
// revokes the session, the refresh is refused: the request fails with a
// ReauthError carrying the claims, and a new sign-in with them restores
// access.
func TestDPoPFollowsClaimsChallenge(t *testing.T) {
	in := startWard(t, true)
	ctx := context.Background()
	res, state := resource(t, in)
	bob, _ := in.App.Store.GetUserByUsername(ctx, "bob")
	a := newApp(t, in, oauthConfig(in, dpopApp, ""), newSigner(t))
	tok := a.signIn("bob", wardtest.BobPassword, "", "")
	if tok.Type() != "DPoP" || tok.RefreshToken == "" || tok.Expiry.Sub(in.Clock.Now()) < 23*time.Hour {
		t.Fatalf("token: type %s, refresh token %v, lives %v; want a DPoP-bound CAE token (~24 h)", tok.Type(), tok.RefreshToken != "", tok.Expiry.Sub(in.Clock.Now()))
	}
	hc := a.c.HTTPClient()
	if st, body, err := get(hc, res.URL+"/doc"); err != nil || st != 200 || !strings.HasPrefix(body, "hello "+bob.ID) {
		t.Fatalf("first request: %d %q %v", st, body, err)
	}
	saved := a.tokens()

	// Something changed about bob (the resource revokes his tokens issued
	// so far, as a CAEP token-claims-change makes it): follow and go on.
	in.Clock.Advance(2 * time.Second)
	state.RevokeUser(in.URL, bob.ID, in.Clock.Now())
	if st, body, err := get(hc, res.URL+"/doc"); err != nil || st != 200 {
		t.Fatalf("after the challenge: %d %q %v", st, body, err)
	}
	if a.tokens() != saved+1 {
		t.Fatalf("%d refreshes, want 1", a.tokens()-saved)
	}
	cur, _ := a.c.Token()
	if cur.RefreshToken == tok.RefreshToken || cur.AccessToken == tok.AccessToken {
		t.Fatal("the refresh token was not rotated")
	}
	if st, _, _ := get(hc, res.URL+"/doc"); st != 200 {
		t.Fatalf("next request: %d", st)
	}
	if a.tokens() != saved+1 {
		t.Fatal("refreshed again without a challenge")
	}

	// The administrator revokes the session: the refresh is refused.
	in.Clock.Advance(2 * time.Second)
	sid := claim(t, cur.AccessToken, "sid")
	if _, err := in.App.Sessions.Revoke(ctx, "admin-1", sid, model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}
	state.RevokeSession(sid, in.Clock.Now())
	_, _, err := get(hc, res.URL+"/doc")
	var re *oauth2x.ReauthError
	var rerr *oauth2.RetrieveError
	if !errors.As(err, &re) || !errors.Is(err, oauth2x.ErrReauthRequired) || !errors.As(err, &rerr) || rerr.ErrorCode != "invalid_grant" {
		t.Fatalf("after the session was revoked: %v, want a ReauthError (invalid_grant)", err)
	}
	if re.Challenge == nil || re.Challenge.Error != rs.CodeInsufficientClaims || !strings.Contains(re.Claims, `"nbf"`) {
		t.Fatalf("ReauthError: challenge %+v, claims %s", re.Challenge, re.Claims)
	}
	for _, s := range []string{cur.AccessToken, cur.RefreshToken, tok.RefreshToken} {
		if strings.Contains(err.Error(), s) {
			t.Fatal("a token is in the error")
		}
	}

	// The application sends the user through AuthCodeURL with the claims.
	in.Clock.Advance(2 * time.Second)
	next := a.signIn("bob", wardtest.BobPassword, "", re.Claims)
	if claim(t, next.AccessToken, "sid") == sid {
		t.Fatal("same session")
	}
	if st, body, err := get(hc, res.URL+"/doc"); err != nil || st != 200 {
		t.Fatalf("after signing in again: %d %q %v", st, body, err)
	}
	for _, s := range []string{cur.AccessToken, cur.RefreshToken, next.RefreshToken} {
		if strings.Contains(in.LogText(), s) {
			t.Error("a token is in Ward's log")
		}
	}
}

// Confidential clients with Bearer tokens: the refresh authenticates the
// client like x/oauth2 does (HTTP Basic; the body for client_secret_post,
// found automatically or by AuthStyleInParams). RefreshToken works on its
// own, too.
func TestBearerClientAuthentication(t *testing.T) {
	in := startWard(t, false)
	ctx := context.Background()
	res, state := resource(t, in)
	bob, _ := in.App.Store.GetUserByUsername(ctx, "bob")
	for _, tc := range []struct {
		name, client string
		style        oauth2.AuthStyle
	}{
		{"basic, auto", basicApp, oauth2.AuthStyleAutoDetect},
		{"basic, in header", basicApp, oauth2.AuthStyleInHeader},
		{"post, auto", postApp, oauth2.AuthStyleAutoDetect},
		{"post, in params", postApp, oauth2.AuthStyleInParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := oauthConfig(in, tc.client, appSecret)
			cfg.Endpoint.AuthStyle = tc.style
			a := newApp(t, in, cfg, nil)
			if tok := a.signIn("bob", wardtest.BobPassword, "", ""); tok.Type() != "Bearer" {
				t.Fatalf("token type %s", tok.Type())
			}
			hc := a.c.HTTPClient()
			if st, _, err := get(hc, res.URL+"/doc"); err != nil || st != 200 {
				t.Fatalf("first request: %d %v", st, err)
			}
			in.Clock.Advance(2 * time.Second)
			state.RevokeUser(in.URL, bob.ID, in.Clock.Now())
			before := a.tokens()
			if st, _, err := get(hc, res.URL+"/doc"); err != nil || st != 200 || a.tokens() != before+1 {
				t.Fatalf("after the challenge: %d %v, %d refreshes", st, err, a.tokens()-before)
			}
		})
	}

	t.Run("RefreshToken", func(t *testing.T) {
		cfg := oauthConfig(in, postApp, appSecret)
		a := newApp(t, in, cfg, nil)
		tok := a.signIn("bob", wardtest.BobPassword, "", "")
		claims := `{"access_token":{"nbf":{"essential":true,"value":"` + fmt.Sprint(in.Clock.Now().Unix()) + `"}}}`
		next, err := oauth2x.RefreshToken(ctx, cfg, tok.RefreshToken, claims)
		if err != nil || next.AccessToken == "" || next.RefreshToken == tok.RefreshToken || next.Extra("scope") == nil {
			t.Fatalf("RefreshToken: %v", err)
		}
		if nbf := claimNumber(t, next.AccessToken, "nbf"); nbf <= in.Clock.Now().Unix() {
			t.Errorf("nbf %d: the token does not say it is newer than the challenge", nbf)
		}
		// The rotated token presented again is refused (and Ward ends the
		// session for it): a ReauthError.
		_, err = oauth2x.RefreshToken(ctx, cfg, tok.RefreshToken, "")
		if !errors.Is(err, oauth2x.ErrReauthRequired) {
			t.Fatalf("reused refresh token: %v", err)
		}
		// A wrong client secret is no ReauthError.
		bad := oauthConfig(in, postApp, "wrong-secret-0123456789")
		var rerr *oauth2.RetrieveError
		if _, err := oauth2x.RefreshToken(ctx, bad, next.RefreshToken, ""); !errors.As(err, &rerr) || rerr.ErrorCode != "invalid_client" || errors.Is(err, oauth2x.ErrReauthRequired) {
			t.Fatalf("wrong secret: %v", err)
		}
	})
}

func claimNumber(t *testing.T, jwt, name string) int64 {
	t.Helper()
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[1])
	var m map[string]any
	json.Unmarshal(b, &m)
	f, _ := m[name].(float64)
	return int64(f)
}

// The resource requires multi-factor authentication (RFC 9470 step-up).
// Refreshing with the claims cannot raise the session's acr: Ward refuses
// it, and the ReauthError carries the acr. Signing in again through
// AuthCodeURL with the claims asks for the second factor, and the new
// token is accepted.
func TestStepUpNeedsSignIn(t *testing.T) {
	in := startWard(t, false)
	ctx := context.Background()
	res, state := resource(t, in)
	bob, _ := in.App.Store.GetUserByUsername(ctx, "bob")
	a := newApp(t, in, oauthConfig(in, dpopApp, ""), newSigner(t))
	a.signIn("bob", wardtest.BobPassword, "", "")
	hc := a.c.HTTPClient()
	if st, body, err := get(hc, res.URL+"/doc"); err != nil || st != 200 || !strings.HasSuffix(body, "urn:ward:acr:password") {
		t.Fatalf("first request: %d %q %v", st, body, err)
	}
	code, _ := totp.GenerateCode(bobTOTP, in.Clock.Now())
	if err := in.App.Identity.EnrollTOTP(ctx, "admin", bob.ID, bobTOTP, code); err != nil {
		t.Fatal(err)
	}
	state.Require(in.URL, bob.ID, rs.Requirement{ACR: acrMFA})

	_, _, err := get(hc, res.URL+"/doc")
	var re *oauth2x.ReauthError
	if !errors.As(err, &re) || re.Challenge == nil || re.Challenge.Error != rs.CodeInsufficientUserAuthentication ||
		len(re.Challenge.ACRValues) != 1 || re.Challenge.ACRValues[0] != acrMFA || !strings.Contains(re.Claims, acrMFA) {
		t.Fatalf("step-up: %v %+v", err, re)
	}
	authURL := a.cfg.AuthCodeURL("s", oauth2x.ClaimsOption(re.Claims))
	if !strings.Contains(authURL, "claims=") || !strings.Contains(authURL, "cp1") {
		t.Fatalf("AuthCodeURL without the claims: %s", authURL)
	}
	a.signIn("bob", wardtest.BobPassword, bobTOTP, re.Claims)
	if st, body, err := get(hc, res.URL+"/doc"); err != nil || st != 200 || !strings.HasSuffix(body, acrMFA) {
		t.Fatalf("after the step-up: %d %q %v", st, body, err)
	}
}

// recorder is a base transport that records every request.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	if req.URL.Hostname() == "resource.example.test" {
		return nil, errors.New("recorder: no network")
	}
	return http.DefaultTransport.RoundTrip(req)
}

// The attacker side: challenges that must not be followed, bodies that
// cannot be replayed, a resource that challenges forever, plain http and
// redirects to other origins.
func TestAttacks(t *testing.T) {
	in := startWard(t, false)
	rec := &recorder{}
	a := &app{t: t, in: in, cfg: oauthConfig(in, dpopApp, ""), signer: newSigner(t)}
	c, err := oauth2x.New(a.cfg, nil, oauth2x.Options{Signer: a.signer, Now: in.Clock.Now, HTTPClient: &http.Client{Transport: rec},
		OnToken: func(tok *oauth2.Token) error { a.mu.Lock(); a.saved = append(a.saved, tok); a.mu.Unlock(); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	a.c = c
	tok := a.signIn("bob", wardtest.BobPassword, "", "")

	var mu sync.Mutex
	var calls int
	var bodies, auths []string
	var answer func(w http.ResponseWriter)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		bodies = append(bodies, string(b))
		auths = append(auths, r.Header.Get("Authorization")+"|"+r.Header.Get("DPoP"))
		f := answer
		mu.Unlock()
		f(w)
	}))
	defer evil.Close()
	reset := func(f func(w http.ResponseWriter)) {
		mu.Lock()
		calls, bodies, auths, answer = 0, nil, nil, f
		mu.Unlock()
	}
	challenge := func(claims string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("WWW-Authenticate", `DPoP algs="ES256", error="insufficient_claims", claims="`+claims+`"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "challenged")
		}
	}
	valid := base64.RawURLEncoding.EncodeToString([]byte(`{"access_token":{"nbf":{"essential":true,"value":"` + fmt.Sprint(in.Clock.Now().Unix()) + `"}}}`))
	hc := c.HTTPClient()

	for name, claims := range map[string]string{
		"claims not base64":   "%%%not*base64%%%",
		"claims not JSON":     base64.RawURLEncoding.EncodeToString([]byte("not json")),
		"claims a JSON array": base64.RawURLEncoding.EncodeToString([]byte(`["access_token"]`)),
		"claims truncated":    valid[:len(valid)-7],
	} {
		t.Run(name+" is ignored", func(t *testing.T) {
			reset(challenge(claims))
			before := a.tokens()
			resp, err := hc.Get(evil.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || string(b) != "challenged" || calls != 1 || a.tokens() != before {
				t.Fatalf("got %d %q after %d calls and %d refreshes; want the 401 as is, no refresh", resp.StatusCode, b, calls, a.tokens()-before)
			}
		})
	}

	t.Run("retried at most once", func(t *testing.T) {
		reset(challenge(valid))
		before := a.tokens()
		req, _ := http.NewRequest(http.MethodPost, evil.URL+"/x", strings.NewReader("payload=1"))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || calls != 2 || a.tokens() != before+1 {
			t.Fatalf("got %d after %d calls and %d refreshes; want 401, 2 calls, 1 refresh", resp.StatusCode, calls, a.tokens()-before)
		}
		if bodies[0] != "payload=1" || bodies[1] != "payload=1" || auths[0] == auths[1] {
			t.Fatalf("bodies %q; the retry must replay the body with the new token and a new proof", bodies)
		}
	})

	t.Run("a body that cannot be replayed is not retried", func(t *testing.T) {
		reset(challenge(valid))
		before := a.tokens()
		req, _ := http.NewRequest(http.MethodPost, evil.URL+"/x", io.MultiReader(strings.NewReader("once")))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || calls != 1 || a.tokens() != before {
			t.Fatalf("got %d after %d calls and %d refreshes", resp.StatusCode, calls, a.tokens()-before)
		}
	})

	cur, _ := c.Token()
	t.Run("no token over plain http", func(t *testing.T) {
		rec.mu.Lock()
		n := len(rec.reqs)
		rec.mu.Unlock()
		_, err := hc.Get("http://resource.example.test/x")
		if err == nil || !strings.Contains(err.Error(), "plain http") {
			t.Fatalf("err = %v", err)
		}
		// Not even through a client that follows redirects, from a
		// loopback resource to an http one.
		reset(func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://resource.example.test/steal")
			w.WriteHeader(http.StatusFound)
		})
		follow := &http.Client{Transport: c.Transport()}
		if _, err := follow.Get(evil.URL + "/x"); err == nil || !strings.Contains(err.Error(), "plain http") {
			t.Fatalf("redirect to plain http: %v", err)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rec.reqs[n:] {
			if r.URL.Hostname() == "resource.example.test" {
				t.Fatalf("a request went to %s (Authorization %v)", r.URL, r.Header.Get("Authorization") != "")
			}
		}
	})

	t.Run("a redirect to another origin gets no token", func(t *testing.T) {
		var got http.Header
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
		defer other.Close()
		reset(func(w http.ResponseWriter) {
			w.Header().Set("Location", other.URL+"/collect")
			w.WriteHeader(http.StatusFound)
		})
		follow := &http.Client{Transport: c.Transport()}
		resp, err := follow.Get(evil.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got == nil || got.Get("Authorization") != "" || got.Get("DPoP") != "" {
			t.Fatalf("the other origin got a token (Authorization %v, DPoP %v)", got.Get("Authorization") != "", got.Get("DPoP") != "")
		}
		if !strings.HasPrefix(auths[0], "DPoP "+cur.AccessToken+"|") {
			t.Fatal("the first origin did not get the token")
		}
		// HTTPClient does not follow redirects at all.
		resp, err = hc.Get(evil.URL + "/x")
		if err != nil || resp.StatusCode != http.StatusFound {
			t.Fatalf("HTTPClient: %v %v", resp, err)
		}
		resp.Body.Close()
	})

	if tok.Type() != "DPoP" {
		t.Fatal(tok.Type())
	}
}

// The claims challenge of both of Ward's forms, and Entra's padded
// base64.
func TestParseChallenge(t *testing.T) {
	claims := `{"access_token":{"acr":{"essential":true,"values":["urn:ward:acr:mfa"]},"auth_time":{"essential":true}}}`
	resp := &http.Response{StatusCode: 401, Header: http.Header{"Www-Authenticate": {
		`DPoP algs="ES256", error="insufficient_user_authentication", error_description="stronger", acr_values="urn:ward:acr:mfa", max_age=42, claims="` +
			base64.StdEncoding.EncodeToString([]byte(claims)) + `"`}}}
	ch, ok := oauth2x.ParseChallenge(resp)
	if !ok || ch.Scheme != "DPoP" || ch.Error != "insufficient_user_authentication" || ch.Claims != claims || ch.MaxAge != 42 ||
		len(ch.ACRValues) != 1 || ch.ACRValues[0] != acrMFA || ch.Description != "stronger" {
		t.Fatalf("%+v %v", ch, ok)
	}
	resp.StatusCode = 403
	if _, ok := oauth2x.ParseChallenge(resp); ok {
		t.Fatal("a 403 is no claims challenge")
	}
	var m map[string]map[string]any
	if err := json.Unmarshal([]byte(oauth2x.ClaimsRequest(claims)), &m); err != nil || m["access_token"]["acr"] == nil || m["access_token"]["xms_cc"] == nil {
		t.Fatalf("ClaimsRequest: %v %v", m, err)
	}
}

// New refuses what cannot be safe.
func TestNew(t *testing.T) {
	cfg := &oauth2.Config{ClientID: "x", Endpoint: oauth2.Endpoint{TokenURL: "http://id.example.com/token"}}
	if _, err := oauth2x.New(cfg, nil, oauth2x.Options{}); err == nil {
		t.Error("a plain http token endpoint was accepted")
	}
	cfg.Endpoint.TokenURL = "https://id.example.com/token"
	if _, err := oauth2x.New(cfg, &oauth2.Token{AccessToken: "a", TokenType: "DPoP"}, oauth2x.Options{}); err == nil {
		t.Error("a DPoP token without a signer was accepted")
	}
	if _, err := oauth2x.New(cfg, &oauth2.Token{AccessToken: "a", TokenType: "Bearer"}, oauth2x.Options{Signer: newSigner(t)}); err == nil {
		t.Error("a Bearer token with a signer was accepted")
	}
	c, err := oauth2x.New(cfg, nil, oauth2x.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Token(); err == nil {
		t.Error("Token without a token")
	}
}
