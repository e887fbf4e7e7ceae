package grant

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// A code redeemed with its verifier and the DPoP key it was bound to
// yields DPoP-bound access, ID and refresh tokens, uses the code up and
// records the issuance.
func TestAuthorizationCode(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	sess := f.session()
	code, verifier := f.code("spa", sess, s.Thumbprint())
	resp := f.mustGrant(f.redeem("spa", code, verifier, s))

	if resp.TokenType != "DPoP" || resp.IDToken == "" || resp.RefreshToken == "" || resp.Scope != "openid api" || resp.ExpiresIn != 600 {
		t.Fatalf("response: %+v", resp)
	}
	cl := f.accessClaims(resp.AccessToken)
	if cl.Subject != f.alice.ID || cl.SID != sess.ID || cl.ClientID != "spa" || cl.Cnf == nil || cl.Cnf.JKT != s.Thumbprint() || cl.ACR != authz.ACRPassword {
		t.Fatalf("access token claims: %+v", cl)
	}
	// OIDC: the token is for the client's resource and Ward's userinfo.
	if len(cl.Audience) != 2 || !has(cl.Audience, "https://api.test") || !has(cl.Audience, issuer) {
		t.Errorf("audience %v, want the resource and the issuer", cl.Audience)
	}
	rt, err := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(resp.RefreshToken))
	if err != nil || rt.JKT != s.Thumbprint() || rt.SessionID != sess.ID || !rt.ExpiresAt.Equal(f.clk.Now().Add(refreshTTL)) {
		t.Fatalf("stored refresh token: %+v, %v", rt, err)
	}
	ac, err := f.st.GetAuthCode(f.ctx, f.hasher.Sum(code))
	if err != nil || ac.UsedAt.IsZero() {
		t.Fatalf("code not used up: %+v %v", ac, err)
	}
	evs := f.eventsOf(model.EventTokenIssued)
	if len(evs) != 1 {
		t.Fatalf("%d token.issued events", len(evs))
	}
	if ev := evs[0]; ev.UserID != f.alice.ID || ev.SessionID != sess.ID || ev.TokenID != cl.JTI || ev.Binding != model.BindingDPoP ||
		ev.Data["grant_type"] != model.GrantAuthorizationCode || ev.Data["refresh_bound"] != "true" || ev.Data["token_protection"] != "unregistered_key" ||
		ev.IP != "192.0.2.10" || ev.CorrelationID != "corr-1" {
		t.Fatalf("event: %+v %v", ev, ev.Data)
	}
}

// Every refusal reason of the code grant; none of them uses the code up
// (a thief's wrong guess must not burn the legitimate redemption) or
// issues anything.
func TestAuthorizationCodeRefusals(t *testing.T) {
	f := newFixture(t)
	bound, other := f.signer(), f.signer()
	for _, tc := range []struct {
		name   string
		jkt    string                               // the code's dpop_jkt
		before func()                               // runs after the code is made
		req    func(code, verifier string) *Request // the redemption
		code   string
		reason string
	}{
		{"client mismatch", "", nil, func(c, v string) *Request { return f.redeem("web2", c, v, nil) }, oautherr.InvalidGrant, "code_client_mismatch"},
		{"expired", "", func() { f.clk.Advance(time.Minute) }, func(c, v string) *Request { return f.redeem("web", c, v, nil) }, oautherr.InvalidGrant, "code_expired"},
		{"redirect_uri", "", nil, func(c, v string) *Request {
			return f.request("web", nil, "grant_type", model.GrantAuthorizationCode, "code", c, "code_verifier", v, "redirect_uri", "https://evil.test/cb")
		}, oautherr.InvalidGrant, "redirect_uri_mismatch"},
		{"PKCE mismatch", "", nil, func(c, _ string) *Request {
			return f.redeem("web", c, "a-wrong-verifier-of-a-valid-length-0123456789", nil)
		}, oautherr.InvalidGrant, "pkce_mismatch"},
		{"PKCE malformed", "", nil, func(c, _ string) *Request { return f.redeem("web", c, "short", nil) }, oautherr.InvalidGrant, "pkce_malformed"},
		{"PKCE missing", "", nil, func(c, _ string) *Request {
			return f.request("web", nil, "grant_type", model.GrantAuthorizationCode, "code", c, "redirect_uri", redirectURI)
		}, oautherr.InvalidRequest, "pkce_missing"},
		{"dpop_jkt, other key", bound.Thumbprint(), nil, func(c, v string) *Request { return f.redeem("web", c, v, other) }, oautherr.InvalidGrant, "dpop_jkt_mismatch"},
		{"dpop_jkt, no proof", bound.Thumbprint(), nil, func(c, v string) *Request { return f.redeem("web", c, v, nil) }, oautherr.InvalidGrant, "dpop_jkt_mismatch"},
		{"unknown code", "", nil, func(_, v string) *Request { return f.redeem("web", "no-such-code", v, nil) }, oautherr.InvalidGrant, "code_unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sess := f.session()
			code, verifier := f.code("web", sess, tc.jkt)
			if tc.before != nil {
				tc.before()
			}
			rts := f.count("refresh_tokens")
			resp, e := f.grant(tc.req(code, verifier))
			wantRefused(t, resp, e, tc.code, http.StatusBadRequest, tc.reason)
			if e.Code == oautherr.InvalidGrant && e.Description != "code is invalid or expired" && tc.reason != "redirect_uri_mismatch" && tc.reason != "pkce_mismatch" && tc.reason != "pkce_malformed" {
				t.Errorf("description %q tells the client why", e.Description)
			}
			if ac, err := f.st.GetAuthCode(f.ctx, f.hasher.Sum(code)); err != nil || !ac.UsedAt.IsZero() {
				t.Errorf("the refused request used the code up: %+v %v", ac, err)
			}
			if n := f.count("refresh_tokens"); n != rts {
				t.Errorf("refresh tokens %d -> %d", rts, n)
			}
			if s, _ := f.st.GetSession(f.ctx, sess.ID); !s.RevokedAt.IsZero() {
				t.Error("a refusal revoked the session")
			}
		})
	}
	if n := len(f.eventsOf(model.EventTokenIssued)); n != 0 {
		t.Errorf("%d tokens issued", n)
	}
}

// A code presented again after a redemption is theft (RFC 6749 §4.1.2):
// the session it issued is revoked, with its refresh token.
func TestAuthorizationCodeReuse(t *testing.T) {
	f := newFixture(t)
	sess := f.session()
	code, verifier := f.code("web", sess, "")
	first := f.mustGrant(f.redeem("web", code, verifier, nil))
	if first.TokenType != "Bearer" || first.RefreshToken == "" {
		t.Fatalf("first redemption: %+v", first)
	}
	resp, e := f.grant(f.redeem("web", code, verifier, nil))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "code_reused")
	if s, err := f.st.GetSession(f.ctx, sess.ID); err != nil || s.RevokedAt.IsZero() || s.RevokeCause != string(model.CauseCodeReuse) {
		t.Fatalf("session after reuse: %+v %v", s, err)
	}
	if _, err := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(first.RefreshToken)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the first redemption's refresh token survives: %v", err)
	}
	// A code of another client is not that client's to revoke.
	sess2 := f.session()
	code, verifier = f.code("web", sess2, "")
	f.mustGrant(f.redeem("web", code, verifier, nil))
	resp, e = f.grant(f.redeem("web2", code, verifier, nil))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "code_reused")
	if s, _ := f.st.GetSession(f.ctx, sess2.ID); !s.RevokedAt.IsZero() {
		t.Fatal("another client's presentation revoked the session")
	}
}

// A refresh rotates the token (the old one is marked rotated, the new one
// keeps the binding and the grant's scope) and may narrow the access
// token's scope.
func TestRefreshToken(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	code, verifier := f.code("spa", f.session(), s.Thumbprint())
	first := f.mustGrant(f.redeem("spa", code, verifier, s))
	f.clk.Advance(2 * time.Minute)

	resp := f.mustGrant(f.refresh("spa", first.RefreshToken, s, "scope", "api"))
	if resp.RefreshToken == "" || resp.RefreshToken == first.RefreshToken || resp.Scope != "api" || resp.IDToken == "" {
		t.Fatalf("refresh: %+v", resp)
	}
	if cl := f.accessClaims(resp.AccessToken); cl.Scope != "api" || cl.Cnf == nil || cl.Cnf.JKT != s.Thumbprint() || len(cl.Audience) != 1 || cl.Audience[0] != "https://api.test" {
		t.Fatalf("narrowed access token: %+v", cl)
	}
	old, err := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(first.RefreshToken))
	if err != nil || old.RotatedAt.IsZero() {
		t.Fatalf("old refresh token not rotated: %+v %v", old, err)
	}
	next, err := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(resp.RefreshToken))
	if err != nil || next.JKT != s.Thumbprint() || next.Scope != "openid api" {
		t.Fatalf("new refresh token: %+v %v", next, err)
	}
	if evs := f.eventsOf(model.EventTokenRefreshed); len(evs) != 1 || evs[0].Data["scope"] != "api" {
		t.Fatalf("token.refreshed events: %v", evs)
	}
	// A confidential client's unbound token stays unbound.
	code, verifier = f.code("web", f.session(), "")
	wr := f.mustGrant(f.redeem("web", code, verifier, nil)).RefreshToken
	if next := f.mustGrant(f.refresh("web", wr, nil)); next.TokenType != "Bearer" || next.RefreshToken == "" {
		t.Fatalf("confidential refresh: %+v", next)
	}
}

// Every refusal reason of the refresh grant; none rotates the token,
// which still works afterwards.
func TestRefreshTokenRefusals(t *testing.T) {
	f := newFixture(t)
	s, other := f.signer(), f.signer()
	for _, tc := range []struct {
		name   string
		before func()
		req    func(rt string) *Request
		code   string
		reason string
	}{
		{"client mismatch", nil, func(rt string) *Request { return f.refresh("web", rt, s) }, oautherr.InvalidGrant, "refresh_client_mismatch"},
		{"other key", nil, func(rt string) *Request { return f.refresh("spa", rt, other) }, oautherr.InvalidGrant, "refresh_key_mismatch"},
		{"no proof", nil, func(rt string) *Request { return f.refresh("spa", rt, nil) }, oautherr.InvalidGrant, "refresh_key_mismatch"},
		{"wider scope", nil, func(rt string) *Request { return f.refresh("spa", rt, s, "scope", "openid api profile") }, oautherr.InvalidScope, ""},
		{"unknown", nil, func(string) *Request { return f.refresh("spa", "no-such-token", s) }, oautherr.InvalidGrant, "refresh_unknown"},
		{"missing", nil, func(string) *Request { return f.refresh("spa", "", s) }, oautherr.InvalidRequest, ""},
		{"not allowed", nil, func(rt string) *Request { return f.refresh("svc", rt, s) }, oautherr.UnauthorizedClient, ""},
		// Last: it moves the clock past the token's life.
		{"expired", func() { f.clk.Advance(refreshTTL) }, func(rt string) *Request { return f.refresh("spa", rt, s) }, oautherr.InvalidGrant, "refresh_expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, verifier := f.code("spa", f.session(), s.Thumbprint())
			rt := f.mustGrant(f.redeem("spa", code, verifier, s)).RefreshToken
			if tc.before != nil {
				tc.before()
			}
			resp, e := f.grant(tc.req(rt))
			wantRefused(t, resp, e, tc.code, http.StatusBadRequest, tc.reason)
			if e.Code == oautherr.InvalidGrant && e.Description != "refresh token is invalid or expired" {
				t.Errorf("description %q tells the client why", e.Description)
			}
			if got, err := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(rt)); err != nil || !got.RotatedAt.IsZero() {
				t.Fatalf("the refusal rotated the token: %+v %v", got, err)
			}
			if tc.before == nil {
				f.mustGrant(f.refresh("spa", rt, s)) // still good
			}
		})
	}
}

// A rotated refresh token presented again is theft: the session is
// revoked, so the token that replaced it stops working too.
func TestRefreshTokenReuse(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	sess := f.session()
	code, verifier := f.code("spa", sess, s.Thumbprint())
	rt1 := f.mustGrant(f.redeem("spa", code, verifier, s)).RefreshToken
	rt2 := f.mustGrant(f.refresh("spa", rt1, s)).RefreshToken

	resp, e := f.grant(f.refresh("spa", rt1, s))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "refresh_reused")
	if got, err := f.st.GetSession(f.ctx, sess.ID); err != nil || got.RevokeCause != string(model.CauseRefreshReuse) {
		t.Fatalf("session after reuse: %+v %v", got, err)
	}
	if evs := f.eventsOf(model.EventRefreshReuseDetected); len(evs) != 1 || evs[0].SessionID != sess.ID {
		t.Fatalf("reuse events: %v", evs)
	}
	resp, e = f.grant(f.refresh("spa", rt2, s))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "refresh_unknown")
}

// client_credentials: a token for the client itself, never a refresh or
// ID token, never for a public client or a user scope.
func TestClientCredentials(t *testing.T) {
	f := newFixture(t)
	resp := f.mustGrant(f.request("svc", nil, "grant_type", model.GrantClientCredentials, "scope", "api api"))
	if resp.TokenType != "Bearer" || resp.RefreshToken != "" || resp.IDToken != "" || resp.Scope != "api" {
		t.Fatalf("response: %+v", resp)
	}
	if cl := f.accessClaims(resp.AccessToken); cl.Subject != "svc" || cl.SID != "" || cl.ClientID != "svc" {
		t.Fatalf("claims: %+v", cl)
	}
	if evs := f.eventsOf(model.EventTokenIssued); len(evs) != 1 || evs[0].UserID != "" || evs[0].Actor != "svc" || evs[0].Data["token_protection"] != "unbound" {
		t.Fatalf("events: %v", evs)
	}
	// A proof binds the token; no device lookup for a client's own token.
	s := f.signer()
	if resp := f.mustGrant(f.request("svc", s, "grant_type", model.GrantClientCredentials)); f.accessClaims(resp.AccessToken).Cnf.JKT != s.Thumbprint() {
		t.Fatal("client_credentials token not bound to the proof key")
	}
	for _, tc := range []struct {
		name, client, scope, code string
	}{
		{"public client", "tv", "", oautherr.UnauthorizedClient},
		{"not allowed", "web", "", oautherr.UnauthorizedClient},
		{"openid", "svc", "openid", oautherr.InvalidScope},
		{"not the client's", "svc", "admin", oautherr.InvalidScope},
	} {
		resp, e := f.grant(f.request(tc.client, nil, "grant_type", model.GrantClientCredentials, "scope", tc.scope))
		if e == nil || resp != nil || e.Code != tc.code {
			t.Errorf("%s: %+v %v, want %s", tc.name, resp, e, tc.code)
		}
	}
}

// deviceCode stores a pending device authorization of client (bound to
// jkt when set) and returns the device code.
func (f *fixture) deviceCode(client, jkt string) string {
	raw := secret.RandomToken()
	now := f.clk.Now()
	dc := &model.DeviceCode{Hash: f.hasher.Sum(raw), UserCode: authz.NewUserCode(), ClientID: client, Scope: "openid offline_access", DPoPJKT: jkt,
		Status: model.DeviceCodePending, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute), Interval: DeviceInterval}
	if err := f.st.CreateDeviceCode(f.ctx, dc); err != nil {
		f.t.Fatal(err)
	}
	return raw
}

// answer records the user's decision on a device code, as the
// verification page does.
func (f *fixture) answer(raw, status string, sess *model.Session) {
	_, err := f.st.UpdateDeviceCode(f.ctx, f.hasher.Sum(raw), func(d *model.DeviceCode) error {
		d.Status = status
		if status == model.DeviceCodeApproved {
			d.UserID, d.SessionID, d.AuthTime, d.AMR, d.ACR = sess.UserID, sess.ID, sess.AuthTime, sess.AMR, sess.ACR
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) poll(client, raw string, s *dpop.Signer) *Request {
	return f.request(client, s, "grant_type", model.GrantDeviceCode, "device_code", raw)
}

// The device grant: pending until approved, slow_down for a device that
// polls faster than the interval (which grows), tokens bound to the
// committed key once approved, and a code used only once.
func TestDeviceCode(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	raw := f.deviceCode("tv", s.Thumbprint())

	resp, e := f.grant(f.poll("tv", raw, s))
	wantRefused(t, resp, e, oautherr.AuthorizationPending, http.StatusBadRequest, "")
	f.clk.Advance(time.Second)
	resp, e = f.grant(f.poll("tv", raw, s))
	wantRefused(t, resp, e, oautherr.SlowDown, http.StatusBadRequest, "device_slow_down")
	if dc, _ := f.st.GetDeviceCode(f.ctx, f.hasher.Sum(raw)); dc.Interval != DeviceInterval+deviceSlowDown || !dc.LastPoll.Equal(f.clk.Now()) {
		t.Fatalf("after slow_down: interval %v, last poll %v", dc.Interval, dc.LastPoll)
	}

	sess := f.session()
	f.answer(raw, model.DeviceCodeApproved, sess)
	f.clk.Advance(10 * time.Second)
	// The approved code waits for the committed key.
	resp, e = f.grant(f.poll("tv", raw, f.signer()))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "dpop_jkt_mismatch")
	resp = f.mustGrant(f.poll("tv", raw, s))
	if resp.TokenType != "DPoP" || resp.RefreshToken == "" || resp.IDToken == "" {
		t.Fatalf("device tokens: %+v", resp)
	}
	if cl := f.accessClaims(resp.AccessToken); cl.SID != sess.ID || cl.Cnf.JKT != s.Thumbprint() {
		t.Fatalf("claims: %+v", cl)
	}
	resp, e = f.grant(f.poll("tv", raw, s))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "device_code_reused")
}

// The device grant's other refusals.
func TestDeviceCodeRefusals(t *testing.T) {
	f := newFixture(t)
	sess := f.session()

	raw := f.deviceCode("tv", "")
	resp, e := f.grant(f.poll("tv2", raw, nil))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "device_code_client_mismatch")
	if dc, _ := f.st.GetDeviceCode(f.ctx, f.hasher.Sum(raw)); !dc.LastPoll.IsZero() {
		t.Fatal("another client's poll was recorded")
	}

	f.answer(raw, model.DeviceCodeDenied, nil)
	resp, e = f.grant(f.poll("tv", raw, nil))
	// A token error response: 400, not the 403 of access_denied elsewhere.
	wantRefused(t, resp, e, oautherr.AccessDenied, http.StatusBadRequest, "device_denied")
	if e.Description != "the user denied the request" {
		t.Fatalf("description %q", e.Description)
	}

	// Denied by Conditional Access at approval: the device is told why.
	raw = f.deviceCode("tv", "")
	if _, err := f.st.UpdateDeviceCode(f.ctx, f.hasher.Sum(raw), func(d *model.DeviceCode) error {
		d.Status, d.DenyReason, d.DenyDescription = model.DeviceCodeDenied, "ca_block", "access is blocked by a Conditional Access policy (reference r-1)"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	resp, e = f.grant(f.poll("tv", raw, nil))
	wantRefused(t, resp, e, oautherr.AccessDenied, http.StatusBadRequest, "ca_block")
	if e.Description != "access is blocked by a Conditional Access policy (reference r-1)" {
		t.Fatalf("description %q", e.Description)
	}

	raw = f.deviceCode("tv", "")
	f.answer(raw, model.DeviceCodeApproved, sess)
	f.clk.Advance(10*time.Minute + time.Second)
	resp, e = f.grant(f.poll("tv", raw, nil))
	wantRefused(t, resp, e, oautherr.ExpiredToken, http.StatusBadRequest, "device_code_expired")

	resp, e = f.grant(f.poll("tv", "no-such-code", nil))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "device_code_unknown")
	resp, e = f.grant(f.poll("web", raw, nil))
	wantRefused(t, resp, e, oautherr.UnauthorizedClient, http.StatusBadRequest, "")

	// The approving session ended before the device redeemed the code.
	raw = f.deviceCode("tv", "")
	f.answer(raw, model.DeviceCodeApproved, sess)
	if _, err := f.st.RevokeSession(f.ctx, sess.ID, f.clk.Now(), string(model.CauseAdminRevoked)); err != nil {
		t.Fatal(err)
	}
	resp, e = f.grant(f.poll("tv", raw, nil))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "session_inactive")
}
