package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// These tests use golang.org/x/oauth2, the standard Go OAuth 2 client, with
// Ward's public dpop.Transport underneath: x/oauth2 knows nothing of DPoP,
// the Transport adds the proofs (and follows server nonces), and x/oauth2
// passes the "DPoP" token type through to the Authorization header.

// recorder is a Base transport that keeps what was sent and received.
type recorder struct {
	mu    sync.Mutex
	calls []recordedCall
}

type recordedCall struct {
	method, path, authz, proof string
	status                     int
	wwwAuthenticate            string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	c := recordedCall{method: req.Method, path: req.URL.Path, authz: req.Header.Get("Authorization"), proof: req.Header.Get("DPoP")}
	if err == nil {
		c.status, c.wwwAuthenticate = resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) since(n int) []recordedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedCall(nil), r.calls[n:]...)
}

func (r *recorder) len() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.calls) }

// client is one DPoP key with its Transport and an x/oauth2 context.
type client struct {
	signer *dpop.Signer
	rec    *recorder
	dt     *dpop.Transport
	ctx    context.Context
}

func newClient(t *testing.T) *client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	dt := &dpop.Transport{Base: rec, Signer: s}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: dt, Timeout: 30 * time.Second})
	return &client{signer: s, rec: rec, dt: dt, ctx: ctx}
}

// discover reads the OpenID configuration with a plain HTTP client.
func discover(t *testing.T, in *wardtest.Instance) map[string]any {
	t.Helper()
	resp, err := http.Get(in.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var md map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery: %d %v", resp.StatusCode, err)
	}
	if md["issuer"] != in.URL {
		t.Fatalf("issuer %v, want %s", md["issuer"], in.URL)
	}
	return md
}

func endpoint(md map[string]any, style oauth2.AuthStyle) oauth2.Endpoint {
	s := func(k string) string { v, _ := md[k].(string); return v }
	return oauth2.Endpoint{AuthURL: s("authorization_endpoint"), TokenURL: s("token_endpoint"), AuthStyle: style}
}

func spaConfig(md map[string]any) *oauth2.Config {
	// A public client authenticates with client_id in the body only.
	return &oauth2.Config{ClientID: "spa", Endpoint: endpoint(md, oauth2.AuthStyleInParams), RedirectURL: wardtest.RedirectURI,
		Scopes: []string{"openid", "profile", "offline_access"}}
}

// signIn runs the authorization request for conf with PKCE and dpop_jkt,
// signs bob in through the pages and exchanges the code.
func signIn(t *testing.T, in *wardtest.Instance, c *client, conf *oauth2.Config) *oauth2.Token {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	state := "st-" + oauth2.GenerateVerifier()[:8]
	u := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("dpop_jkt", c.signer.Thumbprint()),
		oauth2.SetAuthURLParam("nonce", "n-"+state))
	loc := in.Login(t, in.Browser(), u, "bob", wardtest.BobPassword, "")
	q := loc.Query()
	if q.Get("error") != "" || q.Get("state") != state || q.Get("iss") != in.URL || q.Get("code") == "" {
		t.Fatalf("authorization response %v", q)
	}
	tok, err := conf.Exchange(c.ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	return tok
}

// jwtClaims decodes a JWT payload without verifying it.
func jwtClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	return wardtest.JWTClaims(t, jwt)
}

// proofClaims decodes a DPoP proof's claims.
func proofClaims(t *testing.T, proof string) map[string]any {
	t.Helper()
	if proof == "" {
		t.Fatal("no DPoP proof was sent")
	}
	return jwtClaims(t, proof)
}

// post sends a form with client_secret_basic (or client_id for "") and
// decodes the JSON answer.
func post(t *testing.T, u, clientID, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	if secret == "" {
		form.Set("client_id", clientID)
	}
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func userinfo(t *testing.T, api *http.Client, in *wardtest.Instance) (int, map[string]any, http.Header) {
	t.Helper()
	resp, err := api.Get(in.URL + "/userinfo")
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m, resp.Header
}

func TestXOAuth2(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{RealClock: true})
	md := discover(t, in)
	introspectURL, _ := md["introspection_endpoint"].(string)
	revokeURL, _ := md["revocation_endpoint"].(string)
	c := newClient(t)
	conf := spaConfig(md)

	// Authorization code + PKCE + DPoP, public client.
	tok := signIn(t, in, c, conf)
	if tok.Type() != "DPoP" || tok.RefreshToken == "" || tok.Extra("id_token") == nil {
		t.Fatalf("token: type %q, refresh %t, id_token %t", tok.Type(), tok.RefreshToken != "", tok.Extra("id_token") != nil)
	}
	cnf, _ := jwtClaims(t, tok.AccessToken)["cnf"].(map[string]any)
	if cnf["jkt"] != c.signer.Thumbprint() {
		t.Fatalf("cnf %v, want jkt %s", cnf, c.signer.Thumbprint())
	}
	for _, call := range c.rec.since(0) {
		if call.path == "/token" && (call.proof == "" || strings.HasPrefix(call.authz, "DPoP")) {
			t.Fatalf("token request without proof or with a DPoP authorization: %+v", call)
		}
	}

	// userinfo through oauth2.NewClient: oauth2.Transport sets
	// "Authorization: DPoP <at>", dpop.Transport adds the proof with ath.
	n := c.rec.len()
	api := oauth2.NewClient(c.ctx, conf.TokenSource(c.ctx, tok))
	status, info, _ := userinfo(t, api, in)
	if status != 200 || info["preferred_username"] != "bob" {
		t.Fatalf("userinfo: %d %v", status, info)
	}
	calls := c.rec.since(n)
	if len(calls) != 1 || calls[0].authz != "DPoP "+tok.AccessToken {
		t.Fatalf("userinfo calls %+v, want one with Authorization DPoP <at>", calls)
	}
	if pc := proofClaims(t, calls[0].proof); pc["ath"] != dpop.AccessTokenHash(tok.AccessToken) || pc["htm"] != "GET" || pc["htu"] != in.URL+"/userinfo" {
		t.Fatalf("userinfo proof claims %v", pc)
	}

	// Introspection by the confidential client: active, DPoP, cnf.jkt.
	status, ir := post(t, introspectURL, "service", wardtest.ServiceSecret, url.Values{"token": {tok.AccessToken}})
	irCnf, _ := ir["cnf"].(map[string]any)
	if status != 200 || ir["active"] != true || ir["token_type"] != "DPoP" || irCnf["jkt"] != c.signer.Thumbprint() || ir["client_id"] != "spa" {
		t.Fatalf("introspect: %d %v", status, ir)
	}

	// Refresh with rotation: the TokenSource refreshes an expired token
	// through the context's client, so the refresh request carries a
	// proof of the same key (Ward binds the public client's refresh token
	// to it).
	expired := *tok
	expired.Expiry = time.Now().Add(-time.Minute)
	n = c.rec.len()
	tok2, err := conf.TokenSource(c.ctx, &expired).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken || tok2.AccessToken == tok.AccessToken || tok2.Type() != "DPoP" {
		t.Fatalf("refresh did not rotate: same RT %t, same AT %t, type %q", tok2.RefreshToken == tok.RefreshToken, tok2.AccessToken == tok.AccessToken, tok2.Type())
	}
	if calls := c.rec.since(n); len(calls) != 1 || calls[0].path != "/token" || proofClaims(t, calls[0].proof)["htu"] != in.URL+"/token" {
		t.Fatalf("refresh calls %+v", calls)
	}
	// The refreshed token works at userinfo.
	if status, _, _ := userinfo(t, oauth2.NewClient(c.ctx, oauth2.StaticTokenSource(tok2)), in); status != 200 {
		t.Fatalf("userinfo with the refreshed token: %d", status)
	}

	// Revocation by the token's client (public: client_id in the body).
	// The token is DPoP-bound: without a proof of its key it is refused
	// and stays valid; through the client's DPoP transport it is revoked.
	if status, body := post(t, revokeURL, "spa", "", url.Values{"token": {tok2.AccessToken}}); status != 400 || body["error"] != "invalid_dpop_proof" {
		t.Fatalf("revoke without a proof: %d %v", status, body)
	}
	if status, ir := post(t, introspectURL, "service", wardtest.ServiceSecret, url.Values{"token": {tok2.AccessToken}}); status != 200 || ir["active"] != true {
		t.Fatalf("introspect after a refused revocation: %d %v", status, ir)
	}
	resp, err := (&http.Client{Transport: c.dt}).PostForm(revokeURL, url.Values{"token": {tok2.AccessToken}, "client_id": {"spa"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke with the client's DPoP transport: %d", resp.StatusCode)
	}
	// Then introspection says inactive and userinfo refuses the token.
	if status, ir := post(t, introspectURL, "service", wardtest.ServiceSecret, url.Values{"token": {tok2.AccessToken}}); status != 200 || ir["active"] != false {
		t.Fatalf("introspect after revocation: %d %v", status, ir)
	}
	status, _, h := userinfo(t, oauth2.NewClient(c.ctx, oauth2.StaticTokenSource(tok2)), in)
	if status != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "DPoP") {
		t.Fatalf("userinfo after revocation: %d %q", status, h.Get("WWW-Authenticate"))
	}
	// Revoking the access token ended the client's grant: its refresh
	// token is refused, with invalid_grant.
	expired2 := *tok2
	expired2.Expiry = time.Now().Add(-time.Minute)
	_, err = conf.TokenSource(c.ctx, &expired2).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh after revocation: %v, want invalid_grant", err)
	}
}

func TestXOAuth2RefreshReuse(t *testing.T) {
	// RFC 9700 §4.14.2 as an independent client sees it. Ward's detectors
	// also answer the reuse by revoking every session of the user, the
	// one signed in next included while the response runs (tested in
	// internal/gateway): off here, so the client's view is what is tested.
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) { c.Risk.AutoRevokeLevel = "off" }})
	md := discover(t, in)
	c := newClient(t)
	conf := spaConfig(md)
	tok := signIn(t, in, c, conf)
	old := *tok
	old.Expiry = time.Now().Add(-time.Minute)
	tok2, err := conf.TokenSource(c.ctx, &old).Token()
	if err != nil || tok2.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v", err)
	}
	// The rotated refresh token fails with invalid_grant ...
	_, err = conf.TokenSource(c.ctx, &old).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != 400 {
		t.Fatalf("reused refresh token: %v, want 400 invalid_grant", err)
	}
	// ... and its reuse ends the session (RFC 9700 §4.14.2).
	fresh := *tok2
	fresh.Expiry = time.Now().Add(-time.Minute)
	if _, err := conf.TokenSource(c.ctx, &fresh).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh token of a session ended by reuse: %v", err)
	}
	// Another key cannot refresh (the refresh token is bound to the key).
	// The reuse is a risk detection, handled on the risk engine's time: a
	// sign-in racing its level change would be refused (409), as designed.
	waitRiskDetection(t, in, "bob")
	tok3 := signIn(t, in, c, conf)
	thief := newClient(t)
	stolen := *tok3
	stolen.Expiry = time.Now().Add(-time.Minute)
	if _, err := conf.TokenSource(thief.ctx, &stolen).Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh with another key: %v", err)
	}
	// Nor use the access token.
	if status, _, _ := userinfo(t, oauth2.NewClient(thief.ctx, oauth2.StaticTokenSource(tok3)), in); status < 400 {
		t.Fatalf("access token used with another key: %d", status)
	}
}

func TestXOAuth2ClientCredentials(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{RealClock: true})
	md := discover(t, in)
	c := newClient(t)
	cc := &clientcredentials.Config{ClientID: "service", ClientSecret: wardtest.ServiceSecret,
		TokenURL: endpoint(md, oauth2.AuthStyleInHeader).TokenURL, AuthStyle: oauth2.AuthStyleInHeader, Scopes: []string{"docs.read"}}
	tok, err := cc.Token(c.ctx)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	if tok.Type() != "DPoP" || tok.RefreshToken != "" {
		t.Fatalf("token type %q, refresh %t", tok.Type(), tok.RefreshToken != "")
	}
	calls := c.rec.since(0)
	if len(calls) != 1 || !strings.HasPrefix(calls[0].authz, "Basic ") || proofClaims(t, calls[0].proof)["ath"] != nil {
		t.Fatalf("token calls %+v (want Basic authentication and a proof without ath)", calls)
	}
	introspectURL, _ := md["introspection_endpoint"].(string)
	status, ir := post(t, introspectURL, "service", wardtest.ServiceSecret, url.Values{"token": {tok.AccessToken}})
	irCnf, _ := ir["cnf"].(map[string]any)
	if status != 200 || ir["active"] != true || ir["token_type"] != "DPoP" || irCnf["jkt"] != c.signer.Thumbprint() || ir["scope"] != "docs.read" {
		t.Fatalf("introspect: %d %v", status, ir)
	}
}

// TestXOAuth2RequireNonce runs the flows against a Ward that demands a
// server nonce in every token-endpoint proof: dpop.Transport must take
// the nonce from the use_dpop_nonce rejection and retry once, invisibly
// to x/oauth2.
func TestXOAuth2RequireNonce(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) { c.DPoP.RequireNonce = true }})
	md := discover(t, in)

	c := newClient(t)
	cc := &clientcredentials.Config{ClientID: "service", ClientSecret: wardtest.ServiceSecret,
		TokenURL: endpoint(md, oauth2.AuthStyleInHeader).TokenURL, AuthStyle: oauth2.AuthStyleInHeader, Scopes: []string{"docs.read"}}
	if _, err := cc.Token(c.ctx); err != nil {
		t.Fatalf("client_credentials with nonce: %v", err)
	}
	calls := c.rec.since(0)
	if len(calls) != 2 || calls[0].status != 400 || calls[1].status != 200 {
		t.Fatalf("calls %+v, want 400 use_dpop_nonce then 200", calls)
	}
	if pc := proofClaims(t, calls[1].proof); pc["nonce"] == nil || proofClaims(t, calls[0].proof)["nonce"] != nil {
		t.Fatalf("first proof should have no nonce, the retry one: %v", pc)
	}
	// The nonce is remembered: the next token request goes through at once.
	n := c.rec.len()
	if _, err := cc.Token(c.ctx); err != nil {
		t.Fatal(err)
	}
	if calls := c.rec.since(n); len(calls) != 1 || calls[0].status != 200 {
		t.Fatalf("second client_credentials: %+v", calls)
	}

	// Code flow with a new key (nonce retry at the token endpoint), then
	// userinfo and refresh.
	u := newClient(t)
	conf := spaConfig(md)
	tok := signIn(t, in, u, conf)
	if tok.Type() != "DPoP" {
		t.Fatalf("token type %q", tok.Type())
	}
	if calls := u.rec.since(0); len(calls) != 2 || calls[0].status != 400 || calls[1].status != 200 {
		t.Fatalf("exchange calls %+v, want a nonce retry", calls)
	}
	if status, _, _ := userinfo(t, oauth2.NewClient(u.ctx, oauth2.StaticTokenSource(tok)), in); status != 200 {
		t.Fatalf("userinfo: %d", status)
	}
	expired := *tok
	expired.Expiry = time.Now().Add(-time.Minute)
	if tok2, err := conf.TokenSource(u.ctx, &expired).Token(); err != nil || tok2.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh with nonce: %v", err)
	}
}

// TestXOAuth2NonceExpiryAtUserinfo: dpop.Transport, like every client that
// follows RFC 9449 §8.2, keeps the token endpoint's DPoP-Nonce per origin
// and sends it to userinfo (same origin). When Ward no longer accepts that
// nonce while the access token is still valid, userinfo must answer with
// 401, WWW-Authenticate: DPoP error="use_dpop_nonce" and a fresh DPoP-Nonce
// (RFC 9449 §9, §7.1), which the Transport retries; any other answer
// strands the client until its next token request.
func TestXOAuth2NonceExpiryAtUserinfo(t *testing.T) {
	const lifetime = 2 * time.Second
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) { c.DPoP.NonceLifetime = lifetime }})
	md := discover(t, in)
	c := newClient(t)
	tok := signIn(t, in, c, spaConfig(md))
	api := oauth2.NewClient(c.ctx, oauth2.StaticTokenSource(tok))
	if status, _, _ := userinfo(t, api, in); status != 200 {
		t.Fatalf("userinfo: %d", status)
	}
	time.Sleep(lifetime + 1500*time.Millisecond)
	n := c.rec.len()
	status, _, h := userinfo(t, api, in)
	if status != 200 {
		calls := c.rec.since(n)
		t.Fatalf("userinfo with the expired nonce: %d, WWW-Authenticate %q, DPoP-Nonce %q (%d round trips); "+
			"RFC 9449 §9 wants 401 + DPoP error=\"use_dpop_nonce\" + DPoP-Nonce so that the client retries",
			status, h.Get("WWW-Authenticate"), h.Get("DPoP-Nonce"), len(calls))
	}
	if calls := c.rec.since(n); len(calls) != 2 || calls[0].status != 401 {
		t.Fatalf("calls %+v, want 401 use_dpop_nonce then 200", calls)
	}
}

// waitRiskDetection waits until the risk engine has recorded a detection
// of the user named username (it handles what it sees on its own time).
func waitRiskDetection(t *testing.T, in *wardtest.Instance, username string) {
	t.Helper()
	ctx := context.Background()
	u, err := in.App.Store.GetUserByUsername(ctx, username)
	if err != nil {
		t.Fatalf("user %s: %v", username, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ds, err := in.App.Store.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: u.ID})
		if err == nil && len(ds) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no risk detection of %s after 10 s (%v)", username, err)
		}
	}
}
