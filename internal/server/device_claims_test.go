package server_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// mfaClaims is a resource's step-up claims challenge for an MFA sign-in.
const mfaClaims = `{"access_token":{"acr":{"essential":true,"values":["urn:ward:acr:mfa"]}}}`

// startDeviceClaims is startDevice where alice has no second factor yet
// (her SSO session can then be password-only; the tests enrol her TOTP
// afterwards with wardtest.AliceTOTP, so in.TOTP works).
func startDeviceClaims(t *testing.T) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "tv", Name: "Living Room TV", AuthMethod: "none",
			GrantTypes: []string{deviceGrant, "refresh_token"}, Scopes: []string{"openid", "offline_access"}})
		for i := range c.StaticUsers {
			if c.StaticUsers[i].Username == "alice" {
				c.StaticUsers[i].TOTPSecret = ""
			}
		}
	}})
}

// pollClaims is a device token poll with the claims parameter, as the
// agent sends it when it re-authenticates for a claims challenge.
func pollClaims(t testing.TB, in *wardtest.Instance, deviceCode, claimsParam string) result {
	t.Helper()
	form := url.Values{"grant_type": {deviceGrant}, "device_code": {deviceCode}, "client_id": {"tv"}}
	if claimsParam != "" {
		form.Set("claims", claimsParam)
	}
	in.Clock.Advance(6 * time.Second) // past the polling interval
	return do(t, in, call{path: "/token", form: form})
}

// ssoSignIn gives browser b an SSO session of username (password only)
// through the authorization endpoint.
func ssoSignIn(t *testing.T, in *wardtest.Instance, b *http.Client, username, password string) {
	t.Helper()
	_, challenge := wardtest.PKCE()
	if loc := in.Login(t, b, in.AuthorizeURL("web", challenge, nil), username, password, ""); loc.Query().Get("code") == "" {
		t.Fatalf("sign-in of %s: %s", username, loc)
	}
}

// confirmDevice answers the confirmation page body with approve and wants
// the done page.
func confirmDevice(t *testing.T, in *wardtest.Instance, b *http.Client, body string) {
	t.Helper()
	if !strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the confirmation page, got %.400s", body)
	}
	form := wardtest.HiddenFields(body)
	form.Set("decision", "approve")
	resp, body := wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", form)
	if resp.StatusCode != 200 || !strings.Contains(body, "Device connected") {
		t.Fatalf("confirm: %d %.300s", resp.StatusCode, body)
	}
}

// A device request with an MFA claims challenge, approved in a browser
// whose SSO session is alice's password-only sign-in: the verification
// page asks for her second factor before the approval, and the token
// carries the multi-factor acr. Without claims the same session approves
// directly, as before.
func TestDeviceClaimsStepUp(t *testing.T) {
	in := startDeviceClaims(t)
	ctx := context.Background()
	b := in.Browser()
	ssoSignIn(t, in, b, "alice", wardtest.AlicePassword)
	// alice enrols TOTP after that sign-in: her session stays password-only.
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.App.Identity.EnrollTOTP(ctx, "test", alice.ID, wardtest.AliceTOTP, in.TOTP(t, 0)); err != nil {
		t.Fatal(err)
	}

	// (b) Without claims: the SSO session approves as it is.
	dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
	resp, body := enterUserCode(t, in, b, ucode, ucode)
	if resp.StatusCode != 200 {
		t.Fatalf("user code: %d %.300s", resp.StatusCode, body)
	}
	confirmDevice(t, in, b, body)
	tok := pollClaims(t, in, dcode, "")
	if tok.Status != 200 {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
	if acr := claims(t, tok.str("access_token"))["acr"]; acr != "urn:ward:acr:password" {
		t.Fatalf("acr without claims: %v", acr)
	}

	// (a) With the MFA claims challenge.
	dcode, ucode = startDeviceFlow(t, in, "tv", nil, url.Values{"claims": {mfaClaims}})
	dc, err := in.App.Store.GetDeviceCodeByUserCode(ctx, strings.ReplaceAll(ucode, "-", ""))
	if err != nil || dc.Claims != mfaClaims {
		t.Fatalf("stored claims: %v %+v", err, dc)
	}
	wantError(t, pollClaims(t, in, dcode, mfaClaims), 400, "authorization_pending")
	resp, body = enterUserCode(t, in, b, ucode, ucode)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="otp"`) || strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the second-factor page, got %d %.400s", resp.StatusCode, body)
	}
	// Still pending while the user steps up.
	wantError(t, pollClaims(t, in, dcode, mfaClaims), 400, "authorization_pending")
	in.Clock.Advance(31 * time.Second) // a fresh TOTP step: the enrolment used the last one
	form := wardtest.HiddenFields(body)
	form.Set("otp", in.TOTP(t, 0))
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	if resp.StatusCode != 200 {
		t.Fatalf("second factor: %d %.300s", resp.StatusCode, body)
	}
	confirmDevice(t, in, b, body)
	tok = pollClaims(t, in, dcode, mfaClaims)
	if tok.Status != 200 {
		t.Fatalf("token after step-up: %d %s", tok.Status, tok.Body)
	}
	c := claims(t, tok.str("access_token"))
	amr, _ := c["amr"].([]any)
	if c["acr"] != "urn:ward:acr:mfa" || !slices.Contains(amr, any("otp")) || c["sub"] != alice.ID {
		t.Fatalf("token after step-up: acr %v amr %v sub %v", c["acr"], c["amr"], c["sub"])
	}
	if ev := lastEvent(t, in, model.EventDeviceCodeApproved); ev.Data["acr"] != "urn:ward:acr:mfa" {
		t.Fatalf("approval event data %v", ev.Data)
	}
	// The browser now has the multi-factor session: the next challenged
	// request is approved without another step-up.
	dcode, ucode = startDeviceFlow(t, in, "tv", nil, url.Values{"claims": {mfaClaims}})
	_, body = enterUserCode(t, in, b, ucode, ucode)
	confirmDevice(t, in, b, body)
	if tok = pollClaims(t, in, dcode, mfaClaims); tok.Status != 200 || claims(t, tok.str("access_token"))["acr"] != "urn:ward:acr:mfa" {
		t.Fatalf("second challenged request: %d %s", tok.Status, tok.Body)
	}
}

// (c) The claims parameter of a device authorization request is validated
// as at /authorize.
func TestDeviceClaimsMalformed(t *testing.T) {
	in := startDevice(t)
	for _, extra := range []url.Values{
		{"claims": {"{"}},
		{"claims": {`[]`}},
		{"claims": {`{"access_token":{"acr":{"values":"urn:ward:acr:mfa"}}}`}},
		{"claims": {mfaClaims, mfaClaims}},
	} {
		r := deviceAuthorize(t, in, "tv", nil, extra)
		wantError(t, r, 400, "invalid_request")
	}
	// Claims Ward does not use are accepted (OpenID Connect Core §5.5).
	if r := deviceAuthorize(t, in, "tv", nil, url.Values{"claims": {`{"userinfo":{"email":null}}`}}); r.Status != 200 {
		t.Fatalf("claims without access_token: %d %s", r.Status, r.Body)
	}
}

// (d) bob has no second factor: an MFA challenge is refused on the
// verification page, whether he comes with an SSO session or signs in
// there, and the device request is left pending (not approved, not
// denied: another sign-in may still meet it before it expires).
func TestDeviceClaimsNoSecondFactor(t *testing.T) {
	in := startDevice(t)
	ctx := context.Background()
	dcode, ucode := startDeviceFlow(t, in, "tv", nil, url.Values{"claims": {mfaClaims}})
	pollMFA := func() result {
		in.Clock.Advance(6 * time.Second)
		return do(t, in, call{path: "/token", form: url.Values{"grant_type": {deviceGrant}, "device_code": {dcode}, "client_id": {"tv"}, "claims": {mfaClaims}}})
	}
	refused := func(resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "second factor") || strings.Contains(body, `value="approve"`) {
			t.Fatalf("want the refusal page, got %d %.400s", resp.StatusCode, body)
		}
		dc, err := in.App.Store.GetDeviceCodeByUserCode(ctx, strings.ReplaceAll(ucode, "-", ""))
		if err != nil || dc.Status != model.DeviceCodePending || dc.UserID != "" {
			t.Fatalf("device code after refusal: %v %+v", err, dc)
		}
		wantError(t, pollMFA(), 400, "authorization_pending")
	}
	// With an SSO session.
	b := in.Browser()
	ssoSignIn(t, in, b, "bob", wardtest.BobPassword)
	refused(enterUserCode(t, in, b, ucode, ucode))
	// Signing in on the verification page.
	b = in.Browser()
	resp, body := enterUserCode(t, in, b, ucode, ucode)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
		t.Fatalf("want the login page, got %d %.300s", resp.StatusCode, body)
	}
	form := wardtest.HiddenFields(body)
	form.Set("username", "bob")
	form.Set("password", wardtest.BobPassword)
	refused(wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form))
	// alice (TOTP) can still approve the same request.
	answerDevice(t, in, in.Browser(), ucode, "approve")
	tok := pollMFA()
	if tok.Status != 200 || claims(t, tok.str("access_token"))["acr"] != "urn:ward:acr:mfa" {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
}
