package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

const capability = `{"access_token":{"xms_cc":{"values":["cp1"]}}}`

func startCAE(t *testing.T) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "cae", Name: "CAE app", AuthMethod: "none",
			RedirectURIs: []string{wardtest.RedirectURI}, GrantTypes: []string{"authorization_code", "refresh_token"},
			Scopes: []string{"openid", "offline_access"}, DPoPBoundAccessTokens: true, CAECapable: true})
	}})
}

func tokenWithClaims(t *testing.T, in *wardtest.Instance, clientID string, claimsParam string) result {
	t.Helper()
	s := newSigner(t)
	code, verifier := codeFlow(t, in, clientID, s, url.Values{"scope": {"openid offline_access"}})
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}, "client_id": {clientID}}
	if claimsParam != "" {
		form.Set("claims", claimsParam)
	}
	r := do(t, in, call{path: "/token", signer: s, form: form})
	r.signer = s
	return r
}

// A CAE-capable client that declares the capability gets long-lived
// access tokens carrying xms_cc; anything less keeps the short lifetime.
func TestCAECapableLongLivedTokens(t *testing.T) {
	in := startCAE(t)
	for _, tc := range []struct {
		client, claims string
		want           float64
		cc             bool
	}{
		{"cae", capability, 86400, true},
		{"cae", "", 600, false},
		{"cae", `{"id_token":{"acr":null}}`, 600, false},
		{"spa", capability, 600, false},
	} {
		r := tokenWithClaims(t, in, tc.client, tc.claims)
		if r.Status != 200 {
			t.Fatalf("%s %s: %d %s", tc.client, tc.claims, r.Status, r.Body)
		}
		c := claims(t, r.str("access_token"))
		if r.JSON["expires_in"].(float64) != tc.want || c["exp"].(float64)-c["iat"].(float64) != tc.want {
			t.Errorf("%s %s: expires_in %v, want %v", tc.client, tc.claims, r.JSON["expires_in"], tc.want)
		}
		if _, ok := c["xms_cc"]; ok != tc.cc {
			t.Errorf("%s %s: xms_cc present %v, want %v", tc.client, tc.claims, ok, tc.cc)
		}
		// Refreshing with the capability keeps it.
		if tc.cc {
			rr := do(t, in, call{path: "/token", signer: r.signer, form: url.Values{"grant_type": {"refresh_token"},
				"refresh_token": {r.str("refresh_token")}, "client_id": {"cae"}, "claims": {capability}}})
			if rr.Status != 200 || rr.JSON["expires_in"].(float64) != 86400 {
				t.Errorf("refresh with the capability: %d %s", rr.Status, rr.Body)
			}
			if ev := lastEvent(t, in, model.EventTokenRefreshed); ev.Data["cae"] != "true" {
				t.Errorf("refresh event data %v", ev.Data)
			}
		}
	}
	// A Conditional Access lifetime still caps it.
	applyPolicies(t, in, `
policies:
  - id: short
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [cae]}}
    session: {access_token_lifetime: 5m}
`)
	if r := tokenWithClaims(t, in, "cae", capability); r.JSON["expires_in"].(float64) != 300 {
		t.Errorf("with a policy lifetime: expires_in %v, want 300", r.JSON["expires_in"])
	}
}

// The claims parameter is validated; a bad one changes nothing.
func TestClaimsParameterValidation(t *testing.T) {
	in := startCAE(t)
	r := tokenWithClaims(t, in, "cae", capability)
	rt, s := r.str("refresh_token"), r.signer
	refreshWith := func(claimsParams ...string) result {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"cae"}}
		form["claims"] = claimsParams
		return do(t, in, call{path: "/token", signer: s, form: form})
	}
	future := fmt.Sprint(in.Clock.Now().Add(time.Hour).Unix())
	for _, bad := range [][]string{
		{`not json`}, {`[]`}, {`{"access_token": 5}`}, {`{"access_token":{"nbf":{"value":"soon"}}}`},
		{`{"access_token":{"acr":{"values":[1,2]}}}`}, {`{"access_token":{"xms_cc":{"values":"cp1"}}}`},
		{`{"a":"` + strings.Repeat("x", 5000) + `"}`}, {capability, capability},
		{`{"access_token":{"nbf":{"essential":true,"value":"` + future + `"}}}`},
	} {
		wantError(t, refreshWith(bad...), 400, "invalid_request")
	}
	// Nothing was used up.
	r = refreshWith(capability)
	if r.Status != 200 {
		t.Fatalf("refresh after the refused ones: %d %s", r.Status, r.Body)
	}
	rt = r.str("refresh_token")
	// A resource's nbf challenge in the past is met by a fresh token.
	past := in.Clock.Now().Add(-time.Minute).Unix()
	r = refreshWith(fmt.Sprintf(`{"access_token":{"nbf":{"essential":true,"value":"%d"},"xms_cc":{"values":["cp1"]}}}`, past))
	if r.Status != 200 || int64(claims(t, r.str("access_token"))["iat"].(float64)) < past {
		t.Fatalf("nbf challenge: %d %s", r.Status, r.Body)
	}
}

// A step-up challenge (acr) cannot be met by a refresh of a password-only
// session; at /authorize it asks for the second factor.
func TestClaimsACRStepUp(t *testing.T) {
	in := startCAE(t)
	web := [2]string{"web", wardtest.WebSecret}
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	loc := in.Login(t, b, in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
	r := do(t, in, call{path: "/token", basic: web, form: url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	mfa := `{"access_token":{"acr":{"essential":true,"values":["urn:ward:acr:mfa"]}}}`
	rr := do(t, in, call{path: "/token", basic: web, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}, "claims": {mfa}}})
	wantError(t, rr, 400, "invalid_grant")
	if ev := lastEvent(t, in, model.EventTokenRequestFailed); ev.Reason != "claims_acr_unmet" {
		t.Fatalf("reason %q", ev.Reason)
	}
	// The same refresh token still works without the step-up request.
	if rr = do(t, in, call{path: "/token", basic: web, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.str("refresh_token")}}}); rr.Status != 200 {
		t.Fatalf("plain refresh: %d %s", rr.Status, rr.Body)
	}
	// /authorize with the claims challenge: bob has no second factor.
	_, challenge = wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, url.Values{"claims": {mfa}}), nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "second factor") {
		t.Fatalf("acr step-up without a factor: %d %.300s", resp.StatusCode, body)
	}
	// A malformed claims parameter at /authorize goes back to the client.
	resp, _ = wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, url.Values{"claims": {"{"}}), nil)
	if l, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther || l.Query().Get("error") != "invalid_request" {
		t.Fatalf("malformed claims at authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}
