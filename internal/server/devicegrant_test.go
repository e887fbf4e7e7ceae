package server_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code"

// startDevice runs Ward with two public device clients, "tv" and "tv2"
// (device_code + refresh_token; openid offline_access), besides the
// standard fixtures.
func startDevice(t *testing.T) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		noAutoRevoke(c) // the tests replay codes and refresh tokens
		for _, id := range []string{"tv", "tv2"} {
			c.StaticClients = append(c.StaticClients, config.StaticClient{ID: id, Name: "Living Room TV " + id, AuthMethod: "none",
				GrantTypes: []string{deviceGrant, "refresh_token"}, Scopes: []string{"openid", "offline_access"}})
		}
	}})
}

// deviceAuthorize starts a device authorization for clientID, with a DPoP
// proof when s is set.
func deviceAuthorize(t testing.TB, in *wardtest.Instance, clientID string, s *dpop.Signer, extra url.Values) result {
	t.Helper()
	form := url.Values{"client_id": {clientID}, "scope": {"openid offline_access"}}
	for k, v := range extra {
		form[k] = v
	}
	return do(t, in, call{path: "/device_authorization", signer: s, form: form})
}

// startDeviceFlow is deviceAuthorize that must succeed; it returns the
// device code and the user code as shown.
func startDeviceFlow(t testing.TB, in *wardtest.Instance, clientID string, s *dpop.Signer, extra url.Values) (deviceCode, userCode string) {
	t.Helper()
	r := deviceAuthorize(t, in, clientID, s, extra)
	if r.Status != 200 || r.str("device_code") == "" || r.str("user_code") == "" {
		t.Fatalf("device authorization: %d %s", r.Status, r.Body)
	}
	return r.str("device_code"), r.str("user_code")
}

// poll is one device access token request.
func poll(t testing.TB, in *wardtest.Instance, clientID, deviceCode string, s *dpop.Signer) result {
	t.Helper()
	return do(t, in, call{path: "/token", signer: s, form: url.Values{
		"grant_type": {deviceGrant}, "device_code": {deviceCode}, "client_id": {clientID}}})
}

// enterUserCode opens the verification page in b (as the
// verification_uri_complete link would) and submits typed.
func enterUserCode(t testing.TB, in *wardtest.Instance, b *http.Client, prefill, typed string) (*http.Response, string) {
	t.Helper()
	u := in.URL + "/device"
	if prefill != "" {
		u += "?" + url.Values{"user_code": {prefill}}.Encode()
	}
	resp, body := wardtest.Do(t, b, http.MethodGet, u, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="user_code"`) {
		t.Fatalf("device page: %d %.300s", resp.StatusCode, body)
	}
	if prefill != "" && !strings.Contains(body, `value="`+prefill+`"`) {
		t.Errorf("device page is not prefilled with %s", prefill)
	}
	form := wardtest.HiddenFields(body)
	form.Set("user_code", typed)
	return wardtest.Do(t, b, http.MethodPost, in.URL+"/device", form)
}

// answerDevice drives the browser side for userCode: it types the code,
// signs alice in (password and TOTP) unless b already has a session, and
// answers the confirmation page with decision ("approve" or "deny"). It
// returns the confirmation page.
func answerDevice(t testing.TB, in *wardtest.Instance, b *http.Client, userCode, decision string) string {
	t.Helper()
	resp, body := enterUserCode(t, in, b, userCode, strings.ToLower(userCode))
	if resp.StatusCode == 200 && strings.Contains(body, `name="password"`) {
		form := wardtest.HiddenFields(body)
		form.Set("username", "alice")
		form.Set("password", wardtest.AlicePassword)
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
		if resp.StatusCode != 200 || !strings.Contains(body, `name="otp"`) {
			t.Fatalf("password: %d, want the TOTP page; %.300s", resp.StatusCode, body)
		}
		in.Clock.Advance(31 * time.Second) // a fresh TOTP step: each code is accepted once
		form = wardtest.HiddenFields(body)
		form.Set("otp", in.TOTP(t, 0))
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	}
	if resp.StatusCode != 200 || !strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the confirmation page, got %d %.400s", resp.StatusCode, body)
	}
	confirm := body
	form := wardtest.HiddenFields(body)
	form.Set("decision", decision)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", form)
	want := "Device connected"
	if decision == "deny" {
		want = "Request denied"
	}
	if resp.StatusCode != 200 || !strings.Contains(body, want) {
		t.Fatalf("confirm %s: %d %.300s", decision, resp.StatusCode, body)
	}
	return confirm
}

var userCodeRE = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)

// The whole device flow with DPoP: authorization with a proof, polling,
// sign-in with TOTP in a browser, approval, DPoP-bound tokens and a
// refresh token bound to the key; then a second device approved through
// the browser's SSO session.
func TestDeviceFlowDPoP(t *testing.T) {
	in := startDevice(t)
	ctx := context.Background()

	disc := do(t, in, call{path: "/.well-known/openid-configuration", method: http.MethodGet})
	if disc.str("device_authorization_endpoint") != in.URL+"/device_authorization" {
		t.Errorf("device_authorization_endpoint = %q", disc.str("device_authorization_endpoint"))
	}
	if gts, _ := disc.JSON["grant_types_supported"].([]any); !slices.Contains(gts, any(deviceGrant)) {
		t.Errorf("grant_types_supported = %v, want the device grant", gts)
	}

	s := newSigner(t)
	r := deviceAuthorize(t, in, "tv", s, nil)
	if r.Status != 200 {
		t.Fatalf("device authorization: %d %s", r.Status, r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
	dcode, ucode := r.str("device_code"), r.str("user_code")
	if len(dcode) != 43 {
		t.Errorf("device_code length %d, want 43 (256 bits)", len(dcode))
	}
	if !userCodeRE.MatchString(ucode) {
		t.Errorf("user_code %q, want XXXX-XXXX from the base-20 alphabet", ucode)
	}
	if r.str("verification_uri") != in.URL+"/device" {
		t.Errorf("verification_uri %q", r.str("verification_uri"))
	}
	if r.str("verification_uri_complete") != in.URL+"/device?user_code="+ucode {
		t.Errorf("verification_uri_complete %q", r.str("verification_uri_complete"))
	}
	if r.JSON["expires_in"] != float64(600) || r.JSON["interval"] != float64(5) {
		t.Errorf("expires_in %v interval %v, want 600 and 5", r.JSON["expires_in"], r.JSON["interval"])
	}

	wantError(t, poll(t, in, "tv", dcode, s), 400, "authorization_pending")

	b := in.Browser()
	confirm := answerDevice(t, in, b, ucode, "approve")
	for _, want := range []string{"Living Room TV tv", ucode, "offline_access", "alice"} {
		if !strings.Contains(confirm, want) {
			t.Errorf("confirmation page does not show %q", want)
		}
	}

	tok := poll(t, in, "tv", dcode, s)
	if tok.Status != 200 {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
	if tok.str("token_type") != "DPoP" || tok.str("refresh_token") == "" || tok.str("id_token") == "" {
		t.Fatalf("token response %s, want DPoP token with refresh and ID token", tok.Body)
	}
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	c := claims(t, tok.str("access_token"))
	cnf, _ := c["cnf"].(map[string]any)
	if cnf == nil || cnf["jkt"] != s.Thumbprint() {
		t.Errorf("cnf = %v, want jkt %s", c["cnf"], s.Thumbprint())
	}
	if c["sub"] != alice.ID || c["client_id"] != "tv" || c["acr"] != "urn:ward:acr:mfa" || c["sid"] == nil {
		t.Errorf("access token claims %v", c)
	}

	// Redeemed once only.
	wantError(t, poll(t, in, "tv", dcode, s), 400, "invalid_grant")

	// The refresh token is bound to the device's key.
	rt := tok.str("refresh_token")
	wantError(t, refresh(t, in, "tv", rt, newSigner(t)), 400, "invalid_grant")
	if r2 := refresh(t, in, "tv", rt, s); r2.Status != 200 || r2.str("token_type") != "DPoP" {
		t.Fatalf("refresh: %d %s", r2.Status, r2.Body)
	}

	evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventDeviceCodeApproved}})
	if err != nil || len(evs) != 1 {
		t.Fatalf("approval events = %v, %v", evs, err)
	}
	if e := evs[0]; e.UserID != alice.ID || e.ClientID != "tv" || e.SessionID != c["sid"] || e.Binding != model.BindingDPoP || e.Data["jkt"] != s.Thumbprint() {
		t.Errorf("approval event %+v", e.Event)
	}
	if ev := model.EventCodes[model.EventDeviceCodeApproved]; ev == "" || model.EventCodes[model.EventDeviceCodeDenied] == "" {
		t.Error("device_code events have no codes")
	}

	// A second device: the browser's SSO session goes straight to the
	// confirmation (answerDevice fails if it shows the sign-in page).
	s2 := newSigner(t)
	dcode2, ucode2 := startDeviceFlow(t, in, "tv", s2, nil)
	in.Clock.Advance(6 * time.Second)
	wantError(t, poll(t, in, "tv", dcode2, s2), 400, "authorization_pending")
	resp, body := enterUserCode(t, in, b, ucode2, ucode2)
	if resp.StatusCode != 200 || strings.Contains(body, `name="password"`) || !strings.Contains(body, `value="approve"`) {
		t.Fatalf("with a session: %d, want the confirmation page; %.300s", resp.StatusCode, body)
	}
	answerDevice(t, in, b, ucode2, "approve")
	if tok2 := poll(t, in, "tv", dcode2, s2); tok2.Status != 200 || claims(t, tok2.str("access_token"))["sid"] != c["sid"] {
		t.Fatalf("second device: %d %s", tok2.Status, tok2.Body)
	}
}

func TestDeviceGrantErrors(t *testing.T) {
	in := startDevice(t)
	b := in.Browser() // signs in once, then approves through SSO

	t.Run("client without the grant", func(t *testing.T) {
		wantError(t, deviceAuthorize(t, in, "native", nil, nil), 400, "unauthorized_client")
	})
	t.Run("scope not allowed", func(t *testing.T) {
		wantError(t, deviceAuthorize(t, in, "tv", nil, url.Values{"scope": {"openid docs.read"}}), 400, "invalid_scope")
	})
	t.Run("unknown client", func(t *testing.T) {
		wantError(t, deviceAuthorize(t, in, "nope", nil, nil), 401, "invalid_client")
	})
	t.Run("dpop_jkt and proof disagree", func(t *testing.T) {
		wantError(t, deviceAuthorize(t, in, "tv", newSigner(t), url.Values{"dpop_jkt": {newSigner(t).Thumbprint()}}), 400, "invalid_dpop_proof")
	})
	t.Run("unknown device code", func(t *testing.T) {
		wantError(t, poll(t, in, "tv", "not-a-device-code", nil), 400, "invalid_grant")
	})
	t.Run("slow_down", func(t *testing.T) {
		dcode, _ := startDeviceFlow(t, in, "tv", nil, nil)
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "authorization_pending")
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "slow_down") // interval now 10 s
		in.Clock.Advance(5 * time.Second)
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "slow_down") // 5 s < 10 s; now 15 s
		in.Clock.Advance(10 * time.Second)
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "slow_down") // 10 s < 15 s; now 20 s
		in.Clock.Advance(20 * time.Second)
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "authorization_pending")
	})
	t.Run("expired_token", func(t *testing.T) {
		dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
		in.Clock.Advance(10*time.Minute + time.Second)
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "expired_token")
		resp, body := enterUserCode(t, in, b, "", ucode)
		if resp.StatusCode != 400 || !strings.Contains(body, "not valid or has expired") {
			t.Fatalf("expired user code: %d %.300s", resp.StatusCode, body)
		}
	})
	t.Run("access_denied", func(t *testing.T) {
		dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
		answerDevice(t, in, b, ucode, "deny")
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "access_denied")
		evs, _ := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventDeviceCodeDenied}})
		if len(evs) != 1 || evs[0].ClientID != "tv" || evs[0].Outcome != model.OutcomeFailure || evs[0].UserID == "" {
			t.Fatalf("denial events = %+v", evs)
		}
		// An answered code cannot be answered again.
		resp, body := enterUserCode(t, in, b, "", ucode)
		if resp.StatusCode != 400 || !strings.Contains(body, "not valid or has expired") {
			t.Fatalf("answered user code: %d %.300s", resp.StatusCode, body)
		}
	})
	t.Run("device code of another client", func(t *testing.T) {
		s := newSigner(t)
		dcode, ucode := startDeviceFlow(t, in, "tv", s, nil)
		wantError(t, poll(t, in, "tv2", dcode, s), 400, "invalid_grant")
		answerDevice(t, in, b, ucode, "approve")
		wantError(t, poll(t, in, "tv2", dcode, s), 400, "invalid_grant")
		// The attempt changed nothing for the rightful client.
		if r := poll(t, in, "tv", dcode, s); r.Status != 200 {
			t.Fatalf("rightful client after the attempt: %d %s", r.Status, r.Body)
		}
	})
	t.Run("proof key other than dpop_jkt", func(t *testing.T) {
		s := newSigner(t)
		dcode, ucode := startDeviceFlow(t, in, "tv", nil, url.Values{"dpop_jkt": {s.Thumbprint()}})
		answerDevice(t, in, b, ucode, "approve")
		wantError(t, poll(t, in, "tv", dcode, newSigner(t)), 400, "invalid_grant")
		wantError(t, poll(t, in, "tv", dcode, nil), 400, "invalid_grant")
		r := poll(t, in, "tv", dcode, s)
		if r.Status != 200 || claims(t, r.str("access_token"))["cnf"].(map[string]any)["jkt"] != s.Thumbprint() {
			t.Fatalf("with the committed key: %d %s", r.Status, r.Body)
		}
	})
	t.Run("unbound without DPoP", func(t *testing.T) {
		dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
		answerDevice(t, in, b, ucode, "approve")
		r := poll(t, in, "tv", dcode, nil)
		// A public client without DPoP gets no refresh token.
		if r.Status != 200 || r.str("token_type") != "Bearer" || r.str("refresh_token") != "" {
			t.Fatalf("unbound device token: %d %s", r.Status, r.Body)
		}
	})
}

func TestDeviceVerificationPage(t *testing.T) {
	in := startDevice(t)
	b := in.Browser()
	_, ucode := startDeviceFlow(t, in, "tv", nil, nil)

	t.Run("CSRF", func(t *testing.T) {
		resp, _ := wardtest.Do(t, b, http.MethodPost, in.URL+"/device", url.Values{"user_code": {ucode}})
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST /device without CSRF: %d, want 403", resp.StatusCode)
		}
		resp, _ = wardtest.Do(t, in.Browser(), http.MethodPost, in.URL+"/device/confirm", url.Values{"decision": {"approve"}})
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST /device/confirm without CSRF: %d, want 403", resp.StatusCode)
		}
	})
	t.Run("wrong code", func(t *testing.T) {
		resp, body := enterUserCode(t, in, b, "", "BCDF-GHJK")
		if ucode == "BCDF-GHJK" {
			t.Skip("drew the test's wrong code")
		}
		if resp.StatusCode != 400 || !strings.Contains(body, "not valid or has expired") || !strings.Contains(body, `name="user_code"`) {
			t.Fatalf("wrong code: %d %.300s", resp.StatusCode, body)
		}
	})
	t.Run("burst of wrong codes is throttled", func(t *testing.T) {
		throttled := 0
		for i := range 15 {
			resp, body := enterUserCode(t, in, b, "", "XXXX-XXX"+string("BCDFGHJKLMNPQRSTVWXZ"[i]))
			if resp.StatusCode == http.StatusTooManyRequests && strings.Contains(body, "Too many attempts") {
				throttled++
			}
		}
		if throttled == 0 {
			t.Fatal("15 wrong codes from one address were never throttled")
		}
		// Now even the right code waits.
		resp, _ := enterUserCode(t, in, b, "", ucode)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("right code while throttled: %d, want 429", resp.StatusCode)
		}
		// The budget refills with time.
		in.Clock.Advance(2 * time.Minute)
		resp, body := enterUserCode(t, in, b, "", ucode)
		if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
			t.Fatalf("right code after waiting: %d, want the sign-in page; %.300s", resp.StatusCode, body)
		}
	})
}
