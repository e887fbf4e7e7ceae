package loadgen_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/loadgen"
	"github.com/ward-idp/ward/internal/wardtest"
)

// start runs a Ward on the real clock: the clients sign their proofs
// with the current time.
func start(t *testing.T) *wardtest.Instance {
	return wardtest.Start(t, wardtest.Options{RealClock: true})
}

var ccForm = url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}

// TestTokenClientNonce: the client keeps the server's newest DPoP-Nonce
// and every request has a fresh proof with it; proofs signed ahead with
// a nonce the server does not accept are dropped after its
// use_dpop_nonce challenge, and the request is sent again with a fresh
// one.
func TestTokenClientNonce(t *testing.T) {
	in := start(t)
	ctx := context.Background()
	tc := &loadgen.TokenClient{HTTP: &http.Client{Timeout: 10 * time.Second}, Endpoint: in.URL + "/token",
		ClientID: "service", Secret: wardtest.ServiceSecret, Signer: wardtest.NewSigner(t)}
	for i := range 3 {
		r := tc.Post(ctx, ccForm)
		if r.Err != nil || r.Status != http.StatusOK || r.Body["token_type"] != "DPoP" {
			t.Fatalf("request %d: %s %v %v", i, r.Code(), r.Body, r.Err)
		}
	}
	if tc.Nonce == "" || tc.NonceRetries > 1 {
		t.Fatalf("nonce %q after %d retries, want the server's after at most one", tc.Nonce, tc.NonceRetries)
	}
	retries := tc.NonceRetries

	// Proofs signed ahead are used once each: every request still passes
	// the replay check.
	tc.SignAhead(3)
	for i := range 3 {
		if r := tc.Post(ctx, ccForm); r.Status != http.StatusOK {
			t.Fatalf("request %d with a proof signed ahead: %s %v", i, r.Code(), r.Body)
		}
	}
	if tc.NonceRetries != retries {
		t.Fatalf("%d nonce retries with proofs signed ahead, want still %d", tc.NonceRetries, retries)
	}

	// Signed ahead with a nonce the server never issued: refused once,
	// then the client drops the rest and signs with the server's nonce.
	real := tc.Nonce
	tc.Nonce = "not-a-nonce-of-this-server"
	tc.SignAhead(4)
	if r := tc.Post(ctx, ccForm); r.Status != http.StatusOK {
		t.Fatalf("after stale proofs: %s %v", r.Code(), r.Body)
	}
	if tc.NonceRetries != retries+1 || tc.Nonce != real {
		t.Fatalf("retries %d, nonce %q (want %d and the server's %q)", tc.NonceRetries, tc.Nonce, retries+1, real)
	}
	if r := tc.Post(ctx, ccForm); r.Status != http.StatusOK || tc.NonceRetries != retries+1 {
		t.Fatalf("a stale proof signed ahead was sent: %s %v, %d retries", r.Code(), r.Body, tc.NonceRetries)
	}

	bad := &loadgen.TokenClient{HTTP: tc.HTTP, Endpoint: tc.Endpoint, ClientID: "service", Secret: "wrong-secret", Signer: wardtest.NewSigner(t)}
	if r := bad.Post(ctx, ccForm); r.Code() != "401 invalid_client" {
		t.Fatalf("wrong secret: %s %v", r.Code(), r.Body)
	}
	down := &loadgen.TokenClient{HTTP: tc.HTTP, Endpoint: "http://127.0.0.1:1/token", ClientID: "service", Secret: "x"}
	if r := down.Post(ctx, ccForm); r.Err == nil || r.Code() != "transport_error" {
		t.Fatalf("no server: %s %v", r.Code(), r.Err)
	}
}

// TestSignInAndResource: a browser signs bob in (PKCE), the code is
// redeemed for a DPoP-bound token, and the token calls /userinfo with a
// fresh proof; the same token with another key, or as a bearer token, is
// refused.
func TestSignInAndResource(t *testing.T) {
	in := start(t)
	ctx := context.Background()
	l := loadgen.Login{AuthorizeURL: in.URL + "/authorize", LoginURL: in.URL + "/login", ClientID: "web",
		RedirectURI: wardtest.RedirectURI, Scope: "openid offline_access", Username: "bob", Password: "wrong-password"}
	resp, _, _, err := l.Start(ctx, loadgen.Browser(http.DefaultTransport, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if code := loadgen.CodeOf(resp); code != "" || resp.StatusCode == http.StatusSeeOther {
		t.Fatalf("a wrong password answered %d with code %q", resp.StatusCode, code)
	}

	l.Password = wardtest.BobPassword
	resp, _, verifier, err := l.Start(ctx, loadgen.Browser(http.DefaultTransport, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	code := loadgen.CodeOf(resp)
	if code == "" {
		t.Fatalf("sign-in answered %d without a code", resp.StatusCode)
	}
	s := wardtest.NewSigner(t)
	hc := &http.Client{Timeout: 10 * time.Second}
	tc := &loadgen.TokenClient{HTTP: hc, Endpoint: in.URL + "/token", ClientID: "web", Secret: wardtest.WebSecret, Signer: s}
	r := tc.Post(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}})
	at, _ := r.Body["access_token"].(string)
	if r.Status != http.StatusOK || at == "" || r.Body["token_type"] != "DPoP" || r.Body["refresh_token"] == nil {
		t.Fatalf("code exchange: %s %v", r.Code(), r.Body)
	}
	u := in.URL + "/userinfo"
	if r := loadgen.GetResource(ctx, hc, u, at, s); r.Err != nil || r.Status != http.StatusOK {
		t.Fatalf("userinfo with the bound key: %s %v %v %q", r.Code(), r.Err, r.Body, r.Header.Get("WWW-Authenticate"))
	}
	for name, s := range map[string]*dpop.Signer{"another key": wardtest.NewSigner(t), "no proof (bearer)": nil} {
		r := loadgen.GetResource(ctx, hc, u, at, s)
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), "DPoP") {
			t.Errorf("userinfo with %s: %d %q, want 401 with a DPoP challenge", name, r.Status, r.Header.Get("WWW-Authenticate"))
		}
	}
	// The code is spent: redeeming it again fails and revokes what it gave.
	if r := tc.Post(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}}); r.Code() != "400 invalid_grant" {
		t.Fatalf("second redemption: %s", r.Code())
	}
	if r := loadgen.GetResource(ctx, hc, u, at, s); r.Code() != "401 invalid_token" {
		t.Fatalf("userinfo after the code's replay: %s", r.Code())
	}
}

// TestLoginNeedsTheForm: an authorization request Ward does not answer
// with its sign-in form is an error, not a sign-in.
func TestLoginNeedsTheForm(t *testing.T) {
	in := start(t)
	l := loadgen.Login{AuthorizeURL: in.URL + "/authorize", LoginURL: in.URL + "/login", ClientID: "no-such-client",
		RedirectURI: wardtest.RedirectURI, Scope: "openid", Username: "bob", Password: wardtest.BobPassword}
	if _, _, _, err := l.Start(context.Background(), loadgen.Browser(http.DefaultTransport, 10*time.Second)); err == nil ||
		!strings.Contains(err.Error(), "no sign-in form") {
		t.Fatalf("unknown client: %v", err)
	}
}
