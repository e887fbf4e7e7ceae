package server_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Token protection: a client that requires protected sessions accepts only
// sessions bound to the key of a registered, active device; the session's
// tokens carry the device id; a copy of the session token is useless with
// another key; disabling the device ends the session at once.
func TestTokenProtection(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "docs", Name: "Documents", AuthMethod: "none",
			RedirectURIs: []string{wardtest.RedirectURI}, GrantTypes: []string{"authorization_code", "refresh_token"},
			Scopes: []string{"openid", "offline_access"}, DPoPBoundAccessTokens: true, RequireProtectedSessions: true})
		// The stolen copy below is a detection, and with the test's others
		// the user's level may reach high: the automatic response would
		// then end the session before the device's own refresh, or not,
		// depending on when the risk consumer runs. This test is about
		// the binding; the response has tests of its own.
		c.Risk.AutoRevokeLevel = "off"
	}})
	ctx := context.Background()
	s := newSigner(t)
	scope := url.Values{"scope": {"openid offline_access"}}

	// Unregistered key: refused for docs, accepted (and recorded as such) for others.
	code, verifier := codeFlow(t, in, "docs", s, scope)
	r := exchange(t, in, "docs", code, verifier, s)
	wantError(t, r, 400, "invalid_grant")
	code, verifier = codeFlow(t, in, "spa", s, nil)
	if r := exchange(t, in, "spa", code, verifier, s); r.Status != 200 || claims(t, r.str("access_token"))["did"] != nil {
		t.Fatalf("other app with an unregistered key: %d %s", r.Status, r.Body)
	}
	evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenIssued}, Limit: 1})
	if len(evs) != 1 || evs[0].Data["token_protection"] != "unregistered_key" || evs[0].Data["token_protection_reason"] != "no_device_for_key" {
		t.Fatalf("token event: %+v", evs)
	}

	// Register the key as alice's device: now the session is protected.
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	jwk, _ := json.Marshal(s.PublicJWK())
	dev, err := in.App.Devices.Register(ctx, alice.ID, device.Registration{PublicJWK: jwk, KeyStorage: "file", Platform: "linux", OSName: "Debian", OSVersion: "12", Hostname: "laptop", AgentVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	code, verifier = codeFlow(t, in, "docs", s, scope)
	signins, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSignInSucceeded}, Limit: 1})
	if len(signins) != 1 || signins[0].Data["token_protection"] != "registered_device" || signins[0].DeviceID != dev.ID {
		t.Fatalf("sign-in event: %+v", signins)
	}
	r = exchange(t, in, "docs", code, verifier, s)
	if r.Status != 200 {
		t.Fatalf("registered device: %d %s", r.Status, r.Body)
	}
	if did := claims(t, r.str("access_token"))["did"]; did != dev.ID {
		t.Fatalf("did = %v, want %s", did, dev.ID)
	}
	evs, _ = in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenIssued}, Limit: 1})
	if len(evs) != 1 || evs[0].Data["token_protection"] != "registered_device" || evs[0].DeviceID != dev.ID {
		t.Fatalf("token event: %+v", evs)
	}
	// A stolen copy of the session token is useless from another key.
	rt := r.str("refresh_token")
	wantError(t, refresh(t, in, "docs", rt, newSigner(t)), 400, "invalid_grant")
	r2 := refresh(t, in, "docs", rt, s)
	if r2.Status != 200 || claims(t, r2.str("access_token"))["did"] != dev.ID {
		t.Fatalf("device refresh: %d %s", r2.Status, r2.Body)
	}

	// Disabling the device ends the session for the device too, at once:
	// the next request, made as soon as Disable returns, is refused.
	if _, err := in.App.Devices.Disable(ctx, "admin-1", dev.ID); err != nil {
		t.Fatal(err)
	}
	r3 := refresh(t, in, "docs", r2.str("refresh_token"), s)
	wantError(t, r3, 400, "invalid_grant")
	// The device is told why (it proved it holds the key): not a session
	// to sign in again to.
	if d := r3.str("error_description"); !strings.Contains(d, "device") || !strings.Contains(d, "disabled") {
		t.Errorf("refresh after disable: %q, want it to name the disabled device", d)
	}
	// Anyone else's refused refresh still learns nothing more.
	if d := refresh(t, in, "docs", "not-a-token", newSigner(t)).str("error_description"); strings.Contains(d, "device") {
		t.Errorf("unknown token with another key: %q", d)
	}
	// And the key cannot start a new session anywhere.
	code, verifier = codeFlow(t, in, "spa", s, nil)
	wantError(t, exchange(t, in, "spa", code, verifier, s), 400, "invalid_grant")
}

// A registered device counts only for its own user: bob signing in with
// the key of alice's device (he approved a device code her machine — or
// an attacker's registered device — started) gets a DPoP-bound session,
// but not a registered device's: no did, no device-bound application.
func TestDeviceOfAnotherUser(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "docs", Name: "Documents", AuthMethod: "none",
			RedirectURIs: []string{wardtest.RedirectURI}, GrantTypes: []string{"authorization_code", "refresh_token"},
			Scopes: []string{"openid", "offline_access"}, DPoPBoundAccessTokens: true, RequireProtectedSessions: true})
		// The stolen copy below is a detection, and with the test's others
		// the user's level may reach high: the automatic response would
		// then end the session before the device's own refresh, or not,
		// depending on when the risk consumer runs. This test is about
		// the binding; the response has tests of its own.
		c.Risk.AutoRevokeLevel = "off"
	}})
	ctx := context.Background()
	s := newSigner(t)
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	jwk, _ := json.Marshal(s.PublicJWK())
	if _, err := in.App.Devices.Register(ctx, alice.ID, device.Registration{PublicJWK: jwk, KeyStorage: "file", Platform: "linux",
		OSName: "Debian", OSVersion: "12", Hostname: "laptop", AgentVersion: "test"}); err != nil {
		t.Fatal(err)
	}
	bobFlow := func(client string, extra url.Values) (string, string) {
		t.Helper()
		verifier, challenge := wardtest.PKCE()
		if extra == nil {
			extra = url.Values{}
		}
		extra.Set("dpop_jkt", s.Thumbprint())
		loc := in.Login(t, in.Browser(), in.AuthorizeURL(client, challenge, extra), "bob", wardtest.BobPassword, "")
		if e := loc.Query().Get("error"); e != "" {
			t.Fatalf("authorize: %s", e)
		}
		return loc.Query().Get("code"), verifier
	}
	code, verifier := bobFlow("docs", url.Values{"scope": {"openid offline_access"}})
	signins, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSignInSucceeded}, Limit: 1})
	if len(signins) != 1 || signins[0].DeviceID != "" || signins[0].Data["token_protection_reason"] != "device_of_another_user" {
		t.Fatalf("sign-in event: %+v", signins)
	}
	wantError(t, exchange(t, in, "docs", code, verifier, s), 400, "invalid_grant")
	code, verifier = bobFlow("spa", nil)
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 || claims(t, r.str("access_token"))["did"] != nil {
		t.Fatalf("bob with alice's device key: %d %s", r.Status, r.Body)
	}
	evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenIssued}, Limit: 1})
	if len(evs) != 1 || evs[0].Data["token_protection"] != "unregistered_key" || evs[0].Data["token_protection_reason"] != "device_of_another_user" {
		t.Fatalf("token event: %+v", evs)
	}
}
