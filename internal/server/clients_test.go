package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

var serviceAuth = [2]string{"service", wardtest.ServiceSecret}

func TestClientCredentials(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	r := do(t, in, call{path: "/token", basic: serviceAuth, signer: s, form: url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}})
	if r.Status != 200 || r.str("token_type") != "DPoP" || r.str("refresh_token") != "" || r.str("scope") != "docs.read" {
		t.Fatalf("client_credentials: %d %s", r.Status, r.Body)
	}
	c := claims(t, r.str("access_token"))
	if c["sub"] != "service" || c["client_id"] != "service" || c["sid"] != nil {
		t.Errorf("claims %v", c)
	}
	// Without DPoP: a bearer token, recorded as unbound with a reason.
	r = do(t, in, call{path: "/token", basic: serviceAuth, form: url.Values{"grant_type": {"client_credentials"}}})
	if r.Status != 200 || r.str("token_type") != "Bearer" {
		t.Fatalf("bearer client_credentials: %d %s", r.Status, r.Body)
	}
	evs, _ := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventTokenIssued}})
	if len(evs) != 2 || evs[0].Binding != model.BindingUnbound || evs[0].BindingReason == "" || evs[1].Binding != model.BindingDPoP {
		t.Fatalf("token events: %+v", evs)
	}

	for name, tc := range map[string]struct {
		c      call
		status int
		code   string
	}{
		"wrong secret":          {call{basic: [2]string{"service", "wrong"}}, 401, "invalid_client"},
		"unknown client":        {call{basic: [2]string{"ghost", "x"}}, 401, "invalid_client"},
		"secret in body too":    {call{basic: serviceAuth, form: url.Values{"client_secret": {"x"}}}, 400, "invalid_request"},
		"post instead of basic": {call{form: url.Values{"client_id": {"service"}, "client_secret": {wardtest.ServiceSecret}}}, 401, "invalid_client"},
		"no auth":               {call{form: url.Values{"client_id": {"service"}}}, 401, "invalid_client"},
		"scope not allowed":     {call{basic: serviceAuth, form: url.Values{"scope": {"admin"}}}, 400, "invalid_scope"},
		"openid scope":          {call{basic: serviceAuth, form: url.Values{"scope": {"openid"}}}, 400, "invalid_scope"},
		"public client":         {call{form: url.Values{"client_id": {"native"}}}, 400, "unauthorized_client"},
		"unknown grant":         {call{basic: serviceAuth, form: url.Values{"grant_type": {"password"}}}, 400, "unsupported_grant_type"},
		"bad DPoP header":       {call{basic: serviceAuth, proof: "not.a.jwt"}, 400, "invalid_dpop_proof"},
		"repeated parameter":    {call{basic: serviceAuth, form: url.Values{"scope": {"docs.read", "docs.write"}}}, 400, "invalid_request"},
	} {
		t.Run(name, func(t *testing.T) {
			c := tc.c
			c.path = "/token"
			if c.form == nil {
				c.form = url.Values{}
			}
			if c.form.Get("grant_type") == "" {
				c.form.Set("grant_type", "client_credentials")
			}
			r := do(t, in, c)
			wantError(t, r, tc.status, tc.code)
			if tc.status == 401 && !strings.Contains(r.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 without WWW-Authenticate: %v", r.Header)
			}
		})
	}
	// Wrong content type.
	req, _ := http.NewRequest("POST", in.URL+"/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("service", wardtest.ServiceSecret)
	resp, _ := http.DefaultClient.Do(req)
	if resp.StatusCode != 400 {
		t.Errorf("JSON body: %d, want 400", resp.StatusCode)
	}
}

func TestDPoPNonce(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) { c.DPoP.RequireNonce = true }})
	s := newSigner(t)
	form := url.Values{"grant_type": {"client_credentials"}}
	r := do(t, in, call{path: "/token", basic: serviceAuth, signer: s, form: form})
	wantError(t, r, 400, "use_dpop_nonce")
	nonce := r.Header.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatal("use_dpop_nonce without DPoP-Nonce header")
	}
	wantError(t, do(t, in, call{path: "/token", basic: serviceAuth, signer: s, nonce: "forged-nonce", form: form}), 400, "use_dpop_nonce")
	r = do(t, in, call{path: "/token", basic: serviceAuth, signer: s, nonce: nonce, form: form})
	if r.Status != 200 || r.str("token_type") != "DPoP" {
		t.Fatalf("with nonce: %d %s", r.Status, r.Body)
	}
	// Nonces expire.
	in.Clock.Advance(time.Hour)
	wantError(t, do(t, in, call{path: "/token", basic: serviceAuth, signer: s, nonce: nonce, form: form}), 400, "use_dpop_nonce")
}

func TestConfidentialClientAndIntrospectionRevocation(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	webAuth := [2]string{"web", wardtest.WebSecret}
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	loc := in.Login(t, b, in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
	code := loc.Query().Get("code")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}
	r := do(t, in, call{path: "/token", basic: webAuth, form: form})
	if r.Status != 200 || r.str("token_type") != "Bearer" || r.str("refresh_token") == "" {
		t.Fatalf("web token: %d %s", r.Status, r.Body)
	}
	at, rt := r.str("access_token"), r.str("refresh_token")

	intro := func(tok string, auth [2]string) result {
		return do(t, in, call{path: "/introspect", basic: auth, form: url.Values{"token": {tok}}})
	}
	ir := intro(at, serviceAuth)
	if ir.Status != 200 || ir.JSON["active"] != true || ir.str("username") != "bob" || ir.str("token_type") != "Bearer" {
		t.Fatalf("introspect AT: %d %s", ir.Status, ir.Body)
	}
	if ir := intro(rt, webAuth); ir.JSON["active"] != true || ir.str("token_type") != "refresh_token" {
		t.Fatalf("introspect RT by owner: %s", ir.Body)
	}
	if ir := intro(rt, serviceAuth); ir.JSON["active"] != false {
		t.Fatalf("RT introspected by another client: %s", ir.Body)
	}
	if ir := intro("garbage", serviceAuth); ir.Status != 200 || ir.JSON["active"] != false {
		t.Fatalf("garbage: %s", ir.Body)
	}
	if ir := do(t, in, call{path: "/introspect", form: url.Values{"token": {at}, "client_id": {"native"}}}); ir.Status != 401 {
		t.Fatalf("public client introspection: %d", ir.Status)
	}
	// A tampered token is inactive.
	parts := strings.Split(at, ".")
	if ir := intro(parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2])), serviceAuth); ir.JSON["active"] != false {
		t.Fatal("tampered token active")
	}

	// Revocation by another client is a silent no-op.
	if rr := do(t, in, call{path: "/revoke", basic: serviceAuth, form: url.Values{"token": {rt}}}); rr.Status != 200 {
		t.Fatalf("revoke by other: %d", rr.Status)
	}
	if ir := intro(rt, webAuth); ir.JSON["active"] != true {
		t.Fatal("another client revoked the refresh token")
	}
	if rr := do(t, in, call{path: "/revoke", basic: webAuth, form: url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}}}); rr.Status != 200 {
		t.Fatalf("revoke: %d %s", rr.Status, rr.Body)
	}
	if ir := intro(rt, webAuth); ir.JSON["active"] != false {
		t.Fatal("revoked refresh token still active")
	}
	wantError(t, do(t, in, call{path: "/token", basic: webAuth, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}}), 400, "invalid_grant")
	// Revoking the access token ends its session.
	if rr := do(t, in, call{path: "/revoke", basic: webAuth, form: url.Values{"token": {at}}}); rr.Status != 200 {
		t.Fatalf("revoke AT: %d", rr.Status)
	}
	if ir := intro(at, serviceAuth); ir.JSON["active"] != false {
		t.Fatal("revoked access token still active")
	}
	// client_secret_post is refused for a basic client.
	form.Set("client_id", "web")
	form.Set("client_secret", wardtest.WebSecret)
	wantError(t, do(t, in, call{path: "/token", form: form}), 401, "invalid_client")
}

func TestPrivateKeyJWTAndPAR(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "pkj", Name: "PKJ", AuthMethod: "private_key_jwt", JWKS: string(jwks),
			RedirectURIs: []string{wardtest.RedirectURI}, GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"}, Scopes: []string{"openid", "docs.read"}})
	}})
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	assertion := func(aud string, exp time.Duration, jti string) string {
		now := in.Clock.Now()
		s, _ := jwt.Signed(signer).Claims(jwt.Claims{Issuer: "pkj", Subject: "pkj", Audience: jwt.Audience{aud}, ID: jti,
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(exp))}).Serialize()
		return s
	}
	cc := func(a string) result {
		return do(t, in, call{path: "/token", form: url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}}})
	}
	a := assertion(in.URL, time.Minute, "j1")
	if r := cc(a); r.Status != 200 {
		t.Fatalf("private_key_jwt: %d %s", r.Status, r.Body)
	}
	wantError(t, cc(a), 401, "invalid_client") // replayed assertion
	wantError(t, cc(assertion("https://other.example", time.Minute, "j2")), 401, "invalid_client")
	wantError(t, cc(assertion(in.URL, time.Hour, "j3")), 401, "invalid_client")
	wantError(t, cc(assertion(in.URL, -time.Minute, "j4")), 401, "invalid_client")
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSigner, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: otherKey, KeyID: "k1"}}, nil)
	forged, _ := jwt.Signed(otherSigner).Claims(jwt.Claims{Issuer: "pkj", Subject: "pkj", Audience: jwt.Audience{in.URL}, ID: "j5",
		Expiry: jwt.NewNumericDate(in.Clock.Now().Add(time.Minute))}).Serialize()
	wantError(t, cc(forged), 401, "invalid_client")

	// PAR with a DPoP proof: the pushed request is bound to that key.
	s := newSigner(t)
	verifier, challenge := wardtest.PKCE()
	par := do(t, in, call{path: "/par", signer: s, form: url.Values{
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion(in.URL, time.Minute, "p1")},
		"response_type": {"code"}, "redirect_uri": {wardtest.RedirectURI}, "scope": {"openid"}, "state": {"par-state"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}}})
	if par.Status != 201 || !strings.HasPrefix(par.str("request_uri"), "urn:ietf:params:oauth:request_uri:") {
		t.Fatalf("PAR: %d %s", par.Status, par.Body)
	}
	u := in.URL + "/authorize?" + url.Values{"client_id": {"pkj"}, "request_uri": {par.str("request_uri")}}.Encode()
	loc := in.Login(t, in.Browser(), u, "bob", wardtest.BobPassword, "")
	if loc.Query().Get("state") != "par-state" {
		t.Fatalf("PAR redirect: %v", loc)
	}
	// The request_uri is one-time.
	r, body := wardtest.Do(t, in.Browser(), http.MethodGet, u, nil)
	if r.StatusCode != 400 || !strings.Contains(body, "request_uri") {
		t.Fatalf("reused request_uri: %d", r.StatusCode)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion(in.URL+"/token", time.Minute, "t1")}}
	// Another key than the one used at PAR is refused.
	wantError(t, do(t, in, call{path: "/token", signer: newSigner(t), form: form}), 400, "invalid_grant")

	// PAR errors reach the client directly.
	bad := do(t, in, call{path: "/par", form: url.Values{"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion(in.URL, time.Minute, "p2")},
		"response_type": {"code"}, "redirect_uri": {wardtest.RedirectURI}, "code_challenge": {challenge}, "code_challenge_method": {"plain"}}})
	wantError(t, bad, 400, "invalid_request")
}

func TestLogout(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	loc := in.Login(t, b, in.AuthorizeURL("spa", challenge, url.Values{"dpop_jkt": {s.Thumbprint()}}), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	r := exchange(t, in, "spa", loc.Query().Get("code"), verifier, s)
	idt := r.str("id_token")

	// Without a hint: a confirmation page, and nothing ends yet.
	resp, body := wardtest.Do(t, b, http.MethodGet, in.URL+"/logout", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "Sign out of Ward?") {
		t.Fatalf("logout confirm: %d", resp.StatusCode)
	}
	// Unregistered post_logout_redirect_uri is refused.
	resp, _ = wardtest.Do(t, b, http.MethodGet, in.URL+"/logout?"+url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode(), nil)
	if resp.StatusCode != 400 {
		t.Fatalf("evil post_logout_redirect_uri: %d", resp.StatusCode)
	}
	resp, _ = wardtest.Do(t, b, http.MethodGet, in.URL+"/logout?"+url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {"https://app.example/bye"}, "state": {"x"}}.Encode(), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "https://app.example/bye?state=x" {
		t.Fatalf("logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	wantError(t, refresh(t, in, "spa", r.str("refresh_token"), s), 400, "invalid_grant")
	// The browser must sign in again.
	resp, _ = wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("spa", challenge, nil), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after logout: %d, want the login page", resp.StatusCode)
	}
}
