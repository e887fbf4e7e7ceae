package admin_test

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/wardtest"
)

// TestHostileIDs: ids in the path and values in the query that could name
// nothing stored — NUL and other control characters (PostgreSQL refuses
// NUL in text), invalid UTF-8, overlong — are refused before any lookup
// with the API's error body: 404 not_found for a path id, 400
// invalid_request naming a query parameter; on both backends, never a
// 500, and a change request changes nothing.
func TestHostileIDs(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { hostileIDs(t, "") })
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
		if dsn == "" {
			t.Skip("WARD_TEST_POSTGRES_DSN is not set")
		}
		hostileIDs(t, dsn)
	})
}

func hostileIDs(t *testing.T, dsn string) {
	in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
	alice := admin(t, in)
	long := strings.Repeat("a", 257)
	for _, bad := range []string{"a%00b", "%00", "u%01", "%7f", "%C2%85", "%ff%fe", "a%C3", long} {
		for _, q := range []req{
			{method: http.MethodGet, path: "/users/" + bad},
			{method: http.MethodGet, path: "/users/" + bad + "/sessions"},
			{method: http.MethodGet, path: "/users/" + bad + "/passkeys"},
			{method: http.MethodDelete, path: "/users/" + bad},
			{method: http.MethodPost, path: "/users/" + bad + "/sessions/revoke"},
			{method: http.MethodGet, path: "/sessions/" + bad},
			{method: http.MethodDelete, path: "/sessions/" + bad},
			{method: http.MethodGet, path: "/clients/" + bad},
			{method: http.MethodGet, path: "/groups/" + bad},
			{method: http.MethodGet, path: "/devices/" + bad},
			{method: http.MethodGet, path: "/incidents/" + bad},
		} {
			r := alice.do(t, q)
			if r.Status != http.StatusNotFound || r.str("error") != "not_found" || !strings.Contains(r.str("error_description"), "not a valid id") {
				t.Errorf("%s %.60s: %d %q %.200s, want 404 not_found", q.method, q.path, r.Status, r.str("error"), r.Body)
			}
		}
	}
	for _, bad := range []string{"a%00b", "%01", "%ff", strings.Repeat("a", 4097)} {
		for _, path := range []string{"/events?user_id=" + bad, "/sessions?user_id=" + bad, "/users?q=" + bad, "/events?type=" + bad} {
			r := alice.do(t, req{method: http.MethodGet, path: path})
			if r.Status != http.StatusBadRequest || r.str("error") != "invalid_request" || !strings.Contains(r.str("error_description"), "query parameter") {
				t.Errorf("GET %.60s: %d %q %.200s, want 400 invalid_request", path, r.Status, r.str("error"), r.Body)
			}
		}
	}
	// A well-formed id that does not exist is still a plain 404, and the
	// users are all there.
	if r := alice.do(t, req{method: http.MethodGet, path: "/users/no-such-user"}); r.Status != http.StatusNotFound || r.str("error") != "not_found" {
		t.Errorf("unknown user: %d %s", r.Status, r.Body)
	}
	if r := alice.do(t, req{method: http.MethodGet, path: "/users/" + userID(t, in, "bob")}); r.Status != http.StatusOK {
		t.Errorf("bob after the attempts: %d %s", r.Status, r.Body)
	}
}
