package admin_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestBadInputChangesNothing sends invalid requests and checks the
// answer, then that users, groups, clients and the audit log of changes
// are exactly as before.
func TestBadInputChangesNothing(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	bobID := userID(t, in, "bob")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/groups", body: `{"name":"ops"}`}), 201, "")

	snapshot := func() string {
		var b strings.Builder
		for _, p := range []string{"/users", "/users/" + bobID, "/groups", "/clients"} {
			r := alice.do(t, req{method: "GET", path: p})
			wantStatus(t, r, 200, "")
			b.WriteString(r.Body)
		}
		evs := events(t, in, model.EventUserCreated, model.EventUserUpdated, model.EventUserDisabled, model.EventPasswordChanged,
			model.EventGroupCreated, model.EventGroupUpdated, model.EventClientCreated, model.EventClientUpdated)
		fmt.Fprintf(&b, "events:%d", len(evs))
		return b.String()
	}
	before := snapshot()

	validUser := `"username":"dave","email":"dave@example.com","password":"dave-long-passphrase-9"`
	big := `{"username":"dave","display_name":"` + strings.Repeat("x", 70<<10) + `"}`
	tests := []struct {
		name   string
		q      req
		status int
		code   string
		desc   string // substring of error_description
	}{
		{"unknown field", req{method: "POST", path: "/users", body: `{` + validUser + `,"admin":true}`}, 400, "invalid_request", `unknown field "admin"`},
		{"totp secret is not accepted", req{method: "POST", path: "/users", body: `{` + validUser + `,"totp_secret":"JBSWY3DPEHPK3PXP"}`}, 400, "invalid_request", "unknown field"},
		{"weak password", req{method: "POST", path: "/users", body: `{"username":"dave","password":"short"}`}, 400, "invalid_request", "password"},
		{"common password", req{method: "POST", path: "/users", body: `{"username":"dave","password":"password123"}`}, 400, "invalid_request", "password"},
		{"invalid username", req{method: "POST", path: "/users", body: `{"username":"da ve","password":"dave-long-passphrase-9"}`}, 400, "invalid_request", "username"},
		{"invalid email", req{method: "POST", path: "/users", body: `{"username":"dave","email":"Dave <d@x>","password":"dave-long-passphrase-9"}`}, 400, "invalid_request", "email"},
		{"invalid role", req{method: "POST", path: "/users", body: `{` + validUser + `,"roles":["a b"]}`}, 400, "invalid_request", "role"},
		{"unknown role", req{method: "POST", path: "/users", body: `{` + validUser + `,"roles":["superuser"]}`}, 400, "invalid_request", "unknown role"},
		{"duplicate username", req{method: "POST", path: "/users", body: `{"username":"BOB","password":"dave-long-passphrase-9"}`}, 409, "conflict", "exists"},
		{"wrong type", req{method: "POST", path: "/users", body: `{"username":42}`}, 400, "invalid_request", "username"},
		{"array body", req{method: "POST", path: "/users", body: `[]`}, 400, "invalid_request", "object"},
		{"not JSON", req{method: "POST", path: "/users", body: `{"username":`}, 400, "invalid_request", "JSON"},
		{"two objects", req{method: "POST", path: "/users", body: `{` + validUser + `}{}`}, 400, "invalid_request", "single"},
		{"empty body", req{method: "POST", path: "/users", body: ``}, 400, "invalid_request", "empty"},
		{"form body", req{method: "POST", path: "/users", body: `username=dave`, contentType: "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", "application/json"},
		{"no content type", req{method: "POST", path: "/users", body: `{` + validUser + `}`, contentType: "text/plain"}, 415, "unsupported_media_type", ""},
		{"too large", req{method: "POST", path: "/users", body: big}, 413, "request_too_large", "65536"},
		{"patch: weak password and roles", req{method: "PATCH", path: "/users/" + bobID, body: `{"password":"short","roles":["admin"],"disabled":true}`}, 400, "invalid_request", "password"},
		{"patch: invalid role and good password", req{method: "PATCH", path: "/users/" + bobID, body: `{"password":"bob-new-long-passphrase-1","roles":["no way"]}`}, 400, "invalid_request", "role"},
		{"patch: nothing", req{method: "PATCH", path: "/users/" + bobID, body: `{}`}, 400, "invalid_request", "nothing to change"},
		{"patch: unknown field", req{method: "PATCH", path: "/users/" + bobID, body: `{"username":"robert"}`}, 400, "invalid_request", "unknown field"},
		{"patch: unknown user", req{method: "PATCH", path: "/users/nope", body: `{"disabled":true}`}, 404, "not_found", "user"},
		{"group: empty name", req{method: "POST", path: "/groups", body: `{"name":"  "}`}, 400, "invalid_request", "group name"},
		{"group: duplicate", req{method: "POST", path: "/groups", body: `{"name":"ops"}`}, 409, "conflict", ""},
		{"client: invalid redirect URI", req{method: "POST", path: "/clients", body: `{"id":"bad","auth_method":"none","redirect_uris":["/relative","https://x.example/cb#frag"],"grant_types":["authorization_code","password"]}`},
			400, "invalid_request", "redirect_uris[0]"},
		{"client: duplicate id", req{method: "POST", path: "/clients", body: `{"id":"spa","auth_method":"none","redirect_uris":["https://x.example/cb"]}`}, 409, "conflict", ""},
		{"client: no auth method", req{method: "POST", path: "/clients", body: `{"id":"x","grant_types":["client_credentials"]}`}, 400, "invalid_request", "auth_method"},
		{"client: public with client_credentials", req{method: "POST", path: "/clients", body: `{"id":"x","auth_method":"none","grant_types":["client_credentials"]}`}, 400, "invalid_request", "grant_types"},
		{"client: private key in jwks", req{method: "POST", path: "/clients", body: `{"id":"x","auth_method":"private_key_jwt","grant_types":["client_credentials"],"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"secret"}]}}`},
			400, "invalid_request", "private key"},
		{"client: negative ttl", req{method: "POST", path: "/clients", body: `{"id":"x","auth_method":"client_secret_basic","grant_types":["client_credentials"],"access_token_ttl":-5}`}, 400, "invalid_request", "access_token_ttl"},
		{"client: unknown field", req{method: "POST", path: "/clients", body: `{"id":"x","auth_method":"client_secret_basic","grant_types":["client_credentials"],"client_secret":"mine"}`}, 400, "invalid_request", "unknown field"},
		{"member: no user", req{method: "POST", path: "/groups/x/members", body: `{"user_id":""}`}, 400, "invalid_request", "user_id"},
		// A percent-encoded control character in the path: the proof's
		// htu names it encoded, and so does the check (it was a 500).
		{"encoded NUL in the path", req{method: "GET", path: "/users/%00"}, 404, "not_found", "user"},
		{"encoded NUL in a patched path", req{method: "PATCH", path: "/users/%00", body: `{"disabled":true}`}, 404, "not_found", "user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := alice.do(t, tc.q)
			wantStatus(t, r, tc.status, tc.code)
			if !strings.Contains(r.str("error_description"), tc.desc) {
				t.Errorf("error_description %q, want it to mention %q", r.str("error_description"), tc.desc)
			}
			if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", r.Header)
			}
		})
	}
	// The client validation lists every problem, by field.
	var bad req
	for _, tc := range tests {
		if tc.name == "client: invalid redirect URI" {
			bad = tc.q
		}
	}
	r := alice.do(t, bad)
	var fields []string
	for _, f := range r.list("fields") {
		fields = append(fields, fmt.Sprint(f["field"]))
	}
	if fmt.Sprint(fields) != "[redirect_uris[0] redirect_uris[1] grant_types[1]]" {
		t.Errorf("fields %v; body %s", fields, r.Body)
	}
	if after := snapshot(); after != before {
		t.Errorf("bad input changed something:\nbefore %s\nafter  %s", before, after)
	}
	// Bob's password is unchanged: he can still sign in with it.
	signIn(t, in, "bob", "openid")
}

func TestEvents(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")
	start := in.Clock.Now() // after alice signed in
	in.Clock.Advance(time.Minute)
	bob := signIn(t, in, "bob", "openid")
	for i := range 3 {
		wantStatus(t, alice.do(t, req{method: "POST", path: "/groups", body: fmt.Sprintf(`{"name":"g%d"}`, i)}), 201, "")
	}
	wantStatus(t, bob.do(t, req{method: "GET", path: "/users"}), 403, "access_denied")

	// Type filter (repeated and comma-separated).
	r := alice.do(t, req{method: "GET", path: "/events?type=group.created"})
	wantStatus(t, r, 200, "")
	evs := r.list("events")
	if len(evs) != 3 || r.JSON["next_before"] != nil {
		t.Fatalf("group.created: %s", r.Body)
	}
	for i, e := range evs {
		if e["type"] != "group.created" || e["code"] != "W4100I" || e["actor"] != aliceID || e["seq"] == nil {
			t.Errorf("event %v", e)
		}
		if i > 0 && e["seq"].(float64) >= evs[i-1]["seq"].(float64) {
			t.Errorf("events not newest first: %v", evs)
		}
	}
	if e := evs[0]; e["data"].(map[string]any)["name"] != "g2" {
		t.Errorf("newest group.created is %v, want g2", e)
	}
	r = alice.do(t, req{method: "GET", path: "/events?type=group.created,admin.access_denied&type=signin.succeeded"})
	if n := len(r.list("events")); n != 3+1+2 {
		t.Errorf("%d events of three types, want 6: %s", n, r.Body)
	}

	// user_id, client_id and session_id filters.
	r = alice.do(t, req{method: "GET", path: "/events?user_id=" + bobID})
	if len(r.list("events")) == 0 {
		t.Fatal("no events for bob")
	}
	for _, e := range r.list("events") {
		if e["user_id"] != bobID {
			t.Errorf("user filter returned %v", e)
		}
	}
	r = alice.do(t, req{method: "GET", path: "/events?client_id=spa&type=token.issued"})
	if n := len(r.list("events")); n != 2 {
		t.Errorf("%d token.issued events for spa, want 2 (alice, bob)", n)
	}
	sid := sessionOf(t, bob.caller)
	r = alice.do(t, req{method: "GET", path: "/events?session_id=" + sid})
	for _, e := range r.list("events") {
		if e["session_id"] != sid {
			t.Errorf("session filter returned %v", e)
		}
	}
	if len(r.list("events")) < 2 { // session.created, token.issued, admin.access_denied...
		t.Errorf("session %s: %s", sid, r.Body)
	}

	// Time window: since is inclusive, until exclusive.
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	r = alice.do(t, req{method: "GET", path: "/events?until=" + ts(start.Add(time.Second))})
	for _, e := range r.list("events") {
		if tm, _ := time.Parse(time.RFC3339Nano, e["time"].(string)); !tm.Before(start.Add(time.Second)) {
			t.Errorf("until returned %v", e)
		}
	}
	r = alice.do(t, req{method: "GET", path: "/events?since=" + ts(start.Add(time.Second)) + "&type=signin.succeeded"})
	if n := len(r.list("events")); n != 1 {
		t.Errorf("%d sign-ins since the start, want bob's 1: %s", n, r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/events?since=" + ts(in.Clock.Now().Add(time.Hour))})
	if n := len(r.list("events")); n != 0 {
		t.Errorf("%d events from the future", n)
	}

	// Pagination walks every event exactly once, newest first.
	all := events(t, in)
	var seqs []int64
	before := ""
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatal("pagination does not end")
		}
		r := alice.do(t, req{method: "GET", path: "/events?limit=4" + before})
		wantStatus(t, r, 200, "")
		evs := r.list("events")
		if len(evs) > 4 {
			t.Fatalf("page of %d events, limit 4", len(evs))
		}
		for _, e := range evs {
			seqs = append(seqs, int64(e["seq"].(float64)))
		}
		nb, ok := r.JSON["next_before"].(float64)
		if !ok {
			break
		}
		if int64(nb) != seqs[len(seqs)-1] {
			t.Fatalf("next_before %v, want the last seq %d", nb, seqs[len(seqs)-1])
		}
		before = fmt.Sprintf("&before=%d", int64(nb))
	}
	if len(seqs) != len(all) {
		t.Fatalf("pagination returned %d events, the store has %d", len(seqs), len(all))
	}
	for i := range seqs {
		if seqs[i] != all[i].Seq {
			t.Fatalf("page order %v, want %v", seqs, all)
		}
	}

	for _, q := range []string{"type=nope", "since=yesterday", "until=2026-13-01T00:00:00Z", "limit=0", "limit=1001", "limit=x",
		"before=0", "before=-1", "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"} {
		wantStatus(t, alice.do(t, req{method: "GET", path: "/events?" + q}), 400, "invalid_request")
	}
}

func TestRoutesAndInternalErrors(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)

	r := alice.do(t, req{method: "GET", path: "/nothing-here"})
	wantStatus(t, r, 404, "not_found")
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	r = alice.do(t, req{method: "PUT", path: "/users"})
	wantStatus(t, r, 405, "method_not_allowed")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow %q", allow)
	}

	// A change whose audit event cannot be recorded is an internal error:
	// the caller sees a correlation id, the log has the cause.
	unsub := in.App.Bus.Subscribe("broken", func(context.Context, *model.Event) error {
		return errors.New("disk on fire")
	})
	r = alice.do(t, req{method: "POST", path: "/groups", body: `{"name":"g"}`})
	unsub()
	wantStatus(t, r, 500, "server_error")
	corr := r.Header.Get("X-Correlation-ID")
	if corr == "" || r.str("correlation_id") != corr || !strings.Contains(r.str("error_description"), corr) || strings.Contains(r.Body, "fire") {
		t.Fatalf("500: %v %s", r.Header, r.Body)
	}
	logs := in.LogText()
	found := false
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, corr) && strings.Contains(line, "disk on fire") {
			found = true
		}
	}
	if !found {
		t.Errorf("no log line with correlation id %s and the cause", corr)
	}
}
