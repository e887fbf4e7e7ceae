package server_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

func TestDiscovery(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		r := do(t, in, call{path: path, method: http.MethodGet})
		if r.Status != 200 {
			t.Fatalf("%s: status %d", path, r.Status)
		}
		if r.str("issuer") != in.URL {
			t.Errorf("%s: issuer %q, want %q", path, r.str("issuer"), in.URL)
		}
		if r.JSON["authorization_response_iss_parameter_supported"] != true {
			t.Errorf("%s: authorization_response_iss_parameter_supported missing", path)
		}
		// The claims parameter carries CAE claims challenges back (nbf, acr).
		if r.JSON["claims_parameter_supported"] != true {
			t.Errorf("%s: claims_parameter_supported = %v, want true", path, r.JSON["claims_parameter_supported"])
		}
		algs, _ := r.JSON["dpop_signing_alg_values_supported"].([]any)
		if !slices.Contains(algs, any("ES256")) || slices.Contains(algs, any("HS256")) || slices.Contains(algs, any("none")) {
			t.Errorf("%s: dpop_signing_alg_values_supported = %v", path, algs)
		}
		cm, _ := r.JSON["code_challenge_methods_supported"].([]any)
		if len(cm) != 1 || cm[0] != "S256" {
			t.Errorf("%s: code_challenge_methods_supported = %v, want [S256]", path, cm)
		}
		if r.str("pushed_authorization_request_endpoint") != in.URL+"/par" {
			t.Errorf("%s: PAR endpoint %q", path, r.str("pushed_authorization_request_endpoint"))
		}
	}
	r := do(t, in, call{path: "/jwks", method: http.MethodGet})
	keys, _ := r.JSON["keys"].([]any)
	if r.Status != 200 || len(keys) != 1 {
		t.Fatalf("jwks: %d %s", r.Status, r.Body)
	}
	k := keys[0].(map[string]any)
	if k["kid"] == "" || k["alg"] != "ES256" || k["d"] != nil {
		t.Fatalf("jwks key = %v", k)
	}
}

// The main flow: authorization code + PKCE + DPoP for a public client,
// refresh with rotation, userinfo, and the reuse of a rotated token.
func TestCodeFlowDPoPRefreshRotationAndReuse(t *testing.T) {
	mainFlow(t, wardtest.Start(t, wardtest.Options{}))
}

// The same flow with PostgreSQL storage: both backends serve the protocol.
func TestCodeFlowPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	mainFlow(t, wardtest.Start(t, wardtest.Options{PostgresDSN: dsn}))
}

func mainFlow(t *testing.T, in *wardtest.Instance) {
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	if r.str("token_type") != "DPoP" {
		t.Fatalf("token_type %q, want DPoP", r.str("token_type"))
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
	at, rt, idt := r.str("access_token"), r.str("refresh_token"), r.str("id_token")
	if at == "" || rt == "" || idt == "" {
		t.Fatalf("missing tokens: %s", r.Body)
	}
	if h := header(t, at); h["typ"] != "at+jwt" || h["alg"] != "ES256" || h["kid"] == nil {
		t.Errorf("access token header %v", h)
	}
	c := claims(t, at)
	cnf, _ := c["cnf"].(map[string]any)
	if cnf == nil || cnf["jkt"] != s.Thumbprint() {
		t.Fatalf("cnf = %v, want jkt %s", c["cnf"], s.Thumbprint())
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "sid", "auth_time", "acr", "amr"} {
		if c[k] == nil {
			t.Errorf("access token lacks %s", k)
		}
	}
	if c["acr"] != "urn:ward:acr:mfa" {
		t.Errorf("acr = %v, want mfa", c["acr"])
	}
	if len(rt) != 43 {
		t.Errorf("refresh token length %d, want 43 (256 bits)", len(rt))
	}
	idc := claims(t, idt)
	if idc["nonce"] != "n-1" || idc["aud"] != "spa" || idc["sid"] != c["sid"] || idc["at_hash"] == nil {
		t.Errorf("id token claims %v", idc)
	}

	// userinfo with the DPoP-bound token and a proof carrying ath.
	ui := do(t, in, call{path: "/userinfo", method: http.MethodGet, authz: "DPoP " + at, signer: s, at: at})
	if ui.Status != 200 || ui.str("sub") != c["sub"] || ui.str("preferred_username") != "alice" {
		t.Fatalf("userinfo: %d %s", ui.Status, ui.Body)
	}

	// Refresh rotates.
	r2 := refresh(t, in, "spa", rt, s)
	if r2.Status != 200 || r2.str("refresh_token") == "" || r2.str("refresh_token") == rt {
		t.Fatalf("refresh: %d %s", r2.Status, r2.Body)
	}
	rt2 := r2.str("refresh_token")

	// Replaying the rotated token revokes the session (RFC 9700 §4.14.2).
	r3 := refresh(t, in, "spa", rt, s)
	wantError(t, r3, 400, "invalid_grant")
	r4 := refresh(t, in, "spa", rt2, s)
	wantError(t, r4, 400, "invalid_grant")
	ui = do(t, in, call{path: "/userinfo", method: http.MethodGet, authz: "DPoP " + r2.str("access_token"), signer: s, at: r2.str("access_token")})
	if ui.Status != 401 {
		t.Fatalf("userinfo after reuse: %d, want 401", ui.Status)
	}
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventRefreshReuseDetected}})
	if err != nil || len(evs) != 1 || evs[0].SessionID != c["sid"] {
		t.Fatalf("reuse events = %v, %v", evs, err)
	}
}

func TestCodeFlowAttacks(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: noAutoRevoke})
	s := newSigner(t)

	t.Run("code reuse revokes what it issued", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		r := exchange(t, in, "spa", code, verifier, s)
		if r.Status != 200 {
			t.Fatalf("first exchange: %d %s", r.Status, r.Body)
		}
		wantError(t, exchange(t, in, "spa", code, verifier, s), 400, "invalid_grant")
		wantError(t, refresh(t, in, "spa", r.str("refresh_token"), s), 400, "invalid_grant")
	})
	t.Run("wrong PKCE verifier", func(t *testing.T) {
		code, _ := codeFlow(t, in, "spa", s, nil)
		other, _ := wardtest.PKCE()
		wantError(t, exchange(t, in, "spa", code, other, s), 400, "invalid_grant")
	})
	t.Run("missing PKCE verifier", func(t *testing.T) {
		code, _ := codeFlow(t, in, "spa", s, nil)
		wantError(t, do(t, in, call{path: "/token", signer: s, form: url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}}), 400, "invalid_request")
	})
	t.Run("redirect_uri mismatch at token", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		wantError(t, do(t, in, call{path: "/token", signer: s, form: url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"code_verifier": {verifier}, "redirect_uri": {"https://app.example/other"}, "client_id": {"spa"}}}), 400, "invalid_grant")
	})
	t.Run("code bound by dpop_jkt redeemed with another key", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		wantError(t, exchange(t, in, "spa", code, verifier, newSigner(t)), 400, "invalid_grant")
	})
	t.Run("code of one client redeemed by another", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		wantError(t, exchange(t, in, "native", code, verifier, s), 400, "invalid_grant")
	})
	t.Run("expired code", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		in.Clock.Advance(2 * time.Minute)
		wantError(t, exchange(t, in, "spa", code, verifier, s), 400, "invalid_grant")
	})
	t.Run("DPoP-required client without proof", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		wantError(t, exchange(t, in, "spa", code, verifier, nil), 400, "invalid_dpop_proof")
	})
	t.Run("refresh with another key", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		r := exchange(t, in, "spa", code, verifier, s)
		wantError(t, refresh(t, in, "spa", r.str("refresh_token"), newSigner(t)), 400, "invalid_grant")
		wantError(t, refresh(t, in, "spa", r.str("refresh_token"), nil), 400, "invalid_dpop_proof")
		// The legitimate key still works: a failed theft attempt does not rotate.
		if r2 := refresh(t, in, "spa", r.str("refresh_token"), s); r2.Status != 200 {
			t.Fatalf("legitimate refresh after attack: %d %s", r2.Status, r2.Body)
		}
	})
	t.Run("proof replay at the token endpoint", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		p, _ := s.ProofAt("POST", in.URL+"/token", "", "", in.Clock.Now())
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}
		if r := do(t, in, call{path: "/token", proof: p, form: form}); r.Status != 200 {
			t.Fatalf("first use: %d %s", r.Status, r.Body)
		}
		code2, verifier2 := codeFlow(t, in, "spa", s, nil)
		form.Set("code", code2)
		form.Set("code_verifier", verifier2)
		wantError(t, do(t, in, call{path: "/token", proof: p, form: form}), 400, "invalid_dpop_proof")
		evs, _ := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventDPoPProofRejected}, Limit: 1})
		if len(evs) != 1 || evs[0].Reason != "dpop_replay" || evs[0].ClientID != "spa" {
			t.Fatalf("replay event = %+v, want reason dpop_replay", evs)
		}
	})
	t.Run("proof for another URL or method", func(t *testing.T) {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}
		wantError(t, do(t, in, call{path: "/token", signer: s, proofURL: in.URL + "/par", form: form}), 400, "invalid_dpop_proof")
		p, _ := s.ProofAt("GET", in.URL+"/token", "", "", in.Clock.Now())
		wantError(t, do(t, in, call{path: "/token", proof: p, form: form}), 400, "invalid_dpop_proof")
	})
	t.Run("stale and future proofs", func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}}
		for _, d := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
			p, _ := s.ProofAt("POST", in.URL+"/token", "", "", in.Clock.Now().Add(d))
			wantError(t, do(t, in, call{path: "/token", basic: [2]string{"service", wardtest.ServiceSecret}, proof: p, form: form}), 400, "invalid_dpop_proof")
		}
	})
}

func TestAuthorizeRequestValidation(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	get := func(u string) (*http.Response, string) { return wardtest.Do(t, b, http.MethodGet, u, nil) }

	// Errors that must not redirect: unknown client, unregistered redirect URI.
	for name, u := range map[string]string{
		"unknown client":          in.AuthorizeURL("nope", challenge, nil),
		"redirect_uri mismatch":   in.AuthorizeURL("spa", challenge, url.Values{"redirect_uri": {"https://evil.example/cb"}}),
		"redirect_uri prefix":     in.AuthorizeURL("spa", challenge, url.Values{"redirect_uri": {wardtest.RedirectURI + "/x"}}),
		"redirect_uri with query": in.AuthorizeURL("spa", challenge, url.Values{"redirect_uri": {wardtest.RedirectURI + "?a=1"}}),
	} {
		resp, body := get(u)
		if resp.StatusCode == http.StatusSeeOther || resp.Header.Get("Location") != "" {
			t.Errorf("%s: redirected to %q; must show an error page", name, resp.Header.Get("Location"))
		}
		// A bad request shown on a page: 400, not a 401 without the
		// WWW-Authenticate header such an answer needs.
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "rejected") || resp.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("%s: status %d, WWW-Authenticate %q", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	// Errors sent back to the client with state and iss.
	for name, tc := range map[string]struct {
		extra url.Values
		code  string
	}{
		"PKCE plain downgrade":   {url.Values{"code_challenge_method": {"plain"}}, "invalid_request"},
		"PKCE missing":           {url.Values{"code_challenge": {""}}, "invalid_request"},
		"token response type":    {url.Values{"response_type": {"token"}}, "unsupported_response_type"},
		"scope not allowed":      {url.Values{"scope": {"openid admin:everything"}}, "invalid_scope"},
		"prompt none logged out": {url.Values{"prompt": {"none"}}, "login_required"},
		"malformed dpop_jkt":     {url.Values{"dpop_jkt": {"short"}}, "invalid_request"},
		"request object":         {url.Values{"request": {"eyJ.x.y"}}, "request_not_supported"},
	} {
		extra := tc.extra
		extra.Set("state", "s-"+name)
		resp, _ := get(in.AuthorizeURL("spa", challenge, extra))
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), wardtest.RedirectURI) {
			t.Errorf("%s: status %d location %q, want redirect to client", name, resp.StatusCode, resp.Header.Get("Location"))
			continue
		}
		q := loc.Query()
		if q.Get("error") != tc.code || q.Get("state") != "s-"+name || q.Get("iss") != in.URL {
			t.Errorf("%s: got %v, want error=%s with state and iss", name, q, tc.code)
		}
	}
	// Duplicate parameters.
	resp, _ := get(in.AuthorizeURL("spa", challenge, nil) + "&scope=openid")
	if resp.StatusCode == http.StatusOK {
		t.Errorf("duplicate scope accepted")
	}
}

func TestLoginPageSecurity(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("spa", challenge, nil), nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "style=") {
		t.Error("login page has inline script or style")
	}
	form := wardtest.HiddenFields(body)

	// CSRF: a post without the cookie (another browser / cross-site) fails.
	form.Set("username", "bob")
	form.Set("password", wardtest.BobPassword)
	r, _ := wardtest.Do(t, in.Browser(), http.MethodPost, in.URL+"/login", form)
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("login without CSRF cookie: %d, want 403", r.StatusCode)
	}
	// Tampered interaction state.
	bad := url.Values{}
	for k, v := range form {
		bad[k] = v
	}
	bad.Set("req", form.Get("req")+"x")
	if r, _ := wardtest.Do(t, b, http.MethodPost, in.URL+"/login", bad); r.StatusCode != http.StatusBadRequest {
		t.Errorf("tampered state: %d, want 400", r.StatusCode)
	}
	// Unknown user and wrong password look the same.
	form.Set("username", "nobody")
	_, b1 := wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	form.Set("username", "bob")
	form.Set("password", "wrong-password-123")
	_, b2 := wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	if !strings.Contains(b1, "Incorrect username or password") || !strings.Contains(b2, "Incorrect username or password") {
		t.Error("unknown user and wrong password must give the same message")
	}
	// Lockout after repeated failures, then even the right password fails.
	for i := 0; i < 5; i++ {
		wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	}
	form.Set("password", wardtest.BobPassword)
	_, b3 := wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	if !strings.Contains(b3, "Too many failed attempts") {
		t.Errorf("locked account signed in or wrong message: %.300s", b3)
	}
	evs, _ := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventSignInFailed}})
	if len(evs) < 3 {
		t.Fatalf("sign-in failures recorded: %d", len(evs))
	}
	for _, e := range evs {
		if e.Reason == "" {
			t.Errorf("failure event without reason: %+v", e)
		}
	}
}

func TestMFA(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	_, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	form := wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	_, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	if !strings.Contains(body, `name="otp"`) {
		t.Fatalf("no second-factor page for a TOTP user: %.300s", body)
	}
	mfa := wardtest.HiddenFields(body)
	mfa.Set("otp", "000000")
	if r, body := wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", mfa); r.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Fatalf("wrong code: %d", r.StatusCode)
	}
	mfa.Set("otp", in.TOTP(t, 0))
	r, _ := wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", mfa)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("right code: %d", r.StatusCode)
	}
	// The same code again (a replayed OTP) is refused.
	r, _ = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", mfa)
	if r.StatusCode == http.StatusSeeOther {
		t.Fatal("TOTP code accepted twice")
	}
	// SSO: the session cookie satisfies the next request without a login page.
	_, challenge = wardtest.PKCE()
	r, _ = wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	if r.StatusCode != http.StatusSeeOther || !strings.Contains(r.Header.Get("Location"), "code=") {
		t.Fatalf("SSO: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	// prompt=login forces the login page again.
	r, _ = wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, url.Values{"prompt": {"login"}}), nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("prompt=login: %d", r.StatusCode)
	}
}

// Disabling a user or changing their password revokes their sessions at
// once (a bus consumer), and the events a request causes carry its origin.
func TestAccountChangesRevokeSessions(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	password := wardtest.BobPassword
	signIn := func() (string, string) {
		verifier, challenge := wardtest.PKCE()
		loc := in.Login(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "bob", password, "")
		r := do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"grant_type": {"authorization_code"},
			"code": {loc.Query().Get("code")}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
		if r.Status != 200 {
			t.Fatalf("sign-in: %d %s", r.Status, r.Body)
		}
		return r.str("refresh_token"), claims(t, r.str("access_token"))["sid"].(string)
	}
	bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func() error
		reason string
	}{
		{"password change", func() error { return in.App.Identity.SetPassword(ctx, "admin-1", bob.ID, "another-long-passphrase-9") }, "password_changed"},
		{"disable", func() error { return in.App.Identity.SetDisabled(ctx, "admin-1", bob.ID, true) }, "user_disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, sid := signIn()
			if err := tc.change(); err != nil {
				t.Fatal(err)
			}
			password = "another-long-passphrase-9"
			wantError(t, do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}}), 400, "invalid_grant")
			sess, err := in.App.Store.GetSession(ctx, sid)
			if err != nil || sess.RevokedAt.IsZero() || sess.RevokeCause != tc.reason {
				t.Fatalf("session after %s: %+v, %v", tc.name, sess, err)
			}
			evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSessionRevoked}, SessionID: sid})
			if len(evs) != 1 || evs[0].Reason != tc.reason || evs[0].Actor != "admin-1" {
				t.Fatalf("session.revoked events: %+v", evs)
			}
		})
	}
}
