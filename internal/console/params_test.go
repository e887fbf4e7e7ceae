package console_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/wardtest"
)

// TestHostileIDs: console addresses whose ids or query values could name
// nothing stored (NUL and other control characters, invalid UTF-8,
// overlong) get the console's 404 or 400 page before any lookup, on both
// backends — never a 500 — and a change request changes nothing.
func TestHostileIDs(t *testing.T) {
	backends(t, func(t *testing.T, in *wardtest.Instance) {
		op := signIn(t, in, "alice")
		long := strings.Repeat("a", 257)
		for _, bad := range []string{"a%00b", "%01", "%ff%fe", "a%C3", "%C2%85", long} {
			for _, p := range []string{"/console/users/" + bad, "/console/devices/" + bad, "/console/incidents/" + bad, "/console/clients/" + bad} {
				resp, body := op.get(p)
				if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "not a valid id") {
					t.Errorf("GET %.60s: %d, want the 404 page; %.200s", p, resp.StatusCode, body)
				}
			}
		}
		for _, bad := range []string{"a%00b", "%01", "%ff", strings.Repeat("a", 4097)} {
			for _, p := range []string{"/console/users?q=" + bad, "/console/logs?user=" + bad} {
				resp, body := op.get(p)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not valid") {
					t.Errorf("GET %.60s: %d, want the 400 page; %.200s", p, resp.StatusCode, body)
				}
			}
		}
		bob := userID(t, in, "bob")
		tok := op.csrf()
		resp, _ := op.post("/console/users/"+bob+"%00/disable", tok, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("disable with a NUL in the id: %d, want 404", resp.StatusCode)
		}
		if u, err := in.App.Store.GetUser(t.Context(), bob); err != nil || u.Disabled {
			t.Errorf("bob after the attempt: %+v %v", u, err)
		}
		if resp, _ := op.get("/console/users/" + bob); resp.StatusCode != http.StatusOK {
			t.Errorf("bob's page: %d", resp.StatusCode)
		}
	})
}
