package grant

import (
	"net/http"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
)

// The issuing pipeline's order: bind, then Conditional Access, then mint,
// rotate and record. A refusal by Conditional Access comes after the
// device check and before anything is written: the presented refresh
// token is not rotated, no refresh token is created, the session is not
// touched, nothing is recorded as issued.
func TestPipelineAccessRefusalIssuesNothing(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	sess := f.session()
	code, verifier := f.code("spa", sess, s.Thumbprint())
	rt := f.mustGrant(f.redeem("spa", code, verifier, s)).RefreshToken
	f.clk.Advance(5 * time.Minute) // past the session's touch interval
	f.applyPolicies(`
policies:
  - id: no-spa-refresh
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [spa]}}
    conditions: {flows: [refresh]}
    grant: {block: true}
`)
	issued, refreshed, rts, evals := len(f.eventsOf(model.EventTokenIssued)), len(f.eventsOf(model.EventTokenRefreshed)), f.count("refresh_tokens"), f.evaluations.Load()
	resp, e := f.grant(f.refresh("spa", rt, s))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "ca_block")
	if e.Data["ca_blocked_by"] != "no-spa-refresh" || e.Description != "access is blocked by a Conditional Access policy (reference corr-1)" {
		t.Fatalf("refusal: %q %v", e.Description, e.Data)
	}
	if f.evaluations.Load() != evals+1 {
		t.Fatal("Conditional Access was not consulted")
	}
	if got, _ := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(rt)); !got.RotatedAt.IsZero() {
		t.Fatal("a refused refresh rotated the token")
	}
	if n := f.count("refresh_tokens"); n != rts {
		t.Fatalf("refresh tokens %d -> %d", rts, n)
	}
	if got, _ := f.st.GetSession(f.ctx, sess.ID); !got.LastSeen.Equal(sess.LastSeen) {
		t.Fatalf("a refused refresh touched the session: %v", got.LastSeen)
	}
	if len(f.eventsOf(model.EventTokenIssued)) != issued || len(f.eventsOf(model.EventTokenRefreshed)) != refreshed {
		t.Fatal("a refused refresh recorded an issuance")
	}
	// Lifting the policy: the same token works, so nothing was used up.
	f.applyPolicies("policies: []\n")
	if resp := f.mustGrant(f.refresh("spa", rt, s)); resp.RefreshToken == "" {
		t.Fatal("no refresh token after the policy was lifted")
	}

	// The code grant: the code is used up (the grant checked it), but no
	// token and no refresh token exist.
	f.applyPolicies(`
policies:
  - id: no-spa
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [spa]}}
    grant: {controls: [mfa]}
`)
	code, verifier = f.code("spa", f.session(), s.Thumbprint())
	rts, issued = f.count("refresh_tokens"), len(f.eventsOf(model.EventTokenIssued))
	resp, e = f.grant(f.redeem("spa", code, verifier, s))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "ca_controls_unmet")
	if e.Description != "Conditional Access requires multi-factor authentication; sign in again to satisfy it (reference corr-1)" {
		t.Fatalf("description %q", e.Description)
	}
	if f.count("refresh_tokens") != rts || len(f.eventsOf(model.EventTokenIssued)) != issued {
		t.Fatal("a refused code redemption issued something")
	}
}

// bind comes first: the key of a lost device is refused before
// Conditional Access is even asked, and nothing is issued.
func TestPipelineBindBeforeAccess(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	f.registerDevice(s, model.DeviceLost)
	code, verifier := f.code("spa", f.session(), s.Thumbprint())
	evals, rts := f.evaluations.Load(), f.count("refresh_tokens")
	resp, e := f.grant(f.redeem("spa", code, verifier, s))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "device_lost")
	if f.evaluations.Load() != evals {
		t.Fatal("Conditional Access was consulted for a lost device's key")
	}
	if f.count("refresh_tokens") != rts || len(f.eventsOf(model.EventTokenIssued)) != 0 {
		t.Fatal("a lost device's key got tokens")
	}

	// A client that requires token protection refuses an unregistered
	// key at the same step.
	f.clients["web"].RequireProtectedSessions = true
	code, verifier = f.code("web", f.session(), "")
	resp, e = f.grant(f.redeem("web", code, verifier, f.signer()))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "token_protection_required")
	if f.evaluations.Load() != evals {
		t.Fatal("Conditional Access was consulted for a refused binding")
	}
}

// A registered, active device's key binds the session to the device: its
// id goes into the access token and the refresh token is bound to it.
func TestPipelineBindRegisteredDevice(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	d := f.registerDevice(s, model.DeviceActive)
	code, verifier := f.code("web", f.session(), "")
	resp := f.mustGrant(f.redeem("web", code, verifier, s))
	if cl := f.accessClaims(resp.AccessToken); cl.DeviceID != d.ID {
		t.Fatalf("device id %q, want %q", cl.DeviceID, d.ID)
	}
	// A confidential client's refresh token too is bound to the device key.
	if rt, _ := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(resp.RefreshToken)); rt.JKT != s.Thumbprint() || rt.DeviceID != d.ID {
		t.Fatalf("refresh token: %+v", rt)
	}
	if ev := f.eventsOf(model.EventTokenIssued)[0]; ev.DeviceID != d.ID || ev.Data["token_protection"] != "registered_device" {
		t.Fatalf("event: %+v %v", ev, ev.Data)
	}
}

// The claims request is checked after Conditional Access and before
// anything is written.
func TestPipelineClaimsRefusal(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	code, verifier := f.code("spa", f.session(), s.Thumbprint())
	rt := f.mustGrant(f.redeem("spa", code, verifier, s)).RefreshToken
	req := f.refresh("spa", rt, s)
	var e *oautherr.Error
	if req.Claims, e = authz.ParseClaims(`{"access_token":{"acr":{"essential":true,"value":"` + authz.ACRMFA + `"}}}`); e != nil {
		t.Fatal(e)
	}
	evals := f.evaluations.Load()
	resp, e := f.grant(req)
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "claims_acr_unmet")
	if f.evaluations.Load() != evals+1 {
		t.Fatal("the claims request was checked before Conditional Access")
	}
	if got, _ := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(rt)); !got.RotatedAt.IsZero() {
		t.Fatal("a refused refresh rotated the token")
	}
}

// A public client without DPoP gets no refresh token (RFC 9449 §5), and a
// refresh that may not yield one is refused without using the token up.
func TestPipelineRefreshNotRenewable(t *testing.T) {
	f := newFixture(t)
	code, verifier := f.code("spa", f.session(), "")
	resp := f.mustGrant(f.redeem("spa", code, verifier, nil))
	if resp.RefreshToken != "" || resp.TokenType != "Bearer" {
		t.Fatalf("public client without DPoP: %+v", resp)
	}
	// An unbound token of web, which then becomes a public client: a
	// refresh would have to give it an unbound refresh token.
	code, verifier = f.code("web", f.session(), "")
	rt := f.mustGrant(f.redeem("web", code, verifier, nil)).RefreshToken
	f.clients["web"].TokenEndpointAuthMethod = model.AuthNone
	rts := f.count("refresh_tokens")
	resp, e := f.grant(f.refresh("web", rt, nil))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "refresh_not_renewable")
	if got, _ := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(rt)); !got.RotatedAt.IsZero() || f.count("refresh_tokens") != rts {
		t.Fatal("a refused refresh wrote a refresh token")
	}
}
