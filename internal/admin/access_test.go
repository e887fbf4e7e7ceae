package admin_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

func TestAccessControl(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	bobID := userID(t, in, "bob")
	aliceNoScope := signIn(t, in, "alice", "openid profile").caller
	bob := signIn(t, in, "bob", "openid ward:admin").caller

	// A client_credentials token of the fixture client, and one of a
	// client that may ask for ward:admin: neither belongs to a user.
	cc := post(t, in, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}, nil, "service", wardtest.ServiceSecret)
	if cc.Status != 200 {
		t.Fatalf("client_credentials: %d %s", cc.Status, cc.Body)
	}
	service := &caller{in: in, token: cc.str("access_token")}
	r := alice.do(t, req{method: "POST", path: "/clients", body: map[string]any{"id": "robot", "auth_method": "client_secret_basic",
		"grant_types": []string{"client_credentials"}, "scopes": []string{"ward:admin"}}})
	wantStatus(t, r, 201, "")
	robotSigner := newSigner(t)
	rt := post(t, in, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"ward:admin"}}, robotSigner, "robot", r.str("client_secret"))
	if rt.Status != 200 || rt.str("scope") != "ward:admin" {
		t.Fatalf("robot token: %d %s", rt.Status, rt.Body)
	}
	robot := &caller{in: in, token: rt.str("access_token"), signer: robotSigner}

	// A token alice got for another resource server (its audience is not
	// Ward) must not open the admin API, even with ward:admin in it.
	r = alice.do(t, req{method: "POST", path: "/clients", body: map[string]any{"id": "other-rs", "auth_method": "none",
		"redirect_uris": []string{wardtest.RedirectURI}, "grant_types": []string{"authorization_code"},
		"scopes": []string{"openid", "ward:admin"}, "audience": []string{"https://api.other.example"}, "dpop_bound_access_tokens": true}})
	wantStatus(t, r, 201, "")
	// Without openid: an OIDC token is also addressed to the issuer (for userinfo).
	otherAud := signInWith(t, in, "other-rs", "alice", "ward:admin").caller

	before := len(events(t, in, model.EventAdminAccessDenied))
	if before != 0 {
		t.Fatalf("%d access denials before the test", before)
	}
	replayed := alice.proofFor(t, "GET", "/users")
	if r := alice.do(t, req{method: "GET", path: "/users", proof: replayed}); r.Status != 200 {
		t.Fatalf("first use of the proof: %d %s", r.Status, r.Body)
	}
	anon := &caller{in: in}
	getUsers := req{method: "GET", path: "/users"}
	tests := []struct {
		name      string
		c         *caller
		q         req
		status    int
		code      string
		reason    string
		challenge string // a WWW-Authenticate value that must be present ("" none)
	}{
		{"no token", anon, getUsers, 401, "invalid_token", "no_token", `Bearer realm="ward"`},
		{"no token, unknown route", anon, req{method: "GET", path: "/secrets"}, 401, "invalid_token", "no_token", `DPoP algs="ES256`},
		{"no token, change", anon, req{method: "POST", path: "/users", body: `{"username":"x"}`}, 401, "invalid_token", "no_token", `Bearer realm="ward"`},
		{"bob is not an admin", bob, getUsers, 403, "access_denied", "not_admin", ""},
		{"bob cannot revoke", bob, req{method: "POST", path: "/users/" + bobID + "/sessions/revoke"}, 403, "access_denied", "not_admin", ""},
		{"alice without ward:admin", aliceNoScope, getUsers, 403, "insufficient_scope", "scope_missing", `DPoP algs="ES256`},
		{"client_credentials token", service, getUsers, 403, "access_denied", "not_a_user", ""},
		{"client_credentials token with ward:admin", robot, getUsers, 403, "access_denied", "not_a_user", ""},
		{"bound token used as bearer", alice, req{method: "GET", path: "/users", authz: "Bearer " + alice.token, proof: "-"}, 401, "invalid_token", "bound_token_as_bearer", `DPoP algs="ES256`},
		{"bound token without proof", &caller{in: in, token: alice.token}, req{method: "GET", path: "/users", authz: "DPoP " + alice.token}, 401, "invalid_dpop_proof", "dpop_missing", `error="invalid_dpop_proof"`},
		{"replayed proof", alice, req{method: "GET", path: "/users", proof: replayed}, 401, "invalid_dpop_proof", "dpop_replay", `error="invalid_dpop_proof"`},
		{"proof for another URL", alice, req{method: "GET", path: "/users", proof: alice.proofFor(t, "GET", "/groups")}, 401, "invalid_dpop_proof", "dpop_htu_mismatch", `DPoP algs=`},
		{"proof for another method", alice, req{method: "DELETE", path: "/users/" + bobID, proof: alice.proofFor(t, "GET", "/users/"+bobID)}, 401, "invalid_dpop_proof", "dpop_htm_mismatch", `DPoP algs=`},
		{"proof by another key", alice, req{method: "GET", path: "/users", proof: (&caller{in: in, token: alice.token, signer: bob.signer}).proofFor(t, "GET", "/users")}, 401, "invalid_dpop_proof", "dpop_jkt_mismatch", `DPoP algs=`},
		{"token for another audience", otherAud, getUsers, 401, "invalid_token", "audience_mismatch", `DPoP algs="ES256`},
		{"forged token", anon, req{method: "GET", path: "/users", authz: "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}, 401, "invalid_token", "token_invalid", `Bearer realm="ward", error="invalid_token"`},
		{"unknown scheme", anon, req{method: "GET", path: "/users", authz: "Basic YWxpY2U6cHc="}, 400, "invalid_request", "invalid_request", `error="invalid_request"`},
	}
	denied := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			if q.proof == "-" {
				q.proof = ""
				c := *tc.c
				c.signer = nil
				tc.c = &c
			}
			r := tc.c.do(t, q)
			denied++
			wantStatus(t, r, tc.status, tc.code)
			if r.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", r.Header.Get("Cache-Control"))
			}
			ch := r.Header.Values("WWW-Authenticate")
			if tc.challenge != "" && !strings.Contains(strings.Join(ch, "\n"), tc.challenge) {
				t.Errorf("WWW-Authenticate %q, want %q", ch, tc.challenge)
			}
			if tc.reason == "no_token" && len(ch) != 2 {
				t.Errorf("WWW-Authenticate %q: want a Bearer and a DPoP challenge", ch)
			}
			if tc.code == "insufficient_scope" && !strings.Contains(ch[0], `scope="ward:admin"`) {
				t.Errorf("WWW-Authenticate %q lacks the scope", ch)
			}
			evs := events(t, in, model.EventAdminAccessDenied)
			if len(evs) != before+denied {
				t.Fatalf("%d access denials recorded, want %d", len(evs), before+denied)
			}
			e := evs[0]
			if e.Reason != tc.reason || e.IP != "127.0.0.1" || e.Outcome != model.OutcomeFailure || e.Actor == "" ||
				e.Data["path"] != api+strings.Split(tc.q.path, "?")[0] || e.Data["method"] != tc.q.method || e.Data["error"] != tc.code ||
				e.CorrelationID != r.Header.Get("X-Correlation-ID") {
				t.Errorf("event %+v", e.Event)
			}
		})
	}
	// Denials by identified callers name them.
	for _, e := range events(t, in, model.EventAdminAccessDenied) {
		switch e.Reason {
		case "not_admin":
			if e.UserID != bobID || e.Actor != bobID || e.SessionID == "" || e.TokenID == "" {
				t.Errorf("not_admin event %+v", e.Event)
			}
		case "not_a_user":
			if e.ClientID != "service" && e.ClientID != "robot" {
				t.Errorf("not_a_user event %+v", e.Event)
			}
		}
	}
	// Nothing was changed by the refused calls.
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/" + bobID}), 200, "")
	if r := alice.do(t, req{method: "GET", path: "/users"}); len(r.list("users")) != 2 {
		t.Errorf("users after denials: %s", r.Body)
	}
	if evs := events(t, in, model.EventSessionRevoked); len(evs) != 0 {
		t.Errorf("a refused call revoked sessions: %+v", evs)
	}
	// A successful call records no denial.
	n := len(events(t, in, model.EventAdminAccessDenied))
	wantStatus(t, alice.do(t, getUsers), 200, "")
	if len(events(t, in, model.EventAdminAccessDenied)) != n {
		t.Error("a successful call recorded a denial")
	}
}

// TestDisabledAdmin: taking the role away or disabling the user ends
// access at once, with the same token.
func TestAdminLosesAccess(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	bobID := userID(t, in, "bob")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + bobID, body: `{"roles":["admin"]}`}), 200, "")
	bob := signIn(t, in, "bob", "openid ward:admin").caller
	wantStatus(t, bob.do(t, req{method: "GET", path: "/users"}), 200, "")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + bobID, body: `{"roles":[]}`}), 200, "")
	wantStatus(t, bob.do(t, req{method: "GET", path: "/users"}), 403, "access_denied")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + bobID, body: `{"roles":["admin"]}`}), 200, "")
	wantStatus(t, bob.do(t, req{method: "GET", path: "/users"}), 200, "")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + bobID, body: `{"disabled":true}`}), 200, "")
	wantStatus(t, bob.do(t, req{method: "GET", path: "/users"}), 401, "invalid_token")
}
