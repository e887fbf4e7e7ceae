package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// applyPolicies stores a policy document given as YAML.
func applyPolicies(t *testing.T, in *wardtest.Instance, doc string) {
	t.Helper()
	d, err := policy.DecodeYAML([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), d, access.ApplyOptions{Actor: "test", ExpectVersion: access.AnyVersion}); err != nil {
		t.Fatal(err)
	}
}

// An enforced block at sign-in redirects with access_denied and a
// reference; no session is created; the sign-in log names the policy.
// A report-only policy that would block changes nothing but is logged.
func TestConditionalAccessBlockAndReportOnly(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	applyPolicies(t, in, `
policies:
  - id: block-native
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [native]}}
    grant: {block: true}
  - id: watch-spa
    state: report_only
    assignments: {users: {include: [all]}, applications: {include: [spa]}}
    grant: {block: true}
`)
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	loc := in.Login(t, b, in.AuthorizeURL("native", challenge, nil), "bob", wardtest.BobPassword, "")
	q := loc.Query()
	if q.Get("error") != "access_denied" || !strings.Contains(q.Get("error_description"), "reference ") || q.Get("iss") != in.URL || q.Get("state") == "" || q.Get("code") != "" {
		t.Fatalf("blocked sign-in redirect: %s", loc)
	}
	ev := lastEvent(t, in, model.EventSignInFailed)
	if ev.Reason != "ca_block" || ev.Data["ca_blocked_by"] != "block-native" || ev.Data["stage"] != "conditional_access" {
		t.Fatalf("sign-in failure event: %q %v", ev.Reason, ev.Data)
	}
	bob, _ := in.App.Store.GetUserByUsername(context.Background(), "bob")
	if ss, _ := in.App.Store.ListSessions(context.Background(), store.SessionFilter{UserID: bob.ID}); len(ss) != 0 {
		t.Fatalf("a blocked sign-in created %d sessions", len(ss))
	}

	// Report-only: the flow goes on, the log says what would have happened.
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	if r := exchange(t, in, "spa", code, verifier, s); r.Status != 200 {
		t.Fatalf("report-only policy changed the flow: %d %s", r.Status, r.Body)
	}
	ev = lastEvent(t, in, model.EventSignInSucceeded)
	if ev.Data["ca_report_only"] != "watch-spa=block" || ev.Data["ca_outcome"] != "allow" {
		t.Fatalf("sign-in event CA data: %v", ev.Data)
	}
	if ev := lastEvent(t, in, model.EventTokenIssued); ev.Data["ca_report_only"] != "watch-spa=block" {
		t.Fatalf("token event CA data: %v", ev.Data)
	}
}

// MFA required by policy for a session that has only a password: the
// sign-in asks for the second factor (step-up) and then continues.
func TestConditionalAccessMFAStepUp(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	bob, _ := in.App.Store.GetUserByUsername(ctx, "bob")
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	// bob's SSO session: password only.
	loc := in.Login(t, b, in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
	if loc.Query().Get("code") == "" {
		t.Fatalf("first sign-in: %s", loc)
	}
	// bob enrols TOTP later; a policy now wants MFA for "native".
	const seed = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TF"
	code, _ := totp.GenerateCode(seed, in.Clock.Now())
	if err := in.App.Identity.EnrollTOTP(ctx, "test", bob.ID, seed, code); err != nil {
		t.Fatal(err)
	}
	applyPolicies(t, in, `
policies:
  - id: mfa-native
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [native]}}
    grant: {controls: [mfa]}
`)
	// prompt=none cannot step up.
	verifier, challenge := wardtest.PKCE()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, url.Values{"prompt": {"none"}}), nil)
	if l, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther || l.Query().Get("error") != "interaction_required" {
		t.Fatalf("prompt=none with step-up: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Otherwise the SSO session meets the MFA page, not the password page.
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, nil), nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="otp"`) || strings.Contains(body, `name="password"`) {
		t.Fatalf("step-up page: %d %.400s", resp.StatusCode, body)
	}
	// A wrong code is refused; the right one continues to the client.
	form := wardtest.HiddenFields(body)
	form.Set("otp", "000000")
	if resp, _ = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong step-up code: %d", resp.StatusCode)
	}
	in.Clock.Advance(31 * time.Second)
	form.Set("otp", mustTOTP(t, seed, in.Clock.Now()))
	resp, _ = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	l, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || l.Query().Get("code") == "" {
		t.Fatalf("after step-up: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	r := do(t, in, call{path: "/token", form: url.Values{"grant_type": {"authorization_code"}, "code": {l.Query().Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"native"}}})
	if r.Status != 200 {
		t.Fatalf("token after step-up: %d %s", r.Status, r.Body)
	}
	if amr := claims(t, r.str("access_token"))["amr"]; !strings.Contains(strings.Join(toStrings(amr), " "), "otp") {
		t.Fatalf("amr after step-up: %v", amr)
	}
	// A user without a second factor is told what to do instead.
	applyPolicies(t, in, `
policies:
  - id: mfa-web
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [web]}}
    grant: {controls: [mfa]}
`)
	if err := in.App.Store.CreateUser(ctx, &model.User{ID: "u-carol", Username: "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Identity.SetPassword(ctx, "test", "u-carol", "violet-meadow-7341"); err != nil {
		t.Fatal(err)
	}
	_, challenge = wardtest.PKCE()
	resp, body = in.TryLogin(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "carol", "violet-meadow-7341", "")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no second factor") {
		t.Fatalf("MFA required without a factor: %d %.600s", resp.StatusCode, body)
	}
}

func mustTOTP(t *testing.T, seed string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(seed, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

// Session controls: sign-in frequency makes an old SSO session sign in
// again and an old session's refresh fail; the access-token lifetime is
// capped.
func TestConditionalAccessSessionControls(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	applyPolicies(t, in, `
policies:
  - id: web-hourly
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [web]}}
    session: {sign_in_frequency: 1h, access_token_lifetime: 2m}
`)
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	loc := in.Login(t, b, in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
	web := [2]string{"web", wardtest.WebSecret}
	r := do(t, in, call{path: "/token", basic: web, form: url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	if exp, iat := claims(t, r.str("access_token"))["exp"].(float64), claims(t, r.str("access_token"))["iat"].(float64); exp-iat != 120 {
		t.Fatalf("access-token lifetime %v s, want 120 (policy)", exp-iat)
	}
	if r.JSON["expires_in"].(float64) != 120 {
		t.Fatalf("expires_in = %v", r.JSON["expires_in"])
	}
	rt := r.str("refresh_token")
	// Within the hour: SSO and refresh work.
	in.Clock.Advance(30 * time.Minute)
	_, challenge = wardtest.PKCE()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("SSO within the frequency: %d", resp.StatusCode)
	}
	r = do(t, in, call{path: "/token", basic: web, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}})
	if r.Status != 200 {
		t.Fatalf("refresh within the frequency: %d %s", r.Status, r.Body)
	}
	rt = r.str("refresh_token")
	// After it: the SSO session must sign in again, the refresh fails.
	in.Clock.Advance(31 * time.Minute)
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) || !strings.Contains(body, "Sign in again") {
		t.Fatalf("SSO after the frequency: %d %.300s", resp.StatusCode, body)
	}
	r = do(t, in, call{path: "/token", basic: web, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}})
	wantError(t, r, 400, "invalid_grant")
	if ev := lastEvent(t, in, model.EventTokenRequestFailed); ev.Reason != "ca_sign_in_frequency" {
		t.Fatalf("refresh failure reason %q", ev.Reason)
	}
}

// Client credentials and the device grant are evaluated too.
func TestConditionalAccessMachineAndDeviceFlows(t *testing.T) {
	in := startDevice(t)
	applyPolicies(t, in, `
locations:
  - {id: lab, trusted: true, ip_ranges: [192.0.2.0/24]}
policies:
  - id: service-from-lab
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [service]}}
    conditions: {flows: [client_credentials], locations: {include: [all], exclude: [lab]}}
    grant: {block: true}
  - id: no-tv
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [tv]}}
    conditions: {flows: [device_code]}
    grant: {block: true}
`)
	r := do(t, in, call{path: "/token", basic: [2]string{"service", wardtest.ServiceSecret}, form: url.Values{"grant_type": {"client_credentials"}}})
	wantError(t, r, 400, "unauthorized_client")
	if ev := lastEvent(t, in, model.EventTokenRequestFailed); ev.Reason != "ca_block" || ev.Data["ca_blocked_by"] != "service-from-lab" {
		t.Fatalf("client_credentials failure: %q %v", ev.Reason, ev.Data)
	}

	// The device grant is refused at approval (device_access_test.go): the
	// page says so and the device's poll gets access_denied.
	dc, uc := startDeviceFlow(t, in, "tv", nil, nil)
	if resp, body := deviceSignIn(t, in, in.Browser(), uc); resp.StatusCode != http.StatusForbidden || strings.Contains(body, "Device connected") {
		t.Fatalf("blocked device approval: %d %.300s", resp.StatusCode, body)
	}
	in.Clock.Advance(10 * time.Second)
	r = poll(t, in, "tv", dc, nil)
	wantError(t, r, 400, "access_denied")
	if !strings.Contains(r.str("error_description"), "Conditional Access") {
		t.Fatalf("device grant description: %q", r.str("error_description"))
	}
	// tv2 is not targeted.
	dc, uc = startDeviceFlow(t, in, "tv2", nil, nil)
	answerDevice(t, in, in.Browser(), uc, "approve")
	in.Clock.Advance(10 * time.Second)
	if r = poll(t, in, "tv2", dc, nil); r.Status != 200 {
		t.Fatalf("tv2: %d %s", r.Status, r.Body)
	}
}

// Policies that cannot be evaluated refuse access (fail closed).
func TestConditionalAccessFailsClosed(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	bad := &model.PolicyVersion{Version: 1, Document: []byte(`{"policies":[{"id":"x","state":"enabled","assignments":{"users":{"include":["all"]},"applications":{"include":["nope-location-test"]}},"conditions":{"locations":{"include":["missing"]}},"grant":{"block":true}}]}`),
		Digest: "bad", CreatedAt: in.Clock.Now(), CreatedBy: "test"}
	if err := in.App.Store.CreatePolicyVersion(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Access.Load(ctx); err != nil {
		t.Fatalf("Load must not fail on a broken stored version: %v", err)
	}
	r := do(t, in, call{path: "/token", basic: [2]string{"service", wardtest.ServiceSecret}, form: url.Values{"grant_type": {"client_credentials"}}})
	wantError(t, r, 500, "server_error")
	_, challenge := wardtest.PKCE()
	resp, body := in.TryLogin(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "access is refused") {
		t.Fatalf("sign-in with broken policies: %d %.300s", resp.StatusCode, body)
	}
	// A valid version repairs it.
	applyPolicies(t, in, "policies: []\n")
	r = do(t, in, call{path: "/token", basic: [2]string{"service", wardtest.ServiceSecret}, form: url.Values{"grant_type": {"client_credentials"}}})
	if r.Status != 200 {
		t.Fatalf("after repair: %d %s", r.Status, r.Body)
	}
}

// High user risk: after password and TOTP the user must change the
// password; the change remediates the risk and the sign-in continues.
func TestConditionalAccessPasswordChangeRemediation(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	if err := in.App.Identity.SetRisk(ctx, "test", alice.ID, "high", "leaked credentials"); err != nil {
		t.Fatal(err)
	}
	applyPolicies(t, in, `
policies:
  - id: high-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {user_risk: [high]}
    grant: {operator: all, controls: [mfa, password_change]}
`)
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	resp, body := in.TryLogin(t, b, in.AuthorizeURL("web", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	if resp.StatusCode != 200 || !strings.Contains(body, `name="new_password"`) {
		t.Fatalf("want the password change page, got %d %.400s", resp.StatusCode, body)
	}
	form := wardtest.HiddenFields(body)
	for _, bad := range []struct{ pw, confirm, msg string }{
		{"amber-lantern-5582", "amber-lantern-5583", "differ"},
		{wardtest.AlicePassword, wardtest.AlicePassword, "different from the current"},
		{"short", "short", "password policy"},
	} {
		form.Set("new_password", bad.pw)
		form.Set("confirm_password", bad.confirm)
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/password", form)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, bad.msg) {
			t.Fatalf("new password %q: %d %.300s", bad.pw, resp.StatusCode, body)
		}
		form = wardtest.HiddenFields(body)
	}
	if u, _ := in.App.Store.GetUser(ctx, alice.ID); u.RiskLevel != "high" || u.PasswordHash != alice.PasswordHash {
		t.Fatal("a refused password change changed the user")
	}
	form.Set("new_password", "amber-lantern-5582")
	form.Set("confirm_password", "amber-lantern-5582")
	resp, _ = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/password", form)
	l, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || l.Query().Get("code") == "" {
		t.Fatalf("after the change: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	u, _ := in.App.Store.GetUser(ctx, alice.ID)
	if u.RiskLevel != "" || !u.PasswordChangedAt.After(alice.UpdatedAt) {
		t.Fatalf("risk %q, password changed at %v", u.RiskLevel, u.PasswordChangedAt)
	}
	if ev := lastEvent(t, in, model.EventUserRiskChanged); ev.Data["level"] != "none" || ev.Actor != alice.ID {
		t.Fatalf("risk event: %+v", ev)
	}
	r := do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"grant_type": {"authorization_code"},
		"code": {l.Query().Get("code")}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	// The old password is gone.
	_, challenge = wardtest.PKCE()
	resp, _ = in.TryLogin(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "alice", wardtest.AlicePassword, "")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old password: %d", resp.StatusCode)
	}
}

// Country named locations resolve through the configured MMDB database:
// a sign-in from a blocked country is refused, others are not, and an
// address the database does not know matches no country.
func TestConditionalAccessCountries(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		c.ConditionalAccess.GeoIPDatabase = wardtest.CountryMMDB(t, map[string]string{"198.51.100.0/24": "KP", "203.0.113.0/24": "JP"})
	}})
	applyPolicies(t, in, `
locations:
  - {id: sanctioned, countries: [KP, IR]}
policies:
  - id: block-sanctioned
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {locations: {include: [sanctioned]}}
    grant: {block: true}
`)
	for _, tc := range []struct {
		ip      string
		blocked bool
	}{{"198.51.100.7", true}, {"203.0.113.9", false}, {"192.0.2.44", false}} {
		b := in.Browser()
		b.Transport = forwardedFor(tc.ip)
		_, challenge := wardtest.PKCE()
		loc := in.Login(t, b, in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
		if got := loc.Query().Get("error") == "access_denied"; got != tc.blocked {
			t.Errorf("sign-in from %s: blocked %v, want %v (%s)", tc.ip, got, tc.blocked, loc)
		}
	}
	ev := lastEvent(t, in, model.EventSignInSucceeded)
	if ev.IP != "192.0.2.44" {
		t.Fatalf("last sign-in from %q", ev.IP)
	}
	// A missing database file is a start-up error, not a silent no-match.
	cfg := *in.Config
	cfg.ConditionalAccess.GeoIPDatabase = "/nonexistent/country.mmdb"
	cfg.Bus.Driver = config.BusLocal // the running instance owns the embedded NATS store
	if _, err := app.Open(context.Background(), &cfg, nil); err == nil || !strings.Contains(err.Error(), "geoip_database") {
		t.Fatalf("open with a missing MMDB: %v", err)
	}
}
