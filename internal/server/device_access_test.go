package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Conditional Access at device approval (RFC 8628): the verification page
// evaluates the policies with what is known when the user approves, so it
// never says "Device connected" for a device the token endpoint would
// then refuse.

// deviceSignIn types userCode in browser b and, unless b has an SSO
// session, signs alice in (password and TOTP); it returns the page that
// follows.
func deviceSignIn(t *testing.T, in *wardtest.Instance, b *http.Client, userCode string) (*http.Response, string) {
	t.Helper()
	resp, body := enterUserCode(t, in, b, userCode, userCode)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
		return resp, body
	}
	form := wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="otp"`) {
		t.Fatalf("password: %d, want the TOTP page; %.300s", resp.StatusCode, body)
	}
	in.Clock.Advance(31 * time.Second) // a fresh TOTP step
	form = wardtest.HiddenFields(body)
	form.Set("otp", in.TOTP(t, 0))
	return wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
}

// hasSSOCookie reports whether b holds an SSO cookie for in.
func hasSSOCookie(t *testing.T, in *wardtest.Instance, b *http.Client) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, in.URL+"/", nil)
	for _, c := range b.Jar.Cookies(req.URL) {
		if strings.HasSuffix(c.Name, "ward_session") && c.Value != "" {
			return true
		}
	}
	return false
}

// A policy that blocks the device flow for the app: the page says access
// is blocked instead of "Device connected" (after a sign-in, and for an
// SSO session), no session is created for the refused sign-in, and the
// device's next poll gets access_denied with the reason. A request
// approved on its page just before the policy came in is refused where
// the approval takes effect. Another app's approval still says "Device
// connected".
func TestDeviceApprovalBlockedByPolicy(t *testing.T) {
	in := startDevice(t)

	// The confirmation page is shown; the policy arrives before the click.
	early, ucode := startDeviceFlow(t, in, "tv", nil, nil)
	sso := in.Browser()
	resp, confirmPage := deviceSignIn(t, in, sso, ucode)
	if resp.StatusCode != 200 || !strings.Contains(confirmPage, `value="approve"`) {
		t.Fatalf("want the confirmation page, got %d %.300s", resp.StatusCode, confirmPage)
	}

	applyPolicies(t, in, `
policies:
  - id: no-tv
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [tv]}}
    conditions: {flows: [device_code]}
    grant: {block: true}
`)
	form := wardtest.HiddenFields(confirmPage)
	form.Set("decision", "approve")
	resp, body := wardtest.Do(t, sso, http.MethodPost, in.URL+"/device/confirm", form)
	wantBlockedPage(t, resp, body)
	wantDeviceDenied(t, in, early)

	// A sign-in for the approval: refused before a session exists.
	dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
	b := in.Browser()
	resp, body = deviceSignIn(t, in, b, ucode)
	wantBlockedPage(t, resp, body)
	if hasSSOCookie(t, in, b) {
		t.Error("a refused device sign-in created an SSO session")
	}
	ev := lastEvent(t, in, model.EventDeviceCodeDenied)
	if ev.Reason != "ca_block" || ev.Data["ca_blocked_by"] != "no-tv" || ev.Data["stage"] != "conditional_access" || ev.ClientID != "tv" || ev.UserID == "" {
		t.Fatalf("denial event: %q %+v", ev.Reason, ev.Data)
	}
	wantDeviceDenied(t, in, dcode)

	// An SSO session: the page says so at once.
	dcode, ucode = startDeviceFlow(t, in, "tv", nil, nil)
	resp, body = enterUserCode(t, in, sso, ucode, ucode)
	wantBlockedPage(t, resp, body)
	wantDeviceDenied(t, in, dcode)

	// A denied request is closed: typing its code again says so.
	resp, body = enterUserCode(t, in, in.Browser(), ucode, ucode)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not valid or has expired") {
		t.Fatalf("denied code typed again: %d %.300s", resp.StatusCode, body)
	}

	// tv2 is not targeted: a normal approval.
	dcode, ucode = startDeviceFlow(t, in, "tv2", nil, nil)
	answerDevice(t, in, in.Browser(), ucode, "approve")
	in.Clock.Advance(10 * time.Second)
	if r := poll(t, in, "tv2", dcode, nil); r.Status != 200 {
		t.Fatalf("tv2: %d %s", r.Status, r.Body)
	}
}

func wantBlockedPage(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Access blocked") ||
		!strings.Contains(body, "A Conditional Access policy blocks signing in to Living Room TV tv through a device code.") ||
		!strings.Contains(body, "Reference:") || strings.Contains(body, "Device connected") {
		t.Fatalf("want the blocked page, got %d %.600s", resp.StatusCode, body)
	}
}

// wantDeviceDenied polls tv's device code and wants access_denied naming
// Conditional Access, recorded with the policy's reason.
func wantDeviceDenied(t *testing.T, in *wardtest.Instance, deviceCode string) {
	t.Helper()
	in.Clock.Advance(6 * time.Second)
	r := poll(t, in, "tv", deviceCode, nil)
	wantError(t, r, 400, "access_denied")
	if d := r.str("error_description"); !strings.Contains(d, "access is blocked by a Conditional Access policy (reference ") {
		t.Fatalf("poll description %q", d)
	}
	if ev := lastEvent(t, in, model.EventTokenRequestFailed); ev.Reason != "ca_block" || ev.ClientID != "tv" {
		t.Fatalf("poll failure event: %q %v", ev.Reason, ev.Data)
	}
}

// Controls the approval cannot satisfy are named on the page (a device
// that committed to a key no registered device holds, for a policy that
// requires a compliant device), and the device is told what is required.
func TestDeviceApprovalControlsUnmet(t *testing.T) {
	in := startDevice(t)
	applyPolicies(t, in, `
policies:
  - id: tv-compliant
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [tv]}}
    conditions: {flows: [device_code]}
    grant: {controls: [compliant_device]}
`)
	s := newSigner(t)
	dcode, ucode := startDeviceFlow(t, in, "tv", s, nil)
	resp, body := deviceSignIn(t, in, in.Browser(), ucode)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Access requires more") ||
		!strings.Contains(body, "A compliant, registered device is required.") || strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the page naming the compliant device, got %d %.600s", resp.StatusCode, body)
	}
	in.Clock.Advance(6 * time.Second)
	r := poll(t, in, "tv", dcode, s)
	wantError(t, r, 400, "access_denied")
	if d := r.str("error_description"); !strings.Contains(d, "Conditional Access requires a compliant device") {
		t.Fatalf("poll description %q", d)
	}
	if ev := lastEvent(t, in, model.EventDeviceCodeDenied); ev.Reason != "ca_controls_unmet" || ev.Data["ca_controls"] != "compliant_device" || ev.Data["jkt"] != s.Thumbprint() {
		t.Fatalf("denial event: %q %v", ev.Reason, ev.Data)
	}

	// Without dpop_jkt the device is not known until it redeems the code:
	// the approval goes through and the token endpoint decides.
	dcode, ucode = startDeviceFlow(t, in, "tv", nil, nil)
	answerDevice(t, in, in.Browser(), ucode, "approve")
	in.Clock.Advance(6 * time.Second)
	r = poll(t, in, "tv", dcode, nil)
	wantError(t, r, 400, "access_denied")
	if ev := lastEvent(t, in, model.EventTokenRequestFailed); ev.Reason != "ca_controls_unmet" {
		t.Fatalf("redemption failure: %q", ev.Reason)
	}
}

// High user risk with a policy that requires a password change: the
// device flow offers the change as the authorization endpoint does (an
// SSO session signs in again first); after it the approval works and the
// device gets its token.
func TestDeviceApprovalPasswordChange(t *testing.T) {
	in := startDevice(t)
	ctx := context.Background()
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// An SSO session from before the risk was raised.
	sso := in.Browser()
	dcode, ucode := startDeviceFlow(t, in, "tv2", nil, nil)
	answerDevice(t, in, sso, ucode, "approve")
	in.Clock.Advance(6 * time.Second)
	if r := poll(t, in, "tv2", dcode, nil); r.Status != 200 {
		t.Fatalf("tv2: %d %s", r.Status, r.Body)
	}

	if err := in.App.Identity.SetRisk(ctx, "test", alice.ID, "high", "leaked credentials"); err != nil {
		t.Fatal(err)
	}
	applyPolicies(t, in, `
policies:
  - id: risky-devices
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [tv]}}
    conditions: {user_risk: [high], flows: [device_code]}
    grant: {controls: [password_change]}
`)
	dcode, ucode = startDeviceFlow(t, in, "tv", nil, nil)
	// The SSO session must prove the password again first.
	resp, body := enterUserCode(t, in, sso, ucode, ucode)
	if resp.StatusCode != 200 || !strings.Contains(body, "Sign in again to change your password.") {
		t.Fatalf("SSO session: want the login page, got %d %.400s", resp.StatusCode, body)
	}
	// A fresh sign-in: the password change page, not a refusal; the
	// device waits.
	b := in.Browser()
	resp, body = deviceSignIn(t, in, b, ucode)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="new_password"`) || strings.Contains(body, "administrator") {
		t.Fatalf("want the password change page, got %d %.400s", resp.StatusCode, body)
	}
	wantError(t, poll(t, in, "tv", dcode, nil), 400, "authorization_pending")
	form := wardtest.HiddenFields(body)
	form.Set("new_password", "amber-lantern-5582")
	form.Set("confirm_password", "amber-lantern-5583")
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/password", form)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "differ") {
		t.Fatalf("mismatched passwords: %d %.300s", resp.StatusCode, body)
	}
	form = wardtest.HiddenFields(body)
	form.Set("new_password", "amber-lantern-5582")
	form.Set("confirm_password", "amber-lantern-5582")
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/password", form)
	if resp.StatusCode != 200 || !strings.Contains(body, `value="approve"`) {
		t.Fatalf("after the change: want the confirmation page, got %d %.400s", resp.StatusCode, body)
	}
	if u, _ := in.App.Store.GetUser(ctx, alice.ID); u.RiskLevel != "" || !u.PasswordChangedAt.After(alice.UpdatedAt) {
		t.Fatalf("risk %q, password changed at %v", u.RiskLevel, u.PasswordChangedAt)
	}
	confirmDevice(t, in, b, body)
	in.Clock.Advance(6 * time.Second)
	tok := poll(t, in, "tv", dcode, nil)
	if tok.Status != 200 || tok.str("access_token") == "" {
		t.Fatalf("token after the password change: %d %s", tok.Status, tok.Body)
	}
	if c := claims(t, tok.str("access_token")); c["sub"] != alice.ID {
		t.Fatalf("token subject %v", c["sub"])
	}
}

// A policy that requires multi-factor authentication for the device
// flow: a password-only SSO session steps up on the page before the
// approval, and the token carries the second factor.
func TestDeviceApprovalMFAStepUp(t *testing.T) {
	in := startDeviceClaims(t)
	ctx := context.Background()
	b := in.Browser()
	ssoSignIn(t, in, b, "alice", wardtest.AlicePassword)
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.App.Identity.EnrollTOTP(ctx, "test", alice.ID, wardtest.AliceTOTP, in.TOTP(t, 0)); err != nil {
		t.Fatal(err)
	}
	applyPolicies(t, in, `
policies:
  - id: tv-mfa
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [tv]}}
    conditions: {flows: [device_code]}
    grant: {controls: [mfa]}
`)
	dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
	resp, body := enterUserCode(t, in, b, ucode, ucode)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="otp"`) || strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the second-factor page, got %d %.400s", resp.StatusCode, body)
	}
	in.Clock.Advance(31 * time.Second)
	form := wardtest.HiddenFields(body)
	form.Set("otp", in.TOTP(t, 0))
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	if resp.StatusCode != 200 {
		t.Fatalf("second factor: %d %.300s", resp.StatusCode, body)
	}
	confirmDevice(t, in, b, body)
	tok := pollClaims(t, in, dcode, "")
	if tok.Status != 200 || claims(t, tok.str("access_token"))["acr"] != "urn:ward:acr:mfa" {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
}
