package admin_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

func TestUsers(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")

	r := alice.do(t, req{method: "GET", path: "/users"})
	wantStatus(t, r, 200, "")
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
	users := r.list("users")
	if len(users) != 2 || users[0]["username"] != "alice" || users[0]["totp_enrolled"] != true || users[1]["username"] != "bob" {
		t.Fatalf("users: %s", r.Body)
	}
	for _, leak := range []string{"argon2", "password", "hash", "totp_secret", wardtest.AliceTOTP} {
		if strings.Contains(strings.ToLower(r.Body), strings.ToLower(leak)) {
			t.Errorf("GET /users shows %q: %s", leak, r.Body)
		}
	}

	const carolPassword = "blue-river-long-passphrase-7"
	r = alice.do(t, req{method: "POST", path: "/users", body: map[string]any{
		"username": "Carol", "email": "carol@example.com", "display_name": "Carol C", "password": carolPassword, "roles": []string{}}})
	wantStatus(t, r, 201, "")
	carol := r.str("id")
	if carol == "" || r.str("username") != "carol" || r.Header.Get("Location") != api+"/users/"+carol || strings.Contains(r.Body, carolPassword) {
		t.Fatalf("create: %v %s", r.Header, r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/users/" + carol})
	wantStatus(t, r, 200, "")
	if r.str("email") != "carol@example.com" || r.str("display_name") != "Carol C" || len(asSlice(r.JSON["groups"])) != 0 ||
		fmt.Sprint(r.JSON["roles"]) != "[]" || r.JSON["disabled"] != false || r.JSON["totp_enrolled"] != false {
		t.Fatalf("get: %s", r.Body)
	}

	// PATCH: password, roles and disabled at once.
	r = alice.do(t, req{method: "PATCH", path: "/users/" + carol, body: map[string]any{
		"password": "another-long-passphrase-8", "roles": []string{"admin"}, "disabled": true}})
	wantStatus(t, r, 200, "")
	if fmt.Sprint(r.JSON["roles"]) != "[admin]" || r.JSON["disabled"] != true {
		t.Fatalf("patch: %s", r.Body)
	}
	r = alice.do(t, req{method: "PATCH", path: "/users/" + carol, body: `{"disabled": false}`})
	wantStatus(t, r, 200, "")
	if r.JSON["disabled"] != false || fmt.Sprint(r.JSON["roles"]) != "[admin]" {
		t.Fatalf("re-enable: %s", r.Body)
	}

	// Unlock clears a lock the identity service set.
	if _, err := in.App.Store.UpdateUser(context.Background(), carol, func(u *model.User) error {
		u.FailedLogins, u.LockedUntil = 5, in.Clock.Now().Add(time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r = alice.do(t, req{method: "GET", path: "/users/" + carol})
	if r.JSON["locked"] != true || r.JSON["failed_logins"] != float64(5) {
		t.Fatalf("locked user: %s", r.Body)
	}
	r = alice.do(t, req{method: "POST", path: "/users/" + carol + "/unlock"})
	wantStatus(t, r, 200, "")
	if r.JSON["locked"] != false || r.JSON["failed_logins"] != float64(0) {
		t.Fatalf("unlock: %s", r.Body)
	}

	// An administrator cannot lock themselves out.
	for _, q := range []req{
		{method: "PATCH", path: "/users/" + aliceID, body: `{"disabled": true}`},
		{method: "PATCH", path: "/users/" + aliceID, body: `{"roles": []}`},
		{method: "DELETE", path: "/users/" + aliceID},
	} {
		wantStatus(t, alice.do(t, q), 409, "conflict")
	}

	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + carol}), 204, "")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/" + carol}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + carol}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/" + carol + "/unlock"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + carol, body: `{"disabled": true}`}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/" + bobID}), 200, "")

	// Every change is attributed to alice.
	want := map[model.EventType]int{model.EventUserCreated: 1, model.EventPasswordChanged: 1, model.EventUserUpdated: 3,
		model.EventUserDisabled: 1, model.EventUserDeleted: 1}
	for typ, n := range want {
		var got int
		for _, e := range events(t, in, typ) {
			if e.UserID == carol {
				got++
				if e.Actor != aliceID {
					t.Errorf("%s actor %q, want alice %q", typ, e.Actor, aliceID)
				}
			}
		}
		if got != n {
			t.Errorf("%d %s events for carol, want %d", got, typ, n)
		}
	}
	if logs := in.LogText(); strings.Contains(logs, carolPassword) || strings.Contains(logs, "another-long-passphrase-8") {
		t.Error("a password reached the log")
	}
}

func TestGroups(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")

	r := alice.do(t, req{method: "POST", path: "/groups", body: map[string]string{"name": "ops"}})
	wantStatus(t, r, 201, "")
	gid := r.str("id")
	if r.str("name") != "ops" || len(asSlice(r.JSON["members"])) != 0 || r.Header.Get("Location") != api+"/groups/"+gid {
		t.Fatalf("create group: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/groups", body: map[string]string{"name": "ops"}}), 409, "conflict")

	r = alice.do(t, req{method: "POST", path: "/groups/" + gid + "/members", body: map[string]string{"user_id": bobID}})
	wantStatus(t, r, 200, "")
	if fmt.Sprint(r.JSON["members"]) != "["+bobID+"]" {
		t.Fatalf("add member: %s", r.Body)
	}
	// Adding again changes nothing.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/groups/" + gid + "/members", body: map[string]string{"user_id": bobID}}), 200, "")
	r = alice.do(t, req{method: "GET", path: "/users/" + bobID})
	if g := r.list("groups"); len(g) != 1 || g[0]["id"] != gid || g[0]["name"] != "ops" {
		t.Fatalf("bob's groups: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/groups/" + gid + "/members", body: map[string]string{"user_id": "nobody"}}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/groups/nope/members", body: map[string]string{"user_id": bobID}}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/groups/" + gid + "/members", body: `{}`}), 400, "invalid_request")

	r = alice.do(t, req{method: "GET", path: "/groups"})
	if gs := r.list("groups"); len(gs) != 1 || gs[0]["id"] != gid {
		t.Fatalf("list groups: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/groups/" + gid + "/members/" + bobID}), 204, "")
	r = alice.do(t, req{method: "GET", path: "/groups/" + gid})
	if len(asSlice(r.JSON["members"])) != 0 {
		t.Fatalf("after remove: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/groups/nope/members/" + bobID}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/groups/" + gid}), 204, "")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/groups/" + gid}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/groups/" + gid}), 404, "not_found")

	for _, typ := range []model.EventType{model.EventGroupCreated, model.EventGroupUpdated, model.EventGroupDeleted} {
		evs := events(t, in, typ)
		if len(evs) == 0 {
			t.Errorf("no %s event", typ)
		}
		for _, e := range evs {
			if e.Actor != aliceID {
				t.Errorf("%s actor %q, want %q", typ, e.Actor, aliceID)
			}
		}
	}
}

func TestClients(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)

	r := alice.do(t, req{method: "POST", path: "/clients", body: map[string]any{
		"id": "reports", "name": "Reports", "auth_method": "client_secret_basic", "grant_types": []string{"client_credentials"},
		"scopes": []string{"reports.read"}, "access_token_ttl": 300}})
	wantStatus(t, r, 201, "")
	sec := r.str("client_secret")
	if len(sec) != 43 || r.str("id") != "reports" || r.JSON["has_secret"] != true || r.JSON["access_token_ttl"] != float64(300) ||
		r.Header.Get("Location") != api+"/clients/reports" {
		t.Fatalf("create client: %s", r.Body)
	}
	// The secret works, once shown, and is never shown again.
	tok := post(t, in, "/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"reports.read"}}, nil, "reports", sec)
	if tok.Status != 200 || tok.str("access_token") == "" || tok.JSON["expires_in"] != float64(300) {
		t.Fatalf("client_credentials with the new secret: %d %s", tok.Status, tok.Body)
	}
	for _, p := range []string{"/clients", "/clients/reports"} {
		r = alice.do(t, req{method: "GET", path: p})
		wantStatus(t, r, 200, "")
		if strings.Contains(r.Body, sec) || strings.Contains(r.Body, `"client_secret"`) || strings.Contains(r.Body, "hash") {
			t.Errorf("GET %s shows the secret: %s", p, r.Body)
		}
	}
	if cs := alice.do(t, req{method: "GET", path: "/clients"}).list("clients"); len(cs) != 6 {
		t.Errorf("%d clients, want 6 (4 fixtures, the console's, reports)", len(cs))
	}

	// Rotation: the old secret stops working, the new one works.
	r = alice.do(t, req{method: "POST", path: "/clients/reports/secret"})
	wantStatus(t, r, 200, "")
	sec2 := r.str("client_secret")
	if len(sec2) != 43 || sec2 == sec || r.str("client_id") != "reports" {
		t.Fatalf("rotate: %s", r.Body)
	}
	if tok := post(t, in, "/token", url.Values{"grant_type": {"client_credentials"}}, nil, "reports", sec); tok.Status != 401 {
		t.Errorf("old secret after rotation: %d, want 401", tok.Status)
	}
	if tok := post(t, in, "/token", url.Values{"grant_type": {"client_credentials"}}, nil, "reports", sec2); tok.Status != 200 {
		t.Errorf("new secret: %d %s", tok.Status, tok.Body)
	}

	// A public client gets no secret and cannot rotate one; an id is generated when none is given.
	r = alice.do(t, req{method: "POST", path: "/clients", body: map[string]any{
		"name": "Mobile", "auth_method": "none", "redirect_uris": []string{"https://m.example/cb"},
		"grant_types": []string{"authorization_code", "refresh_token"}, "scopes": []string{"openid"}, "dpop_bound_access_tokens": true}})
	wantStatus(t, r, 201, "")
	mobile := r.str("id")
	if !strings.HasPrefix(mobile, "c_") || r.str("client_secret") != "" || r.JSON["public"] != true || r.JSON["dpop_bound_access_tokens"] != true {
		t.Fatalf("public client: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/clients/" + mobile + "/secret"}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/clients/nope/secret"}), 404, "not_found")

	// private_key_jwt: the public key set is shown.
	jwks := `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`
	r = alice.do(t, req{method: "POST", path: "/clients", body: `{"id":"pkj","auth_method":"private_key_jwt","grant_types":["client_credentials"],"jwks":` + jwks + `}`})
	wantStatus(t, r, 201, "")
	if r.str("client_secret") != "" || !strings.Contains(r.Body, `"kid":"k1"`) {
		t.Fatalf("private_key_jwt client: %s", r.Body)
	}

	// PATCH: redirect URIs, scopes and application type change; the
	// client keeps working with what it had.
	r = alice.do(t, req{method: "PATCH", path: "/clients/" + mobile, body: map[string]any{
		"redirect_uris": []string{"https://m.example/cb", "https://m.example/cb2"}, "application_type": "native", "cae_capable": true}})
	wantStatus(t, r, 200, "")
	if fmt.Sprint(r.JSON["redirect_uris"]) != "[https://m.example/cb https://m.example/cb2]" || r.str("application_type") != "native" ||
		r.JSON["cae_capable"] != true || r.JSON["dpop_bound_access_tokens"] != true || r.str("client_secret") != "" {
		t.Fatalf("patch client: %s", r.Body)
	}
	// Public -> confidential: a secret is generated and shown once.
	r = alice.do(t, req{method: "PATCH", path: "/clients/" + mobile, body: `{"auth_method":"client_secret_post"}`})
	wantStatus(t, r, 200, "")
	if len(r.str("client_secret")) != 43 || r.JSON["has_secret"] != true {
		t.Fatalf("patch to confidential: %s", r.Body)
	}
	// Invalid changes name the field and change nothing.
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/clients/" + mobile, body: `{"redirect_uris":["relative"]}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/clients/" + mobile, body: `{"application_type":"desktop"}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/clients/" + mobile, body: `{"client_secret":"mine"}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/clients/nope", body: `{"name":"x"}`}), 404, "not_found")
	if r = alice.do(t, req{method: "GET", path: "/clients/" + mobile}); r.str("application_type") != "native" || len(asSlice(r.JSON["redirect_uris"])) != 2 {
		t.Errorf("after refused patches: %s", r.Body)
	}

	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/clients/reports"}), 204, "")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/clients/reports"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/clients/reports"}), 404, "not_found")
	if tok := post(t, in, "/token", url.Values{"grant_type": {"client_credentials"}}, nil, "reports", sec2); tok.Status != 401 {
		t.Errorf("deleted client: %d, want 401", tok.Status)
	}

	aliceID := userID(t, in, "alice")
	for _, typ := range []model.EventType{model.EventClientCreated, model.EventClientSecretRotated, model.EventClientDeleted} {
		var n int
		for _, e := range events(t, in, typ) {
			if e.Actor == aliceID {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no %s event by alice", typ)
		}
	}
	if logs := in.LogText(); strings.Contains(logs, sec) || strings.Contains(logs, sec2) {
		t.Error("a client secret reached the log")
	}
}

func TestSessionsAndRevocation(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")
	bob1 := signIn(t, in, "bob", "openid offline_access")
	bob2 := signIn(t, in, "bob", "openid offline_access")

	r := alice.do(t, req{method: "GET", path: "/sessions?user_id=" + bobID + "&active=true"})
	wantStatus(t, r, 200, "")
	ss := r.list("sessions")
	if len(ss) != 2 || ss[0]["user_id"] != bobID || ss[0]["active"] != true {
		t.Fatalf("bob's sessions: %s", r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/sessions"})
	if len(r.list("sessions")) != 3 {
		t.Fatalf("all sessions: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/sessions?active=maybe"}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/sessions?limit=0"}), 400, "invalid_request")

	// Revoke one of bob's sessions.
	sid := sessionOf(t, bob1.caller)
	r = alice.do(t, req{method: "GET", path: "/sessions/" + sid})
	wantStatus(t, r, 200, "")
	if r.str("user_id") != bobID || r.JSON["active"] != true || r.JSON["revoked_at"] != nil {
		t.Fatalf("session: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/sessions/" + sid}), 204, "")
	r = alice.do(t, req{method: "GET", path: "/sessions/" + sid})
	if r.JSON["active"] != false || r.str("revoke_cause") != "admin_revoked" || r.JSON["revoked_at"] == nil {
		t.Fatalf("revoked session: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/sessions/" + sid}), 204, "") // idempotent, no second event
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/sessions/nope"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/sessions/nope"}), 404, "not_found")
	wantRevoked(t, in, bob1)
	wantWorks(t, in, bob2)

	// Revoke all of bob's sessions.
	r = alice.do(t, req{method: "GET", path: "/users/" + bobID + "/sessions?active=true"})
	if len(r.list("sessions")) != 1 {
		t.Fatalf("bob's active sessions: %s", r.Body)
	}
	r = alice.do(t, req{method: "POST", path: "/users/" + bobID + "/sessions/revoke"})
	wantStatus(t, r, 200, "")
	if fmt.Sprint(r.JSON["revoked_session_ids"]) != "["+sessionOf(t, bob2.caller)+"]" {
		t.Fatalf("revoke all: %s", r.Body)
	}
	wantRevoked(t, in, bob2)
	r = alice.do(t, req{method: "GET", path: "/users/" + bobID + "/sessions?active=true"})
	if len(r.list("sessions")) != 0 {
		t.Fatalf("bob's sessions after revocation: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/" + bobID + "/sessions"}), 200, "")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/nope/sessions/revoke"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/nope/sessions"}), 404, "not_found")
	// Alice's own session is untouched.
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users"}), 200, "")

	evs := events(t, in, model.EventSessionRevoked)
	if len(evs) != 2 {
		t.Fatalf("%d session.revoked events, want 2", len(evs))
	}
	for _, e := range evs {
		if e.Actor != aliceID || e.UserID != bobID || e.Reason != "admin_revoked" || e.SessionID == "" || e.IP != "127.0.0.1" || e.CorrelationID == "" {
			t.Errorf("session.revoked event %+v", e.Event)
		}
	}
}

// sessionOf returns the sid claim of a caller's access token.
func sessionOf(t testing.TB, c *caller) string {
	t.Helper()
	parts := strings.Split(c.token, ".")
	if len(parts) != 3 {
		t.Fatal("access token is not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var cl struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(b, &cl); err != nil || cl.SID == "" {
		t.Fatalf("no sid in the access token: %v", err)
	}
	return cl.SID
}

// userinfo calls /userinfo with a caller's token.
func userinfo(t testing.TB, c *caller) result {
	t.Helper()
	hr, _ := http.NewRequest(http.MethodGet, c.in.URL+"/userinfo", nil)
	hr.Header.Set("Authorization", "DPoP "+c.token)
	p, err := c.signer.ProofAt(http.MethodGet, c.in.URL+"/userinfo", c.token, "", c.in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("DPoP", p)
	return send(t, hr)
}

func refreshWith(t testing.TB, in *wardtest.Instance, tk tokens) result {
	t.Helper()
	return post(t, in, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.refresh}, "client_id": {"spa"}}, tk.signer)
}

// wantRevoked checks that neither the refresh token nor the access token
// of tk works any more.
func wantRevoked(t testing.TB, in *wardtest.Instance, tk tokens) {
	t.Helper()
	wantStatus(t, refreshWith(t, in, tk), 400, "invalid_grant")
	if r := userinfo(t, tk.caller); r.Status != 401 {
		t.Fatalf("userinfo with a revoked session's token: %d %s", r.Status, r.Body)
	}
}

// wantWorks checks that tk's access token works at /userinfo (its refresh
// token is left unused).
func wantWorks(t testing.TB, in *wardtest.Instance, tk tokens) {
	t.Helper()
	if r := userinfo(t, tk.caller); r.Status != 200 {
		t.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
}

// DELETE /users/{id}/totp removes the second factor through the identity
// service: 204, the user no longer has one, mfa.removed attributed to the
// administrator; a user without one (or no user) is 404.
func TestRemoveTOTP(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID := userID(t, in, "alice")
	dave, err := in.App.Identity.CreateUser(context.Background(), "test", identity.NewUser{Username: "dave",
		Password: "a long enough passphrase", TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
	if err != nil {
		t.Fatal(err)
	}
	if r := alice.do(t, req{method: "GET", path: "/users/" + dave.ID}); r.JSON["totp_enrolled"] != true {
		t.Fatalf("before: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + dave.ID + "/totp"}), 204, "")
	if r := alice.do(t, req{method: "GET", path: "/users/" + dave.ID}); r.JSON["totp_enrolled"] != false {
		t.Fatalf("after: %s", r.Body)
	}
	r := alice.do(t, req{method: "DELETE", path: "/users/" + dave.ID + "/totp"})
	wantStatus(t, r, 404, "not_found")
	if !strings.Contains(r.str("error_description"), "TOTP") {
		t.Errorf("second removal: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/nobody/totp"}), 404, "not_found")
	evs := events(t, in, model.EventMFARemoved)
	if len(evs) != 1 || evs[0].UserID != dave.ID || evs[0].Actor != aliceID || evs[0].Data["method"] != "totp" || evs[0].CorrelationID == "" {
		t.Fatalf("mfa.removed events: %+v", evs)
	}
	// Another user's token without the admin role is refused.
	bob := signIn(t, in, "bob", "openid ward:admin")
	wantStatus(t, bob.do(t, req{method: "DELETE", path: "/users/" + aliceID + "/totp"}), 403, "access_denied")
	if u, _ := in.App.Store.GetUser(context.Background(), aliceID); !in.App.Identity.HasTOTP(u) {
		t.Error("a refused call removed alice's factor")
	}
}

// POST /users/{id}/recovery-codes gives a user with TOTP a new set of
// one-time recovery codes through the identity service: 201 with the
// codes, shown this once (the user object only counts them), earlier codes
// stop working, mfa.recovery_codes_created attributed to the
// administrator; 409 for a user without TOTP, 404 for no user, 403 for a
// token without the admin role.
func TestRecoveryCodes(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	alice := admin(t, in)
	aliceID := userID(t, in, "alice")
	dave, err := in.App.Identity.CreateUser(ctx, "test", identity.NewUser{Username: "dave",
		Password: "a long enough passphrase", TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
	if err != nil {
		t.Fatal(err)
	}
	if r := alice.do(t, req{method: "GET", path: "/users/" + dave.ID}); r.JSON["recovery_codes_left"] != float64(0) {
		t.Fatalf("before: %s", r.Body)
	}

	r := alice.do(t, req{method: "POST", path: "/users/" + dave.ID + "/recovery-codes"})
	wantStatus(t, r, 201, "")
	first := asSlice(r.JSON["recovery_codes"])
	if r.str("user_id") != dave.ID || len(first) != identity.RecoveryCodeCount || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %v %s", r.Header, r.Body)
	}
	codes := make([]string, len(first))
	for i, c := range first {
		codes[i], _ = c.(string)
		if len(codes[i]) != 11 || codes[i][5] != '-' || strings.Contains(codes[i], "REDACTED") {
			t.Errorf("code %q", c)
		}
	}
	// The user object counts them and never shows one.
	r = alice.do(t, req{method: "GET", path: "/users/" + dave.ID})
	if r.JSON["recovery_codes_left"] != float64(10) || strings.Contains(r.Body, codes[0]) {
		t.Errorf("user after: %s", r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/users"})
	for _, u := range r.list("users") {
		want := float64(0)
		if u["id"] == dave.ID {
			want = 10
		}
		if u["recovery_codes_left"] != want {
			t.Errorf("list: %v has recovery_codes_left %v, want %v", u["username"], u["recovery_codes_left"], want)
		}
	}
	u, _ := in.App.Store.GetUser(ctx, dave.ID)
	if err := in.App.Identity.CheckRecoveryCode(ctx, u, codes[0], "192.0.2.1"); err != nil {
		t.Fatalf("a returned code: %v", err)
	}
	if r := alice.do(t, req{method: "GET", path: "/users/" + dave.ID}); r.JSON["recovery_codes_left"] != float64(9) {
		t.Errorf("after a use: %s", r.Body)
	}

	// A new set: the earlier codes stop working.
	r = alice.do(t, req{method: "POST", path: "/users/" + dave.ID + "/recovery-codes"})
	wantStatus(t, r, 201, "")
	if err := in.App.Identity.CheckRecoveryCode(ctx, u, codes[1], "192.0.2.1"); !errors.Is(err, identity.ErrInvalidRecoveryCode) {
		t.Errorf("a code of the replaced set: %v", err)
	}
	evs := events(t, in, model.EventMFARecoveryCodesCreated)
	if len(evs) != 2 || evs[0].UserID != dave.ID || evs[0].Actor != aliceID || evs[0].CorrelationID == "" || evs[0].Data["count"] != "10" {
		t.Fatalf("mfa.recovery_codes_created events: %+v", evs)
	}

	// Without TOTP: 409; no user: 404.
	bobID := userID(t, in, "bob")
	r = alice.do(t, req{method: "POST", path: "/users/" + bobID + "/recovery-codes"})
	wantStatus(t, r, 409, "conflict")
	if !strings.Contains(r.str("error_description"), "TOTP") {
		t.Errorf("without TOTP: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/nobody/recovery-codes"}), 404, "not_found")

	// Removing TOTP removes the codes.
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + dave.ID + "/totp"}), 204, "")
	if r := alice.do(t, req{method: "GET", path: "/users/" + dave.ID}); r.JSON["recovery_codes_left"] != float64(0) {
		t.Errorf("after TOTP removal: %s", r.Body)
	}

	// A token without the admin role is refused, and nothing is made.
	bob := signIn(t, in, "bob", "openid ward:admin")
	wantStatus(t, bob.do(t, req{method: "POST", path: "/users/" + aliceID + "/recovery-codes"}), 403, "access_denied")
	if n, _ := in.App.Identity.RecoveryCodesLeft(ctx, aliceID); n != 0 {
		t.Errorf("a refused call made %d codes", n)
	}
}
