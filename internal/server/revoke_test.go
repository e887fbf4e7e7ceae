package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Someone who saw a public client's authorization code (a log, a
// referrer) presents it with a wrong verifier or from another key: the
// code is not used up, the legitimate redemption succeeds, and nothing is
// treated as theft. Reuse after that successful redemption is theft: the
// session is revoked.
func TestCodeCheckedBeforeUse(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	thief := newSigner(t)
	for name, c := range map[string]call{
		"wrong verifier":     {path: "/token", signer: s, form: url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {strings.Repeat("x", 43)}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}},
		"another key":        {path: "/token", signer: thief, form: url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}},
		"another redirect":   {path: "/token", signer: s, form: url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {"https://app.example/other"}, "client_id": {"spa"}}},
		"malformed verifier": {path: "/token", signer: s, form: url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {"short"}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}},
	} {
		r := do(t, in, c)
		wantError(t, r, 400, "invalid_grant")
		if name == "another key" && r.str("error_description") != "code is invalid or expired" {
			t.Errorf("%s: description %q tells about the binding", name, r.str("error_description"))
		}
	}
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("legitimate redemption after the failed attempts: %d %s", r.Status, r.Body)
	}
	sid, _ := claims(t, r.str("access_token"))["sid"].(string)
	ctx := context.Background()
	if se, err := in.App.Store.GetSession(ctx, sid); err != nil || !se.RevokedAt.IsZero() {
		t.Fatalf("session after the failed attempts: %+v %v", se, err)
	}
	evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventCodeReuseDetected}})
	if len(evs) != 0 {
		t.Errorf("%d code.reuse_detected before any reuse", len(evs))
	}
	// Reuse of the redeemed code: theft, the session ends.
	wantError(t, exchange(t, in, "spa", code, verifier, s), 400, "invalid_grant")
	if se, _ := in.App.Store.GetSession(ctx, sid); se.RevokedAt.IsZero() || se.RevokeCause != string(model.CauseCodeReuse) {
		t.Errorf("session after reuse: revoked %v, cause %q", se.RevokedAt, se.RevokeCause)
	}
}

// A refresh token presented with another key gets the generic answer: the
// thief learns nothing about the binding; the audit log keeps the reason.
func TestRefreshKeyMismatchIsGeneric(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	r = refresh(t, in, "spa", r.str("refresh_token"), newSigner(t))
	wantError(t, r, 400, "invalid_grant")
	if d := r.str("error_description"); d != "refresh token is invalid or expired" {
		t.Errorf("description %q", d)
	}
	if ev := lastEvent(t, in, model.EventTokenRequestFailed); ev.Reason != "refresh_key_mismatch" {
		t.Errorf("audit reason %q, want refresh_key_mismatch", ev.Reason)
	}
}

// Revoking an access token (RFC 7009) ends the revoking client's grant in
// the session, not the session: the user's other clients go on. A
// DPoP-bound token is revoked only with a proof of its key, so a copy of
// the token without the key cannot sign anyone out.
func TestRevokeAccessTokenEndsOnlyTheClientsGrant(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	s := newSigner(t)
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	loc := in.Login(t, b, in.AuthorizeURL("spa", challenge, url.Values{"dpop_jkt": {s.Thumbprint()}}), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	spa := exchange(t, in, "spa", loc.Query().Get("code"), verifier, s)
	if spa.Status != 200 {
		t.Fatalf("spa token: %d %s", spa.Status, spa.Body)
	}
	at, rt := spa.str("access_token"), spa.str("refresh_token")
	sid := claims(t, at)["sid"].(string)
	// The same browser session signs in to another client (SSO).
	verifier2, challenge2 := wardtest.PKCE()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge2, nil), nil)
	loc2, _ := url.Parse(resp.Header.Get("Location"))
	web := do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"grant_type": {"authorization_code"},
		"code": {loc2.Query().Get("code")}, "code_verifier": {verifier2}, "redirect_uri": {wardtest.RedirectURI}}})
	if web.Status != 200 || claims(t, web.str("access_token"))["sid"] != sid {
		t.Fatalf("web token in the same session: %d %s", web.Status, web.Body)
	}
	userinfo := func() result {
		return do(t, in, call{path: "/userinfo", method: http.MethodGet, authz: "DPoP " + at, signer: s, at: at})
	}
	revoke := func(c call) result {
		c.path, c.form = "/revoke", url.Values{"token": {at}, "client_id": {"spa"}}
		return do(t, in, c)
	}

	// A copy of the token without its key: refused, nothing changes.
	wantError(t, revoke(call{}), 400, "invalid_dpop_proof")
	wantError(t, revoke(call{signer: newSigner(t)}), 400, "invalid_dpop_proof")
	if r := userinfo(); r.Status != 200 {
		t.Fatalf("userinfo after refused revocations: %d %s", r.Status, r.Body)
	}

	// The holder of the key revokes it.
	if r := revoke(call{signer: s}); r.Status != 200 {
		t.Fatalf("revoke with the key: %d %s", r.Status, r.Body)
	}
	wantError(t, userinfo(), 401, "invalid_token")
	intro := do(t, in, call{path: "/introspect", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"token": {at}}})
	if intro.JSON["active"] != false {
		t.Errorf("introspection of the revoked token: %s", intro.Body)
	}
	wantError(t, refresh(t, in, "spa", rt, s), 400, "invalid_grant") // the client's grant is gone
	// The session and the other client's grant go on.
	if se, err := in.App.Store.GetSession(ctx, sid); err != nil || !se.RevokedAt.IsZero() {
		t.Errorf("session after the revocation: %+v %v", se, err)
	}
	if r := do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {web.str("refresh_token")}}}); r.Status != 200 {
		t.Errorf("the other client's refresh after the revocation: %d %s", r.Status, r.Body)
	}
	evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenRevoked}})
	if len(evs) != 1 || evs[0].TokenID != claims(t, at)["jti"] || evs[0].ClientID != "spa" || evs[0].Reason != model.ReasonClientRevokedAccessToken {
		t.Errorf("token.revoked events: %+v", evs)
	}
	// Again: no error, nothing more recorded.
	if r := revoke(call{signer: s}); r.Status != 200 {
		t.Errorf("revoke again: %d %s", r.Status, r.Body)
	}
	if evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenRevoked}}); len(evs) != 1 {
		t.Errorf("%d token.revoked after revoking twice", len(evs))
	}
}

// Ward's own resources read exactly one Authorization header: two are a
// bad request, whichever comes first (a proxy and the application might
// pick different ones).
func TestTwoAuthorizationHeaders(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	at := exchange(t, in, "spa", code, verifier, s).str("access_token")
	r := do(t, in, call{path: "/userinfo", method: http.MethodGet, signer: s, at: at,
		header: http.Header{"Authorization": {"DPoP " + at, "Bearer other"}}})
	wantError(t, r, 400, "invalid_request")
	for _, path := range []string{"/devices/x", "/admin/api/v1/users"} {
		r := do(t, in, call{path: path, method: http.MethodGet, header: http.Header{"Authorization": {"DPoP " + at, "DPoP " + at}}})
		if r.Status != 400 {
			t.Errorf("%s with two Authorization headers: %d %s", path, r.Status, r.Body)
		}
	}
}
